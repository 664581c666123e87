"""The configuration of ``BatchNormalization``: ``get_config`` (Keras-style constructor
arguments, JSON-serializable where the callables have names or configs), ``from_config``
and the repr, which shows every argument that differs from its default."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._utils import serialize


class BatchNormConfig:
    """Configuration of ``BatchNormalization`` (see the module docstring)."""

    name: str
    trainable: bool
    momentum: float
    epsilon: float
    center: bool
    scale: bool
    renorm: bool
    renorm_clipping: dict[str, Any]
    renorm_momentum: float
    virtual_batch_size: int | None
    unbiased_moving_variance: bool | None
    ghost_grouping: str
    synchronized: bool
    check_numerics: bool
    process_group: Any
    adjustment: Callable[..., Any] | None
    activity_regularizer: Any
    _config_axis: int | list[int]
    _declared_dtype: torch.dtype | None
    _fused_arg: bool | None

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Keras-style constructor arguments (JSON-serializable where the callables
        have names or configs); ``axis`` is what was passed to the constructor."""
        config: dict[str, Any] = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": str(self._declared_dtype).removeprefix("torch.")
            if self._declared_dtype
            else None,
            "axis": self._config_axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
        for key in (
            "beta_initializer",
            "gamma_initializer",
            "moving_mean_initializer",
            "moving_variance_initializer",
            "beta_regularizer",
            "gamma_regularizer",
            "beta_constraint",
            "gamma_constraint",
        ):
            config[key] = serialize(getattr(self, key))
        config.update(
            renorm=self.renorm,
            fused=self._fused_arg,
            virtual_batch_size=self.virtual_batch_size,
            unbiased_moving_variance=self.unbiased_moving_variance,
            ghost_grouping=self.ghost_grouping,
            synchronized=self.synchronized,
            check_numerics=self.check_numerics,
        )
        if self.renorm:
            config["renorm_clipping"] = {k: float(v) for k, v in self.renorm_clipping.items()}
            config["renorm_momentum"] = self.renorm_momentum
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = serialize(self.activity_regularizer)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """Inverse of ``get_config`` (an ``adjustment`` callable is not part of it)."""
        return cls(**dict(config))

    def extra_repr(self) -> str:
        """``name``, ``axis``, ``momentum`` and ``epsilon``, then every constructor argument
        that differs from its default (an ``adjustment`` and a ``process_group`` too)."""
        parts = [
            f"name={self.name!r}",
            f"axis={self._config_axis}",
            f"momentum={self.momentum}",
            f"epsilon={self.epsilon}",
        ]
        defaults = _default_config(type(self))
        for key, value in self.get_config().items():
            if key in ("name", "axis", "momentum", "epsilon") or value == defaults.get(key):
                continue
            if key.endswith(("_initializer", "_regularizer", "_constraint")):
                value = getattr(self, key)  # the object's repr, not its config
            parts.append(f"{key}={value!r}")
        if self.adjustment is not None:
            parts.append(f"adjustment={self.adjustment!r}")
        if self.process_group is not None:
            parts.append(f"process_group={self.process_group!r}")
        return ", ".join(parts)


_DEFAULT_CONFIG: dict[str, Any] = {}


def _default_config(cls: type) -> dict[str, Any]:
    """``get_config()`` of the library's own layer class (the last subclass of
    ``BatchNormConfig`` in ``cls``'s MRO, whatever subclass ``cls`` is) made with every
    default, the renorm entries from one with ``renorm=True``; made once."""
    if not _DEFAULT_CONFIG:
        base = [c for c in cls.__mro__ if issubclass(c, BatchNormConfig)][-2]
        config = base(name="defaults", renorm=True).get_config()
        config["renorm"] = False
        _DEFAULT_CONFIG.update(config)
    return _DEFAULT_CONFIG
