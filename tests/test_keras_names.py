"""Keras' names in batchnorm.initializers/regularizers/constraints, and tf_keras objects
given to ``BatchNormalization``: converted to ours, or refused with an error naming the
argument. The oracle is tf_keras."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import batchnorm
from batchnorm import constraints as C
from batchnorm import initializers as I
from batchnorm import regularizers as R

MODULES = [
    (tf_keras.initializers, I),
    (tf_keras.regularizers, R),
    (tf_keras.constraints, C),
]


def _public(module):
    return sorted(n for n in dir(module) if not n.startswith("_"))


@pytest.mark.parametrize(("keras", "ours"), MODULES, ids=lambda m: m.__name__)
def test_every_keras_name_exists_with_the_same_kind(keras, ours):
    names = _public(keras)
    assert len(names) >= 12
    for name in names:
        assert name in ours.__all__, name
        theirs, mine = getattr(keras, name), getattr(ours, name)
        assert inspect.isclass(mine) == inspect.isclass(theirs), name
        if inspect.isclass(theirs):
            # an alias in Keras (he_normal is HeNormal) is the same alias here
            assert mine.__name__ == theirs.__name__, name
            for other in names:
                if getattr(keras, other) is theirs:
                    assert getattr(ours, other) is mine, (name, other)
        else:
            assert inspect.signature(mine).parameters.keys() >= {
                p for p in inspect.signature(theirs).parameters if p != "kwargs"
            }, name


@pytest.mark.parametrize(("keras", "ours"), MODULES, ids=lambda m: m.__name__)
def test_every_class_has_keras_defaults(keras, ours):
    """Constructed without arguments, each class has Keras' config (keys and values)."""
    for name in _public(keras):
        theirs = getattr(keras, name)
        if not inspect.isclass(theirs) or name in ("Initializer", "Regularizer", "Constraint"):
            continue
        expected, got = theirs().get_config(), getattr(ours, name)().get_config()
        assert got.keys() == expected.keys(), name
        for key, value in expected.items():
            if isinstance(value, float):  # Keras rounds regularizer factors to float32
                assert got[key] == pytest.approx(value, rel=1e-7), (name, key)
            else:
                assert got[key] == value, (name, key)


def _keras_layer(**kwargs):
    layer = tf_keras.layers.BatchNormalization(**kwargs)
    layer.build((None, 4))
    return layer


def _ours(**kwargs):
    layer = batchnorm.BatchNormalization(**kwargs)
    layer.build((None, 4))
    return layer


def _weights(layer):
    return [np.asarray(w) for w in layer.get_weights()]


def test_layer_takes_tf_keras_initializers():
    kwargs = {
        "gamma_initializer": tf_keras.initializers.Constant(2.0),
        "beta_initializer": tf_keras.initializers.constant([1.0, 2.0, 3.0, 4.0]),
        "moving_mean_initializer": tf_keras.initializers.Ones(),
        "moving_variance_initializer": tf_keras.initializers.Identity,  # a class
    }
    with pytest.raises(ValueError):  # Identity needs a 2-D shape in both
        _keras_layer(**kwargs)
    with pytest.raises(ValueError, match="2-D"):
        _ours(**kwargs)
    kwargs["moving_variance_initializer"] = tf_keras.initializers.Zeros  # a class
    for got, expected in zip(
        _weights(_ours(**kwargs)), _weights(_keras_layer(**kwargs)), strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def test_layer_takes_tf_keras_random_initializers():
    kwargs = {
        "gamma_initializer": tf_keras.initializers.RandomUniform(1.0, 3.0, seed=4),
        "beta_initializer": tf_keras.initializers.he_uniform(seed=2),
    }
    ours, keras = _ours(**kwargs), _keras_layer(**kwargs)
    assert isinstance(ours.gamma_initializer, I.RandomUniform)
    assert ours.gamma_initializer.get_config() == {"minval": 1.0, "maxval": 3.0, "seed": 4}
    assert ours.beta_initializer.get_config() == {"seed": 2}
    for got, expected in zip(_weights(ours), _weights(keras), strict=True):
        assert got.shape == expected.shape
    gamma, beta = _weights(ours)[:2]
    assert ((gamma >= 1.0) & (gamma < 3.0)).all()
    assert (np.abs(beta) <= np.sqrt(6 / 4)).all()  # he_uniform on a vector of 4


@pytest.mark.parametrize(
    "regularizer",
    [
        tf_keras.regularizers.L2(0.1),
        tf_keras.regularizers.l1(0.3),
        tf_keras.regularizers.L1L2(0.2, 0.05),
        tf_keras.regularizers.l1_l2(),
    ],
    ids=lambda r: type(r).__name__,
)
def test_layer_losses_with_tf_keras_regularizers(regularizer):
    init = tf_keras.initializers.Constant(np.array([1.0, -2.0, 3.0, -0.5]))
    kwargs = {"gamma_initializer": init, "beta_initializer": init}
    keras = _keras_layer(gamma_regularizer=regularizer, beta_regularizer=regularizer, **kwargs)
    ours = _ours(gamma_regularizer=regularizer, beta_regularizer=regularizer, **kwargs)
    expected = [float(loss) for loss in keras.losses]
    got = [float(loss.detach()) for loss in ours.losses]
    assert len(expected) == 2
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_layer_constraints_from_tf_keras():
    gamma = np.array([3.0, -4.0, 0.5, 1.0], dtype=np.float32)
    kwargs = {
        "gamma_constraint": tf_keras.constraints.MaxNorm(2),
        "beta_constraint": tf_keras.constraints.non_neg(),
    }
    ours = _ours(**kwargs)
    keras = _keras_layer(**kwargs)
    ours.set_weights([gamma, -gamma, np.zeros(4), np.ones(4)])
    ours.apply_constraints()
    np.testing.assert_allclose(
        _weights(ours)[0], keras.gamma_constraint(tf.constant(gamma)).numpy(), rtol=1e-6
    )
    np.testing.assert_array_equal(_weights(ours)[1], keras.beta_constraint(-gamma).numpy())


class _KerasSubclass(tf_keras.initializers.Initializer):
    def __call__(self, shape, dtype=None, **kwargs):
        return tf.zeros(shape, dtype=dtype)


class _KerasRegularizer(tf_keras.regularizers.Regularizer):
    def __call__(self, x):
        return tf.reduce_sum(x)

    def get_config(self):
        return {}


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("gamma_initializer", _KerasSubclass(), "subclass of a Keras class"),
        ("beta_regularizer", _KerasRegularizer(), "subclass of a Keras class"),
        ("gamma_initializer", tf.zeros, "TensorFlow/Keras function"),
        ("gamma_regularizer", tf_keras.regularizers.l1_l2, "TensorFlow/Keras function"),
        ("beta_initializer", tf.constant([1.0, 2.0]), "EagerTensor, a TensorFlow/Keras"),
        ("beta_initializer", tf_keras.regularizers.L2(0.1), "no batchnorm.initializers"),
        ("gamma_constraint", tf_keras.initializers.Ones(), "no batchnorm.constraints"),
    ],
)
def test_unconvertible_keras_objects_raise_at_construction(argument, value, message):
    # Keras itself takes them (its layer runs them on TF tensors); ours cannot run them
    with pytest.raises(TypeError, match=f"`{argument}` received .*{message}"):
        batchnorm.BatchNormalization(**{argument: value})


def test_keras3_and_tensorflow_initializers_convert_too():
    with pytest.raises(TypeError, match="`gamma_initializer` .*input_axes"):
        I.get(keras.initializers.HeNormal(input_axes=[0]), "gamma_initializer")
    assert I.get(keras.initializers.HeNormal(seed=3)).get_config() == {"seed": 3}
    assert isinstance(I.get(keras.initializers.OrthogonalInitializer()), I.Orthogonal)
    v1 = tf.compat.v1.random_normal_initializer(0.5, 2.0, seed=1)
    ours = I.get(v1)
    assert ours.get_config() == {"mean": 0.5, "stddev": 2.0, "seed": 1}
    got = ours((200_000,)).double().numpy()
    expected = v1((200_000,)).numpy().astype(np.float64)
    assert got.mean() == pytest.approx(expected.mean(), abs=0.03)
    assert got.std() == pytest.approx(expected.std(), rel=0.02)
