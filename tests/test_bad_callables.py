"""User callables that fail or return bad values (regularizers, constraints,
initializers): each raises naming the argument and leaves the layer as it was."""

from __future__ import annotations

import pytest
import torch

from bad_input import Flaky, X, assert_unbuilt, param, trained
from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot


# ---------------------------------------------------------------------- user callables
def test_raising_activity_regularizer_undoes_the_step():
    regularizer = Flaky(lambda y: y.abs().sum())
    layer = trained(activity_regularizer=regularizer)
    regularizer.broken = True
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="user bug"):
        layer(X, training=True)
    assert_unchanged(layer, before)


@pytest.mark.parametrize("argument", ["gamma_regularizer", "beta_regularizer"])
def test_raising_weight_regularizer_changes_nothing(argument):
    regularizer = Flaky(lambda w: w.square().sum())
    layer = trained(**{argument: regularizer})
    regularizer.broken = True
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="user bug"):
        _ = layer.losses
    assert_unchanged(layer, before)


CONSTRAINTS = [
    param(RuntimeError("user bug"), RuntimeError, r"user bug", id="raises"),
    param(
        torch.zeros(2),
        ValueError,
        r"The constraint of batch_normalization/beta returned shape \(2,\); expected \(3,\)",
        id="wrong-shape",
    ),
    param(
        None,
        TypeError,
        r"The constraint of batch_normalization/beta must return a tensor; returned NoneType",
        id="not-a-tensor",
    ),
    param(
        torch.zeros(3, dtype=torch.complex64),
        TypeError,
        r"The constraint of batch_normalization/beta returned complex values",
        id="complex",
    ),
]


@pytest.mark.parametrize(("result", "error", "match"), CONSTRAINTS)
def test_bad_constraint_changes_nothing(result, error, match):
    """gamma's constraint runs first and would change gamma; beta's then fails."""

    def beta_constraint(w):
        if isinstance(result, BaseException):
            raise result
        return result

    layer = trained(gamma_constraint="non_neg", beta_constraint=beta_constraint)
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([-1.0, 2.0, -3.0]))
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer.apply_constraints()
    assert_unchanged(layer, before)


INITIALIZERS = [
    "gamma_initializer",
    "beta_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
]


@pytest.mark.parametrize("argument", INITIALIZERS)
def test_raising_initializer_leaves_the_layer_unbuilt(argument):
    initializer = Flaky(lambda shape, dtype=None: torch.full(shape, 2.0, dtype=dtype))
    initializer.broken = True
    layer = BatchNormalization(renorm=True, momentum=0.5, **{argument: initializer})
    with pytest.raises(RuntimeError, match="user bug"):
        layer(X, training=True)
    assert_unbuilt(layer)
    initializer.broken = False
    expected = BatchNormalization(renorm=True, momentum=0.5, **{argument: initializer})
    assert torch.equal(layer(X, training=True), expected(X, training=True))
    assert [n for n, _ in layer.named_parameters()] == ["gamma", "beta"]
    for mine, theirs in zip(layer.weights, expected.weights, strict=True):
        assert torch.equal(mine, theirs)


BAD_INITIAL_VALUES = [
    param(
        torch.ones(5),
        ValueError,
        r"`{arg}` returned a value of shape \(5,\); expected shape \(3,\)",
        id="wrong-shape",
    ),
    param(
        "ones",
        TypeError,
        r"`{arg}` must return a tensor or array of real numbers; returned str",
        id="str",
    ),
    param(
        torch.ones(3, dtype=torch.complex64),
        TypeError,
        r"`{arg}` must return real numbers; returned complex values",
        id="complex",
    ),
]


@pytest.mark.parametrize(("value", "error", "match"), BAD_INITIAL_VALUES)
@pytest.mark.parametrize("argument", INITIALIZERS)
def test_bad_initial_value_names_the_initializer(argument, value, error, match):
    layer = BatchNormalization(**{argument: lambda shape, dtype=None: value})
    with pytest.raises(error, match=match.format(arg=argument)):
        layer.build((None, 3))
    assert_unbuilt(layer)


def test_initializer_returning_one_tensor_twice_does_not_alias_variables():
    shared = torch.zeros(3)
    layer = BatchNormalization(
        renorm=True, momentum=0.5, moving_mean_initializer=lambda shape, dtype=None: shared
    )
    layer(X, training=True)
    assert torch.equal(shared, torch.zeros(3))
    assert layer.moving_mean.data_ptr() != layer.renorm_mean.data_ptr()
    assert not torch.equal(layer.moving_mean, layer.renorm_mean)  # momentum 0.5 vs 0.99
