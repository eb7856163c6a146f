"""Where the degree-1 bound of a deep relu MLP loses: wrapping through ``|W|`` (issue 12).

Along ``h(t) = L(params + t·u)`` (``u`` Adam's first direction, float64) the degree-1 pass
carries, per hidden unit, the slope interval ``S`` of its preactivation over ``t ∈ [0, T]``: a
unit whose range can cross 0 gets ``σ·S`` with ``σ ∈ [0, 1]``, and a linear layer maps the
intervals with midpoint-radius arithmetic (radius through ``|W|``). This script re-derives
those slope intervals layer by layer (by hand, the same arithmetic as the engine's) and
compares three ways of carrying them:

* ``interval``: midpoint-radius at every layer (what the engine does);
* ``oracle crossings``: the same, but a unit counts as crossing only if it truly crosses
  (dense sampling of ``t``): how much the spurious crossings cost;
* ``affine``: one noise symbol ``ε ∈ [-1, 1]`` per crossing unit, carried exactly through the
  later linear layers (per sample, since a unit only affects its own sample), and turned into
  an interval only at the logits: how much the wrapping ``|W_2||W_1| ≥ |W_2 W_1|`` costs.

Each row gives the units flagged as crossing and the radius of the loss's slope interval at the
logits (``Σ |∂L/∂z| · radius(z)``, ``∂L/∂z`` at ``t = 0``: an indicator of the bound's width,
not a bound), beside the exact slope ``h'(0)``. Usage:

  python benchmarks/relu_slope_wrapping.py --data ../shared/data/fashion-mnist   # ~1 minute
  python benchmarks/relu_slope_wrapping.py --quick                                 # seconds
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from problems import mlp
from saferate_vs_adam import load


def _preactivations(params, direction, x, t):
    h, out = x, []
    for i, (layer, d) in enumerate(zip(params, direction, strict=True)):
        z = h @ (layer["w"] + t * d["w"]) + layer["b"] + t * d["b"]
        out.append(z)
        if i < len(params) - 1:
            h = jax.nn.relu(z)
    return out


def slope_radii(params, direction, x, labels, region, symbols=32):
    """Radius of the loss's slope interval for the three ways of carrying the slopes."""
    true_z = jax.vmap(lambda t: _preactivations(params, direction, x, t))(
        jnp.linspace(0.0, region, 65)
    )
    results = {}
    for mode in ("interval", "oracle crossings", "affine"):
        n = x.shape[0]
        h0 = x
        mid = jnp.zeros_like(x)
        box = jnp.zeros_like(x)  # slope radius not tracked by a symbol
        gens = jnp.zeros((n, symbols, x.shape[1]))  # per-sample generators (affine only)
        used = jnp.zeros(n, int)
        flagged = []
        for i, (layer, d) in enumerate(zip(params, direction, strict=True)):
            w, dw = layer["w"], d["w"]
            u0 = h0 @ w + layer["b"]
            m = mid @ w + h0 @ dw + d["b"]
            slope_radius = jnp.sum(jnp.abs(gens), 1) + box
            # (h0 + S t)(W + t D): the t² term S·D folded into the slope over [0, T]
            cross_term = region * (slope_radius @ jnp.abs(dw) + jnp.abs(mid @ dw))
            box = box @ jnp.abs(w) + cross_term
            gens = gens @ w
            radius = jnp.sum(jnp.abs(gens), 1) + box
            if i == len(params) - 1:
                break
            lo, hi = m - radius, m + radius
            reach_lo = u0 + jnp.minimum(0.0, lo * region)
            reach_hi = u0 + jnp.maximum(0.0, hi * region)
            if mode == "oracle crossings":
                z = true_z[i]
                on, crossing = z.min(0) >= 0, (z.min(0) < 0) & (z.max(0) > 0)
            else:
                on, crossing = reach_lo >= 0, (reach_lo < 0) & (reach_hi > 0)
            flagged.append(int(crossing.sum()))
            # σ·S with σ ∈ [0, 1]: the hull of 0 and S, centre c and radius r.
            a, b = jnp.minimum(0.0, lo), jnp.maximum(0.0, hi)
            c, r = (a + b) / 2, (b - a) / 2
            mid = jnp.where(on, m, jnp.where(crossing, c, 0.0))
            if mode == "affine":
                gens = jnp.where(on[:, None, :], gens, 0.0)
                box = jnp.where(on, box, 0.0)
                slot = jnp.cumsum(crossing, axis=1) - 1 + used[:, None]
                fits = crossing & (slot < symbols)
                new = jax.nn.one_hot(jnp.where(fits, slot, -1), symbols) * r[..., None]
                gens = gens + jnp.swapaxes(new, 1, 2)
                box = box + jnp.where(crossing & ~fits, r, 0.0)
                used = used + crossing.sum(1)
            else:  # all of it as a box: midpoint-radius through |W| from here on
                box = jnp.where(on, radius, jnp.where(crossing, r, 0.0))
                gens = jnp.zeros_like(gens)
            h0 = jax.nn.relu(u0)
        weights = (jax.nn.softmax(u0) - jax.nn.one_hot(labels, u0.shape[1])) / n
        per_logit = jnp.abs(jnp.einsum("nc,nkc->nk", weights, gens)).sum() + jnp.sum(
            jnp.abs(weights) * box
        )
        results[mode] = (flagged, float(per_logit))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Fashion-MNIST IDX directory")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--regions", default="1e-6,1e-5,1e-4")
    parser.add_argument("--quick", action="store_true", help="200 images, T = 1e-4 only")
    args = parser.parse_args()
    if args.quick:
        args.count, args.regions = 200, "1e-4"
    jax.config.update("jax_enable_x64", True)
    images, labels, source = load(args.data, args.count)
    loss, params = mlp([128] * 4, jax.nn.relu, "ce", images, labels)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x = jnp.asarray(images.reshape(len(images), -1), jnp.float64)
    y = jnp.asarray(labels)
    grads = jax.grad(loss)(params)
    adam = optax.adam(1.0)
    direction, _ = adam.update(grads, adam.init(params), params)

    def line(t):
        return loss(jax.tree.map(lambda p, d: p + t * d, params, direction))

    print(f"MLP 4x128 relu, {args.count} images ({source}), Adam's first direction;")
    print(f"exact slope h'(0) = {float(jax.grad(line)(0.0)):.1f}\n")
    print("| T | carried as | units flagged crossing, layers 1-4 | slope radius at the logits |")
    print("|---|---|---|---|")
    for region in (float(r) for r in args.regions.split(",")):
        for mode, (flagged, radius) in slope_radii(params, direction, x, y, region).items():
            counts = " / ".join(str(f) for f in flagged)
            print(f"| {region:.0e} | {mode} | {counts} | {radius:.4g} |")


if __name__ == "__main__":
    main()
