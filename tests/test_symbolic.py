"""Symbolic mode and the rest of TF1's layer API: nodes, accessors, updates, losses,
graphs and collections, scopes, masks, copies (partitioned variables:
test_partitioned.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import batchnorm as bn
from batchnorm import BatchNormalization


def model(graph=None):
    """Input(8) → Linear(8, 16) → BatchNormalization → ReLU → Linear(16, 3)."""
    x = bn.Input((8,), name="x")
    torch.manual_seed(0)
    dense1 = bn.Wrap(nn.Linear(8, 16))
    norm = BatchNormalization(momentum=0.5, gamma_regularizer="l2")
    dense2 = bn.Wrap(nn.Linear(16, 3))
    y = dense2(bn.Lambda(torch.relu)(norm(dense1(x))))
    return x, y, dense1, norm, dense2


# ---------------------------------------------------------------------- Input and nodes
def test_input_makes_a_symbolic_tensor():
    x = bn.Input((3, 4), batch_size=5, name="img")
    assert x.shape == (5, 3, 4) and x.dtype == torch.float32 and x.name == "img"
    assert bn.Input((2,), dtype="float64").dtype == torch.float64
    assert bn.Input(7).shape == (None, 7)
    with pytest.raises(TypeError, match="shape"):
        bn.Input(("a",))
    with pytest.raises(TypeError, match="batch_size"):
        bn.Input((2,), batch_size=-1)


def test_calling_a_layer_on_symbolic_tensors_builds_it_and_records_a_node():
    x = bn.Input((5, 3))
    layer = BatchNormalization(axis=1)
    y = layer(x, training=True)
    assert layer.built and layer.gamma.shape == (5,)
    assert y.shape == (None, 5, 3) and y.node is layer._inbound_nodes[0]
    assert layer.input is x and layer.output is y
    assert layer.input_shape == (None, 5, 3) and layer.output_shape == (None, 5, 3)
    assert layer.graph is x.graph and x.graph.nodes[-1] is y.node


def test_symbolic_channel_size_must_be_known():
    layer = BatchNormalization()
    with pytest.raises(ValueError, match="undefined `axis` dimension"):
        layer(bn.Input((None,)))


def test_symbolic_call_checks_the_built_shape():
    layer = BatchNormalization()
    layer(bn.Input((4,)))
    with pytest.raises(ValueError, match=r"expected shape \(None, 4\)"):
        layer(bn.Input((5,)))


def test_inputs_from_different_graphs_are_rejected():
    a = bn.Input((2,))
    with bn.Graph().as_default():
        b = bn.Input((2,))
    with pytest.raises(ValueError, match="same Graph"):
        bn.Lambda(lambda t: t[0] + t[1], output_shape=(2,))([a, b])


# ---------------------------------------------------------------------- accessors
def test_accessors_of_a_layer_never_called():
    layer = BatchNormalization()
    for attr in ("input", "output", "input_shape", "output_shape"):
        with pytest.raises(AttributeError, match="not connected|never been called"):
            getattr(layer, attr)
    for method in ("get_input_at", "get_output_at", "get_input_shape_at", "get_output_shape_at"):
        with pytest.raises(RuntimeError, match="never been called"):
            getattr(layer, method)(0)


def test_accessors_of_a_layer_only_called_eagerly_need_symbolic_mode():
    layer = BatchNormalization()
    layer(torch.randn(4, 3))
    assert layer.graph is bn.get_default_graph()  # readable in eager mode too
    for attr in ("input", "output", "input_shape", "output_shape", "updates_for"):
        if attr == "updates_for":
            with pytest.raises(RuntimeError, match="symbolic mode"):
                layer.get_updates_for(None)
            continue
        with pytest.raises(RuntimeError, match="symbolic mode"):
            getattr(layer, attr)
    with pytest.raises(RuntimeError, match="symbolic mode"):
        layer.get_input_at(0)
    with pytest.raises(RuntimeError, match="symbolic mode"):
        layer.get_losses_for(None)
    assert layer.updates == []  # eager updates are applied at once


def test_accessors_with_several_nodes():
    layer = BatchNormalization()
    a, b = bn.Input((3,)), bn.Input((3,), batch_size=4)
    ya, yb = layer(a), layer(b)
    assert layer.get_input_at(0) is a and layer.get_input_at(1) is b
    assert layer.get_output_at(1) is yb and layer.get_output_at(0) is ya
    assert layer.get_input_shape_at(1) == (4, 3) and layer.get_output_shape_at(0) == (None, 3)
    with pytest.raises(AttributeError, match="multiple inbound nodes.*get_input_at"):
        _ = layer.input
    with pytest.raises(AttributeError, match="multiple inbound nodes.*get_output_at"):
        _ = layer.output
    with pytest.raises(AttributeError, match="different input_shapes"):
        _ = layer.input_shape
    with pytest.raises(ValueError, match="node 2, but the layer has only 2 inbound nodes"):
        layer.get_input_at(2)
    same = BatchNormalization()
    same(bn.Input((3,)))
    same(bn.Input((3,)))
    assert same.input_shape == (None, 3) and same.output_shape == (None, 3)


# ---------------------------------------------------------------------- updates
def test_symbolic_training_calls_record_two_conditional_updates():
    layer = BatchNormalization()
    x_train, x_eval, x_auto = bn.Input((3,)), bn.Input((3,)), bn.Input((3,))
    layer(x_train, training=True)
    layer(x_eval, training=False)
    layer(x_auto)  # decided when the graph runs
    assert len(layer.get_updates_for(x_train)) == 2
    assert len(layer.get_updates_for(x_eval)) == 0
    assert len(layer.get_updates_for(x_auto)) == 2
    assert layer.get_updates_for(None) == []
    assert [u.variable for u in layer.get_updates_for(x_train)] == [
        "batch_normalization/moving_mean",
        "batch_normalization/moving_variance",
    ]
    assert all(u.conditional for u in layer.updates) and len(layer.updates) == 4
    assert layer.graph.get_collection("update_ops") == layer.updates


def test_frozen_layers_record_no_updates():
    layer = BatchNormalization(trainable=False)
    x = bn.Input((3,))
    layer(x, training=True)
    assert layer.get_updates_for(x) == [] and layer.updates == []


def test_add_update_callables_run_after_their_node_in_training_only():
    log = []
    x = bn.Input((3,))
    layer = BatchNormalization()
    y = layer(x)
    layer.add_update(lambda: log.append("conditional"), inputs=x)
    layer.add_update(lambda: log.append("unconditional"))
    assert len(layer.get_updates_for(x)) == 3 and len(layer.get_updates_for(None)) == 1
    f = bn.Function(x, y)
    f(torch.randn(4, 3), training=True)
    assert log == ["conditional"]
    f(torch.randn(4, 3), training=False)
    assert log == ["conditional"]
    with pytest.raises(ValueError, match="not an input"):
        layer.add_update(lambda: None, inputs=bn.Input((3,)))


def test_eager_add_update_runs_callables_immediately():
    layer = BatchNormalization()
    layer(torch.randn(2, 3))
    ran = []
    layer.add_update(lambda: ran.append(1))
    assert ran == [1] and layer.updates == []


# ---------------------------------------------------------------------- losses
def test_symbolic_losses_and_collections():
    x = bn.Input((4,))
    layer = BatchNormalization(
        gamma_regularizer="l2", beta_regularizer="l1", activity_regularizer="l2"
    )
    y = layer(x)
    unconditional = layer.get_losses_for(None)
    assert [loss.kind for loss in unconditional] == ["regularization", "regularization"]
    with torch.no_grad():
        layer.gamma.fill_(2.0)
    assert float(unconditional[0].value()) == pytest.approx(0.01 * 4 * 4.0)  # recomputed
    (activity,) = layer.get_losses_for(x)
    assert activity.kind == "activity"
    assert len(layer.graph.get_collection("regularization_losses")) == 2
    assert layer.graph.get_collection("trainable_variables") == [layer.gamma, layer.beta]
    f = bn.Function(x, y)
    out = f(torch.randn(8, 4), training=False)
    assert float(activity.value()) == pytest.approx(0.01 * float(out.square().sum()) / 8, rel=1e-5)
    layer.add_loss(lambda: layer.beta.sum(), inputs=x)
    layer.add_loss(torch.tensor(1.0))
    assert len(layer.get_losses_for(x)) == 2 and len(layer.get_losses_for(None)) == 3


# ---------------------------------------------------------------------- Function
def test_function_runs_each_node_once_and_trains():
    calls = []

    def counted(t):
        calls.append(1)
        return torch.relu(t)

    x = bn.Input((8,))
    torch.manual_seed(0)
    dense1, norm, dense2 = nn.Linear(8, 16), BatchNormalization(momentum=0.5), nn.Linear(16, 3)
    h = norm(bn.Wrap(dense1)(x))
    y = bn.Wrap(dense2)(bn.Lambda(counted, output_shape=(16,))(h))
    f = bn.Function(x, y)
    assert [type(m).__name__ for m in f.layers] == ["Wrap", "BatchNormalization", "Lambda", "Wrap"]
    assert len(list(f.parameters())) == 6  # both Linear layers + gamma, beta
    reference = BatchNormalization(momentum=0.5)  # the same model, called eagerly
    data = torch.randn(32, 8)
    out = f(data, training=True)
    expected = dense2(torch.relu(reference(dense1(data), training=True)))
    assert len(calls) == 1
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(norm.moving_mean, reference.moving_mean)
    assert torch.allclose(norm.moving_variance, reference.moving_variance)
    f.eval()
    before = norm.moving_mean.clone()
    f(data)
    assert torch.equal(norm.moving_mean, before)


def test_function_end_to_end_training_with_an_optimizer():
    x, y, dense1, norm, _ = model()
    f = bn.Function(x, y)
    opt = torch.optim.Adam(f.parameters(), lr=0.05)
    torch.manual_seed(1)
    data = torch.randn(128, 8)
    target = (data[:, 0] > 0).long() + (data[:, 1] > 0).long()
    first = None
    for _ in range(40):
        loss = nn.functional.cross_entropy(f(data, training=True), target) + sum(f.losses)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.6 * first
    batch_mean = dense1(data).mean(0)
    assert torch.allclose(norm.moving_mean, batch_mean, atol=0.3)  # momentum 0.5: close
    assert len(norm.get_updates_for(norm.input)) == 2
    assert len(norm.get_losses_for(None)) == 1
    f.eval()
    accuracy = (f(data).argmax(1) == target).float().mean()
    assert accuracy > 0.7


def test_function_errors():
    x, y, *_ = model()
    with pytest.raises(ValueError, match="Graph disconnected"):
        bn.Function(bn.Input((8,)), y)
    f = bn.Function(x, y)
    with pytest.raises(ValueError, match="expects 1 input"):
        f(torch.randn(2, 8), torch.randn(2, 8))


def test_function_with_two_inputs_and_a_symbolic_mask():
    x = bn.Input((5, 2))
    m = bn.Input((5,), dtype=torch.bool)
    layer = BatchNormalization(momentum=0.0)
    y = layer(x, mask=m, training=True)
    f = bn.Function([x, m], y)
    data = torch.randn(4, 5, 2)
    mask = torch.rand(4, 5) > 0.5
    f(data, mask)
    assert torch.allclose(layer.moving_mean, data[mask].mean(0), atol=1e-6)


# ---------------------------------------------------------------------- graphs, names, scopes
def test_graphs_hold_their_own_names_and_collections():
    with bn.Graph().as_default() as g:
        assert bn.get_default_graph() is g
        layer = BatchNormalization()
        x = bn.Input((3,))
        layer(x)
    assert layer.name == "batch_normalization" and layer.graph is g
    assert BatchNormalization().name == "batch_normalization"  # the default graph's counter
    assert BatchNormalization().name == "batch_normalization_1"
    assert g.get_collection("update_ops") and not bn.get_default_graph().get_collection(
        "update_ops"
    )


def test_scope_name():
    layer = BatchNormalization()
    with pytest.raises(ValueError, match="has not been used yet"):
        _ = layer.scope_name
    layer(bn.Input((3,)), scope="encoder/bn")
    assert layer.scope_name == "encoder/bn"
    assert layer.weight_names[0] == "encoder/bn/gamma"
    layer(bn.Input((3,)), scope="ignored")
    assert layer.scope_name == "encoder/bn"
    eager = BatchNormalization(name="bn")
    eager(torch.randn(2, 3))
    assert eager.scope_name == "bn"


def test_mask_propagates_from_the_previous_layer():
    data = torch.randn(6, 4, 3)
    mask = torch.rand(6, 4) > 0.4
    masked = data.clone()
    masked._keras_mask = mask
    a = BatchNormalization(momentum=0.0)
    b = BatchNormalization(momentum=0.0)
    y = a(masked, training=True)
    b(data, training=True, mask=mask)
    assert torch.allclose(a.moving_mean, b.moving_mean) and y._keras_mask is mask


# ---------------------------------------------------------------------- copies and apply
def test_deepcopy_is_an_independent_unconnected_layer_with_the_same_name():
    x = bn.Input((3,))
    layer = BatchNormalization(momentum=0.5)
    layer(x)
    layer(torch.randn(8, 3), training=True)
    clone = copy.deepcopy(layer)
    assert clone.name == layer.name and clone.graph is layer.graph
    assert clone._inbound_nodes == [] and layer._inbound_nodes
    assert torch.equal(clone.moving_mean, layer.moving_mean)
    clone(torch.randn(8, 3) + 5, training=True)
    assert not torch.equal(clone.moving_mean, layer.moving_mean)


def test_apply_records_nodes_like_call():
    layer = BatchNormalization()
    x = bn.Input((3,))
    y = layer.apply(x, training=True)
    assert layer.output is y and len(layer.get_updates_for(x)) == 2
