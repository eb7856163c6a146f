"""The examples run as written and report what they claim (each in a subprocess, Agg backend)."""

import math
import re

from run_scripts import ROOT
from run_scripts import run_python


def run_example(name: str, *argv: str) -> str:
    return run_python(ROOT / "examples" / name, *argv, cwd=ROOT, timeout=300, MPLBACKEND="Agg")


def test_integrate_example_prints_an_interval_that_contains_the_integral(tmp_path):
    out = tmp_path / "integrate.png"
    output = run_example("integrate.py", "--out", str(out), "--width", "1e-6")
    match = re.search(r"∈ \[([-\d.]+), ([-\d.]+)\]: width ([\d.e+-]+) .*?, (\d+) cells", output)
    assert match, output
    lower, upper, width = (float(match.group(i)) for i in (1, 2, 3))
    exact = 0.5 * (math.e**3 - 1) - 25 / 3
    assert lower <= exact <= upper and width <= 1e-6, output
    assert "inside" in output and int(match.group(4)) > 1, output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
