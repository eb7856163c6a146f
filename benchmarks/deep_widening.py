"""Where a deep smooth net's bound loses: c2_hi(T)/R2*(T) of SafeRate's degree-2 bound beside a
degree-3 pass to the logits lowered to degree 2 (``c2 + R3·[0, T]``) before the cross-entropy.

At the tuned-Adam trajectory points of ``step_quality.py`` (steps 0, 10, 50; float64; R2* from
2,000 samples as there). Columns: ``d2`` the bound SafeRate takes (``taylor_bounds(h, 2)``),
``d2L`` the same built from the degree-2 logits (checks the assembly), ``d3`` the degree-3
probe. A measurement for issue 11 item 2 (the degree-3 pass is not in the engine yet: its
log-sum-exp has no sharp degree-3 rule, so the probe lowers the logits by hand).

Usage: python benchmarks/deep_widening.py [mlp4x128-softplus | mlp3x64-tanh | mlp128-softplus]
(about 4 minutes for the 4x128 net on two cores; reads ../shared/data/fashion-mnist if present,
else the embedded subset).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import step_quality as sq
from saferate_vs_adam import load

from optax_saferate import autobound as ab
from optax_saferate.autobound import enclosures
from optax_saferate.autobound import logsumexp as lse
from optax_saferate.autobound.enclosures import Context
from optax_saferate.autobound.enclosures import TaylorEnclosure
from optax_saferate.autobound.intervals import Interval

jax.config.update("jax_enable_x64", True)  # the probe runs in float64, as table 3 does
name = sys.argv[1] if len(sys.argv) > 1 else "mlp4x128-softplus"
prob = sq.PROBLEMS[name]
images, labels, _ = load("../shared/data/fashion-mnist", prob.images)
lr = {"mlp4x128-softplus": 1e-3, "mlp3x64-tanh": 3e-3, "mlp128-softplus": 1e-2}[name]
loss32, params32, _ = prob.build(images, labels)
points = sq.adam_trajectory_points(loss32, params32, lr, [0, 10, 50])
loss, _, line = prob.build(images.astype(np.float64), labels)
x = jnp.asarray(images.reshape(len(images), -1).astype(np.float64))
y = jnp.asarray(labels)
act = prob.activation


def logits_line(params, u):
    def f(t):
        h = x
        for i, (layer, d) in enumerate(zip(params, u, strict=True)):
            h = h @ (layer["w"] + t * d["w"]) + (layer["b"] + t * d["b"])
            if i < len(params) - 1:
                h = act(h)
        return h

    return f


def ce_from_logits_enclosure(z, T):
    ctx2 = Context(Interval(np.zeros((), np.float64), T), 2)
    lse_z = lse.enclose_logsumexp(z, (1,), ctx2)
    pick = lambda c: jnp.take_along_axis(c, y[:, None], 1)[:, 0]
    zy = enclosures.map_monotone(pick, z)
    diff = enclosures.add(lse_z, enclosures.negate(zy), ctx2)
    m = enclosures.map_monotone(lambda c: jnp.mean(c), diff)
    return m.remainder.hi


@jax.jit
def c2_deg2(params, u, T):
    h = lambda t: loss(sq._moved(params, u, t))
    return ab.taylor_bounds(h, 2)(np.zeros(()), (np.zeros(()), T)).coefficients[2][1]


@jax.jit
def c2_deg3(params, u, T):
    f = logits_line(params, u)
    b = ab.taylor_bounds(f, 3)(np.zeros(()), (np.zeros(()), T))
    c0, c1, c2, (lo, hi) = b.coefficients
    R2 = Interval(c2 + jnp.minimum(lo * T, 0), c2 + jnp.maximum(hi * T, 0))
    return ce_from_logits_enclosure(TaylorEnclosure((c0, c1), R2), T)


@jax.jit
def c2_deg2_via_logits(params, u, T):
    f = logits_line(params, u)
    b = ab.taylor_bounds(f, 2)(np.zeros(()), (np.zeros(()), T))
    c0, c1, (lo, hi) = b.coefficients
    return ce_from_logits_enclosure(TaylorEnclosure((c0, c1), Interval(lo, hi)), T)


Ts = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
ts = jnp.asarray(sq.sample_points(Ts, 2000))
for k, (p32, u32) in points.items():
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p32)
    u = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), u32)
    h = line(params, u)
    h0 = h(jnp.zeros(()))
    slope, second = sq.line_derivatives(h, jnp.float64)
    vals = jax.lax.map(h, ts, batch_size=8)
    ratios = np.asarray((vals - h0 - slope * ts) / ts**2)
    out = []
    for T in Ts:
        inside = (np.asarray(ts) >= 1e-3 * T) & (np.asarray(ts) <= T)
        best = max(float(second) / 2, float(np.max(ratios[inside])))
        a = float(c2_deg2(params, u, T))
        b2 = float(c2_deg2_via_logits(params, u, T))
        c = float(c2_deg3(params, u, T))
        out.append(f"T={T:g}: d2 {a / best:.3g} d2L {b2 / best:.3g} d3 {c / best:.3g}")
    print(name, "step", k, "h''/2", float(second) / 2, " | ".join(out), flush=True)
