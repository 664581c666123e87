"""Initializers: names, configs, values and shapes."""

from __future__ import annotations

import math

import pytest
import torch

from batchnorm import initializers as I


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("zeros", I.Zeros),
        ("Zeros", I.Zeros),
        ("ones", I.Ones),
        ("constant", I.Constant),
        ("random_normal", I.RandomNormal),
        ("RandomNormal", I.RandomNormal),
        ("random_uniform", I.RandomUniform),
        ("truncated_normal", I.TruncatedNormal),
        ("glorot_uniform", I.GlorotUniform),
        ("glorot_normal", I.GlorotNormal),
        ("he_normal", I.HeNormal),
        ("he_uniform", I.HeUniform),
        ("lecun_normal", I.LecunNormal),
        ("lecun_uniform", I.LecunUniform),
        ("variance_scaling", I.VarianceScaling),
        ("orthogonal", I.Orthogonal),
        ("identity", I.Identity),
    ],
)
def test_lookup_by_name(name, cls):
    assert type(I.get(name)) is cls


def test_get_passes_through_none_instances_and_callables():
    init = I.Constant(3)
    assert I.get(None) is None
    assert I.get(init) is init
    fn = lambda shape, dtype=None: torch.zeros(shape)  # noqa: E731
    assert I.get(fn) is fn


def test_get_errors_name_the_argument():
    with pytest.raises(ValueError, match="`gamma_initializer`.*Known names: constant"):
        I.get("nope", argument="gamma_initializer")
    with pytest.raises(TypeError, match="Could not interpret initializer"):
        I.get(3.5)
    with pytest.raises(ValueError, match="class_name"):
        I.get({"config": {}})


def test_config_round_trip():
    for init in (
        I.Constant(2.5),
        I.RandomNormal(1.0, 0.5, seed=3),
        I.VarianceScaling(2.0, "fan_out", "uniform", seed=1),
        I.GlorotUniform(seed=7),
    ):
        clone = I.get(I.serialize(init))
        assert type(clone) is type(init) and clone.get_config() == init.get_config()
        if getattr(init, "seed", None) is not None:
            assert torch.equal(clone((4, 5)), init((4, 5)))


def test_constant_values_and_dtype():
    t = I.Constant(0.25)((2, 3), dtype="float64")
    assert t.dtype == torch.float64 and torch.equal(
        t, torch.full((2, 3), 0.25, dtype=torch.float64)
    )
    assert torch.equal(I.Zeros()((3,)), torch.zeros(3))
    assert torch.equal(I.Ones()((3,), torch.float32), torch.ones(3))
    with pytest.raises(TypeError, match="Constant"):
        I.Constant("a")


def test_seeded_initializers_repeat_and_unseeded_do_not():
    assert torch.equal(I.RandomUniform(seed=1)((50,)), I.RandomUniform(seed=1)((50,)))
    init = I.RandomNormal()
    assert not torch.equal(init((50,)), init((50,)))


def test_distributions():
    torch.manual_seed(0)
    n = 200_000
    normal = I.RandomNormal(mean=1.0, stddev=2.0)((n,))
    assert abs(float(normal.mean()) - 1.0) < 0.02 and abs(float(normal.std()) - 2.0) < 0.02
    uniform = I.RandomUniform(-1.0, 3.0)((n,))
    assert float(uniform.min()) >= -1.0 and float(uniform.max()) < 3.0
    trunc = I.TruncatedNormal(0.0, 1.0)((n,))
    assert float(trunc.abs().max()) <= 2.0
    glorot = I.GlorotUniform()((300, 500))
    limit = math.sqrt(6 / 800)
    assert float(glorot.abs().max()) <= limit
    he = I.HeNormal()((400, 100))  # truncated normal with std sqrt(2/400)
    assert abs(float(he.std()) - math.sqrt(2 / 400)) < 0.01 * math.sqrt(2 / 400) * 10
    assert float(he.abs().max()) <= 2 * math.sqrt(2 / 400) / 0.87962566103423978 + 1e-6


def test_fans_follow_keras():
    # conv kernel (3, 3, 4, 8): fan_in = 36, fan_out = 72; fan_avg uniform limit sqrt(3/54)
    w = I.VarianceScaling(1.0, "fan_avg", "uniform", seed=0)((3, 3, 4, 8))
    assert float(w.abs().max()) <= math.sqrt(3 / 54)
    assert float(w.abs().max()) > 0.9 * math.sqrt(3 / 54)


def test_orthogonal_and_identity():
    q = I.Orthogonal(seed=0)((6, 4))
    assert torch.allclose(q.T @ q, torch.eye(4), atol=1e-5)
    assert torch.equal(I.Identity(2.0)((2, 2)), 2 * torch.eye(2))
    with pytest.raises(ValueError, match="rank >= 2"):
        I.Orthogonal()((3,))
    with pytest.raises(ValueError, match="2-D"):
        I.Identity()((3,))


def test_variance_scaling_validation():
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(0.0)
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan")
    with pytest.raises(ValueError, match="distribution"):
        I.VarianceScaling(distribution="cauchy")
