"""PyTorch's tracers and Python's attribute protocol on batchnorm layers: hasattr and
inspect on the TF1 properties, torch.jit.trace and torch.fx, each against a float64
reference written with plain torch operations or against torch.nn's own modules."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

import batchnorm
from batchnorm._graph_api import ScopeNameError, SymbolicModeError
from conv_bn_models import PAIRS, Reference, ResNetStyle, randomized, torch_bn
from oracle import rel_error

TOL = 5e-5  # DESIGN.md: float32 outputs and weights against float64
EAGER_ONLY = ("input", "output", "input_shape", "output_shape")


# --------------------------------------------------------------------------------------
# Python's attribute protocol


def test_symbolic_properties_of_an_eager_layer_are_runtime_and_attribute_errors():
    graph = batchnorm.Graph()
    with graph.as_default():
        layer = batchnorm.BatchNormalization()
    layer(torch.randn(4, 3))
    for attr in EAGER_ONLY:
        with pytest.raises(RuntimeError, match="symbolic mode"):
            getattr(layer, attr)
        with pytest.raises(AttributeError, match="symbolic mode"):
            getattr(layer, attr)
        assert not hasattr(layer, attr)
        assert getattr(layer, attr, "absent") == "absent"
    assert issubclass(SymbolicModeError, RuntimeError)
    assert issubclass(SymbolicModeError, AttributeError)
    assert layer.graph is graph  # always readable: the graph the layer was created in
    members = dict(inspect.getmembers(layer))
    assert members["graph"] is graph and members["scope_name"] == layer.name
    assert not set(EAGER_ONLY) & set(members)
    with pytest.raises(RuntimeError, match="symbolic mode"):  # methods: RuntimeError as before
        layer.get_input_at(0)


def test_scope_name_before_the_first_call_is_a_value_and_attribute_error():
    layer = batchnorm.BatchNormalization(name="bn")
    for error in (ValueError, AttributeError):
        with pytest.raises(error, match="has not been used yet"):
            _ = layer.scope_name
    assert issubclass(ScopeNameError, ValueError) and issubclass(ScopeNameError, AttributeError)
    assert not hasattr(layer, "scope_name")
    assert layer.graph is batchnorm.get_default_graph()
    members = dict(inspect.getmembers(layer))
    assert "scope_name" not in members and members["graph"] is layer.graph
    layer(torch.randn(2, 3))
    assert layer.scope_name == "bn"


def test_symbolic_accessors_still_work_in_symbolic_mode():
    layer = batchnorm.BatchNormalization()
    x = batchnorm.Input((3,))
    y = layer(x)
    assert layer.input is x and layer.output is y and hasattr(layer, "output")
    assert layer.input_shape == (None, 3) and layer.graph is x.graph


# --------------------------------------------------------------------------------------
# torch.jit.trace


def _trace(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notices
        return torch.jit.trace(model, example, check_trace=False)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_jit_trace_of_a_built_layer_matches_float64(mode):
    torch.manual_seed(0)
    model = randomized(ResNetStyle())
    getattr(model, mode)()
    traced = _trace(model, torch.randn(8, 3, 6, 6))  # a train-mode trace updates statistics
    ref = Reference(model)
    x = torch.randn(6, 3, 6, 6) * 2 + 1
    with torch.no_grad():
        y = traced(x)
    assert rel_error(y, ref(x, training=mode == "train")) <= TOL
    for name in PAIRS:
        layer = model.get_submodule(name)
        assert rel_error(layer.moving_mean, ref.stats[name][0]) <= TOL
        assert rel_error(layer.moving_variance, ref.stats[name][1]) <= TOL
    if mode == "eval":  # what PyTorch users expect of a module traced in eval mode
        with torch.no_grad():  # (traced: PyTorch operations; eager: the C kernels)
            assert rel_error(y, model(x)) <= 1e-6


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_jit_trace_builds_a_converted_layer_like_torch(mode):
    """``from_torch`` gives BatchNorm1d's layer real variables; the rank (and the build)
    comes with the first call, here the trace's."""
    torch.manual_seed(1)
    reference = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, momentum=0.3))
    with torch.no_grad():
        reference[1].running_mean.uniform_(-1, 1)
        reference[1].running_var.uniform_(0.5, 2)
        reference[1].weight.uniform_(0.5, 1.5)
    model = batchnorm.from_torch(reference)
    assert not model[1].built
    getattr(model, mode)()
    getattr(reference, mode)()
    example = torch.randn(5, 4)
    traced = _trace(model, example)
    assert model[1].built
    with torch.no_grad():
        reference(example)  # the trace ran the model once
        x = torch.randn(7, 4)
        assert rel_error(traced(x), reference(x)) <= TOL
    assert rel_error(model[1].moving_mean, reference[1].running_mean) <= TOL
    assert rel_error(model[1].moving_variance, reference[1].running_var) <= TOL


def test_jit_trace_in_training_keeps_the_bessel_factor_of_each_batch():
    """A module traced in train mode on 8 examples and run on 6 feeds the moving variance
    σ²·6/5 (as torch.nn.BatchNorm1d's trace does), not the traced batch's 8/7, and the
    trace records no constant-folding warning."""
    layer = batchnorm.BatchNormalization(momentum=0.0, unbiased_moving_variance=True)
    layer(torch.zeros(2, 3), training=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, torch.randn(8, 3))
    x = torch.randn(6, 3, dtype=torch.float64) * 2 + 1
    traced(x.float())
    expected = x.var(0, unbiased=True)
    assert rel_error(layer.moving_variance.double().numpy(), expected.numpy()) <= 1e-6


def test_jit_trace_of_placeholder_variables_needs_a_first_call_as_torch_lazy_modules():
    """No lazy module can be traced before its first call: torch.jit.trace refuses it
    with PyTorch's own error, ours as nn.LazyBatchNorm1d; after one call it traces."""
    x = torch.randn(5, 4)
    for bn in (nn.LazyBatchNorm1d(), batchnorm.BatchNormalization()):
        model = nn.Sequential(nn.Linear(4, 3), bn).eval()
        with pytest.raises(RuntimeError, match="uninitialized parameters"):
            _trace(model, x)
        model(x)  # the dry run PyTorch asks for
        with torch.no_grad():
            assert rel_error(_trace(model, x)(x), model(x)) <= 1e-6


# --------------------------------------------------------------------------------------
# torch.fx


def _structure(graph: torch.fx.Graph) -> list[tuple[str, str]]:
    return [(node.op, str(node.target)) for node in graph.nodes]


def test_fx_records_each_layer_as_one_call_like_torch_batchnorm():
    ours = torch.fx.symbolic_trace(ResNetStyle())  # unbuilt: placeholders
    torch_nn = torch.fx.symbolic_trace(ResNetStyle(torch_bn))
    assert _structure(ours.graph) == _structure(torch_nn.graph)
    calls = [n.target for n in ours.graph.nodes if n.op == "call_module"]
    assert all(calls.count(name) == 1 for name in PAIRS)
    assert isinstance(ours.get_submodule("block1.bn2"), batchnorm.BatchNormalization)


@pytest.mark.parametrize("built", [True, False])
def test_fx_graph_module_trains_then_infers_like_eager(built):
    """Traced in train mode, then ``eval()``: moving statistics, as nn.BatchNorm2d."""
    torch.manual_seed(2)
    model = randomized(ResNetStyle()) if built else ResNetStyle()
    model.train()
    traced = torch.fx.symbolic_trace(model)
    assert isinstance(traced, torch.fx.GraphModule) and traced.training
    ref = Reference(model)
    for step in range(2):
        x = torch.randn(8, 3, 6, 6) * 2 + step
        assert rel_error(traced(x).detach(), ref(x, training=True)) <= TOL
    for name in PAIRS:  # updated in place, as an eager training call does
        layer = model.get_submodule(name)
        assert layer.built
        assert rel_error(layer.moving_mean, ref.stats[name][0]) <= TOL
        assert rel_error(layer.moving_variance, ref.stats[name][1]) <= TOL
    traced.eval()
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        assert rel_error(traced(x), ref(x, training=False)) <= TOL
        assert torch.equal(traced(x), model.eval()(x))


def test_fx_keeps_the_layer_a_leaf_for_tracers_that_trace_into_every_module():
    seen: list[str] = []

    class IntoEverything(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, name: str) -> bool:
            return False

        def call_module(self, m, forward, args, kwargs):
            seen.append(self.path_of_module(m))
            return super().call_module(m, forward, args, kwargs)

    model = randomized(ResNetStyle())
    graph = IntoEverything().trace(model)
    bn_calls = [n for n in graph.nodes if n.op == "call_module"]
    assert [n.target for n in bn_calls] == list(PAIRS)  # only our layers stay calls
    assert set(PAIRS) <= set(seen)  # through the tracer's own call_module
    bn_node = next(n for n in bn_calls if n.target == "block1.bn1")
    assert "block1.bn1" in bn_node.meta["nn_module_stack"]
    traced = torch.fx.GraphModule(model, graph)
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        assert rel_error(traced(x), Reference(model)(x, training=False)) <= TOL


def _calling(module: nn.Module):
    def outside(x: torch.Tensor) -> torch.Tensor:
        return module(x)

    return outside


def test_fx_records_call_arguments_and_refuses_a_layer_outside_the_model_like_torch():
    layer = batchnorm.BatchNormalization(axis=1, momentum=0.5)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(x, training=False)

    traced = torch.fx.symbolic_trace(Model())
    node = next(n for n in traced.graph.nodes if n.op == "call_module")
    assert node.kwargs == {"training": False}
    x = torch.randn(4, 3) * 3 + 2
    traced.train()
    y = traced(x).detach()  # inference with the initial statistics (0, 1), nothing updated
    assert rel_error(y, x.double() / (1 + 1e-3) ** 0.5) <= TOL
    assert torch.equal(layer.moving_mean, torch.zeros(3))
    for bn in (layer, nn.BatchNorm1d(3)):
        with pytest.raises(NameError, match="not installed as a submodule"):
            torch.fx.symbolic_trace(_calling(bn))
