"""Layouts converted or refused when Keras weight files load: a channels-last ghost-batch
layer's (1, 1, 1, 1, C) weights written by tf_keras 2.21 go into a channels-first
ghost-batch layer and into a plain one, and a layer whose weights need another shape is
refused before any change. Values are compared with the Keras layer's own weights and
outputs."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras
import torch

import batchnorm
from helpers import assert_unchanged, snapshot
from oracle import rel_error


def ghost_keras_layer(axis):
    """A trained ghost-batch Keras layer on 4-D input (virtual_batch_size=2)."""
    layer = tf_keras.layers.BatchNormalization(
        axis=axis, virtual_batch_size=2, momentum=0.5, name="ghost"
    )
    rng = np.random.default_rng(4)
    shape = (4, 3, 5, 5) if axis == 1 else (4, 5, 5, 3)
    for _ in range(2):
        layer(rng.normal(1.0, 2.0, shape).astype(np.float32), training=True)
    return layer


@pytest.fixture(scope="module")
def ghost_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ghost")
    layer = ghost_keras_layer(-1)
    model = tf_keras.Sequential([tf_keras.Input((5, 5, 3)), layer])
    paths = {"h5": directory / "ghost.h5", "v3": directory / "ghost.weights.h5"}
    model.save_weights(paths["h5"])
    model.save_weights(paths["v3"])
    return paths, layer


@pytest.mark.parametrize("kind", ["h5", "v3"])
@pytest.mark.parametrize("built", [True, False])
def test_channels_last_ghost_weights_convert_into_a_channels_first_layer(ghost_files, kind, built):
    """Keras' (1, 1, 1, 1, C) ghost-batch weights of an NHWC layer load into an
    ``axis=1`` ghost-batch layer as (1, 1, C, 1, 1); it then trains like the Keras layer
    on the same data transposed to NCHW."""
    paths, keras_layer = ghost_files
    ours = batchnorm.BatchNormalization(axis=1, virtual_batch_size=2, momentum=0.5, name="ghost")
    if built:
        ours.build((None, 3, 5, 5))
    batchnorm.load_keras_weights(ours, str(paths[kind]))
    assert tuple(ours.gamma.shape) == (1, 1, 3, 1, 1)
    reference = ghost_keras_layer(-1)
    reference.set_weights(keras_layer.get_weights())
    x = np.random.default_rng(9).normal(1.0, 2.0, (4, 5, 5, 3)).astype(np.float32)
    y_tf = reference(x, training=True).numpy()
    y = ours(torch.from_numpy(x).permute(0, 3, 1, 2), training=True)
    assert rel_error(y.detach().permute(0, 2, 3, 1).numpy(), y_tf) <= 5e-5
    for w, ref in zip(ours.get_weights(), reference.get_weights(), strict=True):
        assert rel_error(w.reshape(-1), ref.reshape(-1)) <= 5e-5


def test_ghost_weights_load_into_a_plain_layer_and_a_bad_layout_is_refused(ghost_files):
    paths, keras_layer = ghost_files
    plain = batchnorm.BatchNormalization(axis=1, name="ghost")
    batchnorm.load_keras_weights(plain, str(paths["v3"]))
    np.testing.assert_array_equal(plain.get_weights()[0], keras_layer.get_weights()[0].ravel())
    multi = batchnorm.BatchNormalization(axis=[1, 2], name="ghost")
    multi.build((None, 3, 5, 5))
    before = snapshot(multi)
    with pytest.raises(ValueError, match=r"the weight shapes differ.*needs \(1, 3, 5, 1\)"):
        batchnorm.load_keras_weights(multi, str(paths["h5"]))
    assert_unchanged(multi, before)
