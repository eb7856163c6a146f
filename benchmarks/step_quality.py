"""How far SafeRate's steps are from the ideal step, and its bounds from the tightest bound.

SafeRate(Adam) takes ``η = argmin_{0<=η<=η_max} c1·η + c2_hi·η²``, where
``h(0) + c1·η + c2_hi·η²`` is AutoBound's upper bound of ``h(η) = L(params + η·u)`` and ``u``
is ``optax.adam(1.0)``'s update (DESIGN §3.7, §4). Every run is full batch, float32 training,
on Fashion-MNIST (``--data``: the IDX files; else the embedded subset shipped in ``train/data``).
Problems (``--problems``, comma-separated short names): ``logreg`` (logistic regression, 5,000
images), ``mlp128-softplus`` (MLP 784-128-10, 5,000), ``mlp4x128-softplus`` (2,000),
``mlp3x64-tanh`` (2,000), ``mlp128-relu`` (5,000), ``mlp4x128-relu`` (2,000) and ``cnn`` (the
CNN of ``saferate_vs_adam.py``, 500). Three Markdown tables:

Table 1, final training loss after ``--steps`` full-batch steps (each training loop is one
jitted step, the loss is the full training loss):

* SafeRate(Adam): ``osr.saferate(optax.adam(1.0), **options)`` with ``--saferate-options`` (a
  JSON dict of keyword arguments, e.g. ``'{"verify_decrease": true}'``), its median ``η`` (from
  the state field ``learning_rate``, refused steps counted as 0), its refused steps (state field
  ``refused_steps``) and whether its loss was monotone (no rise beyond ``8·eps·|loss|``, as in
  ``saferate_vs_adam.py``).
* η_N rule: along Adam(1.0)'s direction ``u`` on its own trajectory (Adam's state advanced as
  usual), ``η_N = -h'(0)/h''(0)`` with ``h'`` and ``h''`` from forward-mode autodiff (``jax.jvp``
  of ``jax.jvp``); ``η = 0`` when ``h'' <= 0``, either is not finite, or ``h' >= 0``. Not a safe
  rule: its loss may go up, and the table says whether it did.
* grid line search: the same kind of direction, on its own trajectory, ``η = argmin`` of
  ``L(params + η·u)`` over ``{0} ∪ geomspace(1e-5, 1, 21)``, all points in one vmapped call
  (greedy: the best point of the grid at every step).
* Adam at every learning rate of ``saferate_vs_adam.GRID`` (in Table 1b; the best in Table 1,
  and SafeRate's final loss over the best Adam's); the learning-rate-free peers of
  ``optax.contrib`` at their defaults (prodigy, dadapt_adamw, dog, schedule_free_adamw: its loss
  is taken at ``schedule_free_eval_params``, the averaged iterate ``x`` that schedule-free methods
  are evaluated at, not at the gradient point ``y``); and optax's backtracking line search along
  Adam(1.0), ``chain(adam(1.0), scale_by_backtracking_linesearch(max_backtracking_steps=15))``.
  ``--skip-peers`` leaves the peers and the backtracking search out.
* best sound quadratic: along the same kind of direction, on its own trajectory, the step
  ``η*`` that the tightest sound quadratic bound would give with the best region: over each
  ``[0, T]``, ``R2*(T) = max_{0<t<=T} (h(t) - h(0) - h'(0)t)/t²`` from 113 geometric samples
  of ``h`` on ``[1e-7, 1]`` (float64, and the limit ``h''(0)/2``), the step minimising
  ``h'(0)η + R2*(T)η²`` on ``[0, T]``, and the ``T`` with the largest decrease. What SafeRate
  would reach with a perfect bound and a perfect trust region: the floor of its design along
  these directions (sampled, so not a safe rule). ``--skip-oracle`` leaves it out.

Table 2, SafeRate's step against the exact-quadratic step along its own trajectory: at every
SafeRate step, from the same params and along the same direction (``u``, Adam(1.0)'s update,
which points downhill), ``η_N`` as above; the median and the 10th/90th percentiles of
``η/η_N`` over the steps where ``η_N > 0``, refused steps (``η = 0``) counted in as 0.

Table 3, bound tightness at points of the tuned-Adam trajectory (Table 1's best learning rate
``lr``): at steps 0, 10 and 50 (those below ``--steps``), the direction ``u`` is that step's Adam
update over ``lr`` (Adam's direction at learning rate 1). In float64 (params, data and
direction cast) ``c2_hi(T)`` is the upper end of the final interval of
``taylor_bounds(h, 2)(0, (0, T))`` (called as ``saferate.py`` calls it: a NumPy zero reference
point and region ``(0, T)``), and ``R2*(T) = max_{0<t<=T} (h(t) - h(0) - h'(0)·t)/t²`` the
tightest coefficient any sound quadratic bound can have, by dense sampling: one set of
``--samples`` points shared by all ``T`` (half geometric from ``1e-3·min T`` to ``max T``, half
linear on ``[T/2, T]`` for each ``T``); ``R2*(T)`` is the maximum over the samples in
``[1e-3·T, T]`` and the limit ``h''(0)/2`` at ``t -> 0`` (below ``1e-3·T`` the float64
cancellation in the numerator is no longer negligible). A cell is ``c2_hi/R2*`` (1 is ideal),
with ``R2*`` in brackets. For the MLPs the sampled ``h`` computes the first layer once as
``X·W + t·X·D`` (checked against the loss), so the sampling does not repeat the big matmul, and
the points go through ``jax.lax.map`` in vmapped chunks of 8; the CNN's go one at a time (a
vmapped float64 convolution is slower on a CPU than a sequence of them).

Usage:
  python benchmarks/step_quality.py --data ../shared/data/fashion-mnist      # all problems
  python benchmarks/step_quality.py --problems logreg,mlp3x64-tanh --steps 50
  python benchmarks/step_quality.py --saferate-options '{"trust_region": "halving"}'
  python benchmarks/step_quality.py --quick   # about a minute: 2 small problems, 20 steps,
                                              # 3 Adam learning rates, 2 trust regions

This script is a measurement, not a test; it exits 0 whatever it measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from problems import mlp
from saferate_vs_adam import GRID
from saferate_vs_adam import cnn_problem
from saferate_vs_adam import load

import optax_saferate as osr
from optax_saferate import autobound as ab

LINE_GRID = np.concatenate([[0.0], np.geomspace(1e-5, 1.0, 21)])
TRAJECTORY_STEPS = (0, 10, 50)
TRUST_REGIONS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
QUICK_PROBLEMS = ("logreg", "mlp3x64-tanh")
QUICK_GRID = (1e-3, 1e-2, 1e-1)
QUICK_TRUST_REGIONS = (1e-3, 1e-1)
QUICK_IMAGES = 1000


@dataclasses.dataclass(frozen=True)
class Problem:
    """A benchmark problem: ``widths is None`` is the CNN, else an MLP (``[]``: logistic)."""

    description: str
    images: int
    widths: list[int] | None = None
    activation: Callable | None = None
    chunk: int | None = 8  # table 3: points per vmapped batch (None: one at a time)

    def build(self, images, labels):
        """``(loss, params, line)``; ``line(params, u)`` is ``t -> loss(params + t·u)``."""
        if self.widths is None:
            loss, params = cnn_problem(images, labels)
            return loss, params, lambda p, u: lambda t: loss(_moved(p, u, t))
        loss, params = mlp(self.widths, self.activation, "ce", images, labels)
        return loss, params, _mlp_line(self.activation, images, labels)


PROBLEMS = {
    "logreg": Problem("logistic regression, {n} images", 5000, []),
    "mlp128-softplus": Problem("MLP 784-128-10 softplus, {n} images", 5000, [128], jax.nn.softplus),
    "mlp4x128-softplus": Problem(
        "MLP 4x128 softplus, {n} images", 2000, [128] * 4, jax.nn.softplus
    ),
    "mlp3x64-tanh": Problem("MLP 3x64 tanh, {n} images", 2000, [64] * 3, jnp.tanh),
    "mlp128-relu": Problem("MLP 784-128-10 relu, {n} images", 5000, [128], jax.nn.relu),
    "mlp4x128-relu": Problem("MLP 4x128 relu, {n} images", 2000, [128] * 4, jax.nn.relu),
    "cnn": Problem("CNN conv8-conv16 max-pool relu, {n} images", 500, chunk=None),
}


def _moved(params, direction, t):
    return jax.tree.map(lambda p, d: p + t * d, params, direction)


def _mlp_line(activation, images, labels):
    """``h(t) = loss(params + t·u)`` of ``problems.mlp`` (cross-entropy) with the first layer's
    preactivation computed once, as ``X·W + b + t·(X·D + d)``."""
    x = jnp.asarray(images.reshape(len(images), -1))
    y = jnp.asarray(labels)

    def line(params, direction):
        z0 = x @ params[0]["w"] + params[0]["b"]
        z1 = x @ direction[0]["w"] + direction[0]["b"]

        def h(t):
            z = z0 + t * z1
            for layer, d in zip(params[1:], direction[1:], strict=True):
                z = activation(z) @ (layer["w"] + t * d["w"]) + (layer["b"] + t * d["b"])
            return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

        return h

    return line


def line_derivatives(h, dtype):
    """``(h'(0), h''(0))`` by forward-over-forward autodiff."""
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
    return jax.jvp(lambda t: jax.jvp(h, (t,), (one,))[1], (zero,), (one,))


def newton_eta(slope, second):
    """``-h'/h''``, or 0 where ``h'' <= 0``, either is not finite, or ``h' >= 0``."""
    valid = jnp.isfinite(slope) & jnp.isfinite(second) & (second > 0) & (slope < 0)
    return jnp.where(valid, -slope / jnp.where(valid, second, 1.0), 0.0)


def tree_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def init_state(tx, params):
    """``tx.init`` with weakly typed leaves made strong (one compilation of the step)."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=leaf.dtype), tx.init(params))


def run(step, carry, steps):
    """``steps`` calls of the jitted ``step(carry) -> (carry, record)``; records stacked."""
    step = jax.jit(step)
    records = []
    for _ in range(steps):
        carry, record = step(carry)
        records.append(record)
    records = jax.device_get(records)
    return carry, {k: np.stack([r[k] for r in records]) for k in records[0]}


def monotone(values):
    rounding = 8 * np.finfo(np.float32).eps * np.abs(values[:-1])
    return bool(np.all(np.diff(values) <= rounding))


# --------------------------------------------------------------------------- training runs


def train_plain(tx, loss, params, steps, evaluate=None):
    """Final loss and loss trajectory of ``tx`` (values before each step, then the final one).

    ``evaluate(state, params)`` gives the params the final loss is taken at (schedule-free)."""
    tx = optax.with_extra_args_support(tx)

    def step(carry):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=loss)
        return (optax.apply_updates(params, updates), state), {"value": value}

    (params, state), records = run(step, (params, init_state(tx, params)), steps)
    final = float(loss(evaluate(state, params) if evaluate else params))
    return final, np.append(records["value"], final)


def train_saferate(options, loss, params, steps):
    """SafeRate(Adam), and ``η_N`` at each of its steps along its own direction."""
    tx = osr.saferate(optax.adam(1.0), **options)
    direction_tx = optax.adam(1.0)  # advanced with the same gradients: SafeRate's direction
    dtype = jnp.result_type(jax.tree.leaves(params)[0])

    def step(carry):
        params, state, direction_state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=loss)
        u, direction_state = direction_tx.update(grads, direction_state, params)
        eta = optax.tree.get(state, "learning_rate")
        slope, second = line_derivatives(lambda t: loss(_moved(params, u, t)), dtype)
        taken = jax.tree.map(lambda d: eta * d, u)
        mismatch = tree_norm(jax.tree.map(jnp.subtract, updates, taken)) / jnp.maximum(
            tree_norm(taken), jnp.finfo(dtype).tiny
        )
        record = {"value": value, "eta": eta, "eta_n": newton_eta(slope, second)}
        record["mismatch"] = mismatch
        new_params = optax.apply_updates(params, updates)
        return (new_params, state, direction_state), record

    carry = (params, init_state(tx, params), init_state(direction_tx, params))
    (params, state, _), records = run(step, carry, steps)
    records["value"] = np.append(records["value"], float(loss(params)))
    records["refused"] = int(optax.tree.get(state, "refused_steps"))
    return records


def train_along_adam(loss, params, steps, rule):
    """Adam(1.0)'s direction with the step size ``rule(params, u)`` (η_N or the grid)."""
    direction_tx = optax.adam(1.0)

    def step(carry):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        u, state = direction_tx.update(grads, state, params)
        eta = rule(params, u)
        return (_moved(params, u, eta), state), {"value": value, "eta": eta}

    (params, _), records = run(step, (params, init_state(direction_tx, params)), steps)
    records["value"] = np.append(records["value"], float(loss(params)))
    return records


def newton_rule(loss, dtype):
    def rule(params, u):
        return newton_eta(*line_derivatives(lambda t: loss(_moved(params, u, t)), dtype))

    return rule


def grid_rule(loss, dtype):
    grid = jnp.asarray(LINE_GRID, dtype)

    def rule(params, u):
        values = jax.vmap(lambda t: loss(_moved(params, u, t)))(grid)
        return grid[jnp.argmin(jnp.where(jnp.isfinite(values), values, jnp.inf))]

    return rule


# The best-sound-quadratic rule samples h on these points (float64), from far below any step
# SafeRate takes to the largest region it would try.
ORACLE_POINTS = np.geomspace(1e-7, 1.0, 113)


def sound_quadratic_rule(problem, images, labels):
    """The step of the tightest sound quadratic bound, ``η*``, from dense sampling (an oracle).

    Over each region ``[0, T]`` (``T`` a sample point), the smallest coefficient of a quadratic
    upper bound of ``h`` tight at 0 is ``R2*(T) = max_{0<t<=T} (h(t) - h(0) - h'(0)t)/t²``
    (here over the samples and the limit ``h''(0)/2``; float64). The step minimises
    ``h'(0)η + R2*(T)η²`` on ``[0, T]``, for the ``T`` with the largest decrease: what SafeRate
    would do with a perfect bound and a perfect region. Sampled, so not a safe rule itself.
    """
    with jax.enable_x64(True):
        _, _, line = problem.build(images.astype(np.float64), labels)
    ts = np.asarray(ORACLE_POINTS)

    def rule(params, u):
        dtype = jnp.result_type(jax.tree.leaves(params)[0])
        cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)  # noqa: E731
        h = line(cast(params), cast(u))
        points = jnp.asarray(ts, jnp.float64)
        h0 = h(jnp.zeros((), jnp.float64))
        slope, second = line_derivatives(h, jnp.float64)
        values = jax.lax.map(h, points, batch_size=problem.chunk)
        excess = (values - h0 - slope * points) / points**2
        excess = jnp.where(jnp.isfinite(excess), excess, jnp.inf)
        best = jnp.maximum(second / 2, jax.lax.cummax(excess))
        etas = jnp.clip(-slope / (2 * jnp.where(best > 0, best, jnp.inf)), 0, points)
        gains = -(slope * etas + best * etas**2)
        eta = jnp.where(slope < 0, etas[jnp.argmax(gains)], 0.0)
        return eta.astype(dtype)

    return rule


def peers():
    """``name -> (optimizer, evaluate)`` for the learning-rate-free peers and line search."""
    contrib = optax.contrib
    table = {
        "prodigy": (contrib.prodigy(), None),
        "dadapt_adamw": (contrib.dadapt_adamw(), None),
        "schedule_free_adamw": (contrib.schedule_free_adamw(), contrib.schedule_free_eval_params),
    }
    if hasattr(contrib, "dog"):
        table["dog"] = (contrib.dog(), None)
    table["backtracking"] = (
        optax.chain(
            optax.adam(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=15)
        ),
        None,
    )
    return table


# --------------------------------------------------------------------------- table 3


def adam_trajectory_points(loss, params, lr, points):
    """``{step: (params, update / lr)}`` of ``adam(lr)`` at the given steps (float32)."""
    tx = optax.adam(lr)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    state, taken = init_state(tx, params), {}
    for k in range(max(points) + 1):
        new_params, state, updates = step(params, state)
        if k in points:
            taken[k] = (params, jax.tree.map(lambda d: d / lr, updates))
        params = new_params
    return taken


def sample_points(trust_regions, count):
    """The shared sample set of table 3: geometric over all ``T``, linear near each ``T``."""
    low, high = 1e-3 * min(trust_regions), max(trust_regions)
    linear = [np.linspace(T / 2, T, (count // 2) // len(trust_regions)) for T in trust_regions]
    return np.unique(np.concatenate([np.geomspace(low, high, count - count // 2), *linear]))


def tightness(problem, images, labels, points, trust_regions, samples):
    """Rows ``(step, h''(0)/2, [(c2_hi, R2*) per T])`` at the given trajectory points."""
    rows = []
    with jax.enable_x64(True):
        loss, _, line = problem.build(images.astype(np.float64), labels)
        ts = jnp.asarray(sample_points(trust_regions, samples))
        origin = np.zeros((), np.float64)

        @jax.jit
        def bound(params, u, region):
            h = lambda t: loss(_moved(params, u, t))
            return ab.taylor_bounds(h, 2)(origin, (origin, region)).coefficients[2][1]

        @jax.jit
        def sampled(params, u):
            h = line(params, u)
            h0 = h(jnp.zeros((), ts.dtype))
            slope, second = line_derivatives(h, ts.dtype)
            values = jax.lax.map(h, ts, batch_size=problem.chunk)
            check = loss(_moved(params, u, ts[-1]))  # the line function is the loss
            return second / 2, (values - h0 - slope * ts) / ts**2, values[-1], check

        for k, (params32, u32) in points.items():
            params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params32)
            u = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), u32)
            half_second, ratios, value, check = jax.device_get(sampled(params, u))
            if not np.isclose(value, check, rtol=1e-9, atol=0):
                raise AssertionError(f"line function {value} != loss {check}")
            cells = []
            for T in trust_regions:
                c2_hi = float(bound(params, u, jnp.asarray(T, jnp.float64)))
                inside = (np.asarray(ts) >= 1e-3 * T) & (np.asarray(ts) <= T)
                best = max(float(half_second), float(np.max(ratios[inside])))
                cells.append((c2_hi, best))
            rows.append((k, float(half_second), cells))
    return rows


# --------------------------------------------------------------------------- the tables


def fmt(value):
    return "—" if value is None else f"{value:.4g}"


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else None


def measure(name, problem, images, labels, args, grid):
    loss, params, _ = problem.build(images, labels)
    dtype = jnp.result_type(jax.tree.leaves(params)[0])
    result, start = {}, time.perf_counter()
    result["saferate"] = train_saferate(args.saferate_options, loss, params, args.steps)
    result["newton"] = train_along_adam(loss, params, args.steps, newton_rule(loss, dtype))
    result["grid"] = train_along_adam(loss, params, args.steps, grid_rule(loss, dtype))
    if not args.skip_oracle:
        rule = sound_quadratic_rule(problem, images, labels)
        with jax.enable_x64(True):
            result["oracle"] = train_along_adam(loss, params, args.steps, rule)
    result["adam"] = [train_plain(optax.adam(lr), loss, params, args.steps)[0] for lr in grid]
    if not args.skip_peers:
        result["peers"] = {
            peer: train_plain(tx, loss, params, args.steps, evaluate)[0]
            for peer, (tx, evaluate) in peers().items()
        }
    finals = np.array(result["adam"])
    best = int(np.argmin(np.where(np.isfinite(finals), finals, np.inf)))
    result["best"] = best
    print(f"{name}: training runs {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if not args.skip_tightness:
        start = time.perf_counter()
        points = [k for k in TRAJECTORY_STEPS if k < args.steps]
        taken = adam_trajectory_points(loss, params, grid[best], points)
        result["tightness"] = tightness(
            problem, images, labels, taken, args.trust_regions, args.samples
        )
        print(f"{name}: tightness {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return result


def print_tables(results, args, grid):
    peer_names = [] if args.skip_peers else list(peers())
    print(f"## Table 1: final training loss after {args.steps} full-batch steps\n")
    header = [
        "problem",
        "SafeRate(Adam)",
        "median η",
        "refused",
        "monotone",
        "η_N rule",
        "monotone",
        "grid search",
        "monotone",
        "best sound quadratic (median η)",
        "best Adam (lr)",
        "SafeRate / best Adam",
        *peer_names,
    ]
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for description, r in results.items():
        safe, newton, line = r["saferate"], r["newton"], r["grid"]
        best_adam = r["adam"][r["best"]]
        cells = [
            description,
            fmt(safe["value"][-1]),
            f"{np.median(safe['eta']):.3g}",
            str(safe["refused"]),
            "yes" if monotone(safe["value"]) else "NO",
            fmt(newton["value"][-1]),
            "yes" if monotone(newton["value"]) else "NO",
            fmt(line["value"][-1]),
            "yes" if monotone(line["value"]) else "NO",
            (
                f"{fmt(r['oracle']['value'][-1])} ({np.median(r['oracle']['eta']):.3g})"
                if "oracle" in r
                else "—"
            ),
            f"{fmt(best_adam)} (lr {grid[r['best']]:g})",
            f"{safe['value'][-1] / best_adam:.2f}x",
            *(fmt(r["peers"][p]) for p in peer_names),
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        "\nmedian η: SafeRate's step sizes over all steps, refused ones as 0. η_N rule and grid "
        "search: along Adam(1.0)'s direction, each on its own trajectory.\n"
    )

    print(f"## Table 1b: Adam at every learning rate ({args.steps} steps)\n")
    print("| problem | " + " | ".join(f"Adam {lr:g}" for lr in grid) + " |")
    print("|---" * (len(grid) + 1) + "|")
    for description, r in results.items():
        print(f"| {description} | " + " | ".join(fmt(v) for v in r["adam"]) + " |")

    print("\n## Table 2: SafeRate's η over η_N = -h'(0)/h''(0) along its own trajectory\n")
    header = "| problem | steps | refused | η_N undefined | median η/η_N | p10 | p90 | "
    print(header + "median η | median η_N | worst update mismatch |\n" + "|---" * 10 + "|")
    for description, r in results.items():
        safe = r["saferate"]
        defined = safe["eta_n"] > 0
        ratios = safe["eta"][defined] / safe["eta_n"][defined]
        cells = [
            description,
            str(len(safe["eta"])),
            str(safe["refused"]),
            str(int(np.sum(~defined))),
            fmt(percentile(ratios, 50)),
            fmt(percentile(ratios, 10)),
            fmt(percentile(ratios, 90)),
            f"{np.median(safe['eta']):.3g}",
            fmt(percentile(safe["eta_n"][defined], 50)),
            f"{np.max(safe['mismatch']):.1e}",
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        "\nη_N undefined: steps with h'' <= 0, h' >= 0 or a non-finite derivative (left out of "
        "the ratios). Update mismatch: |SafeRate's update - η·u| / |η·u|, u from a separate "
        "adam(1.0) fed the same gradients (checks that η_N was taken along SafeRate's direction)."
    )

    if args.skip_tightness:
        return
    print("\n## Table 3: bound tightness c2_hi(T)/R2*(T) at tuned-Adam trajectory points\n")
    print("Float64. Cell: c2_hi/R2* (R2*). Direction: that step's Adam update over its lr.\n")
    regions = [f"T={T:g}" for T in args.trust_regions]
    print("| problem | Adam lr | step | h''(0)/2 | " + " | ".join(regions) + " |")
    print("|---" * (4 + len(regions)) + "|")
    for description, r in results.items():
        for k, half_second, cells in r["tightness"]:
            texts = [
                f"{c2 / best:.3g} ({best:.3g})" if best > 0 else f"— ({best:.3g}; c2_hi {c2:.3g})"
                for c2, best in cells
            ]
            lr = f"{grid[r['best']]:g}"
            print(f"| {description} | {lr} | {k} | {half_second:.4g} | " + " | ".join(texts) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/fashion-mnist")
    parser.add_argument("--steps", type=int, default=None, help="default 100 (20 with --quick)")
    parser.add_argument("--problems", default=None, help=f"comma-separated: {', '.join(PROBLEMS)}")
    parser.add_argument("--saferate-options", type=json.loads, default={})
    parser.add_argument("--samples", type=int, default=None, help="table 3; default 2000")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-tightness", action="store_true")
    parser.add_argument("--skip-oracle", action="store_true", help="no best-sound-quadratic rule")
    args = parser.parse_args()
    if not isinstance(args.saferate_options, dict):
        parser.error("--saferate-options must be a JSON object")
    args.steps = args.steps or (20 if args.quick else 100)
    args.samples = args.samples or (400 if args.quick else 2000)
    args.trust_regions = QUICK_TRUST_REGIONS if args.quick else TRUST_REGIONS
    names = (
        args.problems.split(",")
        if args.problems
        else (QUICK_PROBLEMS if args.quick else list(PROBLEMS))
    )
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        parser.error(f"unknown problems {unknown}; choose from {', '.join(PROBLEMS)}")
    grid = QUICK_GRID if args.quick else GRID

    print("# SafeRate's distance to the ideal step\n")
    print(f"Command: `python {shlex.join(sys.argv)}`\n")
    print(
        f"Python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}, "
        f"numpy {np.__version__}; backend {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs. "
        f"SafeRate options: {json.dumps(args.saferate_options)}.\n"
    )
    start = time.perf_counter()
    images, labels, source = load(args.data, max(PROBLEMS[n].images for n in names))
    results = {}
    for name in names:
        problem = PROBLEMS[name]
        count = min(problem.images, QUICK_IMAGES) if args.quick else problem.images
        description = problem.description.format(n=f"{count:,}")
        results[description] = measure(name, problem, images[:count], labels[:count], args, grid)
    print(f"Data: {source}, float32 training, full batch.\n")
    print_tables(results, args, grid)
    print(f"\nTotal time: {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
