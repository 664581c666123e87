"""The ``bench`` command line: its tables, round order, paired ratios, devices,
synchronized statistics, and the checks of its options."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from batchnorm import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batchnorm", *args], capture_output=True, text=True, timeout=180
    )


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


def test_bench_rounds_alternate_the_order_and_pair_the_ratios():
    """Every other round runs the implementations in reverse order; a ratio is the
    median over rounds of the two times of one round."""
    from batchnorm import bench

    log: list[str] = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    times = bench._measure(fns, rounds=4, min_time=1e-9)
    assert all(len(t) == 4 for t in times.values())
    # one warm-up and one sizing call each, then one call per round
    assert log[6:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    assert bench._ratio([2.0, 9.0, 3.0], [1.0, 10.0, 1.0]) == 2.0  # not 14 / 12


def test_bench_paired_gives_a_median_ratio_inside_its_interval():
    result = run(
        "bench",
        "--paired",
        "--cases",
        "D",
        "--modes",
        "inference",
        "--variants",
        "plain,float16",
        "--rounds",
        "5",
        "--min-time",
        "0.05",
    )
    assert result.returncode == 0, result.stderr
    rows = [r for r in table_rows(result.stdout) if r[0] == "D"]
    assert [r[2] for r in rows] == ["float32", "float16"]
    for r in rows:
        median = float(r[3].rstrip("×"))
        low, high = (float(v) for v in r[4].split("–"))
        assert 0 < low <= median <= high
        faster, total = (int(v) for v in r[5].split("/"))
        assert total == 5 and 0 <= faster <= 5
    bad = run("bench", "--paired", "--variants", "renorm", "--rounds", "1")
    assert bad.returncode == 2 and "--paired takes --variants" in bad.stderr


def test_bench_device_is_checked():
    """A device the benchmark cannot use is refused with an error naming ``--device``."""
    for device in ("cuda", "mps", "nonsense"):
        if device == "cuda" and torch.cuda.is_available():
            continue
        result = run("bench", "--cases", "D", "--device", device, "--no-tf")
        assert result.returncode == 2, (device, result.stdout, result.stderr)
        assert "--device" in result.stderr and device in result.stderr, result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_runs_on_cuda():
    result = run(
        "bench", "--cases", "C", "--variants", "plain,renorm,float16", "--rounds", "1",
        "--min-time", "0.01", "--device", "cuda", "--memory",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    impls = {r[2] for r in rows if len(r) == 7}
    assert {"ours plain", "ours renorm", "ours float16", "torch F.batch_norm"} <= impls, rows
    assert "device" in result.stdout.splitlines()[0]


def test_bench_sync_runs_two_gloo_processes():
    result = run("bench", "--sync", "2", "--cases", "C", "--rounds", "1", "--min-time", "0.01")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [r[:2] for r in rows] == [["C", "train_fwd"], ["C", "train_fwd_bwd"]]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


def test_bench_help_lists_the_valid_values(capsys):
    from batchnorm import bench

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for name, case in bench.CASES.items():
        assert f"{name} = {case.notes}" in text
    assert ", ".join(bench.VARIANTS) in text
    assert ", ".join(bench.MODES) in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "Z"], "--cases: unknown value 'Z'; choose among A, B, C, D"),
        (["--cases", "A,Q,X"], "--cases: unknown values 'Q', 'X'; choose among A, B, C, D"),
        (["--variants", "plain,fast"], "--variants: unknown value 'fast'; choose among plain,"),
        (["--modes", "train"], "--modes: unknown value 'train'; choose among train_fwd,"),
        (["--sync", "2", "--modes", "inference"], "choose among train_fwd, train_fwd_bwd"),
        (["--sync", "2", "--variants", "renorm"], "--variants does not apply"),
        (["--sync", "-1"], "--sync must be >= 1"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--paired", "--variants", "renorm"], "--paired takes --variants among plain,"),
    ],
)
def test_bench_refuses_bad_values_with_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("batchnorm bench: error: ")
    assert message in err.splitlines()[-1]


def test_bench_model_is_a_resnet18_step_with_both_batch_norms():
    """``--model``'s network has ResNet-18's 20 batch norms; after ``from_torch`` it
    computes what the ``nn.BatchNorm2d`` model computes (float64 reference: the torch
    model in float64), and a row of its table comes out for each precision."""
    from batchnorm import BatchNormalization, from_torch
    from batchnorm.bench_model import model_rows, resnet18

    torch.manual_seed(0)
    model = resnet18(classes=10)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 20
    ours = from_torch(model)
    assert sum(isinstance(m, BatchNormalization) for m in ours.modules()) == 20
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    want = model.double()(x.double())
    got = ours(x)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    rows = model_rows("cpu", batch=2, size=32, rounds=1, calls=1)
    assert [r.split("|")[1].strip() for r in rows] == ["float32", "bfloat16 autocast"]
    for r in rows:
        torch_ms, ours_ms, ratio = (float(c.strip().rstrip("×")) for c in r.split("|")[2:5])
        assert torch_ms > 0 and ours_ms > 0 and ratio > 0
    refused = run("bench", "--model")
    assert refused.returncode == 2 and "--model needs a CUDA --device" in refused.stderr


def test_bench_channels_last_case_keeps_its_memory_format():
    from batchnorm import bench

    assert bench.DEFAULT_CASES["cpu"] == ["A", "B", "C", "D"]
    assert set(bench.DEFAULT_CASES["cuda"]) == set(bench.CASES)
    case = bench.Case("x", (2, 3, 4, 4), 1, "channels_last")
    x = bench._input(case)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert bench._native_view(case, x) is x
