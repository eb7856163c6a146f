"""Where a deep smooth net's bound loses: c2_hi(T)/R2*(T) of the degree-2 pass beside the
mixed-degree passes SafeRate can use (``taylor_bounds(h, 2, working_degree=m)``: degree-m
enclosures through the smooth layers, lowered to degree 2 at the log-sum-exp).

At the tuned-Adam trajectory points of ``step_quality.py`` (steps 0, 10, 50; float64; R2* from
2,000 samples as there). Columns: ``d2`` the plain degree-2 pass (``working_degree=2``), ``m3``
SafeRate's default (``working_degree=3``), ``m4`` one degree more.

Usage: python benchmarks/deep_widening.py [mlp4x128-softplus | mlp3x64-tanh | mlp128-softplus]
(a few minutes for the 4x128 net on two cores; reads ../shared/data/fashion-mnist if present,
else the embedded subset).
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import step_quality as sq
from saferate_vs_adam import load

from optax_saferate import autobound as ab

jax.config.update("jax_enable_x64", True)  # float64, as step_quality's table 3
COLUMNS = (("d2", 2), ("m3", 3), ("m4", 4))
name = sys.argv[1] if len(sys.argv) > 1 else "mlp4x128-softplus"
prob = sq.PROBLEMS[name]
images, labels, _ = load("../shared/data/fashion-mnist", prob.images)
lr = {"mlp4x128-softplus": 1e-3, "mlp3x64-tanh": 3e-3, "mlp128-softplus": 1e-2}[name]
loss32, params32, _ = prob.build(images, labels)
points = sq.adam_trajectory_points(loss32, params32, lr, [0, 10, 50])
loss, _, line = prob.build(images.astype(np.float64), labels)


@functools.partial(jax.jit, static_argnums=3)
def c2_hi(params, u, T, working_degree):
    h = lambda t: loss(sq._moved(params, u, t))  # noqa: E731
    bound = ab.taylor_bounds(h, 2, working_degree=working_degree)
    return bound(np.zeros(()), (np.zeros(()), T)).coefficients[2][1]


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
        cells = [f"{col} {float(c2_hi(params, u, T, m)) / best:.3g}" for col, m in COLUMNS]
        out.append(f"T={T:g}: " + " ".join(cells))
    print(name, "step", k, "h''/2", float(second) / 2, " | ".join(out), flush=True)
