"""Run a repository script (a benchmark or an example) in a fresh Python, as a user would."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(script: Path, *argv: str, cwd: Path, timeout: int, **env: str) -> str:
    """``python script argv...`` with the repository importable; its stdout, or a failed test
    that shows the end of its stderr."""
    result = subprocess.run(
        [sys.executable, str(script), *argv],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
