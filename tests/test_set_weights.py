"""set_weights: bad lists raise naming the weight and change nothing; good ones count
the renorm variables, build an unbuilt layer and cast floating values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bad_input import assert_unbuilt, param, trained
from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot


# ---------------------------------------------------------------------- set_weights
def new_values(dtype=np.float32):
    return [np.full(3, 0.5 + i, dtype) for i in range(4)]


SET_WEIGHTS = [
    param(
        new_values()[:3],
        ValueError,
        r"Layer batch_normalization expects 4 weights \(batch_normalization/gamma, "
        r"batch_normalization/beta, batch_normalization/moving_mean, "
        r"batch_normalization/moving_variance\); received 3",
        id="too-few",
    ),
    param([*new_values(), np.ones(3)], ValueError, r"expects 4 weights.*received 5", id="too-many"),
    param(
        [*new_values()[:3], np.ones(4, np.float32)],
        ValueError,
        r"Weight batch_normalization/moving_variance has shape \(3,\); received an array of "
        r"shape \(4,\)",
        id="wrong-shape",
    ),
    param(
        [*new_values()[:3], np.ones((3, 1), np.float32)],
        ValueError,
        r"Weight batch_normalization/moving_variance has shape \(3,\); received.*\(3, 1\)",
        id="wrong-rank",
    ),
    *[
        param(
            [*new_values()[:3], bad],
            TypeError,
            rf"Weight batch_normalization/moving_variance must be a floating-point array; "
            rf"received dtype {dtype}",
            id=f"dtype-{dtype.strip('<')}",
        )
        for bad, dtype in [
            (np.ones(3, np.int64), "int64"),
            (np.ones(3, bool), "bool"),
            (np.array(["1", "2", "3"]), "<U1"),
            (np.ones(3, np.complex64), "complex64"),
            ([1.0, None, 3.0], "object"),
            (torch.ones(3, dtype=torch.int32), "torch.int32"),
            (torch.ones(3, dtype=torch.bool), "torch.bool"),
        ]
    ],
    param(
        [*new_values()[:3], [1.0, [2.0], 3.0]],
        TypeError,
        r"Weight batch_normalization/moving_variance must be a floating-point array; received "
        r"list, which is not an array",
        id="ragged-list",
    ),
    param(
        [*new_values()[:3], torch.ones(3, device="meta")],
        ValueError,
        r"Weight batch_normalization/moving_variance received a meta tensor, which holds no "
        r"values",
        id="meta-tensor",
    ),
    param(
        None,
        TypeError,
        r"Layer batch_normalization: `set_weights` expects a list of arrays in `weights` order "
        r"\(batch_normalization/gamma, .*\); received NoneType",
        id="none",
    ),
    param(
        dict(zip(["gamma", "beta", "moving_mean", "moving_variance"], new_values(), strict=True)),
        TypeError,
        r"`set_weights` expects a list of arrays.*received dict",
        id="dict",
    ),
    param("abcd", TypeError, r"`set_weights` expects a list of arrays.*received str", id="str"),
]


@pytest.mark.parametrize(("weights", "error", "match"), SET_WEIGHTS)
def test_bad_set_weights_changes_nothing(weights, error, match):
    layer = trained()
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer.set_weights(weights)
    assert_unchanged(layer, before)


def test_set_weights_counts_the_renorm_variables():
    layer = trained(renorm=True)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"expects 7 weights.*renorm_stddev\); received 4"):
        layer.set_weights(new_values())
    assert_unchanged(layer, before)


def test_set_weights_on_an_unbuilt_layer():
    layer = BatchNormalization()
    with pytest.raises(
        ValueError, match=r"expects 0 weights \(none: it is not built\); received 4"
    ):
        layer.set_weights(new_values())
    assert_unbuilt(layer)


@pytest.mark.parametrize(
    ("convert", "via"),
    [
        param(lambda v: v, np.float64, id="float64-arrays"),
        param(lambda v: v.astype(np.float16), np.float16, id="float16-arrays"),
        param(lambda v: torch.tensor(v, requires_grad=True), np.float64, id="float64-tensors"),
        param(lambda v: v.tolist(), np.float64, id="lists"),
    ],
)
def test_set_weights_casts_floating_values(convert, via):
    layer = trained()
    values = [np.array([0.1, 0.2, 0.3]) + i for i in range(4)]  # float64, not exact in float32
    layer.set_weights([convert(v) for v in values])
    for got, value in zip(layer.get_weights(), values, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, value.astype(via).astype(np.float32))
    assert all(w.dtype == torch.float32 for w in layer.weights)
