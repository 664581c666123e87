"""Benchmarks: batchnorm against PyTorch's native batch norm, a plain copy and tf_keras.

Every implementation of a case and mode runs in each of several interleaved rounds in
one process. A timing is the median over rounds, in milliseconds; a ratio is the median
over rounds of the two times of one round (drift of a shared host cancels; every other
round runs in reverse order), and implementations on the same dtype read the same input
tensor: to a ``y.copy_(x)`` of the same tensor (the memory traffic unit: inference needs ≥ 1.0×, a
training forward ≥ 1.5×, forward + backward ≈ 4×), to PyTorch's native kernel on the
same data, and to our own plain path. Run ``python -m batchnorm bench`` (or ``python
benchmarks/run.py``); preload tcmalloc for stable numbers (see ``benchmarks/RESULTS.md``).
The command line is ``bench_cli.py``; ``--paired`` is ``bench_paired.py``, ``--memory``
``bench_memory.py`` and ``--sync WORLD`` (synchronized statistics) ``bench_sync.py``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as TF

from .normalization import BatchNormalization

MODES = ("train_fwd", "train_fwd_bwd", "inference")


@dataclass
class Case:
    name: str
    shape: tuple[int, ...]
    axis: int
    layout: str  # "dense" (channel last, 2-D), "nhwc", "nchw", "channels_last" (NCHW shape)
    multi_axis: list[int] | None = None
    notes: str = ""


CASES = {
    "A": Case("A", (256, 1024), -1, "dense", None, "(256, 1024), axis -1"),
    "B": Case("B", (32, 56, 56, 64), -1, "nhwc", [2, 3], "(32, 56, 56, 64) NHWC, axis -1"),
    "C": Case("C", (32, 64, 56, 56), 1, "nchw", [1, 2], "(32, 64, 56, 56) NCHW, axis 1"),
    "D": Case("D", (4096, 64), -1, "dense", None, "(4096, 64) tabular, axis -1"),
    "E": Case("E", (128, 256, 56, 56), 1, "nchw", [1, 2], "(128, 256, 56, 56) NCHW, axis 1"),
    "F": Case(
        "F", (128, 256, 56, 56), 1, "channels_last", [1, 2], "E in channels_last memory, axis 1"
    ),
    "G": Case("G", (16384, 4096), -1, "dense", None, "(16384, 4096), axis -1"),
}
DEFAULT_CASES = {  # what ``bench`` measures unless told, per device type
    "cpu": ["A", "B", "C", "D"],
    "cuda": ["E", "F", "G", "A", "B", "C", "D"],  # E–G: GPU-sized (411 MB and 268 MB)
}

VARIANTS = {
    "plain": {},
    "renorm": {"renorm": True, "renorm_clipping": {"rmin": 1 / 3, "rmax": 3.0, "dmax": 5.0}},
    "vbs=8": {"virtual_batch_size": 8},
    "adjustment": {"adjustment": "per-channel"},
    "multi-axis": {"axis": "multi"},
    "frozen": {"trainable": False},
    "float16": {"dtype": torch.float16},
    "bfloat16": {"dtype": torch.bfloat16},
}


@dataclass
class Row:
    case: str
    mode: str
    impl: str
    ms: float
    copy: float  # ÷ copy
    ref: dict[str, float] = field(default_factory=dict)


def _measure(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    min_time: float,
    sync: Callable[[], Any] = lambda: None,
    events: bool = False,
) -> dict[str, list[float]]:
    """Time per call (ms) of every closure in each of ``rounds`` interleaved rounds.

    Each round runs every closure for about ``min_time / rounds`` seconds in turn,
    so drift of a shared machine affects all implementations of a round alike; every
    other round runs them in reverse order, so none always follows the same neighbour;
    ``sync`` waits for queued device work before a clock is read; with ``events`` (a
    CUDA device) CUDA events time the calls on the device instead.
    """
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    calls: dict[str, int] = {}
    for name, fn in fns.items():  # warm up, and size the batches
        fn()
        sync()
        once = max(_timed(fn, 1, sync, events) / 1e3, 1e-6)
        calls[name] = max(1, int(min_time / rounds / once))
    order = list(fns)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            per_call[name].append(_timed(fns[name], calls[name], sync, events))
    return per_call


def _timed(fn: Callable[[], Any], calls: int, sync: Callable[[], Any], events: bool) -> float:
    """Milliseconds per call over ``calls`` calls: CUDA events around them (``events``),
    else the host clock after ``sync``."""
    if events:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t0) / calls * 1e3


def _ratio(times: list[float], reference: list[float]) -> float:
    """The median over rounds of one round's time ÷ the reference's in the same round."""
    return statistics.median(t / r for t, r in zip(times, reference, strict=True))


def _sync(device: str) -> Callable[[], Any]:
    """What waits for queued device work before a clock is read (CUDA), else nothing."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None


def _input(case: Case, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    torch.manual_seed(0)
    x = (torch.randn(case.shape, device=device) * 2 + 0.5).to(dtype)
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _native_view(case: Case, x: torch.Tensor) -> torch.Tensor:
    """The same memory as PyTorch's (N, C, ...) layout: NHWC becomes a channels_last view."""
    if case.layout == "nhwc":
        return x.permute(0, 3, 1, 2)
    return x


def _from_native(case: Case, y: torch.Tensor) -> torch.Tensor:
    """Back to the case's own shape (a free view)."""
    return y.permute(0, 2, 3, 1) if case.layout == "nhwc" else y


def _channels(case: Case) -> int:
    return case.shape[case.axis]


def _step(
    module: Callable[..., torch.Tensor], x: torch.Tensor, mode: str, params: list[torch.Tensor]
) -> Callable[[], Any]:
    """A closure running one forward (and backward) the way a training loop does."""
    if mode == "inference":

        def run() -> Any:
            with torch.no_grad():
                return module(x, False)

        return run
    if mode == "train_fwd":

        def run() -> Any:
            with torch.no_grad():
                return module(x, True)

        return run
    xg = x.detach().requires_grad_(True)
    dy = torch.randn_like(x)

    def run() -> Any:
        xg.grad = None
        for p in params:
            p.grad = None
        module(xg, True).backward(dy)

    run.input = xg  # type: ignore[attr-defined]
    return run


def _ours(case: Case, variant: dict[str, Any], mode: str, x: torch.Tensor) -> Callable[[], Any]:
    kwargs = dict(variant)
    kwargs.pop("dtype", None)
    if kwargs.get("axis") == "multi":
        kwargs["axis"] = case.multi_axis
    else:
        kwargs["axis"] = case.axis
    if kwargs.get("adjustment") == "per-channel":
        c = _channels(case)
        view = [1] * len(case.shape)
        view[case.axis] = c
        view = view[1:] if case.axis != 0 else view
        a_s = torch.linspace(0.93, 1.07, c, device=x.device).reshape(view)
        a_b = torch.linspace(-0.1, 0.1, c, device=x.device).reshape(view)
        kwargs["adjustment"] = lambda shape: (a_s, a_b)
    layer = BatchNormalization(**kwargs)
    layer(x[:8], training=False)  # build
    params = [p for p in (layer.gamma, layer.beta) if p is not None and p.requires_grad]
    return _step(lambda t, training: layer(t, training=training), x, mode, params)


def _torch_functional(case: Case, mode: str, x: torch.Tensor) -> Callable[[], Any]:
    c = _channels(case)
    weight = torch.ones(c, device=x.device, requires_grad=True)
    bias = torch.zeros(c, device=x.device, requires_grad=True)
    running_mean, running_var = torch.zeros(c, device=x.device), torch.ones(c, device=x.device)

    def f(t: torch.Tensor, training: bool) -> torch.Tensor:
        y = TF.batch_norm(
            _native_view(case, t), running_mean, running_var, weight, bias, training, 0.01, 1e-3
        )
        return _from_native(case, y)

    return _step(f, x, mode, [weight, bias])


def _torch_module(case: Case, mode: str, x: torch.Tensor) -> Callable[[], Any]:
    c = _channels(case)
    module = (torch.nn.BatchNorm1d if len(case.shape) == 2 else torch.nn.BatchNorm2d)(
        c, eps=1e-3, momentum=0.01
    )
    module.to(x.device, x.dtype if x.dtype == torch.float64 else torch.float32)

    def f(t: torch.Tensor, training: bool) -> torch.Tensor:
        module.train(training)
        return _from_native(case, module(_native_view(case, t)))

    return _step(f, x, mode, list(module.parameters()))


def _tf_keras(case: Case, mode: str, x: torch.Tensor, variant: dict[str, Any]) -> Any:
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError:
        return None
    kwargs = {
        k: v for k, v in variant.items() if k in ("renorm", "renorm_clipping", "virtual_batch_size")
    }
    layer = tf_keras.layers.BatchNormalization(axis=case.axis, **kwargs)
    xt = tf.constant(x.numpy())
    layer(xt[:8], training=False)
    dy = tf.constant(torch.randn_like(x).numpy())
    if mode == "train_fwd_bwd":

        def run() -> Any:
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = layer(xt, training=True)
            return tape.gradient(y, [xt, *layer.trainable_weights], output_gradients=dy)

        return run
    training = mode == "train_fwd"
    return lambda: layer(xt, training=training)


def run(
    cases: list[str],
    variants: list[str],
    modes: list[str],
    rounds: int = 7,
    min_time: float = 1.0,
    with_tf: bool = True,
    device: str = "cpu",
) -> list[Row]:
    """Measure every case × mode × implementation on ``device``; returns the rows (also
    printed). tf_keras runs on the CPU only."""
    rows: list[Row] = []
    sync = _sync(device)
    with_tf = with_tf and torch.device(device).type != "cuda"
    for case_name in cases:
        case = CASES[case_name]
        for mode in modes:
            x = _input(case, device=device)
            out = torch.empty_like(x)
            fns: dict[str, Callable[[], Any]] = {"copy": lambda x=x, out=out: out.copy_(x)}
            fns["torch F.batch_norm"] = _torch_functional(case, mode, x)
            fns["torch nn.BatchNorm"] = _torch_module(case, mode, x)
            for name in variants:
                variant = VARIANTS[name]
                if name == "multi-axis" and case.multi_axis is None:
                    continue
                if name == "vbs=8" and mode == "inference":
                    continue  # inference with virtual batches is plain batch norm
                dtype = variant.get("dtype", torch.float32)
                # the same tensor as torch's where the dtype is the same: same data, same memory
                xv = x if dtype == torch.float32 else _input(case, dtype, device)
                fns[f"ours {name}"] = _ours(case, variant, mode, xv)
                if name in ("float16", "bfloat16"):
                    fns[f"torch F.batch_norm {name}"] = _torch_functional(case, mode, xv)
                if with_tf and name in ("plain", "renorm", "vbs=8"):
                    fn = _tf_keras(case, mode, x, variant)
                    if fn is not None:
                        fns[f"tf_keras {name}"] = fn
            events = torch.device(device).type == "cuda"
            timings = _measure(fns, rounds, min_time * len(fns) / 4, sync, events)
            copy = timings.pop("copy")
            for impl, times in timings.items():
                row = Row(case_name, mode, impl, statistics.median(times), _ratio(times, copy))
                torch_ref = "torch F.batch_norm"
                for dtype_name in ("float16", "bfloat16"):
                    if impl.endswith(dtype_name):
                        torch_ref = f"torch F.batch_norm {dtype_name}"
                row.ref["torch"] = _ratio(times, timings[torch_ref])
                if "ours plain" in timings:
                    row.ref["plain"] = _ratio(times, timings["ours plain"])
                rows.append(row)
                print(_format(row), flush=True)
            gc.collect()
    return rows


def _format(row: Row) -> str:
    return (
        f"| {row.case} | {row.mode} | {row.impl} | {row.ms:.3f} | {row.copy:.2f}× | "
        f"{row.ref.get('torch', float('nan')):.2f}× | {row.ref.get('plain', float('nan')):.2f}× |"
    )
