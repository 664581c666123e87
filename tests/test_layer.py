"""The Layer contract: building, variables, weight lists, names, losses, constraints."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import batchnorm
from batchnorm import BatchNormalization, Layer


class Scale(Layer):
    """A minimal custom layer: y = x · w + b, with a non-trainable counter."""

    def build(self, input_shape):
        self.add_weight(
            "w", (input_shape[-1],), initializer="ones", regularizer="l2", constraint="non_neg"
        )
        self.add_weight("b", (input_shape[-1],), initializer="zeros")
        self.add_weight("calls", (), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        with torch.no_grad():
            self.calls += 1
        return inputs * self.w + self.b


class ReturnsNone(Layer):
    def call(self, inputs):
        return None


# ---------------------------------------------------------------------- build
def test_builds_on_first_call_with_the_input_shape():
    layer = Scale()
    assert not layer.built and layer.weights == []
    layer(torch.ones(2, 3))
    assert layer.built
    assert [tuple(w.shape) for w in layer.weights] == [(3,), (3,), ()]


def test_explicit_build_then_call():
    layer = BatchNormalization(axis=1)
    layer.build((None, 4, 5))
    assert layer.built and layer.gamma.shape == (4,)
    assert layer(torch.randn(2, 4, 5)).shape == (2, 4, 5)


def test_input_shape_kwarg_builds_immediately():
    layer = BatchNormalization(input_shape=(6,))
    assert layer.built and layer.moving_mean.shape == (6,)
    assert layer.count_params() == 24


def test_unknown_kwarg_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument.*bogus"):
        BatchNormalization(bogus=1)


# ---------------------------------------------------------------------- variables
def test_add_weight_creates_parameters_and_buffers():
    layer = Scale()
    layer.build((None, 3))
    assert isinstance(layer.w, nn.Parameter) and layer.w.requires_grad
    assert not isinstance(layer.calls, nn.Parameter)
    assert set(layer.state_dict()) == {"w", "b", "calls", "_extra_state"}
    assert [n for n, _ in layer.named_parameters()] == ["w", "b"]
    assert [n for n, _ in layer.named_buffers()] == ["calls"]


def test_add_weight_returns_the_existing_variable_or_rejects_a_new_shape():
    layer = Scale()
    layer.build((None, 3))
    assert layer.add_weight("w", (3,)) is layer.w
    with pytest.raises(ValueError, match=r"already exists with shape \(3,\).*\(4,\)"):
        layer.add_weight("w", (4,))
    assert layer.add_variable("b", (3,)) is layer.b


def test_add_weight_default_initializer_is_glorot_uniform():
    layer = Layer()
    w = layer.add_weight("kernel", (200, 300))
    limit = (6 / 500) ** 0.5
    w = w.detach()
    assert float(w.abs().max()) <= limit
    assert float(w.abs().max()) > 0.9 * limit  # spread over the whole range
    assert abs(float(w.std()) - limit / 3**0.5) < 0.01 * limit


def test_add_weight_rejects_bad_names_and_shapes():
    layer = Layer()
    with pytest.raises(ValueError, match="identifier"):
        layer.add_weight("a/b", (2,))
    with pytest.raises(ValueError, match="fully defined"):
        layer.add_weight("v", (None, 2))
    with pytest.raises(TypeError, match="shape"):
        layer.add_weight("v", "2")


def test_weight_lists_in_tf_order():
    layer = BatchNormalization(renorm=False)
    layer.build((None, 3))
    names = ["gamma", "beta", "moving_mean", "moving_variance"]
    assert layer.weight_names == [f"batch_normalization/{n}" for n in names]
    assert layer.weights == [getattr(layer, n) for n in names]
    assert layer.variables == layer.weights
    assert layer.trainable_weights == [layer.gamma, layer.beta]
    assert layer.trainable_variables == layer.trainable_weights
    assert layer.non_trainable_weights == [layer.moving_mean, layer.moving_variance]
    assert layer.non_trainable_variables == layer.non_trainable_weights


def test_trainable_setter_moves_weights_and_toggles_requires_grad():
    layer = BatchNormalization()
    layer.build((None, 3))
    layer.trainable = False
    assert layer.trainable_weights == []
    assert layer.non_trainable_weights == [
        layer.gamma,
        layer.beta,
        layer.moving_mean,
        layer.moving_variance,
    ]
    assert isinstance(layer.gamma, nn.Parameter) and not layer.gamma.requires_grad
    assert layer.weights == layer.non_trainable_weights  # order unchanged: gamma first
    layer.trainable = True
    assert layer.trainable_weights == [layer.gamma, layer.beta] and layer.beta.requires_grad
    with pytest.raises(TypeError, match="trainable"):
        layer.trainable = "yes"


def test_frozen_at_construction():
    layer = BatchNormalization(trainable=False)
    layer.build((None, 3))
    assert not layer.gamma.requires_grad and layer.trainable_weights == []


def test_get_and_set_weights_round_trip():
    layer = BatchNormalization()
    layer.build((None, 3))
    values = [np.arange(3.0) + i for i in range(4)]  # float64 arrays into a float32 layer
    layer.set_weights(values)
    out = layer.get_weights()
    assert all(o.dtype == np.float32 for o in out)
    for o, v in zip(out, values, strict=True):
        np.testing.assert_array_equal(o, v.astype(np.float32))
    out[0][0] = 99  # copies, not views
    assert float(layer.gamma.detach()[0]) == 0.0


def test_set_weights_accepts_tensors():
    layer = BatchNormalization()
    layer.build((None, 2))
    layer.set_weights([torch.full((2,), float(i), dtype=torch.float64) for i in range(4)])
    assert layer.moving_variance.tolist() == [3.0, 3.0]


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ([np.ones(3)] * 3, ValueError, "expects 4 weights.*received 3"),
        ([np.ones(3)] * 5, ValueError, "expects 4 weights.*received 5"),
        ([np.ones(3)] * 3 + [np.ones(4)], ValueError, r"moving_variance has shape \(3,\).*\(4,\)"),
        ([np.ones(3)] * 3 + [np.ones(3, dtype=np.int64)], TypeError, "floating-point"),
        ([np.ones(3)] * 3 + [np.ones(3, dtype=bool)], TypeError, "floating-point"),
    ],
    ids=["too-few", "too-many", "wrong-shape", "integer", "bool"],
)
def test_set_weights_validates_before_writing(values, error, match):
    layer = BatchNormalization()
    layer.build((None, 3))
    before = [w.clone() for w in layer.weights]
    with pytest.raises(error, match=match):
        layer.set_weights(values)
    for b, w in zip(before, layer.weights, strict=True):
        assert torch.equal(b, w)


def test_count_params():
    with pytest.raises(ValueError, match="isn't built.*build\\(batch_input_shape\\)"):
        BatchNormalization().count_params()
    layer = BatchNormalization(axis=[1, 2])
    layer.build((None, 3, 4, 5))
    assert layer.count_params() == 4 * 12
    layer = BatchNormalization(center=False)
    layer.build((None, 7))
    assert layer.count_params() == 3 * 7


def test_compute_output_shape():
    layer = BatchNormalization(axis=1)
    assert layer.compute_output_shape((None, 3, 5)) == (None, 3, 5)
    layer.build((None, 3, 5))
    assert layer.compute_output_shape([2, 3, None]) == (2, 3, None)
    assert layer.compute_output_shape(torch.Size([2, 3, 7])) == (2, 3, 7)
    with pytest.raises(TypeError, match="must be a shape"):
        layer.compute_output_shape("abc")
    with pytest.raises(TypeError, match="must be a shape"):
        layer.compute_output_shape((2, 3.5, 1))
    with pytest.raises(ValueError, match=r"expected shape \(None, 3, None\).*\(2, 4, 5\)"):
        layer.compute_output_shape((2, 4, 5))
    with pytest.raises(ValueError, match="rank 3"):
        layer.compute_output_shape((2, 3))


# ---------------------------------------------------------------------- names, dtype
def test_default_names_are_unique_and_reset():
    names = [BatchNormalization().name for _ in range(3)]
    assert names == ["batch_normalization", "batch_normalization_1", "batch_normalization_2"]
    assert BatchNormalization(name="bn").name == "bn"
    assert Scale().name == "scale"
    batchnorm.clear_session()
    assert BatchNormalization().name == "batch_normalization"


def test_bad_constructor_does_not_consume_a_name():
    with pytest.raises(ValueError):
        BatchNormalization(momentum=2.0)
    assert BatchNormalization().name == "batch_normalization"


def test_variable_names_follow_the_layer_name():
    layer = BatchNormalization(name="bn_1")
    layer.build((None, 2))
    assert layer.weight_names[0] == "bn_1/gamma"


def test_dtype_property():
    assert BatchNormalization().dtype is None
    assert BatchNormalization(dtype="float16").dtype == torch.float32
    assert BatchNormalization(dtype=torch.float64).dtype == torch.float64
    layer = BatchNormalization()
    layer(torch.zeros(2, 3, dtype=torch.float64))
    assert layer.dtype == torch.float64
    with pytest.raises(ValueError, match="dtype"):
        BatchNormalization(dtype="int32")
    with pytest.raises(TypeError, match="dtype"):
        BatchNormalization(dtype=3)


# ---------------------------------------------------------------------- losses
def test_regularization_losses_are_recomputed_and_differentiable():
    layer = BatchNormalization(
        gamma_regularizer="l2", beta_regularizer=batchnorm.regularizers.L1(0.5)
    )
    layer.build((None, 3))
    assert [float(v.detach()) for v in layer.losses] == pytest.approx([0.03, 0.0])
    with torch.no_grad():
        layer.gamma.fill_(2.0)
        layer.beta.fill_(-1.0)
    losses = layer.losses
    assert [float(v.detach()) for v in losses] == pytest.approx([0.12, 1.5])
    sum(losses).backward()
    assert torch.allclose(layer.gamma.grad, torch.full((3,), 0.04))
    assert torch.allclose(layer.beta.grad, torch.full((3,), -0.5))


def test_activity_regularizer_gives_a_per_call_loss_divided_by_batch():
    layer = BatchNormalization(activity_regularizer=batchnorm.regularizers.L1(0.1))
    x = torch.randn(8, 3)
    y = layer(x, training=False)
    (loss,) = layer.losses
    assert float(loss.detach()) == pytest.approx(0.1 * float(y.abs().sum().detach()) / 8, rel=1e-6)
    layer(torch.randn(4, 3), training=False)
    assert len(layer.losses) == 1  # the latest call's, not accumulated


def test_add_loss_callables_persist_and_tensors_last_one_call():
    layer = Scale()
    layer(torch.ones(2, 3))
    layer.add_loss(lambda: layer.w.sum())
    layer.add_loss(torch.tensor(5.0))
    assert [float(v.detach()) for v in layer.losses] == [pytest.approx(0.03), 3.0, 5.0]
    layer(torch.ones(2, 3))
    assert [float(v.detach()) for v in layer.losses] == [pytest.approx(0.03), 3.0]
    with pytest.raises(TypeError, match="add_loss"):
        layer.add_loss("big")


def test_add_update_runs_callables_in_eager_and_updates_is_empty():
    layer = Scale()
    layer(torch.ones(1, 2))
    layer.add_update(lambda: layer.calls.add_(10))
    assert float(layer.calls) == 11
    assert layer.updates == []


# ---------------------------------------------------------------------- call
def test_call_returning_none_is_a_value_error():
    with pytest.raises(ValueError, match="returned None"):
        ReturnsNone()(torch.ones(2))


def test_apply_is_call_and_still_applies_functions_to_modules():
    layer = BatchNormalization()
    x = torch.randn(4, 3)
    layer.eval()
    assert torch.equal(layer.apply(x), layer(x))
    seen = []
    model = nn.Sequential(nn.Linear(3, 3), layer)
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen == ["Linear", "BatchNormalization", "Sequential"]


def test_forward_hooks_run():
    layer = BatchNormalization()
    seen = []
    layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    layer(torch.randn(4, 3))
    assert seen == [torch.Size([4, 3])]


def test_custom_layer_trains_with_constraints_applied_after_each_step():
    layer = Scale()
    layer(torch.ones(1, 3))
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    handle = batchnorm.apply_constraints_on_step(opt, layer)
    loss = layer(torch.ones(4, 3)).sum()  # d/dw = 4 → w = 1 − 4 < 0 → projected to 0
    loss.backward()
    opt.step()
    assert torch.equal(layer.w.detach(), torch.zeros(3))
    handle.remove()
    opt.zero_grad()
    layer(-torch.ones(4, 3)).sum().backward()
    opt.step()  # no projection any more: w = 0 + 4
    assert torch.equal(layer.w.detach(), torch.full((3,), 4.0))


def test_apply_constraints_on_batchnorm_weights():
    layer = BatchNormalization(
        gamma_constraint=batchnorm.constraints.MaxNorm(1.0), beta_constraint="non_neg"
    )
    layer.build((None, 4))
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([3.0, 0.0, 4.0, 0.0]))
        layer.beta.copy_(torch.tensor([-1.0, 2.0, -3.0, 4.0]))
    layer.apply_constraints()
    assert torch.allclose(layer.gamma, torch.tensor([0.6, 0.0, 0.8, 0.0]))
    assert layer.beta.tolist() == [0.0, 2.0, 0.0, 4.0]


def test_deepcopy_and_pickle_keep_weights_name_and_behaviour():
    layer = BatchNormalization(axis=1, gamma_regularizer="l2", momentum=0.5)
    x = torch.randn(6, 3, 4)
    layer(x, training=True)
    for make in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))):
        clone = make(layer)
        assert clone.name == layer.name
        for a, b in zip(clone.weights, layer.weights, strict=True):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
        assert torch.equal(clone(x, training=True), layer(x.clone(), training=True))
        assert torch.equal(clone.moving_mean, layer.moving_mean)
        assert float(clone.losses[0].detach()) == float(layer.losses[0].detach())
        with torch.no_grad():
            clone.gamma.fill_(3.0)
        assert float(clone.losses[0].detach()) != float(
            layer.losses[0].detach()
        )  # follows its own gamma


def test_state_dict_loads_into_an_unbuilt_layer(tmp_path):
    source = BatchNormalization(axis=[1, 2], renorm=True, momentum=0.5)
    source(torch.randn(4, 3, 2, 5, dtype=torch.float64), training=True)
    path = tmp_path / "bn.pt"
    torch.save(source.state_dict(), path)
    state = torch.load(path, weights_only=True)  # plain tensors and Python values only
    target = BatchNormalization(axis=[1, 2], renorm=True, momentum=0.5)
    target.load_state_dict(state)
    assert target.built and target.dtype == torch.float64
    for a, b in zip(target.weights, source.weights, strict=True):
        assert torch.equal(a, b)
    x = torch.randn(4, 3, 2, 5, dtype=torch.float64)
    assert torch.equal(target(x, training=False), source(x, training=False))


def test_state_dict_of_an_unbuilt_layer_round_trips():
    layer = BatchNormalization()
    other = BatchNormalization()
    other.load_state_dict(layer.state_dict())
    assert not other.built
