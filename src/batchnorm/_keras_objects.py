"""Keras' ``get`` / ``serialize`` / ``deserialize`` for initializers, regularizers and
constraints, and the conversion of Keras and TensorFlow objects into ours.

A Keras object is recognised without importing TensorFlow: a class of its type's method
resolution order lives in a ``tf_keras``, ``keras`` or ``tensorflow`` module. A built-in
Keras class (its own module is Keras') with a batchnorm equivalent of the same class name
is rebuilt from ``get_config()`` (a Keras class, not an instance, gives the default
instance). Anything else from those packages (a user's Keras subclass, a TensorFlow
function) raises TypeError naming the argument: it would run TensorFlow operations on
torch tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ._utils import lookup

KERAS_PACKAGES = frozenset({"tf_keras", "keras", "tensorflow"})


def _in_keras(module: Any) -> bool:
    return isinstance(module, str) and module.split(".", 1)[0] in KERAS_PACKAGES


def is_keras(identifier: Any) -> bool:
    """Whether ``identifier`` (an object, a class or a function) comes from Keras or TF."""
    cls = identifier if inspect.isclass(identifier) else type(identifier)
    if any(_in_keras(c.__module__) for c in cls.__mro__):
        return True
    return (inspect.isfunction(identifier) or inspect.isbuiltin(identifier)) and _in_keras(
        getattr(identifier, "__module__", None)
    )


class Kind:
    """One of the three families: its names, base class and Keras module."""

    def __init__(
        self,
        kind: str,
        registry: Mapping[str, Callable[..., Any]],
        classes: Mapping[str, type],
        base: type,
        expected: str,
    ) -> None:
        self.kind = kind  # "initializer"
        self.module = f"keras.{kind}s"  # Keras' serialized "module"
        self.registry = registry  # names for strings and configs (snake case, aliases)
        self.classes = classes  # Keras class name -> our class (for Keras objects)
        self.base = base
        self.expected = expected  # what a callable must be, for error messages

    def what(self, argument: str | None) -> str:
        return f"`{argument}`" if argument else self.kind

    def from_keras(self, identifier: Any, argument: str | None) -> Any:
        """Our equivalent of a Keras/TF object, or TypeError naming ``argument``."""
        cls = identifier if inspect.isclass(identifier) else type(identifier)
        help_text = (
            f"pass a batchnorm.{self.kind}s object, a Keras name or config dict, "
            f"or a callable {self.expected}"
        )
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not inspect.isclass(identifier) and not hasattr(identifier, "get_config"):
            module = getattr(identifier, "__module__", cls.__module__)
            name = getattr(identifier, "__qualname__", cls.__qualname__)
            raise TypeError(
                f"{self.what(argument)} received {module}.{name}, a TensorFlow/Keras "
                f"function or object without get_config(), which cannot run on torch "
                f"tensors; {help_text}."
            )
        ours = self.classes.get(cls.__name__) if _in_keras(cls.__module__) else None
        if ours is None:
            origin = "a Keras class" if _in_keras(cls.__module__) else "a subclass of a Keras class"
            raise TypeError(
                f"{self.what(argument)} received {where} ({origin}), which has no "
                f"batchnorm.{self.kind}s equivalent; {help_text}."
            )
        if inspect.isclass(identifier):
            return ours()
        config = dict(identifier.get_config())
        known = inspect.signature(ours.__init__).parameters
        # Keras 3's extensions (VarianceScaling's input_axes/output_axes) at their default
        config = {k: v for k, v in config.items() if k in known or k == "dtype" or v is not None}
        try:
            return ours.from_config(config)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{self.what(argument)} received {where} with config {config!r}, which "
                f"batchnorm.{self.kind}s.{ours.__name__} cannot take: {error}"
            ) from error


def resolve(
    kind: Kind,
    identifier: Any,
    argument: str | None = None,
    custom_objects: Mapping[str, Any] | None = None,
) -> Any:
    """``get``: None, an instance of ours, our class (instantiated), a Keras/TF object
    (converted), a name or config dict (deserialized), or any other callable."""
    if identifier is None or isinstance(identifier, kind.base):
        return identifier
    if inspect.isclass(identifier) and issubclass(identifier, kind.base):
        return identifier()
    if is_keras(identifier):
        return kind.from_keras(identifier, argument)
    registry: Mapping[str, Callable[..., Any]] = kind.registry
    if isinstance(identifier, Mapping) and identifier.get("class_name") == "function":
        name = identifier.get("config")  # Keras' config of a plain function
        function = (custom_objects or {}).get(name) or registry.get(name)
        if function is None:
            raise ValueError(
                f"Unknown {kind.kind} function {name!r} for {kind.what(argument)}: "
                "pass it in `custom_objects`."
            )
        return function
    if custom_objects:
        registry = {**registry, **custom_objects}
        if isinstance(identifier, Mapping) and identifier.get("registered_name") in custom_objects:
            identifier = {**identifier, "class_name": identifier["registered_name"]}
    return lookup(kind.kind, identifier, registry, kind.base, argument)


def serialize(kind: Kind, obj: Any, use_legacy_format: bool = False) -> Any:
    """Keras' config of ``obj``: ``{"module", "class_name", "config", "registered_name"}``
    (``{"class_name", "config"}`` with ``use_legacy_format``). A function gives Keras'
    ``{"class_name": "function", "config": name, ...}`` (its name in the legacy format)."""
    if obj is None:
        return None
    if not hasattr(obj, "get_config"):
        name = getattr(obj, "__name__", None)
        if name is None:
            raise ValueError(f"Cannot serialize {obj!r}: it has neither get_config() nor a name.")
        if use_legacy_format:
            return name
        return {  # exactly what tf_keras writes for a plain function
            "module": "builtins",
            "class_name": "function",
            "config": name,
            "registered_name": "function",
        }
    cls = type(obj)
    config = {"class_name": cls.__name__, "config": obj.get_config()}
    if use_legacy_format:
        return config
    builtin = kind.classes.get(cls.__name__) is cls
    return {
        "module": kind.module if builtin else cls.__module__,
        **config,
        "registered_name": None if builtin else cls.__name__,
    }


def deserialize(kind: Kind, config: Any, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """An object from a name or a config dict (either Keras format)."""
    if not isinstance(config, (str, Mapping)):
        raise TypeError(
            f"{kind.kind} config must be a name or a dict with 'class_name'; received "
            f"{config!r} of type {type(config).__name__}."
        )
    return resolve(kind, config, custom_objects=custom_objects)
