"""Sharper Jensen bounds: the interval contains ``E f(X) - f(μ)`` (closed forms, quadrature, finite
sums over random discrete laws) and compares with the classical ``½[min f'', max f'']·Var X``."""

import doctest
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import mpmath
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optax_saferate import autobound as ab
from optax_saferate.autobound import jensen

pytestmark = pytest.mark.usefixtures("autobound_numerics")

mpmath.mp.dps = 40

# Each function twice: for the engine and for mpmath (the exact expectations).
FUNCTIONS = {
    "exp": (jnp.exp, mpmath.exp),
    "softplus": (jax.nn.softplus, lambda x: mpmath.log1p(mpmath.exp(x))),
    "sin": (jnp.sin, mpmath.sin),
    "cube": (lambda x: x**3, lambda x: x**3),
    "log": (jnp.log, mpmath.log),
}


# --------------------------------------------------------------------------- laws on [a, b]


def _quadrature_law(density, a, b):
    """(mean, central moments m_2..m_4, E g(X) for any mpmath g) of a density on [a, b]."""
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    total = mpmath.quad(density, [a, b])

    def expect(g):
        return mpmath.quad(lambda x: g(x) * density(x), [a, b]) / total

    mean = expect(lambda x: x)
    moments = tuple(expect(lambda x, j=j: (x - mean) ** j) for j in (2, 3, 4))
    return mean, moments, expect


def _finite_law(atoms, weights):
    """The same for a finite law: exact (rational) mean and moments, mpmath expectations."""
    total = sum(weights)
    mean = sum(w * x for w, x in zip(weights, atoms, strict=True)) / total
    moments = tuple(
        sum(w * (x - mean) ** j for w, x in zip(weights, atoms, strict=True)) / total
        for j in (2, 3, 4)
    )

    def expect(g):
        terms = [w * g(_mp(x)) for w, x in zip(weights, atoms, strict=True)]
        return mpmath.fsum(terms) / total

    return mean, moments, expect


def _mp(q):
    q = Fraction(q)
    return mpmath.mpf(q.numerator) / q.denominator


def _uniform(a, b):
    return _quadrature_law(lambda x: 1, a, b)


def _beta_2_5(a, b):
    return _quadrature_law(lambda x: ((x - a) / (b - a)) * ((b - x) / (b - a)) ** 4, a, b)


def _truncated_normal(a, b):
    center, scale = a + 0.3 * (b - a), 0.25 * (b - a)
    return _quadrature_law(lambda x: mpmath.exp(-(((x - center) / scale) ** 2) / 2), a, b)


def _two_point(a, b):
    # Weights 1 : 2 on the ends (the extremal law: Var X = αβ, Bhatia–Davis with equality).
    return _finite_law([Fraction(a), Fraction(b)], [1, 2])


LAWS = {
    "uniform": _uniform,
    "beta(2,5)": _beta_2_5,
    "truncated normal": _truncated_normal,
    "two-point": _two_point,
}


def _exact_gap(name, law):
    """``E f(X) - f(μ)`` in mpmath, and a slack for mpmath's own rounding (40 digits, far below
    float64's: a point mass's computed gap is 1e-42, not 0)."""
    exact_f = FUNCTIONS[name][1]
    mean, _, expect = law
    mean_value = exact_f(_mp(mean) if isinstance(mean, Fraction) else mean)
    expectation = expect(exact_f)
    slack = mpmath.mpf(10) ** -34 * (abs(expectation) + abs(mean_value))
    return expectation - mean_value, slack


def _check(name, law, a, b, degree, give_top, exact=None):
    """The sharp (and classical) interval contains the exact gap; returns the result."""
    exact, slack = exact or _exact_gap(name, law)
    mean, moments, _ = law
    count = max(degree - 1 if give_top else degree - 2, 0)
    given_moments = tuple(float(m) for m in moments[:count])
    result = ab.jensen_gap(
        FUNCTIONS[name][0], a, b, float(mean), moments=given_moments or None, degree=degree
    )
    assert result.lower - slack <= exact <= result.upper + slack, (name, degree, result, exact)
    assert result.classical_lower - slack <= exact <= result.classical_upper + slack
    return result


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("degree", [2, 3, 4])
def test_a_square_has_gap_the_variance(degree):
    result = ab.jensen_gap(lambda x: x**2, -1.0, 3.0, 0.2, moments=(0.7, 0.1, 1.5), degree=degree)
    assert result.lower <= 0.7 <= result.upper
    assert result.width <= 1e-12
    assert result.classical_lower <= 0.7 <= result.classical_upper


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (-1.0, 2.0), (-3.0, -2.5)])
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_exp_of_a_uniform_law_closed_form(a, b, degree):
    length, mean = b - a, (a + b) / 2
    exact = (mpmath.exp(b) - mpmath.exp(a)) / length - mpmath.exp(mean)
    moments = (length**2 / 12, 0.0, length**4 / 80)
    result = ab.jensen_gap(jnp.exp, a, b, mean, moments=moments[: degree - 1], degree=degree)
    assert result.lower <= exact <= result.upper
    if degree >= 2:
        assert result.classical_lower <= exact <= result.classical_upper
        assert result.width <= result.classical_width


def test_exp_of_a_scaled_beta_law_closed_form():
    # E e^{a + L·Y} = e^a ₁F₁(2; 7; L) for Y ~ Beta(2, 5).
    a, b = -1.0, 2.0
    length = b - a
    mean = a + length * 2 / 7
    variance = length**2 * 10 / (49 * 8)
    exact = mpmath.exp(a) * mpmath.hyp1f1(2, 7, length) - mpmath.exp(mean)
    result = ab.jensen_gap(jnp.exp, a, b, mean, variance=variance)
    assert result.lower <= exact <= result.upper
    assert result.classical_lower <= exact <= result.classical_upper
    assert result.width < 0.5 * result.classical_width


def test_the_moments_of_the_beta_law_match_its_closed_form():
    """The quadrature behind the other tests, against Beta(2, 5)'s known mean and variance."""
    mean, moments, _ = _beta_2_5(-1.0, 2.0)
    assert abs(mean - (-1 + mpmath.mpf(6) / 7)) < 1e-30
    assert abs(moments[0] - mpmath.mpf(90) / (49 * 8)) < 1e-30


# --------------------------------------------------------------------------- laws x functions


@pytest.mark.parametrize("law", sorted(LAWS))
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_contains_the_exact_gap(law, name):
    a, b = (0.5, 3.0) if name == "log" else (-1.5, 2.0)
    moments = LAWS[law](a, b)
    exact = _exact_gap(name, moments)
    widths = {}
    for degree in (2, 3, 4):
        for give_top in (True, False):
            result = _check(name, moments, a, b, degree, give_top, exact)
            widths[degree, give_top] = result.width
    # The exact top moment never hurts.
    for degree in (2, 3, 4):
        assert widths[degree, True] <= widths[degree, False] * (1 + 1e-12)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("law", sorted(LAWS))
def test_degree_2_is_never_wider_than_the_classical_bound(name, law):
    """For one elementwise function the engine's remainder is a value of f''/2 (mean-value
    theorem), so its degree-2 interval lies inside the classical one, up to the allowances.
    (Not so for a composite f: jax.nn.gelu's is wider on [-2, 3], see docs/jensen.md.)"""
    a, b = (0.5, 3.0) if name == "log" else (-1.5, 2.0)
    mean, moments, _ = LAWS[law](a, b)
    result = ab.jensen_gap(FUNCTIONS[name][0], a, b, float(mean), variance=float(moments[0]))
    slack = 1e-12 * max(1.0, abs(result.classical_upper), abs(result.classical_lower))
    assert result.classical_lower - slack <= result.lower
    assert result.upper <= result.classical_upper + slack


def test_higher_degrees_are_narrower_on_a_small_region():
    a, b = 0.0, 0.5
    mean, moments, _ = _beta_2_5(a, b)
    widths = [
        ab.jensen_gap(
            jnp.exp, a, b, float(mean), moments=[float(m) for m in moments[: k - 1]], degree=k
        ).width
        for k in (2, 3, 4)
    ]
    assert widths[2] < widths[1] < widths[0]


def test_without_the_variance_it_is_bhatia_davis():
    a, b, mean = -1.0, 2.0, 0.5
    result = ab.jensen_gap(jnp.exp, a, b, mean)
    lo, hi = (float(e) for e in result.enclosure.final_interval())
    bound = (mean - a) * (b - mean)
    assert result.moment_bound == (0.0, bound)
    assert result.lower == pytest.approx(min(0.0, lo * bound), abs=1e-12)
    assert result.upper == pytest.approx(max(0.0, hi * bound), rel=1e-12)
    # Any law with this mean: the extremal two-point one, and the point mass.
    for law in (_two_point(a, b), _finite_law([Fraction(mean)], [1])):
        exact = law[2](mpmath.exp) - mpmath.exp(law[0])
        assert result.lower <= exact <= result.upper


def test_a_negative_remainder_concave_f():
    """log is concave: lo <= hi < 0, so the gap is negative and the ends swap roles."""
    a, b = 0.5, 3.0
    mean, moments, expect = _uniform(a, b)
    result = ab.jensen_gap(jnp.log, a, b, float(mean), variance=float(moments[0]))
    exact = expect(mpmath.log) - mpmath.log(mean)
    assert result.lower <= exact <= result.upper < 0
    unknown = ab.jensen_gap(jnp.log, a, b, float(mean))
    assert unknown.lower <= exact and unknown.upper >= -1e-12


def test_a_kinked_f_is_bounded_and_has_no_classical_bound():
    a, b = -2.0, 3.0
    mean, moments, expect = _truncated_normal(a, b)
    result = ab.jensen_gap(jnp.abs, a, b, float(mean), variance=float(moments[0]))
    exact = expect(abs) - abs(mean)
    assert result.lower <= exact <= result.upper
    assert (result.classical_lower, result.classical_upper) == (-math.inf, math.inf)


def test_a_point_mass_and_a_degenerate_interval():
    result = ab.jensen_gap(jnp.exp, 1.0, 1.0, 1.0, variance=0.0)
    assert (result.lower, result.upper) == (0.0, 0.0)
    result = ab.jensen_gap(jnp.exp, 0.0, 2.0, 0.0, moments=(0.0, 0.0, 0.0), degree=4)
    assert result.lower <= 0.0 <= result.upper and result.width <= 1e-14


def test_the_result_records_what_it_used():
    result = ab.jensen_gap(jnp.exp, 0.0, 1.0, 0.5, moments=(1 / 12, 0.0, 1 / 80), degree=3)
    assert result.degree == 3 and result.moments == (1 / 12, 0.0) and result.moment_bound is None
    result = ab.jensen_gap(jnp.exp, 0.0, 1.0, 0.5, moments=(1 / 12,), degree=3)
    assert result.moment_bound == pytest.approx((-1 / 24, 1 / 24))
    assert result.enclosure.degree == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(a=1.0, b=0.0), "a <= mean <= b"),
        (dict(mean=1.5), "a <= mean <= b"),
        (dict(mean=math.nan), "finite"),
        (dict(degree=5), "degree"),
        (dict(degree=0), "degree"),
        (dict(degree=True), "degree"),
        (dict(variance=0.1, moments=(0.1,)), "not both"),
        (dict(variance=-0.01), "impossible"),
        (dict(variance=0.3), "impossible"),  # Bhatia–Davis: Var <= 0.5·0.5
        (dict(variance=math.inf), "finite"),
        (dict(moments=(0.1,), degree=4), "needs the central moments"),
        (dict(degree=3), "needs the central moments"),
        (dict(moments=(0.1, 0.2), degree=3), "impossible"),  # m_3 <= β·m_2
        (dict(moments=(0.1, 0.0, 0.005), degree=4), "impossible"),  # m_4 >= m_2²
        (dict(moments=(0.1, 0.0, 0.1), degree=4), "impossible"),  # m_4 <= αβ·m_2 + (β-α)·m_3
    ],
)
def test_bad_input_raises(kwargs, message):
    args = dict(a=0.0, b=1.0, mean=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        ab.jensen_gap(jnp.exp, **args)


def test_moments_rounded_past_their_limit_are_accepted():
    # The two-point law on {0, 1} has Var = αβ = 0.25; rounding may put it a little above.
    result = ab.jensen_gap(jnp.exp, 0.0, 1.0, 0.5, variance=0.25 * (1 + 1e-14))
    assert result.lower <= (1 + math.e) / 2 - math.exp(0.5) <= result.upper


def test_docstring_examples_run():
    failures, _ = doctest.testmod(jensen, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# --------------------------------------------------------------------------- property


def _float_down(q: Fraction) -> float:
    x = float(q)
    return math.nextafter(x, -math.inf) if Fraction(x) > q else x


def _float_up(q: Fraction) -> float:
    x = float(q)
    return math.nextafter(x, math.inf) if Fraction(x) < q else x


@given(
    name=st.sampled_from(sorted(FUNCTIONS)),
    a=st.floats(-3, 2),
    length=st.floats(1e-3, 3),
    positions=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    weights=st.lists(st.integers(1, 10), min_size=5, max_size=5),
    degree=st.integers(1, 4),
    give_top=st.booleans(),
)
def test_soundness_on_random_finite_laws(name, a, length, positions, weights, degree, give_top):
    """Random atoms and weights on random intervals: the exact gap is a finite sum.

    The atoms are shifted by the rounding error of the mean so that the law's mean is exactly
    the float passed; the moments are then exact rationals, rounded once to float64.
    """
    if name == "log":
        a = abs(a) + 0.1
    b = a + length
    atoms = [Fraction(min(a + p * length, b)) for p in positions]
    weights = weights[: len(atoms)]
    exact_mean = sum(w * x for w, x in zip(weights, atoms, strict=True)) / sum(weights)
    shift = Fraction(float(exact_mean)) - exact_mean
    atoms = [x + shift for x in atoms]
    a, b = min(a, _float_down(min(atoms))), max(b, _float_up(max(atoms)))
    law = _finite_law(atoms, weights)
    assert law[0] == Fraction(float(exact_mean))
    _check(name, law, a, b, degree, give_top)
