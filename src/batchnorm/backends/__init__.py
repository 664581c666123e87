"""Backends: the registry, and ``select``, the one place a call's route is chosen.

Each call asks ``select(x, geo)`` once (one process can hold CPU and CUDA tensors):

1. while ``torch.compile``/``torch.export`` trace, ``torch.jit.trace`` records or a
   ``torch.func`` transform runs, a traceable backend (PyTorch operations), forced or
   not: the C kernels are invisible to tracers and read memory functorch's wrapped
   tensors lack. Only a training call under ``torch.compile`` (not ``torch.export``)
   goes to a backend whose ``compiles`` says it can (the Triton kernels as custom
   operators), forced or first in priority order;
2. a forced backend (``BATCHNORM_BACKEND=<name>``, read once at import, or the context
   manager ``batchnorm.backends.use(name)``), which raises ``BackendError`` naming
   itself and the reason when it cannot take the tensor;
3. otherwise the first registered backend, in priority order, that is available and
   supports the tensor.

A masked call asks ``select_weighted``: a backend with a weighted pass (the Triton one)
runs it; otherwise, like an adjustment that varies per example, it runs the composite
formula as PyTorch operations whatever the backend. Synchronized statistics combine the
selected backend's pieces where it has them.

``BATCHNORM_NATIVE=0`` makes the C backend unavailable and ``BATCHNORM_CPP=0`` switches
its C++ autograd nodes off, as before. The C backend's per-layout short call (what
makes a small call cost microseconds) is a cache of this decision kept on the layer;
``short_calls()`` is False while a backend other than the C one is forced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from .base import FORCED, SHORT, Backend, BackendError, ShortCache
from .c import CBackend
from .torch_ops import TorchBackend
from .triton import TritonBackend

__all__ = [
    "SHORT",
    "Backend",
    "BackendError",
    "ShortCache",
    "compiled_kernels",
    "describe",
    "get",
    "names",
    "register",
    "select",
    "select_weighted",
    "status",
    "use",
]

_REGISTRY: dict[str, Backend] = {}
_ORDER: list[Backend] = []  # priority order
_forced = FORCED  # the override in force (a stack for ``use``)


def register(backend: Backend, priority: int) -> None:
    """Add ``backend``; ``select`` tries lower ``priority`` first."""
    if not backend.name or backend.name in _REGISTRY:
        raise ValueError(f"A backend needs a new name; received {backend.name!r}.")
    backend.priority = priority  # type: ignore[attr-defined]
    _REGISTRY[backend.name] = backend
    _ORDER.append(backend)
    _ORDER.sort(key=lambda b: b.priority)  # type: ignore[attr-defined]


def names() -> list[str]:
    """Every registered backend's name, in priority order."""
    return [b.name for b in _ORDER]


def get(name: str) -> Backend:
    """The backend called ``name`` (ValueError listing the names otherwise)."""
    backend = _REGISTRY.get(name)
    if backend is None:
        raise ValueError(f"Unknown backend {name!r}; the backends are {names()}.")
    return backend


def status() -> list[tuple[str, bool, str]]:
    """(name, available, why not) of every backend, in priority order."""
    rows = []
    for backend in _ORDER:
        reason = backend.unavailable()
        rows.append((backend.name, reason is None, reason or ""))
    return rows


def describe(name: str) -> str:
    """What backend ``name`` takes, and what it leaves to the others."""
    return get(name).takes


def tracing() -> bool:
    """Whether a tracer or transform sees this call (``torch.compile``/``torch.export``,
    ``torch.jit.trace``, ``torch.func``): only PyTorch operations are visible to them.
    Both ONNX exporters run the model under one of these."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch._C._are_functorch_transforms_active()
    )


def forced() -> str | None:
    """The name of the backend in force, if any."""
    return _forced[-1]


def short_calls() -> bool:
    """Whether the short calls may run (no other backend than their own is forced)."""
    return SHORT.enabled


def select(x: torch.Tensor, geo: Any) -> Backend:
    """The backend that runs this call (see the module docstring)."""
    if tracing():
        return _compiled(x, geo) or _traceable()
    name = _forced[-1]
    if name is not None:
        backend = _REGISTRY[name]
        reason = backend.unavailable() or backend.supports(x, geo)
        if reason is not None:
            raise BackendError(f"The forced backend {name!r} cannot take this call: {reason}.")
        return backend
    for backend in _ORDER:
        if backend.supports(x, geo) is None and backend.unavailable() is None:
            return backend
    raise BackendError(f"No backend takes a {x.dtype} tensor on {x.device}.")


def select_weighted(x: torch.Tensor, geo: Any) -> Backend | None:
    """The backend that runs a masked call (weighted moments), or None: the composite
    formula. A forced backend with a weighted pass raises ``BackendError`` when it cannot
    take the call, as ``select``; a forced one without leaves it to the composite, as
    masked calls always did; otherwise the first weighted backend that takes it."""
    if tracing():
        backend = _compiled(x, geo)
        return backend if backend is not None and backend.weighted else None
    name = _forced[-1]
    if name is not None:
        return select(x, geo) if _REGISTRY[name].weighted else None
    for backend in _ORDER:
        if backend.weighted and backend.supports(x, geo) is None and not backend.unavailable():
            return backend
    return None


def compiled_kernels(x: torch.Tensor) -> bool:
    """Whether a compiled call on ``x`` may run a backend's kernels (``Backend.compiles``
    on its device): what makes the training pass look past the composite formula."""
    return _compiled(x, None) is not None


def _compiled(x: torch.Tensor, geo: Any) -> Backend | None:
    """Under ``torch.compile``, the backend (forced, or the first in priority order) whose
    training pass compiles (``Backend.compiles``: the Triton kernels as custom operators),
    or None."""
    if not torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    if torch._C._are_functorch_transforms_active():
        return None
    name = _forced[-1]
    for backend in [_REGISTRY[name]] if name is not None else _ORDER:
        if backend.compiles(x, geo):
            return backend
    return None


def _traceable() -> Backend:
    for backend in _ORDER:
        if backend.traceable:
            return backend
    raise BackendError("No traceable backend is registered.")


def _force(name: str | None) -> None:
    _forced.append(name)
    SHORT.enabled = name in (None, "c")


@contextlib.contextmanager
def use(name: str | None) -> Iterator[Backend | None]:
    """Force backend ``name`` inside the block (nestable): every call raises
    ``BackendError`` when it cannot take the call, instead of choosing another.
    ``use(None)`` restores the default choice inside the block (a forced
    ``BATCHNORM_BACKEND`` or an outer ``use`` included)."""
    backend = None if name is None else get(name)
    _force(name)
    try:
        yield backend
    finally:
        _forced.pop()
        SHORT.enabled = _forced[-1] in (None, "c")


register(CBackend(), priority=10)
register(TritonBackend(), priority=20)
register(TorchBackend(), priority=100)
_ENV = os.environ.get("BATCHNORM_BACKEND") or None
if _ENV is not None:
    if _ENV not in _REGISTRY:  # fails at import rather than on some later call
        raise ValueError(
            f"BATCHNORM_BACKEND={_ENV!r} names no backend; the backends are {names()}."
        )
    _forced[0] = _ENV
    SHORT.enabled = _ENV == "c"
