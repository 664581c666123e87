"""Inputs that must work: integer and bool tensors, NumPy arrays and masks (negative
strides too), non-contiguous layouts, and the device of an unbuilt layer's first input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bad_input import X, param
from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot


# ---------------------------------------------------------------------- inputs that must work
@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool], ids=str
)
def test_integer_and_bool_inputs_are_cast_to_float32(dtype):
    x = torch.randint(0, 5, (16, 3)).to(dtype)
    layer, reference = BatchNormalization(momentum=0.5), BatchNormalization(momentum=0.5)
    y = layer(x, training=True)
    assert y.dtype == torch.float32 and layer.dtype == torch.float32
    assert torch.equal(y, reference(x.float(), training=True))
    assert_unchanged(layer, snapshot(reference))
    assert torch.equal(layer(x, training=False), reference(x.float(), training=False))


def test_numpy_inputs_work_and_give_numpy():
    x = X.numpy()
    layer, reference = BatchNormalization(momentum=0.5), BatchNormalization(momentum=0.5)
    y = layer(x[::-1], training=True)  # negative strides too
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(y, reference(X.flip(0), training=True).detach().numpy())
    y = layer(x.astype(np.int64), training=False)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32


def test_numpy_mask_with_negative_strides():
    mask = np.array([True, False] * 4)
    layer, reference = BatchNormalization(momentum=0.5), BatchNormalization(momentum=0.5)
    y = layer(X, training=True, mask=mask[::-1])
    assert torch.equal(y, reference(X, training=True, mask=torch.from_numpy(mask[::-1].copy())))
    assert_unchanged(layer, snapshot(reference))


def assert_close(actual, expected):
    """Within 1e-6 of the larger of 1 and max|expected| (layouts may sum in another order)."""
    actual, expected = actual.detach(), expected.detach()
    assert float((actual - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))


LAYOUTS = [
    param((8, 3, 5, 6), 1, lambda x: x.contiguous(memory_format=torch.channels_last), id="nhwc"),
    param(
        (4, 3, 5, 6, 2),
        1,
        lambda x: x.contiguous(memory_format=torch.channels_last_3d),
        id="ndhwc",
    ),
    param((8, 3, 5, 6), 1, lambda x: x.transpose(2, 3).contiguous().transpose(2, 3), id="hw-swap"),
    param((8, 5, 3), -1, lambda x: x.transpose(0, 1).contiguous().transpose(0, 1), id="nlc-swap"),
    param((8, 3), -1, lambda x: torch.cat([x, x], 1)[:, ::2], id="strided"),
    param((8, 3), -1, lambda x: x[:1].expand(8, 3), id="expanded"),
    param(
        (8, 5, 3), [0, 2], lambda x: x.permute(2, 1, 0).contiguous().permute(2, 1, 0), id="multi"
    ),
]


@pytest.mark.parametrize(("shape", "axis", "layout"), LAYOUTS)
def test_non_contiguous_inputs_match_the_contiguous_result(shape, axis, layout):
    x = torch.randn(*shape) * 3 + 2
    variant = layout(x)
    contiguous = variant.contiguous()
    assert torch.equal(variant, contiguous) and not variant.is_contiguous()
    layer, reference = (BatchNormalization(axis=axis, momentum=0.5) for _ in range(2))
    assert_close(layer(variant, training=True), reference(contiguous, training=True))
    for name, value in snapshot(reference).items():
        assert_close(getattr(layer, name), value)
    assert_close(layer(variant, training=False), reference(contiguous, training=False))


def test_unbuilt_layer_follows_the_device_of_its_first_input():
    layer = BatchNormalization()
    y = layer(torch.randn(8, 3, device="meta"), training=True)
    assert y.device.type == "meta"
    assert all(w.device.type == "meta" for w in layer.weights)
    with pytest.raises(ValueError, match=r"Input of layer .* is on cpu but the layer's variables"):
        layer(X, training=False)
