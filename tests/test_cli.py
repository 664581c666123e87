"""The command line runs end to end in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batchnorm", *args], capture_output=True, text=True, timeout=120
    )


def test_demo_trains_and_reports_accuracy():
    result = run("demo", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", result.stdout, re.M)
    assert [int(r[0]) for r in rows] == [1, 2]
    assert float(rows[-1][3]) > 0.8  # digits is easy: a working BN MLP gets there in 2 epochs


def test_info_and_bad_arguments():
    result = run("info")
    assert result.returncode == 0 and "batchnorm" in result.stdout and "torch" in result.stdout
    bad = run("demo", "--epochs", "0")
    assert bad.returncode != 0 and "--epochs" in bad.stderr
    assert run("nope").returncode != 0
