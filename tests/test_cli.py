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


def table_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "×" in line
    ]


def test_bench_prints_times_and_ratios():
    result = run(
        "bench",
        "--cases",
        "D",
        "--variants",
        "plain,renorm",
        "--modes",
        "inference",
        "--rounds",
        "1",
        "--min-time",
        "0.01",
        "--no-tf",
        "--memory",
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    impls = {r[2] for r in rows if len(r) == 7}
    assert {"ours plain", "ours renorm", "torch F.batch_norm", "torch nn.BatchNorm"} <= impls, rows
    for r in rows:
        if len(r) == 7:
            assert float(r[3]) > 0 and float(r[4].rstrip("×")) > 0
    memory = [r for r in rows if len(r) == 4]
    assert {r[1] for r in memory} == {"plain", "renorm", "vbs=8"}


def test_bench_sync_runs_two_gloo_processes():
    result = run("bench", "--sync", "2", "--cases", "C", "--rounds", "1", "--min-time", "0.01")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [r[:2] for r in rows] == [["C", "train_fwd"], ["C", "train_fwd_bwd"]]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
