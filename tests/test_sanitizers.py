"""The C kernels built with AddressSanitizer and UndefinedBehaviorSanitizer
(``BATCHNORM_SANITIZE``, ``backends/c/toolchain.py``): the tests that run the kernels
(the conformance suite on every C route, the fast paths' tests with their property
tests and gradient checks, the autograd nodes' tests) pass against the instrumented
kernels in a process that loads the sanitizers' runtimes first, where any finding
aborts; a deliberately out-of-bounds call shows the instrumentation is live. The
instrumented build takes about a minute, once per machine (cached like the others)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KERNEL_TESTS = [
    "tests/test_conformance.py",
    "tests/test_fast_paths.py",
    "tests/test_gradients.py",
    "tests/test_layouts.py",
    "tests/test_16bit.py",
    "tests/test_c_rows.py",
    "tests/test_autograd_node.py",
    "tests/test_cpp_module.py",
]
OVERFLOW = """
import ctypes, torch
from batchnorm.backends.c import build
lib = build.library()
assert lib is not None, build.status()
x = torch.zeros(4)  # four values, read as eight below
dims = (ctypes.c_int64 * 5)(1, 1, 8, 1, 1)
strides = (ctypes.c_int64 * 5)(0, 0, 1, 0, 0)
mean, var = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
lib.bn_stats_f32(x.data_ptr(), dims, strides, mean.data_ptr(), var.data_ptr(), 1)
print("not detected")
"""


def _runtimes() -> list[str]:
    compiler = shutil.which(os.environ.get("CC", "cc") or "cc")
    if compiler is None or not sys.platform.startswith("linux"):
        return []
    found = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run(
            [compiler, f"-print-file-name={name}"], capture_output=True, text=True
        ).stdout.strip()
        if not os.path.isabs(path) or not Path(path).exists():
            return []
        found.append(path)
    return found


def _env() -> dict[str, str]:
    runtimes = _runtimes()
    if not runtimes:
        pytest.skip("no C compiler with AddressSanitizer and UBSan runtimes on this system")
    env = {
        **os.environ,
        "LD_PRELOAD": " ".join(runtimes),
        "ASAN_OPTIONS": "detect_leaks=0",  # (Python's allocations are not leaks to report)
        "UBSAN_OPTIONS": "print_stacktrace=1",
        "BATCHNORM_SANITIZE": "address,undefined",
    }
    env.pop("BATCHNORM_NATIVE", None)
    return env


@pytest.mark.skipif(os.environ.get("BATCHNORM_NATIVE", "1") == "0", reason="C kernels disabled")
def test_the_instrumentation_catches_an_out_of_bounds_read():
    result = subprocess.run(
        [sys.executable, "-c", OVERFLOW], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0 and "not detected" not in result.stdout, result.stdout
    assert "AddressSanitizer: heap-buffer-overflow" in result.stderr, result.stderr[-2000:]
    # the report names the kernel's own line (stats.h, not a macro's expansion site)
    assert re.search(r"kernels/stats\.h:\d+", result.stderr), result.stderr[-2000:]


@pytest.mark.skipif(os.environ.get("BATCHNORM_NATIVE", "1") == "0", reason="C kernels disabled")
def test_the_kernel_tests_pass_under_address_and_undefined_behaviour_sanitizers():
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    command += [*KERNEL_TESTS, "-k", "not triton"]
    result = subprocess.run(
        command, cwd=root, env=_env(), capture_output=True, text=True, timeout=1200
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Sanitizer" not in output and "runtime error:" not in output, output[-4000:]
    assert " passed" in result.stdout
