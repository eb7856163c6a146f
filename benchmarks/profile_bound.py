"""Where a bound pass spends its time: the XLA kernels of one jitted call, slowest first.

Profiles the bound pass of ``compare_autobound.py``'s softplus + squared-error MLP (or, with
``--step``, a whole SafeRate(Adam) training step of ``step_time.py``'s relu MLP) with
``jax.profiler`` and prints each XLA kernel's time per call, its output shape and its largest
operations, so that a change to a rule can be judged by the passes it adds or removes:

  python benchmarks/profile_bound.py [--depth 1 --width 1000 --inputs 10000] [--step [--adam]]
      [--top 25] [--timeline [--shortest 0.3]] [--data ../shared/data/fashion-mnist]

``--adam`` profiles the plain Adam step instead (the baseline of ``--step``). ``--timeline``
also prints when each kernel of one call started and ended, which shows the critical path
(kernels run concurrently where the graph allows, so the per-kernel times add up to more than
the wall time; some library matmuls run outside the traced kernels and show as gaps).

It also prints the minor page faults per call: XLA's CPU runtime maps a fresh block for each
call's temporaries, and the first kernel to touch each page pays for it, so a kernel can look
slow only because it is the first to write an activation-sized slot (about 13 ms per
``10,000 × 1000`` float32 slot on the development machine). On a CPU, every kernel that writes
such an array costs about 10 ms besides.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import resource
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import step_time
from compare_autobound import bound_fn
from compare_autobound import mlp_direction_loss
from problems import mlp

import optax_saferate as osr
from optax_saferate import autobound as ab


def bound_call(depth, width, inputs):
    h, data = mlp_direction_loss(depth, width, inputs, jnp.float32)
    return bound_fn(ab, h, jnp.float32), (jnp.float32(1.0), data)


def step_call(width, inputs, data, adam=False):
    images, labels, _ = step_time.load_images(data, inputs)
    loss, params = mlp([width], jax.nn.relu, "ce", images, labels)
    tx = optax.adam(1e-3) if adam else osr.saferate(optax.adam(1.0))
    return step_time.make_step(tx, loss), (params, tx.init(params))


def kernel_summaries(compiled_text: str) -> dict[str, str]:
    """``{kernel name: "shape  op×count ..."}`` for the fusions of the entry computation."""
    bodies = {
        m.group(1): m.group(2)
        for m in re.finditer(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", compiled_text, re.S)
    }
    summaries = {}
    entry = compiled_text[compiled_text.index("ENTRY") :]
    for line in entry.splitlines():
        m = re.match(r"\s*%?([\w.\-]+) = (\S+) (\w+)\(", line)
        if not m:
            continue
        name, shape, kind = m.groups()
        called = re.search(r"calls=%?([\w.\-]+)", line)
        body = bodies.get(called.group(1), "") if called else ""
        ops = collections.Counter(re.findall(r"= \S+ ([\w\-]+)\(", body))
        for boring in ("parameter", "constant", "broadcast", "bitcast"):
            ops.pop(boring, None)
        top = " ".join(f"{op}×{n}" for op, n in ops.most_common(6)) or kind
        summaries[name] = f"{shape.split('{')[0]}  {top}"
    return summaries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--inputs", type=int, default=10000)
    parser.add_argument("--step", action="store_true", help="a SafeRate(Adam) relu MLP step")
    parser.add_argument("--adam", action="store_true", help="with --step: the plain Adam step")
    parser.add_argument("--timeline", action="store_true", help="kernel start/end of one call")
    parser.add_argument(
        "--shortest", type=float, default=0.3, help="timeline: leave out kernels under this (ms)"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--data",
        default="../shared/data/fashion-mnist",
        help="Fashion-MNIST IDX directory for --step (random pixels if absent)",
    )
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    if args.step:
        fn, call_args = step_call(args.width, args.inputs, args.data, args.adam)
    else:
        fn, call_args = bound_call(args.depth, args.width, args.inputs)
    summaries = kernel_summaries(fn.lower(*call_args).compile().as_text())
    for _ in range(2):
        jax.block_until_ready(fn(*call_args))
    faults = minor_faults()
    for _ in range(args.calls):
        jax.block_until_ready(fn(*call_args))
    faults = (minor_faults() - faults) / args.calls
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(args.calls):
                jax.block_until_ready(fn(*call_args))
        trace_file = next(Path(directory).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace_file))["traceEvents"]
    kernels = [e for e in events if e.get("ph") == "X" and e.get("name") in summaries]
    totals = collections.Counter()
    for event in kernels:
        totals[event["name"]] += event["dur"] / 1e3 / args.calls
    print("| kernel | ms per call | output and largest ops |\n|---|---|---|")
    for name, ms in totals.most_common(args.top):
        print(f"| {name} | {ms:.2f} | {summaries[name]} |")
    print(f"\n{len(totals)} kernels, {sum(totals.values()):.1f} ms in all per call")
    mib = faults * 4096 / 2**20
    print(f"{faults:.0f} minor page faults per call ({mib:.0f} MiB of 4 KiB pages)")
    if args.timeline:
        print_timeline(kernels, summaries, args.shortest)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def print_timeline(kernels, summaries, shortest_ms=0.3):
    """Start and end (ms) of the last traced call's kernels that ran ``shortest_ms`` or more."""
    by_start = sorted(kernels, key=lambda e: e["ts"])
    # Kernel names are unique within a compiled module, so the last call starts at the last
    # occurrence of the first kernel to run.
    first = by_start[0]["name"]
    starts = [i for i, e in enumerate(by_start) if e["name"] == first]
    last_call = by_start[starts[-1] :]
    origin = last_call[0]["ts"]
    print("\n| start (ms) | end (ms) | kernel | output and largest ops |\n|---|---|---|---|")
    for event in last_call:
        if event["dur"] / 1e3 >= shortest_ms:
            start = (event["ts"] - origin) / 1e3
            end = start + event["dur"] / 1e3
            print(f"| {start:.1f} | {end:.1f} | {event['name']} | {summaries[event['name']]} |")


if __name__ == "__main__":
    main()
