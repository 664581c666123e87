"""Layers before their first call: PyTorch's lazy-module convention for unbuilt layers,
and real parameters whenever their shapes are known (``from_torch``, loaded weights,
``input_shape=``, ``build()``), so that optimizers, checkpoints, DDP and ``torch.compile``
see the weights or refuse with PyTorch's own error, never skip them."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

import batchnorm
import reference as R
from batchnorm import BatchNormalization


def _randomize(bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)


def _cnn() -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
        nn.BatchNorm1d(5),
    )
    _randomize(net[1])
    _randomize(net[5])
    return net


def test_an_unbuilt_layer_holds_lazy_placeholders_for_every_variable():
    layer = BatchNormalization(renorm=True)
    assert isinstance(layer.gamma, UninitializedParameter)
    assert isinstance(layer.beta, UninitializedParameter)
    for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"):
        assert isinstance(getattr(layer, name), UninitializedBuffer), name
    assert layer.has_uninitialized_params()
    plain = BatchNormalization(center=False, scale=False)
    assert plain.gamma is None and plain.beta is None and plain.moving_stddev is None
    assert list(plain.parameters()) == []


def test_an_optimizer_made_before_the_first_call_trains_the_layer():
    """The placeholders are materialized in place, so the optimizer's parameters are the
    layer's: one SGD step against the float64 reference's gradient."""
    layer = BatchNormalization(momentum=0.9)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(16, 3, dtype=torch.float64) * 2 + 1
    dy = torch.randn(16, 3, dtype=torch.float64)
    (layer(x, training=True) * dy).sum().backward()
    opt.step()
    state = R.State(np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    _, _, dgamma, dbeta, _ = R.train_step(x.numpy(), dy.numpy(), [1], state, R.Options(0.9))
    np.testing.assert_allclose(layer.gamma.detach().numpy(), 1 - 0.5 * dgamma, atol=1e-12)
    np.testing.assert_allclose(layer.beta.detach().numpy(), -0.5 * dbeta, atol=1e-12)
    assert not layer._forward_pre_hooks  # the lazy hook is gone once built


def test_from_torch_layers_hold_their_weights_at_once():
    net = _cnn()
    ours = batchnorm.from_torch(net)
    names = dict(ours.named_parameters())
    assert {"1.gamma", "1.beta", "5.gamma", "5.beta"} <= set(names)
    torch.testing.assert_close(names["1.gamma"].detach(), net[1].weight.detach())
    state = ours.state_dict()
    torch.testing.assert_close(state["5.moving_variance"], net[5].running_var)
    assert ours[1].built and ours[1]._input_rank == 4  # BatchNorm2d: 4-D input
    assert not ours[5].built  # BatchNorm1d: the first call fixes 2-D or 3-D
    assert not any(isinstance(p, UninitializedParameter) for p in ours.parameters())


def test_an_optimizer_made_right_after_from_torch_trains_like_torch():
    net = _cnn()
    ours = batchnorm.from_torch(net)
    before = net[5].bias.detach().clone()
    opt_ref = torch.optim.SGD(net.parameters(), lr=0.1)
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    x = torch.randn(8, 3, 8, 8)
    for model, o in ((net, opt_ref), (ours, opt)):
        model.train()
        model(x).square().mean().backward()
        o.step()
    torch.testing.assert_close(ours[1].gamma, net[1].weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[5].beta, net[5].bias, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[5].moving_variance, net[5].running_var, rtol=1e-5, atol=1e-6)
    assert (ours[5].beta - before).abs().max() > 1e-3  # the step moved it


def test_a_checkpoint_saved_right_after_from_torch_reloads_the_weights():
    net = _cnn().eval()
    ours = batchnorm.from_torch(net)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    fresh = batchnorm.from_torch(_cnn())  # other random weights
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(fresh.eval()(x), net(x), rtol=1e-5, atol=1e-5)
    unbuilt = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        BatchNormalization(axis=1, epsilon=1e-5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
        BatchNormalization(axis=1, epsilon=1e-5),
    )
    buffer.seek(0)
    unbuilt.load_state_dict(torch.load(buffer, weights_only=True))
    assert not isinstance(unbuilt[5].gamma, UninitializedParameter)
    torch.testing.assert_close(unbuilt.eval()(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 7)], ids=["2-D", "3-D"])
def test_a_batchnorm1d_layer_fixes_its_rank_on_the_first_call(shape):
    ref = nn.BatchNorm1d(5, momentum=0.2)
    _randomize(ref)
    ours = batchnorm.from_torch(ref)
    x = torch.randn(*shape) * 3 + 2
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.moving_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    assert ours.built and ours._input_rank == len(shape)


def test_a_later_build_keeps_weights_held_before_it_and_checks_their_shape():
    ref = nn.BatchNorm1d(4)
    _randomize(ref)
    layer = batchnorm.from_torch(ref)
    layer.build((None, 4))
    torch.testing.assert_close(layer.gamma.detach(), ref.weight.detach())
    torch.testing.assert_close(layer.moving_mean, ref.running_mean)
    other = batchnorm.from_torch(ref)
    with pytest.raises(ValueError, match=r"already holds weights of shape \(4,\).*needs weights "):
        other.build((None, 5))
    assert not other.built
    torch.testing.assert_close(other.gamma.detach(), ref.weight.detach())


def test_ddp_refuses_an_unbuilt_layer_with_pytorchs_error(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        with pytest.raises(RuntimeError, match="uninitialized parameters"):
            nn.parallel.DistributedDataParallel(
                nn.Sequential(nn.Linear(3, 3), BatchNormalization())
            )
        built = nn.Sequential(nn.Linear(3, 3), BatchNormalization(input_shape=(3,)))
        nn.parallel.DistributedDataParallel(built)  # real parameters: accepted
    finally:
        dist.destroy_process_group()


def test_an_unbuilt_state_dict_round_trips_and_stays_unbuilt():
    state = BatchNormalization().state_dict()
    assert isinstance(state["gamma"], UninitializedParameter)
    layer = BatchNormalization()
    layer.load_state_dict(state)
    assert not layer.built and isinstance(layer.moving_mean, UninitializedBuffer)
    y = layer(torch.ones(2, 3), training=False)
    np.testing.assert_allclose(y.detach().numpy(), 1 / np.sqrt(1 + 1e-3), rtol=1e-6)


def test_compile_builds_an_unbuilt_layer_and_takes_a_tensor_training_flag():
    """fullgraph compile of an unbuilt layer builds it on the first compiled call (as
    PyTorch's lazy modules); a 0-dim ``training`` tensor selects the mode inside one graph,
    outputs and moving statistics against the float64 reference."""
    layer = BatchNormalization(momentum=0.5)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(16, 3) * 2 + 1
    y = compiled(x, training=torch.tensor(True))
    assert layer.built
    state = R.State(np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    dy = np.zeros((16, 3))
    y_ref, _, _, _, state = R.train_step(x.double().numpy(), dy, [1], state, R.Options(0.5))
    np.testing.assert_allclose(y.detach().numpy(), y_ref, atol=5e-6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), state.moving_mean, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), state.moving_variance, atol=1e-6)
    x2 = torch.randn(16, 3) - 1
    y2 = compiled(x2, training=torch.tensor(False))
    np.testing.assert_allclose(
        y2.detach().numpy(), R.inference(x2.numpy(), [1], state, 1e-3), atol=5e-6
    )
    np.testing.assert_allclose(layer.moving_mean.numpy(), state.moving_mean, atol=1e-6)


def test_repr_shows_every_non_default_argument():
    layer = BatchNormalization(
        center=False,
        scale=False,
        beta_regularizer="l2",
        unbiased_moving_variance=True,
        renorm=True,
        renorm_clipping={"rmax": 3.0},
        trainable=False,
        name="bn",
    )
    assert repr(layer) == (
        "BatchNormalization(name='bn', axis=-1, momentum=0.99, epsilon=0.001, "
        "trainable=False, center=False, scale=False, beta_regularizer=L2(l2=0.01), "
        "renorm=True, unbiased_moving_variance=True, renorm_clipping={'rmax': 3.0})"
    )
    converted = batchnorm.from_torch(nn.BatchNorm2d(3))
    assert repr(converted).endswith(
        "axis=1, momentum=0.9, epsilon=1e-05, unbiased_moving_variance=True)"
    )
    assert repr(BatchNormalization(name="plain")) == (
        "BatchNormalization(name='plain', axis=-1, momentum=0.99, epsilon=0.001)"
    )


@pytest.mark.parametrize("momentum", [0.1, 0.01, 0.3, 0.05, 0.123456789])
def test_momentum_converts_without_float_noise(momentum):
    ours = batchnorm.from_torch(nn.BatchNorm2d(3, momentum=momentum))
    back = batchnorm.to_torch(ours)
    assert back.momentum == momentum
    assert ours.momentum == float(f"{1 - momentum:.12g}")


def test_unbuilt_layers_deepcopy_and_pickle_and_build_independently():
    """``copy.deepcopy`` of torch's own lazy buffers fails; ours copies into fresh
    placeholders, so ``from_torch``, ``fold`` and EMA copies work on unbuilt models."""
    layer = BatchNormalization(renorm=True)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert isinstance(clone.moving_stddev, UninitializedBuffer)
        assert clone.moving_mean is not layer.moving_mean
        x = torch.randn(8, 3, dtype=torch.float64) * 2 + 1
        y = clone(x, training=True)
        state = R.State(
            np.ones(3),
            np.zeros(3),
            np.zeros(3),
            np.ones(3),
            np.ones(3) ** 0.5,
            np.zeros(3),
            np.ones(3),
        )
        options = R.Options(renorm=True)
        y_ref, *_ = R.train_step(x.numpy(), np.zeros((8, 3)), [1], state, options)
        np.testing.assert_allclose(y.detach().numpy(), y_ref, atol=1e-10)
        assert not layer.built and isinstance(layer.gamma, UninitializedParameter)
    model = batchnorm.from_torch(nn.Sequential(BatchNormalization(), nn.BatchNorm1d(3)))
    assert isinstance(model[0].gamma, UninitializedParameter)
    assert not isinstance(model[1].gamma, UninitializedParameter)


def test_data_parallel_replicas_refuse_placeholders_only():
    """``nn.DataParallel`` replicates with ``_replicate_for_data_parallel``: PyTorch's
    lazy-module error while placeholders remain, an ordinary replica once built."""
    layer = BatchNormalization()
    with pytest.raises(RuntimeError, match="uninitialized parameters"):
        layer._replicate_for_data_parallel()
    layer(torch.randn(4, 3), training=False)
    replica = layer._replicate_for_data_parallel()
    assert isinstance(replica, BatchNormalization) and replica is not layer


def test_a_state_dict_holding_some_weights_fills_an_unbuilt_layer():
    """A checkpoint of the trainable weights only (strict=False) creates every variable
    through the layer: loaded γ/β, initial statistics; a first call works (float64)."""
    layer = BatchNormalization(epsilon=0.0)
    state = {"gamma": torch.tensor([2.0, 3.0]), "beta": torch.tensor([0.5, -1.0])}
    result = layer.load_state_dict(state, strict=False)
    assert set(result.missing_keys) == {"moving_mean", "moving_variance", "_extra_state"}
    x = torch.randn(5, 2, dtype=torch.float64)
    y = layer(x, training=False)
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() * [2.0, 3.0] + [0.5, -1.0])


def test_a_failing_load_leaves_an_unbuilt_layer_unbuilt():
    layer = BatchNormalization()
    bad = {"gamma": torch.ones(3), "beta": torch.ones(4), "moving_mean": torch.zeros(3)}
    bad["moving_variance"] = torch.ones(3)
    with pytest.raises(RuntimeError, match="size mismatch for beta"):
        layer.load_state_dict(bad)
    assert not layer.built and layer.weights == []
    assert isinstance(layer.gamma, UninitializedParameter)
    assert isinstance(layer.moving_mean, UninitializedBuffer)


def test_double_before_the_first_call_gives_float64_variables():
    """As a PyTorch lazy module: ``.double()`` on an unbuilt layer makes float64
    variables (a 16-bit cast keeps float32 ones, TensorFlow's rule for 16-bit layers)."""
    layer = BatchNormalization(momentum=0.5).double()
    x = torch.randn(6, 3, dtype=torch.float64) * 3 + 1e3
    y = layer(x, training=True)
    assert layer.gamma.dtype == torch.float64 and layer.moving_mean.dtype == torch.float64
    state = R.State(np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    y_ref, _, _, _, state = R.train_step(x.numpy(), np.zeros((6, 3)), [1], state, R.Options(0.5))
    np.testing.assert_allclose(y.detach().numpy(), y_ref, atol=1e-10)
    np.testing.assert_allclose(layer.moving_variance.numpy(), state.moving_variance, rtol=1e-12)
    half = BatchNormalization().half()
    half(torch.randn(4, 3).half())
    assert half.gamma.dtype == torch.float32


def test_a_layer_holding_an_unbuilt_one_runs_and_lists_no_placeholders():
    """A ``Wrap`` with an activity regularizer around a model whose batch norm is
    unbuilt: its first call runs (the regularizer's rollback copy skips placeholders),
    and before it the weight lists hold no placeholders."""
    inner = nn.Sequential(nn.Linear(3, 3), BatchNormalization())
    wrap = batchnorm.Wrap(inner, activity_regularizer="l2")
    assert len(wrap.get_weights()) == 2  # the Linear's weight and bias
    x = torch.randn(4, 3)
    y = wrap.eval()(x)
    h = inner[0](x).detach().double()
    expected = h / np.sqrt(1 + 1e-3)
    np.testing.assert_allclose(y.detach().numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert len(wrap.get_weights()) == 6


def test_repr_of_a_subclass_compares_with_the_librarys_defaults():
    class Fused(BatchNormalization):
        def __init__(self, units: int, **kwargs):
            super().__init__(axis=1, fused=True, **kwargs)
            self.units = units

    assert repr(Fused(3, name="f")) == (
        "Fused(name='f', axis=1, momentum=0.99, epsilon=0.001, fused=True)"
    )
