"""Argument checks of ``BatchNormalization``: the constructor's arguments, TF's rules for
``fused``, and the checks on values user callables return (initializers, adjustment)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
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


def constructor_arguments(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check every ``BatchNormalization`` argument (``raw``: the constructor's keywords,
    ``dtype`` included) with TypeError/ValueError naming it, and return them normalized,
    before the layer changes anything: a bad argument leaves no half-made layer and
    consumes no default name."""
    out: dict[str, Any] = {"config_axis": check_axis(raw["axis"])}
    out |= _statistics(raw["momentum"], raw["epsilon"])
    out |= _variables(raw)
    out |= _renorm(raw["renorm"], raw["renorm_clipping"], raw["renorm_momentum"])
    out |= _ghost_batches(raw["virtual_batch_size"], raw["adjustment"], raw["ghost_grouping"])
    out |= _rules(raw, out)
    return out


def _statistics(momentum: Any, epsilon: Any) -> dict[str, Any]:
    momentum = check_unit_interval("momentum", momentum)
    if not is_number(epsilon) or isinstance(epsilon, torch.Tensor):
        raise TypeError(f"`epsilon` must be a float >= 0; received {epsilon!r}.")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"`epsilon` must be a finite float >= 0; received epsilon={epsilon!r}.")
    return {"momentum": momentum, "epsilon": float(epsilon)}


_INITIALIZERS = (
    "beta_initializer",
    "gamma_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
)


def _variables(raw: Mapping[str, Any]) -> dict[str, Any]:
    """center/scale, and the initializers, regularizers and constraints as objects."""
    center, scale = check_bool("center", raw["center"]), check_bool("scale", raw["scale"])
    inits = {k: initializers_lib.get(raw[k], argument=k) for k in _INITIALIZERS}
    for k, v in inits.items():
        if v is None:
            raise ValueError(f"`{k}` must not be None.")
    regs = {k: regularizers_lib.get(raw[k], k) for k in ("beta_regularizer", "gamma_regularizer")}
    cons = {k: constraints_lib.get(raw[k], k) for k in ("beta_constraint", "gamma_constraint")}
    return {
        "center": center,
        "scale": scale,
        "initializers": inits,
        "regularizers": regs,
        "constraints": cons,
    }


def _renorm(renorm: Any, clipping: Any, momentum: Any) -> dict[str, Any]:
    renorm = check_bool("renorm", renorm)
    return {
        "renorm": renorm,
        "renorm_clipping": check_clipping(clipping) if renorm else {},
        "renorm_momentum": check_unit_interval("renorm_momentum", momentum) if renorm else momentum,
    }


def _ghost_batches(vbs: Any, adjustment: Any, grouping: Any) -> dict[str, Any]:
    """virtual_batch_size, adjustment (exclusive, as in TensorFlow) and the grouping."""
    if vbs is not None:
        if not isinstance(vbs, (int, np.integer)) or is_bool(vbs):
            raise TypeError(
                f"`virtual_batch_size` must be a positive int or None; received {vbs!r}."
            )
        if vbs <= 0:
            raise ValueError(
                "`virtual_batch_size` must be a positive integer that divides the true batch "
                f"size of the input tensor; received virtual_batch_size={vbs}."
            )
        vbs = int(vbs)
    if adjustment is not None and not callable(adjustment):
        raise TypeError(
            f"`adjustment` must be a callable (input shape -> (scale, bias)); "
            f"received {adjustment!r}."
        )
    if vbs is not None and adjustment is not None:
        raise ValueError(
            "When using `virtual_batch_size`, adjustment cannot be specified "
            f"(virtual_batch_size={vbs})."
        )
    if not isinstance(grouping, str) or grouping not in GROUPINGS:
        error = ValueError if isinstance(grouping, str) else TypeError
        raise error(f"`ghost_grouping` must be one of {list(GROUPINGS)}; received {grouping!r}.")
    return {"virtual_batch_size": vbs, "adjustment": adjustment, "ghost_grouping": grouping}


def _rules(raw: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
    """fused (TF's numeric rules), the moving-variance estimator, synchronized statistics
    and their process group, check_numerics."""
    fused = raw["fused"]
    if fused is not None and not is_bool(fused):
        raise TypeError(f"`fused` must be None, True or False; received {fused!r}.")
    unbiased = raw["unbiased_moving_variance"]
    if unbiased is not None:
        unbiased = check_bool("unbiased_moving_variance", unbiased)
    synchronized = check_bool("synchronized", raw["synchronized"])
    check_numerics = check_bool("check_numerics", raw["check_numerics"])
    if synchronized and fused:
        raise ValueError("`fused=True` is not supported when `synchronized=True`.")
    if synchronized:
        fused = False  # TF: synchronized statistics use the non-fused rules
    if fused:
        rest = [checked[k] for k in ("renorm", "config_axis", "virtual_batch_size", "adjustment")]
        problem = fused_problem(*rest, as_dtype(raw["dtype"]))
        if problem is not None:
            raise ValueError(problem)
    group = raw["process_group"]
    if group is not None and not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise TypeError(
            "`process_group` must be None or a torch.distributed.ProcessGroup (e.g. from "
            f"`torch.distributed.new_group`); received {group!r}."
        )
    return {
        "fused": fused,
        "synchronized": synchronized,
        "process_group": group,
        "unbiased_moving_variance": unbiased,
        "check_numerics": check_numerics,
    }
