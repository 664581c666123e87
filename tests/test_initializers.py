"""Initializers against tf_keras: names, configs, values, statistics and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch

from batchnorm import initializers as I

K = tf_keras.initializers

NAMES = [
    "zeros",
    "Zeros",
    "zero",
    "ones",
    "one",
    "constant",
    "random_normal",
    "RandomNormal",
    "normal",
    "random_uniform",
    "uniform",
    "truncated_normal",
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "variance_scaling",
    "orthogonal",
    "identity",
]


@pytest.mark.parametrize("name", NAMES)
def test_lookup_by_name_gives_keras_class_and_config(name):
    theirs, ours = K.get(name), I.get(name)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == theirs.get_config()
    assert I.deserialize(name).get_config() == K.deserialize(name).get_config()


def test_get_passes_through_none_instances_and_callables_and_instantiates_classes():
    init = I.Constant(3)
    assert I.get(None) is None and K.get(None) is None
    assert I.get(init) is init
    fn = lambda shape, dtype=None: torch.zeros(shape)  # noqa: E731
    assert I.get(fn) is fn
    # Keras instantiates a class given to get(); so do we
    assert type(K.get(K.he_normal)) is K.HeNormal
    assert type(I.get(I.he_normal)) is I.HeNormal


def test_get_errors_name_the_argument():
    with pytest.raises(ValueError, match="Unknown initializer"):
        K.get("nope")
    with pytest.raises(ValueError, match="`gamma_initializer`.*Known names: constant"):
        I.get("nope", argument="gamma_initializer")
    with pytest.raises(ValueError):  # Keras: ValueError; we raise TypeError (documented)
        K.get(3.5)
    with pytest.raises(TypeError, match="Could not interpret initializer"):
        I.get(3.5)
    with pytest.raises(ValueError, match="class_name"):
        I.get({"config": {}})
    with pytest.raises(TypeError, match="must be a name or a dict"):
        I.deserialize(3.5)


INSTANCES = [
    ("Zeros", {}),
    ("Ones", {}),
    ("Constant", {"value": 2.5}),
    ("RandomNormal", {"mean": 1.0, "stddev": 0.5, "seed": 3}),
    ("RandomUniform", {"minval": -2.0, "maxval": 1.0, "seed": None}),
    ("TruncatedNormal", {"mean": 0.5, "stddev": 2.0, "seed": 9}),
    ("VarianceScaling", {"scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 1}),
    ("GlorotUniform", {"seed": 7}),
    ("GlorotNormal", {"seed": 7}),
    ("HeNormal", {"seed": 7}),
    ("HeUniform", {"seed": None}),
    ("LecunNormal", {"seed": 7}),
    ("LecunUniform", {"seed": 7}),
    ("Orthogonal", {"gain": 2.0, "seed": 5}),
    ("Identity", {"gain": 3.0}),
]


@pytest.mark.parametrize(("name", "kwargs"), INSTANCES, ids=[n for n, _ in INSTANCES])
def test_configs_and_serialization_match_keras(name, kwargs):
    theirs, ours = getattr(K, name)(**kwargs), getattr(I, name)(**kwargs)
    assert ours.get_config() == theirs.get_config()
    for legacy in (False, True):
        config = I.serialize(ours, use_legacy_format=legacy)
        assert config == K.serialize(theirs, use_legacy_format=legacy)
        back = K.deserialize(config, use_legacy_format=legacy)  # ours -> Keras
        assert type(back) is type(theirs) and back.get_config() == theirs.get_config()
        clone = I.deserialize(K.serialize(theirs, use_legacy_format=legacy))  # Keras -> ours
        assert type(clone) is type(ours) and clone.get_config() == ours.get_config()
        assert I.get(config).get_config() == ours.get_config()
    converted = I.get(theirs)  # a tf_keras object becomes ours
    assert type(converted) is type(ours) and converted.get_config() == ours.get_config()
    if kwargs.get("seed") is not None:  # same seed, same values (not Keras' values)
        assert torch.equal(converted((4, 5)), ours((4, 5)))


def test_legacy_keras_names_and_dtype_keys():
    config = {"class_name": "Constant", "config": {"value": 2.0, "dtype": "float32"}}
    assert K.get(config).get_config() == I.get(config).get_config() == {"value": 2.0}


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("Zeros", {}, (2, 3)),
        ("Ones", {}, (4,)),
        ("Constant", {"value": 0.25}, (2, 3)),
        ("Constant", {"value": [1.0, 2.0, 3.0, 4.0]}, (2, 2)),
        ("Constant", {"value": [7.0]}, (3,)),
        ("Constant", {"value": np.arange(6.0).reshape(2, 3)}, (3, 2)),
        ("Identity", {}, (3, 3)),
        ("Identity", {"gain": 2.0}, (2, 4)),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_deterministic_values_equal_keras(name, kwargs, shape, dtype):
    expected = getattr(K, name)(**kwargs)(shape, dtype=dtype).numpy()
    got = getattr(I, name)(**kwargs)(shape, dtype=dtype)
    assert got.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_constant_errors_like_keras():
    with pytest.raises(TypeError):  # Keras fails inside tf.constant
        K.Constant([1.0, 2.0])((3,))
    with pytest.raises(ValueError, match="2 elements"):
        I.Constant([1.0, 2.0])((3,))
    with pytest.raises(TypeError, match="Constant `value`"):
        I.Constant("a")


def _draws(init, shape, n_calls=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns when an initializer is reused
        return [np.asarray(init(shape, dtype="float32"), dtype=np.float64) for _ in range(n_calls)]


RANDOM = [
    ("RandomNormal", {"mean": 1.0, "stddev": 2.0}, (400, 500)),
    ("RandomUniform", {"minval": -1.0, "maxval": 3.0}, (400, 500)),
    ("TruncatedNormal", {"mean": 0.5, "stddev": 2.0}, (400, 500)),
    ("VarianceScaling", {"scale": 3.0, "mode": "fan_avg", "distribution": "normal"}, (300, 600)),
    ("VarianceScaling", {"mode": "fan_out", "distribution": "untruncated_normal"}, (300, 600)),
    ("GlorotUniform", {}, (300, 500)),
    ("GlorotNormal", {}, (3, 3, 40, 80)),
    ("HeNormal", {}, (400, 100)),
    ("HeUniform", {}, (5, 5, 32, 64)),
    ("LecunNormal", {}, (100, 400)),
    ("LecunUniform", {}, (20_000,)),
]


@pytest.mark.parametrize(("name", "kwargs", "shape"), RANDOM, ids=[r[0] for r in RANDOM])
def test_random_statistics_equal_keras(name, kwargs, shape):
    """Same distribution: mean, standard deviation and range of 200k draws each."""
    torch.manual_seed(0)
    (theirs,) = _draws(getattr(K, name)(seed=1, **kwargs), shape)
    (ours,) = _draws(getattr(I, name)(**kwargs), shape)
    assert ours.shape == theirs.shape == shape
    std = theirs.std()
    assert abs(ours.mean() - theirs.mean()) < 0.02 * std
    assert ours.std() == pytest.approx(std, rel=0.01)
    span = theirs.max() - theirs.min()
    assert ours.min() >= theirs.min() - 0.01 * span and ours.max() <= theirs.max() + 0.01 * span
    assert ours.min() <= theirs.min() + 0.01 * span and ours.max() >= theirs.max() - 0.01 * span


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (2, 3, 5)])
def test_orthogonal_like_keras(shape):
    theirs = K.Orthogonal(gain=2.0, seed=1)(shape).numpy()
    ours = I.Orthogonal(gain=2.0, seed=1)(shape).numpy()
    assert ours.shape == theirs.shape == shape
    for w in (theirs, ours):  # rows or columns of the flattened matrix are orthogonal
        flat = w.reshape(-1, shape[-1])
        small = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
        np.testing.assert_allclose(small, 4.0 * np.eye(len(small)), atol=1e-5)


def test_seeds_repeat_and_unseeded_draws_differ_from_keras():
    # seeded: the same values on every call, in both
    for init in (K.RandomUniform(seed=1), I.RandomUniform(seed=1)):
        first, second = _draws(init, (50,), 2)
        np.testing.assert_array_equal(first, second)
    # unseeded: Keras returns the same values again; we draw new ones (documented)
    theirs = _draws(K.RandomNormal(), (50,), 2)
    ours = _draws(I.RandomNormal(), (50,), 2)
    np.testing.assert_array_equal(theirs[0], theirs[1])
    assert not np.array_equal(ours[0], ours[1])


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda m: m.VarianceScaling(0.0), ValueError, "scale"),
        (lambda m: m.VarianceScaling(mode="fan"), ValueError, "mode"),
        (lambda m: m.VarianceScaling(distribution="cauchy"), ValueError, "distribution"),
        (lambda m: m.Orthogonal()((3,)), ValueError, "rank >= 2|two-dimensional"),
        (lambda m: m.Identity()((3,)), ValueError, "2-D|2D"),
    ],
)
def test_errors_like_keras(build, error, match):
    for module in (K, I):
        with pytest.raises(error, match=match):
            build(module)


def test_keras_tensorflow_dtypes_are_accepted():
    got = I.Ones()((2,), dtype=tf.float64)
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), K.Ones()((2,), dtype=tf.float64).numpy())
