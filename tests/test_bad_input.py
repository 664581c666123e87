"""Bad calls on a trained layer (inputs, call arguments, scheduled clipping, adjustment
results): each raises naming what was wrong and leaves every weight and buffer
bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bad_input import NAN_X, X, param, trained
from helpers import assert_unchanged, snapshot

# ---------------------------------------------------------------------- calls on a trained layer
BAD_CALLS = [
    # the input itself
    param(
        {},
        torch.randn(8, 3, 2),
        {},
        ValueError,
        r"Input 0 of layer batch_normalization is incompatible with the layer: expected shape "
        r"\(None, 3\) \(rank 2, None = any size\), received shape \(8, 3, 2\)",
        id="input-rank-higher",
    ),
    param(
        {}, torch.randn(3), {}, ValueError, r"expected shape.*shape \(3,\)", id="input-rank-lower"
    ),
    param({}, torch.tensor(1.0), {}, ValueError, r"expected shape.*shape \(\)", id="input-scalar"),
    param(
        {},
        torch.randn(8, 4),
        {},
        ValueError,
        r"expected shape \(None, 3\).*received shape \(8, 4\)",
        id="input-channels",
    ),
    param(
        {},
        torch.randn(8, 3, dtype=torch.complex64),
        {},
        TypeError,
        r"Layer batch_normalization does not support complex input \(received torch.complex64\)",
        id="input-complex",
    ),
    param(
        {},
        [[1.0, 2.0, 3.0]],
        {},
        TypeError,
        r"Layer batch_normalization expects a torch.Tensor or NumPy array; received list",
        id="input-list",
    ),
    param({}, None, {}, TypeError, r"expects a torch.Tensor.*received NoneType", id="input-none"),
    param(
        {},
        np.array([["a", "b", "c"]]),
        {},
        TypeError,
        r"Layer batch_normalization expects numeric input; received a NumPy array of dtype <U1",
        id="input-numpy-str",
    ),
    param(
        {},
        np.ones((2, 3), dtype=object),
        {},
        TypeError,
        r"expects numeric input; received a NumPy array of dtype object",
        id="input-numpy-object",
    ),
    param(
        {},
        torch.randn(8, 3, device="meta"),
        {},
        ValueError,
        r"Input of layer batch_normalization is on meta but the layer's variables are on cpu; "
        r"move one of them \(e.g. `layer.to\('meta'\)`\)",
        id="input-other-device",
    ),
    param(
        {},
        torch.randn(8, 3, device="meta"),
        {"training": False},
        ValueError,
        r"is on meta but the layer's variables are on cpu",
        id="input-other-device-inference",
    ),
    # mask
    param(
        {},
        X,
        {"mask": torch.ones(8, 3, dtype=torch.bool)},
        ValueError,
        r"`mask` of layer batch_normalization must have the input's shape without its channel "
        r"axis \[1\]: expected \(8,\), received \(8, 3\)",
        id="mask-shape",
    ),
    param(
        {},
        X,
        {"mask": torch.ones(8, dtype=torch.complex64)},
        TypeError,
        r"`mask` must be boolean \(or real weights\); received complex values",
        id="mask-complex",
    ),
    param(
        {},
        X,
        {"mask": np.array(["y"] * 8)},
        TypeError,
        r"`mask` must be a boolean tensor or array; received a NumPy array of dtype <U1",
        id="mask-numpy-str",
    ),
    param(
        {},
        X,
        {"mask": "all"},
        TypeError,
        r"`mask` must be a boolean tensor or None; received str",
        id="mask-not-a-tensor",
    ),
    param(
        {},
        X,
        {"mask": torch.ones(8, dtype=torch.bool, device="meta")},
        ValueError,
        r"`mask` is on meta but the input is on cpu",
        id="mask-other-device",
    ),
    # training
    param(
        {},
        X,
        {"training": "yes"},
        TypeError,
        r"`training` must be None \(follow the module's train\(\)/eval\(\) mode\), a Python or "
        r"NumPy bool, an integer \(nonzero means training\), or a one-element bool or integer "
        r"tensor; received 'yes' of type str",
        id="training-str",
    ),
    param(
        {}, X, {"training": 1.0}, TypeError, r"`training` must be None.*1\.0", id="training-float"
    ),
    param(
        {},
        X,
        {"training": np.array([True])},
        TypeError,
        r"`training` must be None .*, or a one-element bool or integer tensor; received array",
        id="training-numpy-array",
    ),
    param(
        {},
        X,
        {"training": torch.tensor([True, False])},
        ValueError,
        r"`training` must be None .*one-element bool or integer tensor; received a tensor of shape "
        r"\(2,\)",
        id="training-vector",
    ),
    param(
        {},
        X,
        {"training": torch.tensor(0.5)},
        TypeError,
        r"`training` must be None .*one-element bool or integer tensor; received a torch.float32 "
        r"tensor",
        id="training-float-tensor",
    ),
    param(
        {},
        X,
        {"training": torch.tensor(True, device="meta")},
        ValueError,
        r"`training` is a meta tensor, which holds no value",
        id="training-meta-tensor",
    ),
    # other keywords and data-dependent checks
    param(
        {},
        X,
        {"bogus": 1},
        TypeError,
        r"call\(\) got an unexpected keyword argument 'bogus'",
        id="unknown-call-kwarg",
    ),
    param(
        {"virtual_batch_size": 4},
        X[:6],
        {},
        ValueError,
        r"the batch size 6 is not divisible by virtual_batch_size=4; in training every ghost "
        r"batch needs 4 examples",
        id="vbs-not-dividing",
    ),
    param(
        {},
        torch.empty(0, 3),
        {},
        ValueError,
        r"received an empty batch \(shape \(0, 3\)\) in training: batch statistics are undefined",
        id="empty-batch",
    ),
    param(
        {"check_numerics": True},
        NAN_X,
        {},
        ValueError,
        r"the training batch holds NaN or Inf \(check_numerics=True\); nothing was updated",
        id="check-numerics-nan",
    ),
]


@pytest.mark.parametrize(("layer_kwargs", "x", "call_kwargs", "error", "match"), BAD_CALLS)
def test_bad_call_raises_and_changes_nothing(layer_kwargs, x, call_kwargs, error, match):
    layer = trained(**layer_kwargs)
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer(x, **{"training": True, **call_kwargs})
    assert_unchanged(layer, before)
    assert layer(X, training=False).shape == (8, 3)


def test_scheduled_clipping_made_invalid_changes_nothing():
    rmax = torch.tensor(3.0)
    layer = trained(renorm=True, renorm_clipping={"rmin": 0.5, "rmax": rmax})
    rmax.fill_(0.25)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"`renorm_clipping\['rmax'\]` must be >= rmin.*0\.25"):
        layer(X, training=True)
    assert_unchanged(layer, before)


class Adjustment:
    """A user adjustment whose result (or exception) the test sets after training."""

    def __init__(self):
        self.result = (torch.ones(3), torch.zeros(3))

    def __call__(self, shape):
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


ADJUSTMENT = [
    param(
        (torch.ones(4), torch.zeros(3)),
        ValueError,
        r"`adjustment` returned a scale of shape \(4,\), which does not broadcast to the input "
        r"shape \(8, 3\)",
        id="scale-wrong-shape",
    ),
    param(
        (torch.ones(3), torch.zeros(2, 3)),
        ValueError,
        r"`adjustment` returned a bias of shape \(2, 3\), which does not broadcast",
        id="bias-not-broadcastable",
    ),
    param(
        (torch.ones(1, 8, 3), torch.zeros(3)),
        ValueError,
        r"`adjustment` returned a scale of shape \(1, 8, 3\), which does not broadcast to the "
        r"input shape \(8, 3\)",
        id="scale-grows-the-input",
    ),
    param(
        torch.ones(3),
        ValueError,
        r"`adjustment` must return a pair \(scale, bias\); returned Tensor",
        id="not-a-tuple",
    ),
    param(
        (1.0, 1.0, 0.0),
        ValueError,
        r"`adjustment` must return a pair \(scale, bias\); returned tuple",
        id="three-values",
    ),
    param(
        ("big", torch.zeros(3)),
        TypeError,
        r"`adjustment` must return real tensors \(scale, bias\); returned a scale of type str",
        id="scale-str",
    ),
    param(
        (torch.ones(3), None),
        TypeError,
        r"`adjustment` must return real tensors.*a bias of type NoneType",
        id="bias-none",
    ),
    param(
        (torch.ones(3) * 1j, torch.zeros(3)),
        TypeError,
        r"`adjustment` returned a complex scale; expected real values",
        id="scale-complex",
    ),
    param(RuntimeError("user bug"), RuntimeError, r"user bug", id="raises"),
]


@pytest.mark.parametrize(("result", "error", "match"), ADJUSTMENT)
def test_bad_adjustment_changes_nothing(result, error, match):
    adjustment = Adjustment()
    layer = trained(adjustment=adjustment, renorm=True)
    adjustment.result = result
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer(X, training=True)
    assert_unchanged(layer, before)
