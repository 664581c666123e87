"""Interop against the real counterparts: torch.nn batch norm,
tf_keras layers and the HDF5 files tf_keras writes, checkpoints, configs."""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from torch import nn

import batchnorm
from helpers import assert_unchanged, snapshot
from oracle import rel_error

TOL = 5e-5  # DESIGN.md: float32 outputs and weights


def randomize_torch_bn(bn: nn.modules.batchnorm._BatchNorm, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if bn.affine:
            bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=g))
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=g))


# --------------------------------------------------------------------------------------
# torch.nn


@pytest.mark.parametrize(
    ("cls", "shape", "momentum", "eps", "affine"),
    [
        (nn.BatchNorm1d, (8, 5), 0.1, 1e-5, True),
        (nn.BatchNorm1d, (6, 5, 7), 0.3, 1e-3, False),
        (nn.BatchNorm2d, (4, 3, 5, 6), 0.1, 1e-5, True),
        (nn.BatchNorm3d, (3, 2, 4, 3, 5), 0.25, 1e-4, True),
    ],
)
def test_from_torch_matches_torch_in_train_and_eval(cls, shape, momentum, eps, affine):
    torch.manual_seed(0)
    ref = cls(shape[1], eps=eps, momentum=momentum, affine=affine)
    randomize_torch_bn(ref)
    ours = batchnorm.from_torch(ref)
    assert isinstance(ours, batchnorm.BatchNormalization)
    assert ours.momentum == pytest.approx(1 - momentum) and ours.epsilon == eps
    for step in range(3):
        x = torch.randn(shape) * 3 + 1
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        dy = torch.randn(shape)
        ref.train()
        ours.train()
        y_ref, y = ref(xr), ours(xo)
        (y_ref * dy).sum().backward()
        (y * dy).sum().backward()
        assert rel_error(y.detach(), y_ref.detach()) <= TOL, step
        assert rel_error(xo.grad, xr.grad) <= 2e-4, step
        assert rel_error(ours.moving_mean.reshape(-1), ref.running_mean) <= TOL
        assert rel_error(ours.moving_variance.reshape(-1), ref.running_var) <= TOL
        if affine:
            assert rel_error(ours.gamma.grad.reshape(-1), ref.weight.grad) <= 2e-4
            assert rel_error(ours.beta.grad.reshape(-1), ref.bias.grad) <= 2e-4
    ref.eval()
    ours.eval()
    x = torch.randn(shape)
    assert rel_error(ours(x).detach(), ref(x).detach()) <= TOL


def test_from_torch_copies_a_model_and_leaves_the_original_alone():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.BatchNorm1d(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    torch.manual_seed(1)
    net = Net()
    randomize_torch_bn(net.features[1], 1)
    randomize_torch_bn(net.head[2], 2)
    before = snapshot(net)
    ours = batchnorm.from_torch(net)
    assert isinstance(ours.features[1], batchnorm.BatchNormalization)
    assert isinstance(ours.head[2], batchnorm.BatchNormalization)
    assert isinstance(net.features[1], nn.BatchNorm2d)  # the original is untouched
    x = torch.randn(6, 3, 6, 6)
    for training in (True, True, False):
        net.train(training)
        ours.train(training)
        assert rel_error(ours(x).detach(), net(x).detach()) <= TOL
    assert rel_error(ours.head[2].moving_variance, net.head[2].running_var) <= TOL
    fresh = Net()
    fresh.load_state_dict(before)
    assert_unchanged(fresh, before)


def test_from_torch_keeps_shared_modules_and_tied_weights():
    """A batch norm registered twice and called twice updates its running statistics
    twice per step in torch; the copy must do the same (one layer, not two), and tied
    weights elsewhere in the model stay tied."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(3, momentum=0.3)
            self.alias = self.bn
            self.c, self.d = nn.Linear(3, 3), nn.Linear(3, 3)
            self.d.weight = self.c.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.alias(self.d(self.bn(self.c(x))))

    torch.manual_seed(2)
    net = Tied()
    randomize_torch_bn(net.bn, 3)
    ours = batchnorm.from_torch(net)
    assert ours.bn is ours.alias and ours.c.weight is ours.d.weight
    assert len(list(ours.parameters())) == len(list(net.parameters()))
    x = torch.randn(8, 3) * 2 + 1
    torch.testing.assert_close(ours(x), net(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.bn.moving_variance, net.bn.running_var, rtol=1e-5, atol=1e-6)


def test_from_torch_keeps_the_values_a_lazy_batch_norm_loaded():
    """A LazyBatchNorm2d filled by load_state_dict keeps its Lazy class until its first
    forward, with real values: the conversion carries them."""
    source = nn.BatchNorm2d(3, momentum=0.3)
    randomize_torch_bn(source, 5)
    lazy = nn.LazyBatchNorm2d(momentum=0.3)
    lazy.load_state_dict(source.state_dict())
    ours = batchnorm.from_torch(nn.Sequential(lazy))[0]
    assert ours.built and ours._input_rank == 4
    x = torch.randn(4, 3, 5, 5)
    assert rel_error(ours.eval()(x).detach(), source.eval()(x).detach()) <= TOL


def test_from_torch_converts_lazy_batch_norms_to_unbuilt_layers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d(momentum=0.2, eps=1e-4))
    ours = batchnorm.from_torch(net)
    layer = ours[1]
    assert isinstance(layer, batchnorm.BatchNormalization) and not layer.built
    assert (layer.axis, layer.momentum, layer.epsilon) == (1, 0.8, 1e-4)
    x = torch.randn(4, 3, 6, 6)
    torch.testing.assert_close(ours(x), net(x), rtol=1e-5, atol=1e-5)  # both build here
    torch.testing.assert_close(layer.moving_variance, net[1].running_var, rtol=1e-5, atol=1e-6)


def test_from_torch_refuses_what_tensorflow_cannot_express():
    with pytest.raises(ValueError, match="momentum=None"):
        batchnorm.from_torch(nn.BatchNorm1d(3, momentum=None))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        batchnorm.from_torch(nn.BatchNorm1d(3, track_running_stats=False))
    sync = batchnorm.from_torch(nn.SyncBatchNorm(3))
    assert sync.synchronized


def test_to_torch_round_trip_and_errors():
    torch.manual_seed(2)
    layer = batchnorm.BatchNormalization(
        axis=1, momentum=0.8, epsilon=1e-5, unbiased_moving_variance=True
    )
    x = torch.randn(5, 3, 4, 4) + 2
    for _ in range(2):
        layer(x, training=True)
    module = batchnorm.to_torch(layer)
    assert isinstance(module, nn.BatchNorm2d) and module.momentum == pytest.approx(0.2)
    for training in (False, True):
        layer.train(training)
        module.train(training)
        x = torch.randn(5, 3, 4, 4)
        assert rel_error(module(x).detach(), layer(x).detach()) <= TOL
    assert rel_error(module.running_var, layer.moving_variance.reshape(-1)) <= TOL

    def built(**kwargs):
        bn = batchnorm.BatchNormalization(**kwargs)
        bn(torch.randn(4, 3, 2, 2), training=False)
        return bn

    cases = [
        ({"axis": 1, "renorm": True}, "renorm"),
        ({"axis": 1, "virtual_batch_size": 2}, "virtual_batch_size"),
        ({"axis": -1}, "axis"),
        ({"axis": 1, "fused": False}, "biased moving variance"),
        ({"axis": 1, "center": False}, "center != scale"),
    ]
    for kwargs, feature in cases:
        with pytest.raises(ValueError, match=feature):
            batchnorm.to_torch(built(**kwargs))
    biased = built(axis=1, fused=False)
    module = batchnorm.to_torch(biased, inference_only=True).eval()
    x = torch.randn(4, 3, 2, 2)
    assert rel_error(module(x).detach(), biased(x, training=False).detach()) <= TOL
    with pytest.raises(ValueError, match="not built"):
        batchnorm.to_torch(batchnorm.BatchNormalization(axis=1))


# --------------------------------------------------------------------------------------
# Checkpoints and configs


def test_layers_holding_weights_before_their_first_call_convert_back():
    """``from_torch`` of a BatchNorm1d holds its weights with the rank still open:
    ``to_torch`` gives the BatchNorm1d back (same numbers in train and eval); ``to_keras``
    needs the rank and says so instead of returning an unbuilt Keras layer."""
    ref = nn.BatchNorm1d(3, momentum=0.2, eps=1e-4)
    randomize_torch_bn(ref, 4)
    back = batchnorm.to_torch(batchnorm.from_torch(ref))
    assert isinstance(back, nn.BatchNorm1d) and back.momentum == 0.2 and back.eps == 1e-4
    x = torch.randn(6, 3, 5) * 2 + 1
    for training in (True, False):
        ref.train(training)
        back.train(training)
        assert rel_error(back(x).detach(), ref(x).detach()) <= TOL
    assert rel_error(back.running_var, ref.running_var) <= TOL
    with pytest.raises(ValueError, match="input rank is not fixed yet"):
        batchnorm.to_keras(batchnorm.from_torch(ref))


def test_state_dict_round_trip_with_weights_only_checkpoints():
    torch.manual_seed(6)

    def make():
        return nn.Sequential(
            nn.Linear(6, 8),
            batchnorm.BatchNormalization(renorm=True, renorm_clipping={"rmax": 2.0}),
            batchnorm.BatchNormalization(virtual_batch_size=4, momentum=0.5),
        )

    model = make()
    for _ in range(3):
        model(torch.randn(8, 6) * 2)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # no pickle code runs
    fresh = make()  # unbuilt: load_state_dict builds it from the checkpoint
    fresh.load_state_dict(state)
    model.eval()
    fresh.eval()
    x = torch.randn(5, 6)
    assert torch.equal(fresh(x), model(x))
    assert [tuple(w.shape) for w in fresh[2].weights] == [(1, 1, 8)] * 4  # TF ghost layout


def test_get_config_is_json_and_round_trips():
    layer = batchnorm.BatchNormalization(
        axis=[1, 2],
        momentum=0.9,
        epsilon=1e-4,
        renorm=True,
        renorm_clipping={"rmax": 3.0, "dmax": 1.0},
        renorm_momentum=0.8,
        virtual_batch_size=2,
        gamma_regularizer=batchnorm.regularizers.L2(0.01),
        beta_constraint=batchnorm.constraints.MaxNorm(2.0),
        moving_variance_initializer="ones",
        name="bn_config",
    )
    text = json.dumps(layer.get_config())
    clone = batchnorm.BatchNormalization.from_config(json.loads(text))
    assert clone.get_config() == layer.get_config()
    x = torch.randn(4, 3, 2, 5)
    for bn in (layer, clone):
        bn.build(x.shape)
        with torch.no_grad():
            for w in bn.weights:
                w.copy_(torch.linspace(0.5, 1.5, w.numel()).reshape(w.shape))
    assert torch.equal(clone(x, training=True), layer(x, training=True))
    assert torch.allclose(sum(clone.losses), sum(layer.losses))


# --------------------------------------------------------------------------------------
# tf_keras layers


KERAS_CASES = [
    ({"axis": -1, "momentum": 0.9}, (6, 5)),
    ({"axis": 1, "momentum": 0.8, "epsilon": 1e-4}, (4, 3, 5, 6)),  # TF's fused path
    ({"axis": [1, 3], "momentum": 0.7}, (4, 3, 2, 5)),
    (
        {
            "renorm": True,
            "renorm_clipping": {"rmin": 0.5, "rmax": 2.0, "dmax": 1.0},
            "renorm_momentum": 0.9,
            "momentum": 0.5,
        },
        (8, 4),
    ),
    ({"virtual_batch_size": 2, "axis": 1, "momentum": 0.6}, (6, 3, 4)),
    ({"center": False, "scale": False}, (5, 3)),
    (
        {
            "gamma_regularizer": {"class_name": "L2", "config": {"l2": 0.01}},
            "beta_constraint": {"class_name": "MaxNorm", "config": {"max_value": 0.5}},
            "beta_initializer": {"class_name": "Constant", "config": {"value": 0.1}},
        },
        (5, 3),
    ),
]


def run_both(keras_layer, ours, shape, steps=2, seed=0):
    """Training steps then inference on both; the largest error of outputs and weights."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(steps):
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
        y_tf = keras_layer(tf.constant(x), training=True).numpy()
        y = ours(torch.from_numpy(x), training=True).detach().numpy()
        worst = max(worst, rel_error(y, y_tf))
    for w_tf, w in zip(keras_layer.get_weights(), ours.get_weights(), strict=True):
        worst = max(worst, rel_error(w, w_tf))
    x = rng.standard_normal(shape).astype(np.float32)
    y_tf = keras_layer(tf.constant(x), training=False).numpy()
    worst = max(worst, rel_error(ours(torch.from_numpy(x), training=False).detach(), y_tf))
    if keras_layer.losses:
        ours_loss = float(sum(ours.losses).detach())
        worst = max(worst, abs(ours_loss - float(sum(keras_layer.losses))))
    return worst


@pytest.mark.parametrize(("config", "shape"), KERAS_CASES)
def test_from_keras_and_to_keras_run_like_tf_keras(config, shape):
    tf.random.set_seed(0)
    keras_layer = tf_keras.layers.BatchNormalization(**config)
    keras_layer.build((None, *shape[1:]))
    rng = np.random.default_rng(1)
    keras_layer.set_weights(
        [(0.5 + rng.random(w.shape)).astype(np.float32) for w in keras_layer.get_weights()]
    )
    ours = batchnorm.from_keras(keras_layer)
    assert ours.name == keras_layer.name and ours.built
    back = batchnorm.to_keras(ours)
    assert type(back) is type(keras_layer)
    for w_tf, w in zip(keras_layer.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_array_equal(w, w_tf)
    assert run_both(keras_layer, ours, shape) <= TOL
    assert run_both(back, batchnorm.from_keras(back), shape, seed=5) <= TOL


def test_unbuilt_keras_layers_convert_too():
    keras_layer = tf_keras.layers.BatchNormalization(momentum=0.5, name="bn_unbuilt")
    ours = batchnorm.from_keras(keras_layer)
    assert not ours.built and ours.name == "bn_unbuilt" and ours.momentum == 0.5
    shape = (6, 4)
    assert run_both(keras_layer, ours, shape) <= TOL


def test_adjustment_crosses_frameworks_only_when_given():
    def tf_adjust(shape):
        return tf.fill([shape[-1]], 1.1), tf.fill([shape[-1]], 0.2)

    def torch_adjust(shape):
        return torch.full((shape[-1],), 1.1), torch.full((shape[-1],), 0.2)

    keras_layer = tf_keras.layers.BatchNormalization(adjustment=tf_adjust)
    keras_layer.build((None, 3))
    with pytest.raises(ValueError, match="adjustment"):
        batchnorm.from_keras(keras_layer)
    ours = batchnorm.from_keras(keras_layer, adjustment=torch_adjust)
    assert run_both(keras_layer, ours, (5, 3)) <= TOL
    with pytest.raises(ValueError, match="adjustment"):
        batchnorm.to_keras(ours)
    back = batchnorm.to_keras(ours, adjustment=tf_adjust)
    assert back.adjustment is tf_adjust


def test_to_keras_refuses_what_tensorflow_cannot_express():
    contiguous = batchnorm.BatchNormalization(virtual_batch_size=2, ghost_grouping="contiguous")
    with pytest.raises(ValueError, match="ghost_grouping"):
        batchnorm.to_keras(contiguous)
    bessel = batchnorm.BatchNormalization(unbiased_moving_variance=True)
    bessel.build((None, 3))  # 2-D input: TF has no fused path for it
    with pytest.raises(ValueError, match="Bessel"):
        batchnorm.to_keras(bessel)
    with pytest.raises(ValueError, match="tf_keras BatchNormalization"):
        batchnorm.from_keras(tf_keras.layers.Dense(3))
