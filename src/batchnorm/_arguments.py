"""Argument checks of ``BatchNormalization``: the constructor's arguments, TF's rules for
``fused``, and the checks on values user callables return (initializers, adjustment)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import constraints as constraints_lib
from . import initializers as initializers_lib
from . import regularizers as regularizers_lib
from ._checks import (
    check_axis,
    check_bool,
    check_clipping,
    check_unit_interval,
    is_bool,
    is_number,
)
from ._utils import SIXTEEN_BIT, as_dtype

FUSED_RAW_AXES = (-4, -3, -1, 1, 3, 4)
GROUPINGS = ("strided", "contiguous")


def fused_problem(
    renorm: bool,
    axis: int | list[int],
    virtual_batch_size: int | None,
    adjustment: Any,
    dtype: torch.dtype | None,
) -> str | None:
    """Why TF's constructor refuses ``fused=True`` with these arguments (None: it does not)."""
    if renorm:
        return "Passing both `fused=True` and `renorm=True` is not supported"
    axes = [axis] if isinstance(axis, int) else axis
    if len(axes) > 1 or axes[0] not in FUSED_RAW_AXES:
        return (
            "Passing `fused=True` is only supported when axis is 1 or 3 for input rank = 4 "
            f"or 1 or 4 for input rank = 5. Got axis {axes}"
        )
    if virtual_batch_size is not None:
        return "Passing `fused=True` is not supported when `virtual_batch_size` is specified."
    if adjustment is not None:
        return "Passing `fused=True` is not supported when `adjustment` is specified."
    if dtype is not None and dtype not in (*SIXTEEN_BIT, torch.float32):
        return (
            "Passing `fused=True` is only supported when the compute dtype is float16, "
            f"bfloat16, or float32. Got dtype: {dtype}"
        )
    return None


@functools.lru_cache(maxsize=256)  # asked on every call of a layer with an adjustment
def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target`` (tuples or
    ``torch.Size``, which is one)."""
    offset = len(target) - len(shape)
    return offset >= 0 and all(n in (1, target[offset + i]) for i, n in enumerate(shape))


def is_complex(value: Any) -> bool:
    """Whether a tensor, array, number or nested list holds complex numbers."""
    if isinstance(value, torch.Tensor):
        return value.is_complex()
    try:
        return bool(np.iscomplexobj(value))
    except (TypeError, ValueError, RuntimeError):
        return False  # not convertible: the conversion that follows says so


def initial_value(
    initializer: Callable[..., Any], shape: tuple[int, ...], dtype: torch.dtype, argument: str
) -> torch.Tensor:
    """A fresh tensor from ``initializer(shape, dtype=dtype)``: real numbers of exactly
    ``shape``, cast to ``dtype`` (TypeError/ValueError naming ``argument`` otherwise)."""
    raw = initializer(shape, dtype=dtype)
    try:
        value = None if is_complex(raw) else torch.as_tensor(raw, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"`{argument}` must return a tensor or array of real numbers; returned "
            f"{type(raw).__name__}."
        ) from exc
    if value is None:
        raise TypeError(f"`{argument}` must return real numbers; returned complex values.")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"`{argument}` returned a value of shape {tuple(value.shape)}; "
            f"expected shape {tuple(shape)}."
        )
    # a copy: a callable that returns the same tensor twice must not alias two variables
    return value.detach().clone()


def resolve_fused(
    requested: bool | None, rank: int, axes: list[int], dtype: torch.dtype, config_axis: Any
) -> bool:
    """TF V2's build-time choice of the fused rules for a ``requested`` fused value (None,
    True, False); the only difference: fused=None never raises."""
    if requested is False:
        return False
    if dtype not in (*SIXTEEN_BIT, torch.float32):
        if requested:
            raise ValueError(
                "Passing `fused=True` is only supported when the compute dtype is float16, "
                f"bfloat16, or float32. Got dtype: {dtype}"
            )
        return False
    if rank not in (4, 5):
        if requested:
            raise ValueError(
                "Batch normalization layers with `fused=True` only support 4D or 5D input "
                f"tensors. Received tensor with rank {rank}."
            )
        return False
    if (rank == 4 and axes in ([1], [3])) or (rank == 5 and axes in ([1], [4])):
        return True
    if rank == 4 and requested:
        raise ValueError(
            "Unsupported axis. The use of `fused=True` is only possible with `axis=1` or "
            f"`axis=3` for 4D input tensors. Received: axis={config_axis}"
        )
    return False


def constructor_arguments(
    axis: Any,
    momentum: Any,
    epsilon: Any,
    center: Any,
    scale: Any,
    beta_initializer: Any,
    gamma_initializer: Any,
    moving_mean_initializer: Any,
    moving_variance_initializer: Any,
    beta_regularizer: Any,
    gamma_regularizer: Any,
    beta_constraint: Any,
    gamma_constraint: Any,
    renorm: Any,
    renorm_clipping: Any,
    renorm_momentum: Any,
    fused: Any,
    virtual_batch_size: Any,
    adjustment: Any,
    synchronized: Any,
    process_group: Any,
    unbiased_moving_variance: Any,
    ghost_grouping: Any,
    check_numerics: Any,
    dtype: Any,
) -> dict[str, Any]:
    """Check every ``BatchNormalization`` argument (TypeError/ValueError naming it) and
    return them normalized, before the layer changes anything: a bad argument leaves no
    half-made layer and consumes no default name."""
    config_axis = check_axis(axis)
    momentum = check_unit_interval("momentum", momentum)
    if not is_number(epsilon) or isinstance(epsilon, torch.Tensor):
        raise TypeError(f"`epsilon` must be a float >= 0; received {epsilon!r}.")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"`epsilon` must be a finite float >= 0; received epsilon={epsilon!r}.")
    center = check_bool("center", center)
    scale = check_bool("scale", scale)
    inits = {
        "beta_initializer": beta_initializer,
        "gamma_initializer": gamma_initializer,
        "moving_mean_initializer": moving_mean_initializer,
        "moving_variance_initializer": moving_variance_initializer,
    }
    inits = {k: initializers_lib.get(v, argument=k) for k, v in inits.items()}
    for k, v in inits.items():
        if v is None:
            raise ValueError(f"`{k}` must not be None.")
    regs = {
        "beta_regularizer": regularizers_lib.get(beta_regularizer, "beta_regularizer"),
        "gamma_regularizer": regularizers_lib.get(gamma_regularizer, "gamma_regularizer"),
    }
    cons = {
        "beta_constraint": constraints_lib.get(beta_constraint, "beta_constraint"),
        "gamma_constraint": constraints_lib.get(gamma_constraint, "gamma_constraint"),
    }
    renorm = check_bool("renorm", renorm)
    clipping = check_clipping(renorm_clipping) if renorm else {}
    renorm_momentum = (
        check_unit_interval("renorm_momentum", renorm_momentum) if renorm else renorm_momentum
    )
    if fused is not None and not is_bool(fused):
        raise TypeError(f"`fused` must be None, True or False; received {fused!r}.")
    if virtual_batch_size is not None:
        if not isinstance(virtual_batch_size, (int, np.integer)) or is_bool(virtual_batch_size):
            raise TypeError(
                f"`virtual_batch_size` must be a positive int or None; received "
                f"{virtual_batch_size!r}."
            )
        if virtual_batch_size <= 0:
            raise ValueError(
                "`virtual_batch_size` must be a positive integer that divides the true batch "
                f"size of the input tensor; received virtual_batch_size={virtual_batch_size}."
            )
        virtual_batch_size = int(virtual_batch_size)
    if adjustment is not None and not callable(adjustment):
        raise TypeError(
            f"`adjustment` must be a callable (input shape -> (scale, bias)); "
            f"received {adjustment!r}."
        )
    if virtual_batch_size is not None and adjustment is not None:
        raise ValueError(
            "When using `virtual_batch_size`, adjustment cannot be specified "
            f"(virtual_batch_size={virtual_batch_size})."
        )
    if unbiased_moving_variance is not None:
        unbiased_moving_variance = check_bool("unbiased_moving_variance", unbiased_moving_variance)
    synchronized = check_bool("synchronized", synchronized)
    check_numerics = check_bool("check_numerics", check_numerics)
    if synchronized and fused:
        raise ValueError("`fused=True` is not supported when `synchronized=True`.")
    if synchronized:
        fused = False  # TF: synchronized statistics use the non-fused rules
    if fused:
        problem = fused_problem(
            renorm, config_axis, virtual_batch_size, adjustment, as_dtype(dtype)
        )
        if problem is not None:
            raise ValueError(problem)
    if process_group is not None and not (
        dist.is_available() and isinstance(process_group, dist.ProcessGroup)
    ):
        raise TypeError(
            "`process_group` must be None or a torch.distributed.ProcessGroup (e.g. from "
            f"`torch.distributed.new_group`); received {process_group!r}."
        )
    if not isinstance(ghost_grouping, str):
        raise TypeError(
            f"`ghost_grouping` must be one of {list(GROUPINGS)}; received {ghost_grouping!r}."
        )
    if ghost_grouping not in GROUPINGS:
        raise ValueError(
            f"`ghost_grouping` must be one of {list(GROUPINGS)}; received {ghost_grouping!r}."
        )
    return {
        "config_axis": config_axis,
        "momentum": momentum,
        "epsilon": float(epsilon),
        "center": center,
        "scale": scale,
        "initializers": inits,
        "regularizers": regs,
        "constraints": cons,
        "renorm": renorm,
        "renorm_clipping": clipping,
        "renorm_momentum": renorm_momentum,
        "fused": fused,
        "virtual_batch_size": virtual_batch_size,
        "adjustment": adjustment,
        "synchronized": synchronized,
        "process_group": process_group,
        "unbiased_moving_variance": unbiased_moving_variance,
        "ghost_grouping": ghost_grouping,
        "check_numerics": check_numerics,
    }
