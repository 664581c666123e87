"""BatchNormalization: arguments, errors, training flag, dtypes, atomicity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import batchnorm
import reference
from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot

# ---------------------------------------------------------------------- constructor errors
BAD_ARGS = [
    ({"axis": 1.5}, TypeError, "axis"),
    ({"axis": "1"}, TypeError, "axis"),
    ({"axis": [1, "2"]}, TypeError, "axis"),
    ({"axis": True}, TypeError, "axis"),
    ({"axis": []}, ValueError, "axis"),
    ({"axis": [1, 1]}, ValueError, "Duplicate axis"),
    ({"momentum": 1.5}, ValueError, r"momentum.*\[0, 1\].*1.5"),
    ({"momentum": -0.1}, ValueError, r"momentum.*\[0, 1\]"),
    ({"momentum": "0.9"}, TypeError, "momentum"),
    ({"epsilon": -1e-3}, ValueError, "epsilon.*>= 0"),
    ({"epsilon": float("nan")}, ValueError, "epsilon"),
    ({"epsilon": "1e-3"}, TypeError, "epsilon"),
    ({"center": "yes"}, TypeError, "center"),
    ({"scale": 1}, TypeError, "scale"),
    ({"gamma_initializer": "no_such_init"}, ValueError, "gamma_initializer.*Known names"),
    ({"beta_initializer": 3}, TypeError, "beta_initializer"),
    ({"moving_variance_initializer": None}, ValueError, "moving_variance_initializer"),
    ({"gamma_regularizer": "l3"}, ValueError, "gamma_regularizer.*Known names"),
    ({"beta_constraint": "positive"}, ValueError, "beta_constraint.*Known names"),
    ({"renorm": 1}, TypeError, "renorm"),
    ({"renorm": True, "renorm_clipping": {"rmax": 2, "r_min": 0.5}}, ValueError, "invalid keys"),
    ({"renorm": True, "renorm_clipping": {"rmin": -1.0}}, ValueError, "rmin.*>= 0.*-1.0"),
    (
        {"renorm": True, "renorm_clipping": {"rmin": 2.0, "rmax": 1.0}},
        ValueError,
        "rmax=1.0, rmin=2.0",
    ),
    ({"renorm": True, "renorm_clipping": {"dmax": -0.5}}, ValueError, "dmax.*-0.5"),
    ({"renorm": True, "renorm_clipping": {"dmax": "big"}}, TypeError, "dmax"),
    ({"renorm": True, "renorm_clipping": [1, 2]}, TypeError, "renorm_clipping"),
    ({"renorm": True, "renorm_clipping": {"rmax": torch.ones(2)}}, TypeError, "rmax"),
    ({"renorm": True, "renorm_momentum": 2.0}, ValueError, "renorm_momentum"),
    ({"fused": "yes"}, TypeError, "fused"),
    ({"virtual_batch_size": 2.0}, TypeError, "virtual_batch_size"),
    ({"virtual_batch_size": 0}, ValueError, "virtual_batch_size.*positive"),
    ({"virtual_batch_size": -4}, ValueError, "virtual_batch_size.*positive"),
    ({"adjustment": 3}, TypeError, "adjustment.*callable"),
    ({"virtual_batch_size": 2, "adjustment": lambda s: (1, 0)}, ValueError, "adjustment cannot"),
    ({"fused": True, "renorm": True}, ValueError, "fused=True.*renorm=True"),
    ({"fused": True, "axis": [1, 2]}, ValueError, "only supported when axis is 1 or 3"),
    ({"fused": True, "axis": 2}, ValueError, "only supported when axis is 1 or 3"),
    ({"fused": True, "virtual_batch_size": 2}, ValueError, "virtual_batch_size"),
    ({"fused": True, "adjustment": lambda s: (1, 0)}, ValueError, "adjustment"),
    ({"fused": True, "dtype": "float64"}, ValueError, "compute dtype"),
    ({"trainable": "no"}, TypeError, "trainable"),
    ({"name": 3}, TypeError, "name"),
    ({"unbiased_moving_variance": "yes"}, TypeError, "unbiased_moving_variance"),
    ({"ghost_grouping": "random"}, ValueError, "ghost_grouping"),
    ({"activity_regularizer": "l5"}, ValueError, "activity_regularizer"),
    ({"data_format": "NCHW"}, TypeError, "data_format"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGS, ids=[str(a[0]) for a in BAD_ARGS])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        BatchNormalization(**kwargs)


def test_renorm_options_are_ignored_without_renorm():
    """TF only reads renorm_clipping/renorm_momentum when renorm=True."""
    layer = BatchNormalization(renorm_clipping={"bogus": 1}, renorm_momentum=5.0)
    assert layer.renorm_clipping == {}


# ---------------------------------------------------------------------- build errors
@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({"axis": 4}, (2, 3, 4, 5), r"Expected 0 <= axis < inputs.rank.*axis=4"),
        ({"axis": -5}, (2, 3, 4, 5), "Expected 0 <= axis"),
        ({"axis": [1, 4]}, (2, 3, 4, 5), "Expected 0 <= axis"),
        ({"axis": [1, -3]}, (2, 3, 4, 5), "Duplicate axis"),
        ({"axis": 0, "virtual_batch_size": 2}, (4, 3), "axis cannot include 0"),
        ({"axis": 1}, (None, None, 3), "undefined `axis` dimension"),
        ({"fused": True}, (4, 3), "4D or 5D"),
        ({"fused": True, "axis": -4}, (2, 3, 4, 5), "Unsupported axis"),
        ({}, (), "undefined rank"),
    ],
)
def test_build_errors(kwargs, shape, match):
    layer = BatchNormalization(**kwargs)
    with pytest.raises(ValueError, match=match):
        layer.build(shape)
    assert not layer.built and layer.weights == []


@pytest.mark.parametrize(
    ("kwargs", "shape", "fused", "bessel"),
    [
        ({}, (2, 3, 4, 5), True, True),
        ({"axis": 1}, (2, 3, 4, 5), True, True),
        ({"axis": 2}, (2, 3, 4, 5), False, False),
        ({}, (2, 3), False, False),
        ({}, (2, 3, 4), False, False),
        ({"axis": 1}, (2, 3, 4, 5, 6), True, True),
        ({"axis": 4}, (2, 3, 4, 5, 6), True, True),
        ({"axis": 3, "fused": True}, (2, 3, 4, 5, 6), False, False),  # TF: silently non-fused
        ({"axis": -4}, (2, 3, 4, 5), False, False),  # TF raises here; we fall back (documented)
        ({"fused": False}, (2, 3, 4, 5), False, False),
        ({"fused": False, "unbiased_moving_variance": True}, (2, 3, 4, 5), False, True),
        ({"unbiased_moving_variance": False}, (2, 3, 4, 5), True, False),
        ({"axis": [1, 2]}, (2, 3, 4, 5), False, False),
        ({"renorm": True}, (2, 3, 4, 5), False, False),
        ({"dtype": "float64"}, (2, 3, 4, 5), False, False),
    ],
)
def test_fused_resolution_follows_tf(kwargs, shape, fused, bessel):
    layer = BatchNormalization(**kwargs)
    layer.build(shape)
    assert layer.fused is fused
    assert layer._bessel is bessel


def test_axis_after_build_is_positive_and_config_keeps_the_original():
    layer = BatchNormalization(axis=[-1, 1])
    layer.build((2, 3, 4))
    assert layer.axis == [2, 1]
    assert layer.get_config()["axis"] == [-1, 1]


def test_parameter_shapes():
    single = BatchNormalization(axis=1)
    single.build((2, 3, 4, 5))
    assert single.gamma.shape == (3,)
    multi = BatchNormalization(axis=[1, 3])
    multi.build((2, 3, 4, 5))
    assert multi.gamma.shape == (1, 3, 1, 5)


def test_absent_variables_are_none():
    layer = BatchNormalization(center=False, scale=False)
    layer.build((None, 3))
    assert layer.gamma is None and layer.beta is None
    assert set(layer.state_dict()) == {"moving_mean", "moving_variance", "_extra_state"}
    assert layer.weight_names == [
        "batch_normalization/moving_mean",
        "batch_normalization/moving_variance",
    ]


def test_initializers_are_used():
    layer = BatchNormalization(
        gamma_initializer=batchnorm.initializers.Constant(2.0),
        beta_initializer="ones",
        moving_mean_initializer={"class_name": "Constant", "config": {"value": 0.5}},
        moving_variance_initializer=lambda shape, dtype=None: torch.full(shape, 4.0, dtype=dtype),
    )
    layer.build((None, 2))
    assert [w.tolist() for w in layer.weights] == [[2.0, 2.0], [1.0, 1.0], [0.5, 0.5], [4.0, 4.0]]


def test_initializer_returning_a_wrong_shape_is_rejected():
    layer = BatchNormalization(gamma_initializer=lambda shape, dtype=None: torch.ones(5))
    with pytest.raises(ValueError, match=r"returned a value of shape \(5,\).*\(3,\)"):
        layer.build((None, 3))


# ---------------------------------------------------------------------- call errors (atomic)
@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (
            torch.randn(4, 3, 5),
            ValueError,
            r"expected shape \(None, 3\).*received shape \(4, 3, 5\)",
        ),
        (torch.randn(4, 5), ValueError, r"expected shape \(None, 3\).*received shape \(4, 5\)"),
        (torch.randn(4, 3, dtype=torch.complex64), TypeError, "complex"),
        ("not a tensor", TypeError, "torch.Tensor"),
    ],
    ids=["rank", "channels", "complex", "string"],
)
@pytest.mark.parametrize("training", [True, False])
def test_bad_input_raises_and_changes_nothing(x, error, match, training):
    layer = BatchNormalization(momentum=0.5)
    layer(torch.randn(8, 3), training=True)
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer(x, training=training)
    assert_unchanged(layer, before)


def test_empty_batch():
    layer = BatchNormalization()
    layer.build((None, 3))
    before = snapshot(layer)
    assert layer(torch.empty(0, 3), training=False).shape == (0, 3)
    with pytest.raises(ValueError, match="empty batch"):
        layer(torch.empty(0, 3), training=True)
    assert_unchanged(layer, before)


def test_bad_training_value():
    layer = BatchNormalization()
    with pytest.raises(TypeError, match="training"):
        layer(torch.randn(4, 3), training="yes")
    with pytest.raises(ValueError, match="training"):
        layer(torch.randn(4, 3), training=torch.tensor([True, False]))


# ---------------------------------------------------------------------- training flag
def test_training_none_follows_the_module_flag_and_new_layers_train():
    x = torch.randn(16, 3) * 3 + 2
    layer = BatchNormalization(momentum=0.5)
    assert layer.training
    y = layer(x)
    assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-5)  # batch statistics
    assert not torch.equal(layer.moving_mean, torch.zeros(3))
    layer.eval()
    before = snapshot(layer)
    y = layer(x)
    assert_unchanged(layer, before)
    expected = (x - layer.moving_mean) / torch.sqrt(layer.moving_variance + 1e-3)
    assert torch.allclose(y, expected, atol=1e-6)


def test_explicit_training_wins_over_the_module_flag():
    x = torch.randn(16, 3) + 5
    layer = BatchNormalization()
    layer.eval()
    y = layer(x, training=True)
    assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-5)
    layer.train()
    before = snapshot(layer)
    layer(x, training=False)
    assert_unchanged(layer, before)


@pytest.mark.parametrize("flag", [torch.tensor(True), torch.tensor(1), 1, np.bool_(True)])
def test_training_accepts_tensors_and_ints(flag):
    layer = BatchNormalization()
    y = layer(torch.randn(16, 3) + 5, training=flag)
    assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-5)


def test_frozen_layer_uses_moving_statistics_even_in_training():
    x = torch.randn(16, 3, requires_grad=True)
    layer = BatchNormalization(trainable=False)
    layer.build((None, 3))
    with torch.no_grad():
        layer.moving_mean.fill_(1.0)
        layer.moving_variance.fill_(4.0)
    before = snapshot(layer)
    y = layer(x, training=True)
    assert_unchanged(layer, before)
    assert torch.allclose(y, (x - 1.0) / torch.sqrt(torch.tensor(4.0 + 1e-3)))
    y.sum().backward()
    assert layer.gamma.grad is None and layer.beta.grad is None
    assert x.grad is not None
    assert isinstance(layer.gamma, nn.Parameter)


def test_moving_statistics_update_in_place():
    layer = BatchNormalization()
    layer.build((None, 3))
    mean_ref = layer.moving_mean
    layer(torch.randn(8, 3), training=True)
    assert layer.moving_mean is mean_ref  # same tensor, updated in place


# ---------------------------------------------------------------------- dtypes
def test_numpy_in_numpy_out():
    layer = BatchNormalization()
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = layer(x, training=False)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_input_float32_statistics_output_in_input_dtype(dtype):
    layer = BatchNormalization(momentum=0.0)
    x = (torch.randn(64, 3) * 10000).to(dtype)  # |x| < 65504, but x² overflows float16
    y = layer(x, training=True)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert layer.gamma.dtype == torch.float32 and layer.moving_variance.dtype == torch.float32
    x64 = x.double()
    var = x64.var(0, unbiased=False)
    assert torch.allclose(layer.moving_variance.double(), var, rtol=1e-5)
    expected = (x64 - x64.mean(0)) / torch.sqrt(var + 1e-3)
    assert torch.allclose(y.double(), expected, atol=2 * 2.0**-7 * 4)


def test_float64_input_builds_float64_variables():
    layer = BatchNormalization()
    y = layer(torch.randn(8, 3, dtype=torch.float64), training=True)
    assert y.dtype == torch.float64 and layer.moving_mean.dtype == torch.float64
    assert layer.fused is False


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_input_is_cast_to_float32(dtype):
    layer = BatchNormalization(momentum=0.5)
    x = torch.randint(0, 2, (16, 3)).to(dtype)
    y = layer(x, training=True)
    assert y.dtype == torch.float32 and layer.gamma.dtype == torch.float32
    ref = BatchNormalization(momentum=0.5)
    assert torch.equal(y, ref(x.float(), training=True))


def test_declared_dtype_casts_inputs_like_tf():
    layer = BatchNormalization(dtype="float16")
    y = layer(torch.randn(8, 3), training=True)
    assert y.dtype == torch.float16 and layer.gamma.dtype == torch.float32


def test_non_contiguous_and_channels_last_inputs():
    x = torch.randn(4, 3, 5, 6)
    layer = BatchNormalization(axis=1, momentum=0.5)
    y_ref = layer(x.clone(), training=True)
    stats = snapshot(layer)
    for variant in (
        x.contiguous(memory_format=torch.channels_last),
        x.transpose(2, 3).transpose(2, 3),
    ):
        other = BatchNormalization(axis=1, momentum=0.5)
        y = other(variant, training=True)
        assert torch.allclose(y, y_ref, atol=1e-6)
        for k, v in snapshot(other).items():
            assert torch.allclose(v, stats[k], atol=1e-7)
    strided = torch.randn(8, 6)[:, ::2]
    out = BatchNormalization()(strided, training=True)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-6)


# ------------------------------------------------------------- against the float64 reference
@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({}, (12, 4)),
        ({"axis": 1}, (3, 4, 5, 2)),
        ({"axis": [1, 3]}, (3, 4, 2, 5)),
        ({"center": False}, (5, 2, 3)),
        ({"axis": 2}, (2, 3, 4, 5, 2)),
    ],
)
def test_float64_matches_reference(kwargs, shape):
    rng = np.random.default_rng(1)
    layer = BatchNormalization(momentum=0.7, epsilon=1e-4, **kwargs)
    layer.build(shape)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    layer.double()
    state = reference.state_of(layer)
    for _ in range(3):
        x = rng.normal(2.0, 3.0, shape)
        dy = rng.normal(size=shape)
        xt = torch.tensor(x, requires_grad=True)
        y = layer(xt, training=True)
        (y * torch.tensor(dy)).sum().backward()
        options = reference.Options(momentum=0.7, epsilon=1e-4, bessel=layer._bessel)
        y_ref, dx_ref, dg_ref, db_ref, state = reference.train_step(
            x, dy, layer.axis, state, options
        )
        np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xt.grad.numpy(), dx_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(layer.moving_mean.numpy(), state.moving_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.moving_variance.numpy(), state.moving_variance, rtol=1e-12)
        if layer.gamma is not None:
            np.testing.assert_allclose(layer.gamma.grad.numpy(), dg_ref, rtol=1e-8, atol=1e-10)
            layer.gamma.grad = None
        if layer.beta is not None:
            np.testing.assert_allclose(layer.beta.grad.numpy(), db_ref, rtol=1e-8, atol=1e-10)
            layer.beta.grad = None
    x = rng.normal(size=shape)
    y = layer(torch.tensor(x), training=False)
    np.testing.assert_allclose(
        y.detach().numpy(), reference.inference(x, layer.axis, state, 1e-4), rtol=1e-10
    )


def test_large_mean_does_not_cancel():
    """Mean 1e4, std 1 in float32: normalized output within 1e-3 of float64."""
    torch.manual_seed(0)
    x = torch.randn(256, 8) + 1e4
    layer = BatchNormalization()
    y = layer(x, training=True)
    x64 = x.double()
    ref = (x64 - x64.mean(0)) / torch.sqrt(x64.var(0, unbiased=False) + 1e-3)
    assert float((y.detach().double() - ref).abs().max()) <= 1e-3
