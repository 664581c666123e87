"""BatchNormalization against tf_keras 2.21, step by step.

Each case runs three training steps with the same inputs, starting weights and
upstream gradients through ``tf_keras.layers.BatchNormalization`` and through
ours, comparing outputs, dL/dx, dL/dγ, dL/dβ, every weight after every step and
the inference output afterwards (DESIGN.md's metric and tolerances).
"""

from __future__ import annotations

import pytest

from oracle import assert_close, compare

CASES = [
    # (id, config, input shape)
    ("2d", {}, (16, 5)),
    ("2d-momentum-eps", {"momentum": 0.5, "epsilon": 1e-5}, (16, 5)),
    ("3d-last", {"momentum": 0.6}, (4, 7, 5)),
    ("3d-axis1", {"axis": 1, "momentum": 0.6}, (4, 5, 7)),
    ("4d-nhwc", {"momentum": 0.6}, (4, 5, 6, 3)),
    ("4d-nhwc-axis3", {"axis": 3, "momentum": 0.6}, (4, 5, 6, 3)),
    ("4d-nchw", {"axis": 1, "momentum": 0.6}, (4, 3, 5, 6)),
    ("4d-nchw-neg", {"axis": -3, "momentum": 0.6}, (4, 3, 5, 6)),
    ("4d-nchw-nonfused", {"axis": 1, "fused": False, "momentum": 0.6}, (4, 3, 5, 6)),
    ("4d-nhwc-fused", {"axis": -1, "fused": True, "momentum": 0.6}, (4, 5, 6, 3)),
    ("4d-axis2", {"axis": 2, "momentum": 0.6}, (4, 5, 3, 6)),
    ("5d-last", {"momentum": 0.6}, (2, 3, 4, 5, 3)),
    ("5d-axis1", {"axis": 1, "momentum": 0.6}, (2, 3, 4, 5, 3)),
    ("5d-axis3-silently-nonfused", {"axis": 3, "fused": True, "momentum": 0.6}, (2, 3, 4, 5, 3)),
    ("5d-axis2", {"axis": 2, "momentum": 0.6}, (2, 3, 4, 5, 3)),
    ("multi-axis-list", {"axis": [1, 2], "momentum": 0.6}, (4, 3, 5, 6)),
    ("multi-axis-negative", {"axis": [-1, 1], "momentum": 0.6}, (4, 3, 5, 2)),
    ("multi-axis-tuple-3d", {"axis": (1, 2), "momentum": 0.6}, (6, 3, 4)),
    ("multi-axis-5d", {"axis": [1, 4], "momentum": 0.6}, (2, 3, 4, 2, 3)),
    ("no-center", {"center": False, "momentum": 0.6}, (4, 5, 6, 3)),
    ("no-scale", {"scale": False, "momentum": 0.6}, (8, 5)),
    ("no-center-no-scale", {"center": False, "scale": False, "momentum": 0.6}, (4, 3, 5, 6)),
    ("frozen", {"trainable": False, "momentum": 0.6}, (4, 5, 6, 3)),
    ("frozen-2d", {"trainable": False}, (16, 5)),
    ("momentum-0", {"momentum": 0.0}, (8, 4)),
    ("momentum-1", {"momentum": 1.0}, (8, 4)),
    ("large-epsilon", {"epsilon": 0.5, "momentum": 0.6}, (4, 5, 6, 3)),
    ("epsilon-0", {"epsilon": 0.0, "momentum": 0.6}, (16, 5)),
    (
        "initializers",
        {
            "gamma_initializer": "random_uniform",
            "beta_initializer": "constant",
            "moving_mean_initializer": "zeros",
            "moving_variance_initializer": "ones",
            "momentum": 0.6,
        },
        (8, 4),
    ),
    ("batch-of-one-fused", {"momentum": 0.5}, (1, 2, 3, 4)),
    ("batch-of-one-2d", {"momentum": 0.5}, (1, 4)),
    ("one-value-per-channel-fused", {"momentum": 0.5}, (1, 1, 1, 4)),
]


@pytest.mark.parametrize(("config", "shape"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_tf_keras(config, shape):
    assert_close(compare(config, shape))


FLOAT16_CASES = [
    ("fp16-nhwc-fused", {"momentum": 0.6}, (4, 5, 6, 3)),
    ("fp16-nchw-fused", {"axis": 1, "momentum": 0.6}, (4, 3, 5, 6)),
    ("fp16-2d", {"momentum": 0.6}, (16, 5)),
]


@pytest.mark.parametrize(
    ("config", "shape"), [c[1:] for c in FLOAT16_CASES], ids=[c[0] for c in FLOAT16_CASES]
)
def test_float16_matches_tf_keras(config, shape):
    assert_close(compare(config, shape, dtype="float16"), dtype="float16")


def test_unbiased_override_departs_from_tf_rule():
    """``unbiased_moving_variance`` overrides TF's rule, so the moving variance must differ."""
    errors = compare({"unbiased_moving_variance": False, "momentum": 0.5}, (4, 5, 6, 3))
    assert errors["output"] <= 5e-5
    assert errors["weights"] > 1e-3


def test_many_steps_keep_matching():
    assert_close(compare({"axis": 1, "momentum": 0.9}, (8, 3, 4, 4), steps=8, seed=3))
