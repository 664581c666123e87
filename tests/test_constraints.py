"""Constraints against tf_keras: names, projections of random tensors, configs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch

from batchnorm import constraints as C

K = tf_keras.constraints

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "name",
    [
        *("max_norm", "MaxNorm", "maxnorm", "non_neg", "nonneg", "unit_norm", "unitnorm"),
        *("min_max_norm", "MinMaxNorm", "radial_constraint", "RadialConstraint"),
    ],
)
def test_lookup_gives_keras_class_and_config(name):
    theirs, ours = K.get(name), C.get(name)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == theirs.get_config()
    assert C.deserialize(name).get_config() == K.deserialize(name).get_config()


PROJECTIONS = [
    ("MaxNorm", {}, (6, 4)),
    ("max_norm", {"max_value": 0.5, "axis": 1}, (6, 4)),
    ("MaxNorm", {"max_value": 3.0, "axis": [0, 1, 2]}, (3, 3, 4, 5)),
    ("NonNeg", {}, (5, 7)),
    ("non_neg", {}, (4,)),
    ("UnitNorm", {}, (6, 4)),
    ("unit_norm", {"axis": [0, 1]}, (3, 3, 2)),
    ("MinMaxNorm", {}, (6, 4)),
    ("min_max_norm", {"min_value": 1.0, "max_value": 2.0, "rate": 0.3, "axis": 1}, (6, 4)),
    ("MinMaxNorm", {"min_value": 2.5, "max_value": 4.0, "axis": [0, 2]}, (5, 3, 4)),
    ("RadialConstraint", {}, (2, 2, 3, 2)),
    ("radial_constraint", {}, (3, 3, 1, 4)),
    ("RadialConstraint", {}, (4, 4, 2, 2)),
    ("RadialConstraint", {}, (5, 5, 3, 1)),
    ("RadialConstraint", {}, (6, 6, 1, 1)),
    ("RadialConstraint", {}, (7, 7, 2, 3)),
]


@pytest.mark.parametrize(("name", "kwargs", "shape"), PROJECTIONS)
def test_projections_equal_keras(name, kwargs, shape):
    w = (RNG.normal(size=shape) * RNG.uniform(0.1, 3.0)).astype(np.float32)
    theirs, ours = getattr(K, name)(**kwargs), getattr(C, name)(**kwargs)
    assert ours.get_config() == theirs.get_config()
    expected = theirs(tf.constant(w)).numpy()
    got = ours(torch.tensor(w))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)
    converted = C.get(theirs)  # a tf_keras object becomes ours
    assert type(converted) is type(ours) and converted.get_config() == ours.get_config()


def test_projection_is_differentiable_like_keras():
    w = RNG.normal(size=(6, 4)).astype(np.float32)
    tw = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(K.MinMaxNorm(0.5, 1.5, 0.7)(tw) ** 2)
    expected = tape.gradient(loss, tw).numpy()
    x = torch.tensor(w, requires_grad=True)
    (C.MinMaxNorm(0.5, 1.5, 0.7)(x) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "theirs",
    [
        K.MaxNorm(3, axis=1),
        K.NonNeg(),
        K.UnitNorm([0, 1]),
        K.MinMaxNorm(0.5, 2.0, 0.3),
        K.RadialConstraint(),
    ],
    ids=lambda c: type(c).__name__,
)
def test_serialization_round_trips_with_keras(theirs):
    ours = C.get(theirs)
    for legacy in (False, True):
        config = C.serialize(ours, use_legacy_format=legacy)
        assert config == K.serialize(theirs, use_legacy_format=legacy)
        back = K.deserialize(config, use_legacy_format=legacy)
        assert type(back) is type(theirs) and back.get_config() == theirs.get_config()
        clone = C.deserialize(K.serialize(theirs, use_legacy_format=legacy))
        assert type(clone) is type(ours) and clone.get_config() == ours.get_config()


def test_custom_objects_deserialize_like_keras():
    class Clip(C.Constraint):
        def __call__(self, w):
            return w.clamp(-1, 1)

    config = C.serialize(Clip())
    assert config["class_name"] == "Clip" and config["registered_name"] == "Clip"
    assert config["module"] == Clip.__module__
    assert type(C.deserialize(config, custom_objects={"Clip": Clip})) is Clip
    with pytest.raises(ValueError, match="Unknown constraint 'Clip'"):
        C.deserialize(config)


def test_get_instantiates_classes_and_passes_callables():
    assert C.get(None) is None and K.get(None) is None
    assert isinstance(C.get(C.NonNeg), C.NonNeg)  # Keras returns the class (documented)
    assert K.get(K.NonNeg) is K.NonNeg
    fn = lambda w: w.clamp_min(0)  # noqa: E731
    assert C.get(fn) is fn and K.get(fn) is fn


def test_errors_like_keras():
    for module in (K, C):
        with pytest.raises(ValueError, match="Unknown constraint"):
            module.get("positive")
    with pytest.raises(ValueError, match="rank 4"):
        K.RadialConstraint()(tf.ones((3, 3, 1)))
    with pytest.raises(ValueError, match="4-D"):
        C.RadialConstraint()(torch.ones(3, 3, 1))
    # TensorFlow fails inside a reshape for non-square or 1x1 filters; we say why
    for shape in ((3, 4, 1, 1), (1, 1, 2, 2)):
        with pytest.raises(tf.errors.InvalidArgumentError):
            K.RadialConstraint()(tf.ones(shape))
        with pytest.raises(ValueError, match="square filters of size >= 2"):
            C.RadialConstraint()(torch.ones(shape))
