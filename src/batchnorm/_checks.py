"""Argument checks shared by the layers: each raises TypeError/ValueError naming
the argument and the value it received."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

CLIPPING_KEYS = ("rmax", "rmin", "dmax")


def is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_bool(argument: str, value: Any) -> bool:
    if not is_bool(value):
        raise TypeError(f"`{argument}` must be True or False; received {value!r}.")
    return bool(value)


def is_number(value: Any) -> bool:
    """A Python/NumPy real number or a 0-dim floating tensor (not a bool)."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and value.is_floating_point()
    return isinstance(value, (int, float, np.floating, np.integer)) and not is_bool(value)


def check_unit_interval(argument: str, value: Any) -> float:
    if not is_number(value):
        raise TypeError(f"`{argument}` must be a float in [0, 1]; received {value!r}.")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"`{argument}` must be in [0, 1]; received {argument}={value!r}.")
    return number


def check_axis(axis: Any) -> int | list[int]:
    if isinstance(axis, (int, np.integer)) and not is_bool(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)):
        if not axis:
            raise ValueError("`axis` must not be empty; received [].")
        for a in axis:
            if not isinstance(a, (int, np.integer)) or is_bool(a):
                raise TypeError(
                    "Expected an int or a list/tuple of ints for the argument 'axis', "
                    f"but received: {axis!r}"
                )
        values = [int(a) for a in axis]
        duplicates = sorted({a for a in values if values.count(a) > 1})
        if duplicates:
            raise ValueError(f"Duplicate axis: {duplicates} in axis={axis!r}.")
        return values
    raise TypeError(
        f"Expected an int or a list/tuple of ints for the argument 'axis', but received: {axis!r}"
    )


def check_clipping(clipping: Any) -> dict[str, float | torch.Tensor]:
    if clipping is None:
        return {}
    if not isinstance(clipping, Mapping):
        raise TypeError(
            f"`renorm_clipping` must be a dict with keys among {list(CLIPPING_KEYS)}; "
            f"received {clipping!r}."
        )
    unknown = sorted(set(clipping) - set(CLIPPING_KEYS))
    if unknown:
        raise ValueError(
            f"Received invalid keys for `renorm_clipping` argument: {unknown}. "
            f"Supported values: {list(CLIPPING_KEYS)}."
        )
    checked: dict[str, float | torch.Tensor] = {}
    for key, value in clipping.items():
        if value is None:
            continue
        if not is_number(value):
            raise TypeError(
                f"`renorm_clipping['{key}']` must be a float or a 0-dim floating tensor; "
                f"received {value!r}."
            )
        # tensors stay tensors, so a schedule can change them in place between steps
        checked[key] = value if isinstance(value, torch.Tensor) else float(value)
    check_clipping_values(checked)  # every value, device tensors included (once)
    return checked


def on_host(value: Any) -> bool:
    """Whether ``value`` can be read on the host: a number, or a tensor on the CPU (no
    device synchronization) outside ``torch.compile`` and ``torch.jit.trace`` (which
    see a tensor's value only on the device, as part of the graph)."""
    if not isinstance(value, torch.Tensor):
        return True
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return value.device.type == "cpu"


def check_host_clipping(clipping: Mapping[str, float | torch.Tensor]) -> None:
    """The per-call check of ``check_clipping_values`` on the values that live on the
    host (``on_host``); tensors on a device were checked when the mapping was checked
    and are then read on the device only (reading them here would synchronize)."""
    check_clipping_values({k: v for k, v in clipping.items() if on_host(v)})


def check_clipping_values(clipping: Mapping[str, float | torch.Tensor]) -> None:
    """rmin ≥ 0, rmax ≥ rmin, dmax ≥ 0 (ValueError naming the values otherwise); reads
    every value on the host."""
    values = {k: float(v) for k, v in clipping.items()}
    if math.isnan(sum(values.values(), 0.0)):
        raise ValueError(f"`renorm_clipping` values must not be NaN; received {values}.")
    if values.get("rmin", 0.0) < 0:
        raise ValueError(f"`renorm_clipping['rmin']` must be >= 0; received rmin={values['rmin']}.")
    if "rmax" in values and values["rmax"] < values.get("rmin", 0.0):
        raise ValueError(
            "`renorm_clipping['rmax']` must be >= rmin (and >= 0); received "
            f"rmax={values['rmax']}, rmin={values.get('rmin', 0.0)}."
        )
    if values.get("dmax", 0.0) < 0:
        raise ValueError(f"`renorm_clipping['dmax']` must be >= 0; received dmax={values['dmax']}.")
