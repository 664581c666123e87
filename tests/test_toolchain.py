"""The native build's one place (``backends/c/toolchain.py``): a C compiler that fails
leaves its message next to where the library would be, later processes do not run the
same build again and say why (the layer runs on PyTorch operations with the same
numbers), and deleting the message retries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STEP = """
import torch, batchnorm
from batchnorm.backends.c import build
x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]], dtype=torch.float64)
y = batchnorm.BatchNormalization()(x, training=True)
want = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-3)
print(float((y - want).abs().max()) < 1e-12, build.status(), sep="|")
"""


def _run(tmp_path: Path) -> tuple[str, str]:
    env = {
        **os.environ,
        "CC": str(tmp_path / "cc"),
        "BATCHNORM_CACHE_DIR": str(tmp_path / "cache"),
        "BATCHNORM_CPP": "0",  # (no C++ build in these processes)
    }
    env.pop("BATCHNORM_NATIVE", None)
    result = subprocess.run(
        [sys.executable, "-c", STEP], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ok, status = result.stdout.strip().split("|", 1)
    assert ok == "True"
    return ok, status


@pytest.mark.skipif(sys.platform.startswith("win"), reason="no C kernels on Windows")
def test_a_failed_c_build_leaves_its_message_and_is_not_rerun(tmp_path):
    compiler = tmp_path / "cc"
    runs = tmp_path / "runs"
    compiler.write_text(f"#!/bin/sh\necho run >> {runs}\necho 'cc: no such feature' >&2\nexit 1\n")
    compiler.chmod(0o755)
    _, status = _run(tmp_path)
    assert status.startswith("build or load failed") and "cc: no such feature" in status
    (marker,) = (tmp_path / "cache").glob("kernels-*.failed")
    assert "the compiler exited with 1: cc: no such feature" in marker.read_text()
    assert not list((tmp_path / "cache").glob("*.so"))  # (no temporary file left either)
    _, status = _run(tmp_path)
    assert status.startswith("build failed before (the compiler exited with 1")
    assert f"delete {marker} to retry" in status
    assert runs.read_text().count("run") == 1
    marker.unlink()
    _run(tmp_path)
    assert runs.read_text().count("run") == 2
