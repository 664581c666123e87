"""Regularizers: Keras names, formulas and configs."""

from __future__ import annotations

import pytest
import torch

from batchnorm import regularizers as R

W = torch.tensor([1.0, -2.0, 3.0])


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("l1", 0.01 * 6),
        ("l2", 0.01 * 14),
        ("l1_l2", 0.01 * 6 + 0.01 * 14),
        ("L1L2", 0.0),
        (R.L1(0.5), 3.0),
        (R.L2(0.5), 7.0),
        (R.L1L2(l1=1.0, l2=2.0), 6.0 + 28.0),
        (R.l1_l2(), 0.2),
        ({"class_name": "L2", "config": {"l2": 1.0}}, 14.0),
    ],
)
def test_penalties(identifier, expected):
    assert float(R.get(identifier)(W)) == pytest.approx(expected)


def test_penalty_is_differentiable():
    w = W.clone().requires_grad_()
    R.L1L2(l1=1.0, l2=1.0)(w).backward()
    assert torch.equal(w.grad, torch.sign(W) + 2 * W)


def test_config_round_trip_and_errors():
    reg = R.L1L2(l1=0.1, l2=0.2)
    clone = R.get(R.serialize(reg))
    assert isinstance(clone, R.L1L2) and clone.get_config() == {"l1": 0.1, "l2": 0.2}
    with pytest.raises(ValueError, match="Unknown regularizer 'l3'"):
        R.get("l3")
    with pytest.raises(ValueError, match="l1.*>= 0"):
        R.L1(-1.0)
    with pytest.raises(TypeError, match="l2"):
        R.L2("x")
    assert R.get(None) is None
