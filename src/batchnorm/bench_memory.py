"""Peak memory of one training step (``python -m batchnorm bench --memory``).

The extra memory a forward + backward needs beyond its output and its input gradient,
as a multiple of the input size, for our layer and for PyTorch's native batch norm. On
the CPU each is measured in a fresh process from the kernel's peak resident size; on a
CUDA device from PyTorch's allocator statistics.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch

from .bench import CASES, VARIANTS, Case, _input, _ours, _torch_functional


def _resident(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _training_step(case: Case, variant: str, impl: str, x: torch.Tensor) -> Callable[[], Any]:
    """A forward + backward closure of ``impl`` ("ours" or "torch") on ``x``."""
    if impl == "ours":
        return _ours(case, VARIANTS[variant], "train_fwd_bwd", x)
    return _torch_functional(case, "train_fwd_bwd", x)


def _memory_probe(case_name: str, variant: str, impl: str) -> float:
    """In a fresh process: resident bytes a training step (forward + backward) adds at
    its peak, beyond the output and the input gradient, as a multiple of the input."""
    case = CASES[case_name]
    x = _input(case)
    step = _training_step(case, variant, impl, x)
    step()
    step()
    step.input.grad = None  # type: ignore[attr-defined]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak resident size (VmHWM)
    base = _resident("VmRSS")
    step()
    return (_resident("VmHWM") - base) / (x.numel() * x.element_size()) - 2


def _cuda_peak_extra_memory(case_name: str, variant: str, device: str) -> tuple[float, float]:
    """``peak_extra_memory`` on a CUDA device, from PyTorch's allocator statistics."""
    case = CASES[case_name]
    x = _input(case, device=device)
    results = []
    for impl in ("ours", "torch"):
        step = _training_step(case, variant, impl, x)
        step()
        step.input.grad = None  # type: ignore[attr-defined]
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        results.append(peak / (x.numel() * x.element_size()) - 2)
        del step
    return results[0], results[1]


def peak_extra_memory(
    case_name: str, variant: str = "plain", device: str = "cpu"
) -> tuple[float, float]:
    """Peak resident memory of one training step beyond its output and input gradient,
    as a multiple of the input size: (ours, torch native). Each is measured in a fresh
    process with glibc's malloc returning every large block to the system
    (``MALLOC_MMAP_THRESHOLD_=65536``), so the peak resident size counts every byte the
    step touches; ``/proc/self/clear_refs`` resets the peak before the step (Linux). On
    a CUDA ``device``: from PyTorch's allocator statistics, in this process."""
    if torch.device(device).type == "cuda":
        return _cuda_peak_extra_memory(case_name, variant, device)

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    results = []
    for impl in ("ours", "torch"):
        code = (
            "from batchnorm.bench_memory import _memory_probe; "
            f"print(_memory_probe({case_name!r}, {variant!r}, {impl!r}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        results.append(float(out.stdout.strip().splitlines()[-1]))
    return results[0], results[1]
