"""Constraints: Keras names and formulas."""

from __future__ import annotations

import pytest
import torch

from batchnorm import constraints as C

EPS = 1e-7


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("max_norm", C.MaxNorm),
        ("MaxNorm", C.MaxNorm),
        ("non_neg", C.NonNeg),
        ("unit_norm", C.UnitNorm),
        ("min_max_norm", C.MinMaxNorm),
    ],
)
def test_lookup(name, cls):
    assert type(C.get(name)) is cls


def test_max_norm():
    w = torch.tensor([[3.0, 0.1], [4.0, 0.1]])  # column norms 5 and ~0.14
    out = C.MaxNorm(2.0, axis=0)(w)
    assert torch.allclose(out[:, 0], w[:, 0] * 2.0 / (EPS + 5.0))
    assert torch.allclose(out[:, 1], w[:, 1], atol=1e-6)


def test_non_neg_unit_norm_min_max():
    w = torch.tensor([-1.0, 2.0, -3.0, 4.0])
    assert C.NonNeg()(w).tolist() == [0.0, 2.0, 0.0, 4.0]
    assert torch.allclose(C.UnitNorm()(w).norm(), torch.tensor(1.0))
    n = float(w.norm())
    out = C.MinMaxNorm(min_value=0.0, max_value=1.0, rate=0.5)(w)
    assert torch.allclose(out, w * (0.5 * 1.0 + 0.5 * n) / (EPS + n))


def test_config_round_trip_and_errors():
    c = C.MinMaxNorm(0.5, 2.0, 0.3, axis=[0, 1])
    clone = C.get(C.serialize(c))
    assert clone.get_config() == c.get_config()
    with pytest.raises(ValueError, match="Unknown constraint"):
        C.get("positive")
