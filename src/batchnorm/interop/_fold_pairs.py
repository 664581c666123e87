"""Which ``BatchNormalization`` layers of a model fold into the Linear/Conv before them.

``find_pairs`` traces the model with ``torch.fx`` (a batchnorm layer is one
``call_module`` node, ``_tracing``) and takes a pair where a ``call_module`` of an
``nn.Linear``/``nn.Conv1d/2d/3d`` feeds nothing but a ``call_module`` of a
``BatchNormalization`` called on that output alone, each module called once and
registered under one name (so replacing it changes exactly that call). Every other
batch-norm layer gets a reason. When the model cannot be traced (data-dependent
control flow, non-traceable operations), the fallback walks ``nn.Sequential``
containers and takes neighbouring pairs, the only structure whose data flow is known
without tracing.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.fx import Node

from ..normalization import BatchNormalization

__all__ = ["FOLDABLE", "Pairs", "find_pairs"]

FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WHAT = "an nn.Linear or nn.Conv1d/2d/3d"

# (pairs (module name, batch-norm name), reasons {batch-norm name: why not}, trace error)
Pairs = tuple[list[tuple[str, str]], dict[str, str], str | None]


def _plain(module: nn.Module) -> bool:
    """A Linear/Conv that computes with torch's own forward (a subclass with its own
    ``forward`` or ``_conv_forward`` may compute something else: it is not folded)."""
    for base in FOLDABLE:
        if isinstance(module, base):
            cls = type(module)
            same = cls.forward is base.forward
            if base is not nn.Linear:
                same = same and cls._conv_forward is base._conv_forward
            return same
    return False


class _PairTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` that keeps plain Linear/Conv subclasses as leaves too."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _plain(m) or super().is_leaf_module(m, module_qualified_name)


def _names(model: nn.Module) -> dict[int, list[str]]:
    """Every name under which each submodule is registered, by ``id``."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def _aliased(module: nn.Module, names: dict[int, list[str]], role: str) -> str | None:
    all_names = names[id(module)]
    if len(all_names) > 1:
        return (
            f"{role} is registered under several names ({', '.join(map(repr, all_names))}); "
            "replacing one would leave the others computing the original"
        )
    return None


def find_pairs(model: nn.Module) -> Pairs:
    """The foldable (module, batch-norm) name pairs of ``model``, the reason each other
    ``BatchNormalization`` is kept, and the tracing error when the fallback ran."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, BatchNormalization)}
    if not layers:
        return [], {}, None
    if isinstance(model, BatchNormalization):
        return [], {"": "the model is the batch-norm layer itself; nothing precedes it"}, None
    try:
        graph = _PairTracer().trace(model)
    except Exception as exc:  # any tracing failure selects the fallback
        message = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
        pairs, reasons = _sequential_pairs(model, layers)
        return pairs, reasons, error
    pairs, reasons = _graph_pairs(model, graph, layers)
    return pairs, reasons, None


def _describe(node: Any, modules: dict[str, nn.Module]) -> str:
    """A phrase naming what produced ``node`` (the input of a batch-norm call)."""
    if not isinstance(node, Node):
        return f"a constant ({type(node).__name__}), not a traced value"
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[node.target]).__name__})"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", repr(node.target))
        module = getattr(node.target, "__module__", None)
        module = "operator" if module == "_operator" else module
        return f"function {module}.{name}" if module else f"function {name}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    if node.op == "placeholder":
        return f"the model's input {node.target!r}"
    return f"attribute {node.target!r}"


def _graph_pairs(
    model: nn.Module, graph: torch.fx.Graph, layers: dict[str, BatchNormalization]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    modules = dict(model.named_modules())
    names = _names(model)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs: list[tuple[str, str]] = []
    reasons: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in layers:
            continue
        bn_name = node.target
        if bn_name in reasons or any(b == bn_name for _, b in pairs):
            continue  # called several times: decided at its first call
        reason = _pair_problem(node, modules, names, calls)
        if reason is None:
            pairs.append((node.args[0].target, bn_name))
        else:
            reasons[bn_name] = reason
    for bn_name in layers:
        if bn_name not in reasons and all(b != bn_name for _, b in pairs):
            reasons[bn_name] = "not called in the model's forward (as traced by torch.fx)"
    return pairs, reasons


def _pair_problem(
    node: Node, modules: dict[str, nn.Module], names: dict[int, list[str]], calls: Counter
) -> str | None:
    """Why the batch-norm call ``node`` does not fold into its input's module, or None."""
    bn_name = node.target
    if calls[bn_name] > 1:
        return f"called {calls[bn_name]} times in the forward; one replacement serves every call"
    aliased = _aliased(modules[bn_name], names, "the layer")
    if aliased:
        return aliased
    extra = {k: v for k, v in node.kwargs.items() if k != "scope"}
    training = extra.pop("training", None)
    if len(node.args) != 1 or extra or training not in (None, False):
        given = [repr(a) for a in node.args[1:]] + [f"{k}={v!r}" for k, v in node.kwargs.items()]
        return f"called with arguments besides its input ({', '.join(given)})"
    source = node.args[0]
    called = isinstance(source, Node) and source.op == "call_module"
    module = modules[source.target] if called else None
    if module is None or not _plain(module):
        return f"its input comes from {_describe(source, modules)}, not from {_WHAT}"
    if calls[source.target] > 1:
        return f"module {source.target!r} is called {calls[source.target]} times in the forward"
    aliased = _aliased(module, names, f"module {source.target!r}")
    if aliased:
        return aliased
    others = [user for user in source.users if user is not node]
    if others:
        uses = ", ".join(_use(user) for user in others)
        return f"the output of module {source.target!r} is also used by {uses}"
    return None


def _use(node: Node) -> str:
    if node.op == "output":
        return "the model's output"
    if node.op in ("call_module", "get_attr"):
        return repr(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _sequential_pairs(
    model: nn.Module, layers: dict[str, BatchNormalization]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Fallback: neighbouring (Linear/Conv, BatchNormalization) children of every
    ``nn.Sequential``, at any depth."""
    names = _names(model)
    pairs: list[tuple[str, str]] = []
    reasons: dict[str, str] = {}
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        prefix = f"{seq_name}." if seq_name else ""
        children = list(seq._modules.items())
        for (before, first), (_, second) in itertools.pairwise(children):
            if not isinstance(second, BatchNormalization):
                continue
            bn_name = names[id(second)][0]
            if not _plain(first):
                reasons[bn_name] = (
                    f"follows {type(first).__name__} {prefix + before!r} in an nn.Sequential, "
                    f"not {_WHAT}"
                )
                continue
            aliased = _aliased(second, names, "the layer") or _aliased(
                first, names, f"module {prefix + before!r}"
            )
            if aliased:
                reasons[bn_name] = aliased
            else:
                pairs.append((prefix + before, bn_name))
    for bn_name in layers:
        if bn_name not in reasons and all(b != bn_name for _, b in pairs):
            reasons[bn_name] = (
                f"not directly after {_WHAT} in an nn.Sequential (torch.fx could not trace "
                "the model, so only nn.Sequential neighbours are known to feed one another)"
            )
    return pairs, reasons
