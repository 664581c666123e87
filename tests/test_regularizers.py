"""Regularizers against tf_keras: names, penalties, gradients, configs and errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch

from batchnorm import regularizers as R

K = tf_keras.regularizers

RNG = np.random.default_rng(0)
W = RNG.normal(size=(5, 7)).astype(np.float32)
VECTOR = np.array([1.0, -2.0, 3.0], dtype=np.float32)


@pytest.mark.parametrize(
    "identifier",
    [
        "l1",
        "l2",
        "l1_l2",
        "L1L2",
        "L1",
        "orthogonal_regularizer",
        {"class_name": "L2", "config": {"l2": 1.0}},
        {"class_name": "L1L2", "config": {"l1": 0.3}},
        {"class_name": "OrthogonalRegularizer", "config": {"factor": 2.0, "mode": "columns"}},
    ],
    ids=str,
)
def test_penalties_of_names_and_configs_equal_keras(identifier):
    theirs, ours = K.get(identifier), R.get(identifier)
    assert type(ours).__name__ == type(theirs).__name__
    for w in (W, VECTOR):
        if isinstance(ours, R.OrthogonalRegularizer) and w.ndim != 2:
            continue
        expected = float(theirs(tf.constant(w)))
        assert float(ours(torch.tensor(w))) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("L1", {"l1": 0.5}),
        ("l1", {"l1": 0.25}),
        ("L2", {"l2": 0.1}),
        ("l2", {"l2": 3.0}),
        ("L1L2", {"l1": 1.0, "l2": 2.0}),
        ("L1L2", {"l1": None, "l2": 0.5}),  # None means 0 in L1L2
        ("L1", {"l1": None}),  # and 0.01 in L1/L2
        ("L2", {"l": 0.7}),  # Keras' old keyword
        ("l1_l2", {}),
        ("l1_l2", {"l2": 0.0}),
        ("OrthogonalRegularizer", {}),
        ("orthogonal_regularizer", {"factor": 0.5, "mode": "columns"}),
    ],
)
def test_penalties_gradients_and_configs_equal_keras(name, kwargs):
    theirs, ours = getattr(K, name)(**kwargs), getattr(R, name)(**kwargs)
    expected_config = theirs.get_config()
    config = ours.get_config()
    assert config.keys() == expected_config.keys()
    for key, value in expected_config.items():  # Keras rounds factors to float32
        assert config[key] == (pytest.approx(value, rel=1e-7) if key != "mode" else value)
    tw = tf.Variable(W)
    with tf.GradientTape() as tape:
        expected = theirs(tw)
    expected_grad = tape.gradient(expected, tw).numpy()
    w = torch.tensor(W, requires_grad=True)
    penalty = ours(w)
    penalty.backward()
    assert float(penalty.detach()) == pytest.approx(float(expected), rel=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 4), (2, 2), (6, 3), (3, 6), (40, 30)])
@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_orthogonal_regularizer_shapes_equal_keras(shape, mode):
    w = RNG.normal(size=shape).astype(np.float32)
    w[0] = 0.0  # a zero row: Keras' normalization keeps it at zero
    expected = float(K.OrthogonalRegularizer(0.3, mode)(tf.constant(w)))
    got = float(R.OrthogonalRegularizer(0.3, mode)(torch.tensor(w)))
    if np.isnan(expected):  # one row or column: 0/0, in both
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_float64_weights_keep_their_dtype():
    w = W.astype(np.float64)
    for name in ("L1", "L2", "L1L2", "OrthogonalRegularizer"):
        got = getattr(R, name)()(torch.tensor(w))
        expected = getattr(K, name)()(tf.constant(w))
        assert got.dtype == torch.float64 and expected.dtype == tf.float64
        assert float(got) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(
    "theirs",
    [K.L1(0.3), K.L2(0.1), K.L1L2(0.2, 0.4), K.l1_l2(), K.OrthogonalRegularizer(0.5, "columns")],
    ids=lambda r: type(r).__name__,
)
def test_serialization_round_trips_with_keras(theirs):
    ours = R.get(theirs)  # a tf_keras object becomes ours, through its config
    assert type(ours).__name__ == type(theirs).__name__
    assert float(ours(torch.tensor(W))) == pytest.approx(float(theirs(tf.constant(W))), rel=1e-6)
    for legacy in (False, True):
        config = R.serialize(ours, use_legacy_format=legacy)
        assert config == K.serialize(theirs, use_legacy_format=legacy)
        back = K.deserialize(config, use_legacy_format=legacy)
        assert type(back) is type(theirs) and back.get_config() == theirs.get_config()
        clone = R.deserialize(K.serialize(theirs, use_legacy_format=legacy))
        assert type(clone) is type(ours) and clone.get_config() == ours.get_config()


def test_functions_serialize_like_keras():
    def my_penalty(x):
        return x.abs().sum()

    with pytest.warns(UserWarning):  # Keras warns for non-Regularizer objects
        expected = K.serialize(my_penalty)
    assert R.serialize(my_penalty) == expected
    custom = {"my_penalty": my_penalty}
    assert R.deserialize(expected, custom_objects=custom) is my_penalty
    assert K.deserialize(R.serialize(my_penalty), custom_objects=custom) is my_penalty
    assert R.serialize(my_penalty, use_legacy_format=True) == "my_penalty"
    # the name 'l1_l2' gives l1_l2(): 0.01 each (Keras rounds them to float32)
    expected_config = K.deserialize("l1_l2").get_config()
    assert R.deserialize("l1_l2").get_config() == pytest.approx(expected_config, rel=1e-7)


def test_get_instantiates_classes_and_passes_callables():
    assert R.get(None) is None and K.get(None) is None
    assert isinstance(R.get(R.L2), R.L2)  # Keras returns the class itself (documented)
    assert K.get(K.L2) is K.L2
    fn = lambda w: w.sum()  # noqa: E731
    assert R.get(fn) is fn and K.get(fn) is fn


def test_errors():
    assert K.get("l3") == "l3"  # Keras hands an unknown name back; we raise (documented)
    with pytest.raises(ValueError, match="Unknown regularizer 'l3'"):
        R.get("l3")
    with pytest.raises(ValueError, match="l1.*>= 0"):  # Keras accepts it (documented)
        R.L1(-1.0)
    assert K.L1(-1.0).get_config() == {"l1": -1.0}
    for module, error, array in ((K, ValueError, tf.ones), (R, TypeError, torch.ones)):
        with pytest.raises(error, match="l2|penalty"):
            module.L2("x")
        with pytest.raises(ValueError, match="mode"):
            module.OrthogonalRegularizer(mode="diagonal")
        with pytest.raises(ValueError, match="rank 2|2-D"):
            module.OrthogonalRegularizer()(array((2, 2, 2)))
        with pytest.raises(TypeError, match="not recognized"):
            module.L1(l3=0.1)
