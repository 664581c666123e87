"""The code base stays lint-clean and exports only public names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import batchnorm

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names():
    assert all(not name.startswith("_") or name == "__version__" for name in batchnorm.__all__)
    for name in batchnorm.__all__:
        assert hasattr(batchnorm, name), name
