"""Where the Triton backend overtakes PyTorch operations (part of ``gpu_check.sh``).

For (N, 64, 56, 56) float32 inputs, NCHW and channels_last, N from 8 to 256: the layer's
training step (forward + backward) and inference call forced onto each backend, and
``F.batch_norm``, timed with CUDA events (median of 5 rounds). Then a host profile of
the Triton backend's training forward on case C (what a small call spends on the CPU).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics

import torch
import torch.nn.functional as F

from batchnorm import BatchNormalization, backends
from batchnorm.bench import _timed


def _time(fn, calls: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    return statistics.median(_timed(fn, calls, torch.cuda.synchronize, True) for _ in range(5))


def _cases():
    for n in (8, 32, 128, 256):
        for fmt in ("nchw", "channels_last"):
            x = torch.randn(n, 64, 56, 56, device="cuda") * 2 + 0.5
            if fmt == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            yield f"({n}, 64, 56, 56) {fmt}", x


def _rows(label: str, x: torch.Tensor) -> None:
    layer = BatchNormalization(axis=1).cuda()
    layer(x[:2], training=False)
    w, b = torch.ones(64, device="cuda"), torch.zeros(64, device="cuda")
    rm, rv = torch.zeros(64, device="cuda"), torch.ones(64, device="cuda")
    xg = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    calls = {
        "train_fwd_bwd": (
            lambda: F.batch_norm(xg, rm, rv, w, b, True).backward(dy),
            lambda: layer(xg, training=True).backward(dy),
        ),
        "inference": (
            lambda: F.batch_norm(x, rm, rv, w, b, False),
            lambda: layer(x, training=False),
        ),
    }
    for mode, (ref, ours) in calls.items():
        t_ref = _time(ref)
        ratios = []
        for name in ("torch", "triton"):
            with backends.use(name):
                ratios.append(_time(ours) / t_ref)
        print(f"| {label} | {mode} | {t_ref:.3f} | {ratios[0]:.2f}× | {ratios[1]:.2f}× |")


def main() -> None:
    print("| input | mode | F.batch_norm ms | torch backend ÷ F | triton backend ÷ F |")
    print("|---|---|---|---|---|")
    for label, x in _cases():
        _rows(label, x)
    x = torch.randn(32, 64, 56, 56, device="cuda")
    layer = BatchNormalization(axis=1).cuda()
    layer(x, training=False)
    with backends.use("triton"), torch.no_grad():
        for _ in range(5):
            layer(x, training=True)
        torch.cuda.synchronize()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(50):
            layer(x, training=True)
        torch.cuda.synchronize()
        profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
