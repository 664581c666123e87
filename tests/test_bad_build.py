"""A build or first call that fails leaves the layer unbuilt, as PyTorch's lazy modules:
no weights, every parameter and buffer an uninitialized placeholder."""

from __future__ import annotations

import pytest
import torch

from bad_input import NAN_X, Flaky, X, assert_unbuilt, ones_adjustment, param
from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot

# ---------------------------------------------------------------------- build
BUILD = [
    param(
        {"axis": 4},
        torch.zeros(2, 3, 4, 5),
        r"Invalid value for `axis` argument. Expected 0 <= axis < inputs.rank \(with "
        r"inputs.rank=4\). Received: axis=4",
        id="axis-above-rank",
    ),
    param({"axis": -5}, torch.zeros(2, 3, 4, 5), r"Expected 0 <= axis.*axis=-5", id="axis-below"),
    param(
        {"axis": [1, 4]}, torch.zeros(2, 3, 4, 5), r"Expected 0 <= axis.*\[1, 4\]", id="axis-list"
    ),
    param(
        {"axis": [1, -3]},
        torch.zeros(2, 3, 4, 5),
        r"Duplicate axis: \[1\] \(axis=\[1, -3\], rank=4\)",
        id="axis-dup-after-normalizing",
    ),
    param(
        {"axis": 0, "virtual_batch_size": 2},
        torch.zeros(4, 3),
        r"When using `virtual_batch_size`, the batch dimension must be 0 and thus axis cannot "
        r"include 0. Received axis=0",
        id="vbs-axis-0",
    ),
    param(
        {"fused": True},
        torch.zeros(4, 3),
        r"`fused=True` only support 4D or 5D input tensors. Received tensor with rank 2",
        id="fused-rank-2",
    ),
    param(
        {"fused": True, "axis": -4},
        torch.zeros(2, 3, 4, 5),
        r"Unsupported axis. The use of `fused=True` is only possible with `axis=1` or `axis=3` "
        r"for 4D input tensors. Received: axis=-4",
        id="fused-axis-minus-4",
    ),
    param(
        {"fused": True},
        torch.zeros(2, 3, 4, 5, dtype=torch.float64),
        r"`fused=True` is only supported when the compute dtype is.*Got dtype: torch.float64",
        id="fused-float64-input",
    ),
    param({}, torch.tensor(1.0), r"Input has undefined rank \(a scalar\)", id="scalar-input"),
    param(
        {"axis": 1},
        (None, None, 3),
        r"Input has undefined `axis` dimension. Received input with shape \(None, None, 3\) and "
        r"axis=1",
        id="undefined-channel",
    ),
]


@pytest.mark.parametrize(("kwargs", "x", "match"), BUILD)
def test_build_rejects_and_leaves_the_layer_unbuilt(kwargs, x, match):
    layer = BatchNormalization(**kwargs)
    with pytest.raises(ValueError, match=match):
        if isinstance(x, torch.Tensor):
            layer(x, training=True)
        else:
            layer.build(x)
    assert_unbuilt(layer)
    assert layer.axis == kwargs.get("axis", -1)
    assert layer.compute_dtype is None and layer.dtype is None


# ---------------------------------------------------------------------- a failing first call
FIRST_CALLS = [
    param({}, X.to(torch.complex64), {}, TypeError, r"does not support complex", id="complex"),
    param({}, X, {"mask": torch.ones(8, 3)}, ValueError, r"`mask` of layer", id="mask-shape"),
    param({}, X, {"training": "yes"}, TypeError, r"`training` must be None", id="training"),
    param({}, X, {"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'", id="call-kwarg"),
    param({}, X, {"scope": 3}, TypeError, r"`scope` must be a string; received 3", id="scope"),
    param({"virtual_batch_size": 3}, X, {}, ValueError, r"not divisible by", id="vbs"),
    param({}, X[:0], {}, ValueError, r"empty batch", id="empty-batch"),
    param({"check_numerics": True}, NAN_X, {}, ValueError, r"NaN or Inf", id="check-numerics"),
    param(
        {"adjustment": Flaky(ones_adjustment)},
        X,
        {},
        RuntimeError,
        r"user bug",
        id="adjustment-raises",
    ),
    param(
        {"activity_regularizer": Flaky(torch.sum)},
        X,
        {},
        RuntimeError,
        r"user bug",
        id="activity-regularizer-raises",
    ),
    param(
        {},
        X.double(),
        {"mask": "yes"},
        TypeError,
        r"`mask` must be a boolean tensor",
        id="float64-input-with-bad-mask",
    ),
]


@pytest.mark.parametrize(("layer_kwargs", "x", "call_kwargs", "error", "match"), FIRST_CALLS)
def test_failing_first_call_leaves_the_layer_unbuilt(layer_kwargs, x, call_kwargs, error, match):
    layer = BatchNormalization(momentum=0.5, **layer_kwargs)
    for value in layer_kwargs.values():
        if isinstance(value, Flaky):
            value.broken = True
    with pytest.raises(error, match=match):
        layer(x, **{"training": True, **call_kwargs})
    assert_unbuilt(layer)
    assert layer.axis == -1 and layer.dtype is None
    for value in layer_kwargs.values():
        if isinstance(value, Flaky):
            value.broken = False
    fresh = BatchNormalization(momentum=0.5, **layer_kwargs)
    y = layer(X[:6], training=True)
    assert y.dtype == torch.float32 and layer.fused is False
    assert torch.equal(y, fresh(X[:6], training=True))
    assert_unchanged(layer, snapshot(fresh))
