"""The interface every backend provides, over one description of the work.

A backend runs the layer's passes on some kind of tensor: the C kernels on CPU tensors,
PyTorch operations anywhere, later Triton kernels on CUDA. It sees a ``Geometry`` (how
the input maps to per-channel statistics: axes, ghost-batch view, counts) and a ``Plan``
(the geometry plus epsilon, renorm, adjustment and the moving statistics to update);
layers, arguments and checks stay outside.

Both passes are differentiable (their backward is the backend's own, analytic: one
reduce pass ``Σdy, Σdy·(x − μ)`` and one ``dx`` pass), and a double backward
differentiates the composite formula. The training pass computes, per channel,

    μ, σ² (biased);  y = (x − μ)·k + o,  k = γ·slope/√(σ² + ε),  o = intercept·γ + β

with ``slope``/``intercept`` folding renorm's r, d and the adjustment, and returns the
batch mean and variance it fed (or will feed) the moving averages.
"""

from __future__ import annotations

import abc
from typing import Any

import torch

__all__ = ["FORCED", "SHORT", "Backend", "BackendError", "ShortCache", "ShortCalls"]

# The name of the backend in force on top (``BATCHNORM_BACKEND``, ``backends.use``);
# a backend may read it (the Triton one takes CPU tensors in its interpreter only when forced).
FORCED: list[str | None] = [None]


class BackendError(RuntimeError):
    """A forced backend (``BATCHNORM_BACKEND``, ``batchnorm.backends.use``) cannot take a
    call; the message names the backend and why."""


class Backend(abc.ABC):
    """One way to run the passes. ``name`` is what ``BATCHNORM_BACKEND`` and
    ``backends.use`` take; ``traceable`` backends run as PyTorch operations, which
    ``torch.compile``, ``torch.jit.trace`` and ``torch.func`` can see through."""

    name: str = ""
    takes: str = ""  # what it takes, and what it leaves to others (``info`` prints it)
    traceable: bool = False
    max_examples: int | None = None  # property tests' examples here (an interpreter caps them)
    # Whether ``train`` takes a mask's weights (``plan.weights``): weighted moments, and
    # the weights' term in the input gradient. Masked calls on other backends run the
    # composite formula as PyTorch operations.
    weighted: bool = False

    def compiles(self, x: torch.Tensor, geo: Any = None) -> bool:
        """Whether ``torch.compile`` (not ``torch.export``) can trace this backend's
        training pass on ``x`` laid out as ``geo`` (its kernels as custom operators;
        ``geo`` None: on ``x``'s device at all); the others leave a compiled call to the
        traceable backend."""
        return False

    def unavailable(self) -> str | None:
        """Why the backend cannot run in this process (None: it can)."""
        return None

    @abc.abstractmethod
    def supports(self, x: torch.Tensor, geo: Any) -> str | None:
        """Why the backend cannot take ``x`` laid out as ``geo`` (None: it can)."""

    @abc.abstractmethod
    def train(
        self, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Any
    ) -> tuple[torch.Tensor, Any, bool]:
        """The training pass on ``x`` (its dense memory, read through ``plan.geo``):
        ``y`` in ``x``'s shape; the batch mean and biased variance pooled over ghost
        batches in parameter order (a pair of float64 vectors, or packed as the first
        ``2·P`` entries of one float64 vector; weighted, a triple that adds the variance
        with Bessel's factor ``Σw/max(Σw − 1, 1)`` applied per ghost batch before
        pooling); and whether ``plan.moving`` was updated
        in place (a backend may do it inside its passes; ``functional.update_moving``
        is the definition it is tested against)."""

    @abc.abstractmethod
    def infer(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        plan: Any,
    ) -> torch.Tensor:
        """The inference pass ``y = (x − mean)·γ/√(var + ε) + β`` with given statistics,
        all in parameter layout; differentiable in x, γ and β."""

    # The pieces synchronized statistics combine around their collectives (no autograd;
    # per-channel tensors are stat-shaped, float64 unless said otherwise).
    @abc.abstractmethod
    def moments(self, x: torch.Tensor, geo: Any) -> tuple[torch.Tensor, ...]:
        """This process's per-channel count, mean and sum of squared deviations
        ``(n, μ, M2)`` of a non-empty ``x``."""

    @abc.abstractmethod
    def normalize(
        self,
        x: torch.Tensor,
        mean: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        geo: Any,
    ) -> torch.Tensor:
        """``y = (x − μ)·k + o`` with per-channel ``μ``, ``k``, ``o``; y in x's dtype."""

    @abc.abstractmethod
    def grad_sums(
        self, dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, geo: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's per-channel ``Σdy`` and ``Σdy·(x − μ)``."""

    @abc.abstractmethod
    def input_grad(
        self,
        dy: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        k: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        geo: Any,
    ) -> torch.Tensor:
        """``dx = (dy − k₁ − (x − μ)·k₂)·k₃`` with per-channel ``k``; dx in x's dtype."""


class ShortCalls:
    """A backend's per-layout short call of a built layer (what makes a small call cost
    microseconds): ``call(layer, x, kwargs)`` returns the output, or None when the
    general path must run; ``infer``, when set, is a faster one for inference calls
    (C++). Both cache ``select``'s choice of that backend per input layout, so they are
    off (``enabled`` False) while another backend is forced."""

    __slots__ = ("call", "enabled", "infer")

    def __init__(self) -> None:
        self.enabled = True
        self.call: Any = None
        self.infer: Any = None


SHORT = ShortCalls()


class ShortCache(dict):
    """A layer's short-call entries by input layout (kept on the layer); copied and
    pickled empty (they hold a backend's views of memory, worked out again by a copy's
    first calls)."""

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return ShortCache, ()

    def __deepcopy__(self, memo: dict[int, Any]) -> ShortCache:
        return ShortCache()
