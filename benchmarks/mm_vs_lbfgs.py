"""Universal MM against L-BFGS and gradient descent with a backtracking line search.

    python benchmarks/mm_vs_lbfgs.py

Four small float64 problems (linear, logistic and Poisson regression with 5 features and 100
samples, and 2-D Rosenbrock from (-1.2, 1)). For each method: the iterations and the function
evaluations until ``f - f* <= tol·max(|f*|, 1)`` (``f*`` from 50 Newton steps, Rosenbrock's
is 0), or "-" if not reached within the budget. Evaluations count every call of the loss (each
also computes its gradient) inside the optax line searches; an MM step is one AutoBound pass
(value, gradient and interval Hessian) plus one evaluation of ``f`` (the decrease check),
counted as ``passes+evals``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from problems import mm_problems as problems  # noqa: E402

from optax_saferate import mm  # noqa: E402


def optimum(loss, x0) -> float:
    newton = jax.jit(lambda x: x - jnp.linalg.solve(jax.hessian(loss)(x), jax.grad(loss)(x)))
    x = jnp.asarray(x0)
    for _ in range(50):
        x = newton(x)
    return float(loss(x))


def run_optax(loss, x0, tx, target, budget):
    """``(iterations, evaluations)`` to reach ``target`` with an optax line-search method."""
    calls = np.zeros((), np.int64)

    def count():
        calls[...] += 1

    def counted(x):
        jax.debug.callback(count)
        return loss(x)

    value_and_grad = optax.value_and_grad_from_state(counted)

    @jax.jit
    def step(x, state):
        value, grad = value_and_grad(x, state=state)
        updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=counted)
        return optax.apply_updates(x, updates), state

    x = jnp.asarray(x0)
    state = tx.init(x)
    for iteration in range(1, budget + 1):
        x, state = step(x, state)
        jax.block_until_ready(x)
        if float(loss(x)) <= target:
            return iteration, int(calls)
    return None, int(calls)


def run_mm(loss, x0, target, budget):
    result = mm.minimize(loss, jnp.asarray(x0), max_iterations=budget, gtol=0.0, xtol=0.0)
    reached = np.nonzero(result.values <= target)[0]
    if len(reached) == 0:
        return None, result.iterations
    return int(reached[0]), int(reached[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-8, help="relative tolerance on f - f*")
    parser.add_argument("--budget", type=int, default=2000, help="most iterations per method")
    args = parser.parse_args()
    methods = {
        "L-BFGS (zoom)": lambda: optax.lbfgs(),
        "GD + backtracking": lambda: optax.chain(
            optax.sgd(1.0),
            optax.scale_by_backtracking_linesearch(max_backtracking_steps=30, store_grad=True),
        ),
    }
    print(f"tolerance f - f* <= {args.tol:g}·max(|f*|, 1), budget {args.budget} iterations\n")
    print("| problem | method | iterations | evaluations |")
    print("|---|---|---|---|")
    for name, (loss, x0) in problems().items():
        best = 0.0 if name == "rosenbrock" else optimum(loss, x0)
        target = best + args.tol * max(abs(best), 1.0)
        iterations, evaluations = run_mm(loss, x0, target, args.budget)
        cell = "-" if iterations is None else str(iterations)
        mm_evals = "-" if iterations is None else f"{evaluations}+{evaluations}"
        print(f"| {name} | MM (this library) | {cell} | {mm_evals} |")
        for label, make in methods.items():
            iterations, evaluations = run_optax(loss, x0, make(), target, args.budget)
            cell = "-" if iterations is None else str(iterations)
            evals = f"- ({evaluations} spent)" if iterations is None else str(evaluations)
            print(f"| {name} | {label} | {cell} | {evals} |")


if __name__ == "__main__":
    main()
