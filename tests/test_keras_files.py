"""Keras weight files written by tf_keras 2.21 itself (Keras 2 ``.h5`` from
``save_weights`` and ``model.save``, Keras 3-format ``.weights.h5``, ``.keras``
archives) loaded with ``load_keras_weights``: nested models, name and order matching,
mismatches refused before any change. Values are compared with the Keras layers' own
weights and outputs. Layouts converted or refused at load time: test_keras_file_layouts.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

import batchnorm
from helpers import assert_unchanged, snapshot
from oracle import rel_error


def keras_model():
    tf.random.set_seed(3)
    inputs = tf_keras.Input((6,))
    h = tf_keras.layers.Dense(4, name="dense")(inputs)
    h = tf_keras.layers.BatchNormalization(name="bn_a", momentum=0.5)(h)
    h = tf_keras.layers.BatchNormalization(
        name="bn_b", renorm=True, virtual_batch_size=2, momentum=0.5
    )(h)
    model = tf_keras.Model(inputs, h)
    rng = np.random.default_rng(7)
    for _ in range(3):
        model(rng.standard_normal((4, 6)).astype(np.float32) * 2 + 1, training=True)
    return model


def torch_twin(built: bool) -> nn.Sequential:
    model = nn.Sequential(
        nn.Linear(6, 4),
        batchnorm.BatchNormalization(name="bn_a", momentum=0.5),
        batchnorm.BatchNormalization(name="bn_b", renorm=True, virtual_batch_size=2),
    )
    if built:
        model(torch.zeros(2, 6))
    return model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keras")
    model = keras_model()
    paths = {
        "save_weights_h5": directory / "weights.h5",
        "model_h5": directory / "model.h5",
        "weights_h5_v3": directory / "model.weights.h5",
    }
    model.save_weights(paths["save_weights_h5"])
    model.save(paths["model_h5"])
    model.save_weights(paths["weights_h5_v3"])
    expected = {
        layer.name: layer.get_weights() for layer in model.layers if layer.name.startswith("bn")
    }
    return paths, expected


@pytest.mark.parametrize("kind", ["save_weights_h5", "model_h5", "weights_h5_v3"])
@pytest.mark.parametrize("built", [True, False])
def test_load_keras_weights(keras_files, kind, built):
    paths, expected = keras_files
    model = torch_twin(built)
    loaded = batchnorm.load_keras_weights(model, str(paths[kind]))
    assert loaded == ["bn_a", "bn_b"]
    assert not any(isinstance(p, UninitializedParameter) for p in model.parameters())
    if not built:
        model.eval()(torch.zeros(2, 6))  # the first build keeps the loaded weights
    for layer in (model[1], model[2]):
        for w, ref in zip(layer.get_weights(), expected[layer.name], strict=True):
            np.testing.assert_array_equal(w, ref)


def test_load_keras_weights_by_name_order_and_errors(keras_files):
    paths, expected = keras_files
    renamed = nn.Sequential(  # names absent from the file
        nn.Linear(6, 4),
        batchnorm.BatchNormalization(name="first"),
        batchnorm.BatchNormalization(name="second", renorm=True, virtual_batch_size=2),
    )
    renamed(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="None of the layer names"):
        batchnorm.load_keras_weights(renamed, str(paths["model_h5"]))
    assert batchnorm.load_keras_weights(renamed, str(paths["model_h5"]), by_name=False) == [
        "first",
        "second",
    ]
    np.testing.assert_array_equal(renamed[2].get_weights()[4], expected["bn_b"][4])
    wrong = nn.Sequential(
        batchnorm.BatchNormalization(name="bn_a"), batchnorm.BatchNormalization(name="bn_b")
    )
    wrong(torch.zeros(2, 5))  # 5 channels, the file has 4
    before = snapshot(wrong)
    with pytest.raises(ValueError, match="shapes"):
        batchnorm.load_keras_weights(wrong, str(paths["save_weights_h5"]))
    assert_unchanged(wrong, before)
    with pytest.raises(ValueError, match="equal counts"):
        batchnorm.load_keras_weights(wrong[0], str(paths["weights_h5_v3"]))


def test_load_keras_weights_needs_no_tensorflow(keras_files):
    paths, expected = keras_files
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        sys.modules["tf_keras"] = None
        import torch, batchnorm
        model = torch.nn.Sequential(
            torch.nn.Linear(6, 4),
            batchnorm.BatchNormalization(name="bn_a"),
            batchnorm.BatchNormalization(name="bn_b", renorm=True, virtual_batch_size=2),
        )
        print(batchnorm.load_keras_weights(model, {str(paths["model_h5"])!r}))
        model.eval()(torch.zeros(2, 6))
        print(float(model[2].moving_stddev.sum()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "['bn_a', 'bn_b']"
    assert float(lines[1]) == pytest.approx(float(expected["bn_b"][4].sum()), rel=1e-6)


# --------------------------------------------------------------------------------------
# Nested models


def nested_keras_model():
    """bn_outer, then a nested Sequential holding bn_inner and a Sequential holding
    bn_deep, then bn_last: four layers of 4 channels, so a swap is a silent error."""
    tf.random.set_seed(5)
    deep = tf_keras.Sequential([tf_keras.layers.BatchNormalization(name="bn_deep")], name="deep")
    inner = tf_keras.Sequential(
        [
            tf_keras.layers.Dense(4, name="dense_inner"),
            tf_keras.layers.BatchNormalization(name="bn_inner", momentum=0.5),
            deep,
        ],
        name="inner",
    )
    inputs = tf_keras.Input((4,))
    h = tf_keras.layers.BatchNormalization(name="bn_outer", momentum=0.5)(inputs)
    h = inner(h)
    h = tf_keras.layers.BatchNormalization(name="bn_last", momentum=0.5)(h)
    model = tf_keras.Model(inputs, h)
    rng = np.random.default_rng(11)
    for layer in (
        model.get_layer("bn_outer"),
        inner.get_layer("bn_inner"),
        model.get_layer("bn_last"),
    ):
        layer.set_weights([rng.uniform(0.5, 2.0, (4,)).astype(np.float32) for _ in range(4)])
    return model


def nested_twin(built: bool) -> nn.Sequential:
    model = nn.Sequential(
        batchnorm.BatchNormalization(name="bn_outer"),
        nn.Sequential(
            nn.Linear(4, 4),
            batchnorm.BatchNormalization(name="bn_inner"),
            nn.Sequential(batchnorm.BatchNormalization(name="bn_deep")),
        ),
        batchnorm.BatchNormalization(name="bn_last"),
    )
    if built:
        model.eval()(torch.zeros(2, 4))
    return model


NESTED_ORDER = ["bn_outer", "bn_inner", "bn_deep", "bn_last"]


@pytest.fixture(scope="module")
def nested_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("nested")
    model = nested_keras_model()
    paths = {
        "save_weights_h5": directory / "weights.h5",
        "model_h5": directory / "model.h5",
        "weights_h5_v3": directory / "model.weights.h5",
        "keras": directory / "model.keras",
    }
    model.save_weights(paths["save_weights_h5"])
    model.save(paths["model_h5"])
    model.save_weights(paths["weights_h5_v3"])
    model.save(paths["keras"])
    layers = {name: _find(model, name) for name in NESTED_ORDER}
    return paths, layers


def _find(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if hasattr(layer, "layers"):
            found = _find(layer, name)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize("kind", ["save_weights_h5", "model_h5", "weights_h5_v3", "keras"])
@pytest.mark.parametrize("by_name", [True, False])
@pytest.mark.parametrize("built", [True, False])
def test_nested_models_load_into_the_right_layers(nested_files, kind, by_name, built):
    paths, keras_layers = nested_files
    model = nested_twin(built)
    loaded = batchnorm.load_keras_weights(model, str(paths[kind]), by_name=by_name)
    assert loaded == NESTED_ORDER
    ours = {m.name: m for m in model.modules() if isinstance(m, batchnorm.BatchNormalization)}
    x = np.random.default_rng(2).normal(1.0, 2.0, (5, 4)).astype(np.float32)
    for name, keras_layer in keras_layers.items():
        for w, ref in zip(ours[name].get_weights(), keras_layer.get_weights(), strict=True):
            np.testing.assert_array_equal(w, ref)
        y = ours[name].eval()(torch.from_numpy(x)).detach().numpy()
        assert rel_error(y, keras_layer(x, training=False).numpy()) <= 5e-5


def test_a_file_that_does_not_match_is_refused_before_any_change(nested_files):
    paths, keras_layers = nested_files
    model = nested_twin(built=True)
    model[2] = batchnorm.BatchNormalization(name="bn_extra")  # bn_last is missing
    model[2].eval()(torch.zeros(2, 4))
    before = snapshot(model)
    for kind in ("save_weights_h5", "keras"):
        with pytest.raises(ValueError) as error:
            batchnorm.load_keras_weights(model, str(paths[kind]))
        assert "bn_extra (ours: not in the file)" in str(error.value)
        assert "bn_last (the file's: not in the module)" in str(error.value)
        assert "Nothing was loaded" in str(error.value)
        assert_unchanged(model, before)
    with pytest.warns(UserWarning, match=r"bn_extra \(ours: not in the file\).*skipped"):
        loaded = batchnorm.load_keras_weights(model, str(paths["model_h5"]), skip_mismatch=True)
    assert loaded == ["bn_outer", "bn_inner", "bn_deep"]
    np.testing.assert_array_equal(
        model[1][1].get_weights()[2], keras_layers["bn_inner"].get_weights()[2]
    )
    assert_unchanged(model[2], {k[2:]: v for k, v in before.items() if k.startswith("2.")})
    with pytest.raises(ValueError, match="Matching in order needs equal counts"):
        batchnorm.load_keras_weights(model[1], str(paths["weights_h5_v3"]), skip_mismatch=True)


def test_a_shape_mismatch_is_refused_or_skipped(nested_files):
    paths, _ = nested_files
    model = nested_twin(built=False)
    model[0] = batchnorm.BatchNormalization(name="bn_outer", renorm=True)  # 7 weights
    with pytest.raises(ValueError, match=r"bn_outer <- bn_outer: the file has 4 weights"):
        batchnorm.load_keras_weights(model, str(paths["model_h5"]))
    assert not model[1][1].built and isinstance(model[1][1].gamma, UninitializedParameter)
    with pytest.warns(UserWarning, match="bn_outer <- bn_outer"):
        loaded = batchnorm.load_keras_weights(model, str(paths["keras"]), skip_mismatch=True)
    assert loaded == ["bn_inner", "bn_deep", "bn_last"]


# --------------------------------------------------------------------------------------
# Many layers: the file's order


@pytest.mark.parametrize("kind", ["weights.h5", "keras", "h5"])
def test_many_layers_in_a_row_and_a_wrapped_layer_load_in_keras_order(tmp_path, kind):
    """Twelve layers in one container (``batch_normalization_10`` sorts before ``_2``,
    and HDF5 reuses freed header space, so neither names nor object addresses give the
    order), then one inside TimeDistributed."""
    rng = np.random.default_rng(3)
    inputs = tf_keras.Input((2, 5))
    h = inputs
    for i in range(12):
        h = tf_keras.layers.BatchNormalization(name=f"bn{i}")(h)
    h = tf_keras.layers.TimeDistributed(
        tf_keras.layers.BatchNormalization(name="bn_wrapped"), name="bn_wrapped"
    )(h)
    model = tf_keras.Model(inputs, h)
    layers = [*model.layers[1:13], model.layers[13].layer]
    for layer in layers:
        layer.set_weights([rng.uniform(0.5, 2.0, (5,)).astype(np.float32) for _ in range(4)])
    path = tmp_path / f"row.{kind}"
    (model.save if kind == "keras" else model.save_weights)(path)
    port = nn.Sequential(
        *[batchnorm.BatchNormalization(name=f"bn{i}") for i in range(12)],
        batchnorm.BatchNormalization(name="bn_wrapped"),
    )
    batchnorm.load_keras_weights(port, str(path))
    for ours, keras_layer in zip(port, layers, strict=True):
        for w, ref in zip(ours.get_weights(), keras_layer.get_weights(), strict=True):
            np.testing.assert_array_equal(w, ref)
    x = rng.normal(1.0, 2.0, (3, 2, 5)).astype(np.float32)
    y = port.eval()(torch.from_numpy(x)).detach().numpy()
    assert rel_error(y, model(x, training=False).numpy()) <= 5e-5


def test_names_several_layers_share_are_reported_not_guessed(tmp_path):
    """Nested Keras models may reuse a layer name: by name it is ambiguous, so it is
    reported (and skipped under skip_mismatch, never loaded); in order it loads."""
    rng = np.random.default_rng(8)
    blocks = [tf_keras.Sequential([tf_keras.layers.BatchNormalization(name="bn")]) for _ in "ab"]
    inputs = tf_keras.Input((3,))
    model = tf_keras.Model(inputs, blocks[1](blocks[0](inputs)))
    for block in blocks:
        block.layers[0].set_weights([rng.uniform(0.5, 2.0, (3,)).astype(np.float32)] * 4)
    model.save(tmp_path / "dup.keras")
    port = nn.Sequential(batchnorm.BatchNormalization(name="bn"), batchnorm.BatchNormalization())
    port.eval()(torch.zeros(1, 3))
    before = snapshot(port)
    with pytest.raises(ValueError, match=r"bn \(the name of 1 of ours and 2 of the file's"):
        batchnorm.load_keras_weights(port, str(tmp_path / "dup.keras"))
    assert_unchanged(port, before)
    with pytest.warns(UserWarning, match="These were skipped"):
        loaded = batchnorm.load_keras_weights(port, str(tmp_path / "dup.keras"), skip_mismatch=True)
    assert loaded == []
    assert_unchanged(port, before)
    assert batchnorm.load_keras_weights(port, str(tmp_path / "dup.keras"), by_name=False) == [
        "bn",
        port[1].name,
    ]
    for ours, block in zip(port, blocks, strict=True):
        np.testing.assert_array_equal(ours.get_weights()[0], block.layers[0].get_weights()[0])


def test_a_subclassed_model_matched_in_order_warns(tmp_path):
    class Net(tf_keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.a_bn = tf_keras.layers.BatchNormalization(name="first")
            self.z_bn = tf_keras.layers.BatchNormalization(name="second")

        def call(self, x):
            return self.z_bn(self.a_bn(x))

    net = Net()
    net(np.zeros((2, 3), np.float32))
    net.save_weights(tmp_path / "sub.weights.h5")
    port = nn.Sequential(
        batchnorm.BatchNormalization(name="first"), batchnorm.BatchNormalization(name="second")
    )
    with pytest.warns(UserWarning, match="subclassed Keras model"):
        batchnorm.load_keras_weights(port, str(tmp_path / "sub.weights.h5"))
