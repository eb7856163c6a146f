"""Locate the extrema of the derivatives of smooth activations (run once; results are embedded).

The elementwise enclosures in ``optax_saferate/autobound/elementwise.py`` need, for each
function σ and derivative order j, the points where σ^(j) has a local extremum: between them
σ^(j) is monotone, which is what makes the sharp remainder bound valid. This script finds them
with sympy derivatives and mpmath root finding at 40 digits and prints the table (embedded in
``optax_saferate/autobound/smooth_functions.py``).

Usage: python scripts/critical_points.py
"""

import mpmath
import sympy

mpmath.mp.dps = 40
x = sympy.Symbol("x", real=True)
FUNCTIONS = {
    "sigmoid": 1 / (1 + sympy.exp(-x)),
    "tanh": sympy.tanh(x),
    "swish": x / (1 + sympy.exp(-x)),
    "erf": sympy.erf(x),
}
MAX_ORDER = 6  # extrema of σ^(j) for j = 0..MAX_ORDER-1 need σ^(j+1)


def extrema(expr, order, lo=-30.0, hi=30.0, n=24001):
    """Sign changes of the (order+1)-th derivative: the extrema of the order-th derivative."""
    deriv = sympy.lambdify(x, sympy.diff(expr, x, order + 1), "mpmath")
    grid = [mpmath.mpf(lo) + (hi - lo) * mpmath.mpf(i) / (n - 1) for i in range(n)]
    values = [deriv(g) for g in grid]
    roots = []
    for a, b, fa, fb in zip(grid, grid[1:], values, values[1:], strict=False):
        if fa == 0:
            roots.append(a)
        elif fa * fb < 0:
            roots.append(mpmath.findroot(deriv, (a, b), solver="anderson"))
    return [float(r) for r in roots]


if __name__ == "__main__":
    for name, expr in FUNCTIONS.items():
        print(f'    "{name}": (')
        for j in range(MAX_ORDER):
            pts = extrema(expr, j)
            print("        (" + "".join(f"{p!r}, " for p in pts) + "),")
        print("    ),")
