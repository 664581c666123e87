"""Renorm, ghost batches, adjustment and masks: worked examples, errors, and the
float64 reference over what TensorFlow cannot check (contiguous ghosts, masks on
every path, per-ghost masks, schedules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from batchnorm import BatchNormalization
from conftest import capped
from helpers import assert_unchanged, snapshot


def plain_bn(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Plain training-mode batch norm over dim 0, in float64."""
    x = x.double()
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps)


# ---------------------------------------------------------------------- worked examples
def test_strided_ghost_batches_worked_example():
    """x = [0,0,0,10,10,10], vbs 3 ⇒ G = 2 ghosts: {0,2,4} = [0,0,10] and {1,3,5} = [0,10,10]."""
    x = torch.tensor([0.0, 0.0, 0.0, 10.0, 10.0, 10.0]).reshape(6, 1)
    layer = BatchNormalization(virtual_batch_size=3, momentum=0.0, epsilon=0.0)
    y = layer(x, training=True).flatten()
    # ghost {0,2,4}: mean 10/3, var = (2·(10/3)² + (20/3)²)/3 = 200/9
    m0, v0 = 10 / 3, 200 / 9
    m1, v1 = 20 / 3, 200 / 9
    s0, s1 = v0**0.5, v1**0.5
    expected = [
        (0 - m0) / s0,
        (0 - m1) / s1,
        (0 - m0) / s0,
        (10 - m1) / s1,
        (10 - m0) / s0,
        (10 - m1) / s1,
    ]
    assert torch.allclose(y, torch.tensor(expected), atol=1e-6)
    # one update: mean of ghost means (= batch mean 5), mean of ghost variances (not 25)
    assert torch.allclose(layer.moving_mean.flatten(), torch.tensor([5.0]))
    assert torch.allclose(layer.moving_variance.flatten(), torch.tensor([200 / 9]))
    assert layer.moving_mean.shape == (1, 1, 1)  # TF's layout [1, 1, C]


def test_contiguous_ghost_batches_worked_example():
    x = torch.tensor([0.0, 0.0, 0.0, 10.0, 10.0, 10.0]).reshape(6, 1)
    layer = BatchNormalization(virtual_batch_size=3, ghost_grouping="contiguous", momentum=0.0)
    y = layer(x, training=True)
    assert torch.equal(y, torch.zeros(6, 1))  # each chunk is constant: x − μ = 0
    assert torch.equal(layer.moving_mean.flatten(), torch.tensor([5.0]))
    assert torch.equal(layer.moving_variance.flatten(), torch.tensor([0.0]))


def test_renorm_clipping_worked_example():
    """Batch stddev far above the renorm stddev and mean far away: r, d hit rmax and dmax,
    so the output is plain batch norm · 1.1 + 0.1."""
    torch.manual_seed(0)
    x = torch.randn(64, 4) * 5 + 3
    clip = {"rmax": 1.1, "rmin": 0.9, "dmax": 0.1}
    layer = BatchNormalization(renorm=True, renorm_clipping=clip)
    y = layer(x, training=True)
    assert torch.allclose(y.double(), plain_bn(x) * 1.1 + 0.1, atol=1e-5)


def test_renorm_small_batch_std_hits_rmin_and_negative_dmax():
    x = torch.randn(32, 2) * 0.01 - 4
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmax": 1.1, "rmin": 0.9, "dmax": 0.1})
    y = layer(x, training=True).double()
    assert torch.allclose(y, plain_bn(x) * 0.9 - 0.1, atol=1e-4)


def test_renorm_updates_follow_tf():
    x = torch.randn(32, 3) * 2 + 1
    eps, m, rm = 1e-3, 0.8, 0.6
    layer = BatchNormalization(renorm=True, momentum=m, renorm_momentum=rm)
    layer(x, training=True)
    x64 = x.double()
    mu, var = x64.mean(0), x64.var(0, unbiased=False)
    s = torch.sqrt(var + eps)
    stddev = 1 - (1 - s) * (1 - m)
    assert torch.allclose(layer.moving_mean.double(), mu * (1 - m), atol=1e-6)
    assert torch.allclose(layer.moving_stddev.double(), stddev, atol=1e-6)
    assert torch.allclose(layer.moving_variance.double(), stddev**2 - eps, atol=1e-6)
    assert torch.allclose(layer.renorm_mean.double(), mu * (1 - rm), atol=1e-6)
    assert torch.allclose(layer.renorm_stddev.double(), 1 - (1 - s) * (1 - rm), atol=1e-6)
    assert layer.weight_names[-3:] == [
        "batch_normalization/moving_stddev",
        "batch_normalization/renorm_mean",
        "batch_normalization/renorm_stddev",
    ]


def test_renorm_inference_is_plain_batch_norm():
    layer = BatchNormalization(renorm=True, momentum=0.5)
    for _ in range(3):
        layer(torch.randn(16, 3) * 3, training=True)
    x = torch.randn(8, 3)
    expected = (x - layer.moving_mean) / torch.sqrt(layer.moving_variance + 1e-3)
    expected = expected * layer.gamma + layer.beta
    assert torch.allclose(layer(x, training=False), expected, atol=1e-6)


def test_r_and_d_carry_no_gradient():
    """With clipping inactive r = s/ŝ depends on x; the gradient must still be the
    batch-norm gradient scaled by the constant r (TF's stop_gradient)."""
    rng = np.random.default_rng(0)
    x = rng.normal(2, 3, (12, 3))
    dy = rng.normal(size=(12, 3))
    layer = BatchNormalization(renorm=True, momentum=0.5, renorm_momentum=0.5)
    layer.double()
    layer.build((None, 3))
    layer.double()
    state = reference.state_of(layer)
    xt = torch.tensor(x, requires_grad=True)
    (layer(xt, training=True) * torch.tensor(dy)).sum().backward()
    options = reference.Options(momentum=0.5, renorm=True, renorm_momentum=0.5)
    _, dx, dg, _, _ = reference.train_step(x, dy, [1], state, options)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), dg, rtol=1e-9)


def test_clipping_can_be_scheduled_with_tensors():
    rmax = torch.tensor(1.0)
    dmax = torch.tensor(0.0)
    layer = BatchNormalization(
        renorm=True, renorm_clipping={"rmax": rmax, "rmin": 1.0, "dmax": dmax}
    )
    x = torch.randn(32, 3) * 4 + 2
    assert torch.allclose(layer(x, training=True).double(), plain_bn(x), atol=1e-5)
    rmax.fill_(3.0)  # the paper's schedule: relax the clipping over training
    dmax.fill_(5.0)
    layer2 = BatchNormalization(
        renorm=True, renorm_clipping={"rmax": 3.0, "rmin": 1.0, "dmax": 5.0}
    )
    layer2.load_state_dict(layer.state_dict())
    x = torch.randn(32, 3) * 4 + 2
    assert torch.equal(layer(x, training=True), layer2(x, training=True))


def test_scheduled_clipping_is_validated_before_any_update():
    rmin = torch.tensor(0.5)
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmin": rmin, "rmax": 2.0})
    layer(torch.randn(8, 3), training=True)
    rmin.fill_(3.0)
    before = snapshot(layer)
    with pytest.raises(ValueError, match="rmax=2.0, rmin=3.0"):
        layer(torch.randn(8, 3), training=True)
    assert_unchanged(layer, before)


def test_adjustment_is_called_with_the_input_shape_in_training_only():
    seen = []

    def adjustment(shape):
        seen.append(shape)
        return torch.full((3,), 2.0), torch.full((3,), 0.5)

    layer = BatchNormalization(adjustment=adjustment, center=False, scale=False)
    x = torch.randn(16, 3)
    y = layer(x, training=True)
    assert seen == [torch.Size([16, 3])] and isinstance(seen[0], torch.Size)
    assert torch.allclose(y.double(), plain_bn(x) * 2.0 + 0.5, atol=1e-6)
    layer(x, training=False)
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("result", "match"),
    [
        ((torch.ones(4), torch.zeros(3)), r"scale of shape \(4,\).*\(16, 3\)"),
        ((torch.ones(3), torch.zeros(2, 3)), r"bias of shape \(2, 3\)"),
        ((torch.ones(1, 16, 3), torch.zeros(3)), r"scale of shape \(1, 16, 3\)"),
        (torch.ones(3), "pair"),
        ((1.0, 2.0, 3.0), "pair"),
    ],
)
def test_adjustment_returning_bad_values_changes_nothing(result, match):
    layer = BatchNormalization(adjustment=lambda shape: result)
    layer.build((None, 3))
    before = snapshot(layer)
    with pytest.raises(ValueError, match=match):
        layer(torch.randn(16, 3), training=True)
    assert_unchanged(layer, before)


def test_adjustment_exception_changes_nothing():
    def adjustment(shape):
        raise RuntimeError("user bug")

    layer = BatchNormalization(adjustment=adjustment, renorm=True)
    layer.build((None, 3))
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="user bug"):
        layer(torch.randn(16, 3), training=True)
    assert_unchanged(layer, before)


def test_ghost_batch_not_divisible_raises_in_training_only():
    layer = BatchNormalization(virtual_batch_size=4)
    layer.build((None, 3))
    before = snapshot(layer)
    with pytest.raises(ValueError, match="batch size 6 is not divisible by virtual_batch_size=4"):
        layer(torch.randn(6, 3), training=True)
    assert_unchanged(layer, before)
    assert layer(torch.randn(6, 3), training=False).shape == (6, 3)  # inference: any batch


def test_ghost_parameters_exchange_with_tf_layout():
    layer = BatchNormalization(virtual_batch_size=2, axis=1)
    layer.build((None, 3, 4))
    assert [tuple(w.shape) for w in layer.weights] == [(1, 1, 3, 1)] * 4
    assert layer.count_params() == 12


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (torch.ones(8, 3, dtype=torch.bool), r"expected \(8,\), received \(8, 3\)"),
        (torch.ones(7, dtype=torch.bool), r"expected \(8,\), received \(7,\)"),
        ("yes", "boolean tensor"),
    ],
)
def test_bad_mask_raises_and_changes_nothing(mask, match):
    layer = BatchNormalization()
    layer.build((None, 3))
    before = snapshot(layer)
    with pytest.raises((ValueError, TypeError), match=match):
        layer(torch.randn(8, 3), training=True, mask=mask)
    assert_unchanged(layer, before)


def test_mask_is_honoured_on_tfs_fused_path_too():
    """tf_keras ignores masks on its fused path (4-D NHWC); we use the weighted moments."""
    x = torch.randn(4, 3, 3, 2)
    mask = torch.rand(4, 3, 3) > 0.5
    layer = BatchNormalization(momentum=0.0)
    assert layer._fused_can_be_used()
    layer(x, training=True, mask=mask)
    picked = x[mask]  # (n, C): the unmasked positions only
    n = picked.shape[0]
    assert torch.allclose(layer.moving_mean, picked.mean(0), atol=1e-6)
    # the fused rule's Bessel factor counts only unmasked positions
    assert torch.allclose(
        layer.moving_variance, picked.var(0, unbiased=False) * n / (n - 1), atol=1e-5
    )


def test_mask_with_channel_first_axis_and_numpy():
    x = torch.randn(4, 2, 5)
    mask = np.random.default_rng(0).uniform(size=(4, 5)) > 0.3
    layer = BatchNormalization(axis=1, momentum=0.0)
    layer(x, training=True, mask=mask)
    picked = x.permute(0, 2, 1)[torch.from_numpy(mask)]
    assert torch.allclose(layer.moving_mean, picked.mean(0), atol=1e-6)


def test_all_masked_batch_gives_zero_statistics_and_no_nan():
    layer = BatchNormalization(momentum=0.5)
    y = layer(torch.randn(8, 3), training=True, mask=torch.zeros(8, dtype=torch.bool))
    assert torch.isfinite(y).all()
    assert torch.equal(layer.moving_mean, torch.zeros(3))
    assert torch.equal(layer.moving_variance, torch.full((3,), 0.5))


def test_unbiased_override_with_ghosts_and_renorm():
    x = torch.randn(8, 2)
    layer = BatchNormalization(virtual_batch_size=4, unbiased_moving_variance=True, momentum=0.0)
    layer(x, training=True)
    ghosts = [x[g::2] for g in range(2)]
    expected = torch.stack([g.var(0, unbiased=True) for g in ghosts]).mean(0)
    assert torch.allclose(layer.moving_variance.flatten(), expected, atol=1e-6)
    renorm = BatchNormalization(renorm=True, unbiased_moving_variance=True, momentum=0.0)
    renorm(x, training=True)
    assert torch.allclose(renorm.moving_variance, x.var(0, unbiased=True), atol=1e-5)
    # the renorm statistics keep the biased batch stddev that r and d are built from
    assert torch.allclose(
        renorm.renorm_stddev,
        1 - (1 - torch.sqrt(x.var(0, unbiased=False) + 1e-3)) * 0.01,
        atol=1e-6,
    )


# ---------------------------------------------------------------------- float64 reference
@st.composite
def feature_cases(draw):
    rank = draw(st.integers(2, 4))
    vbs = draw(st.sampled_from([None, 1, 2, 3]))
    groups = draw(st.integers(1, 3))
    batch = (vbs or draw(st.integers(1, 3))) * groups
    shape = (batch, *draw(st.lists(st.integers(1, 3), min_size=rank - 1, max_size=rank - 1)))
    candidates = list(range(1, rank)) if vbs else list(range(rank))
    if draw(st.booleans()):
        axes = [draw(st.sampled_from(candidates))]
    else:
        axes = sorted(draw(st.sets(st.sampled_from(candidates), min_size=1)))
    renorm = draw(st.booleans())
    adjust = vbs is None and draw(st.booleans())
    config = {
        "axis": axes if len(axes) > 1 or draw(st.booleans()) else axes[0],
        "momentum": draw(st.sampled_from([0.0, 0.5, 0.9])),
        "epsilon": draw(st.sampled_from([1e-3, 0.1])),
        "center": draw(st.booleans()),
        "scale": draw(st.booleans()),
        "unbiased_moving_variance": draw(st.sampled_from([None, True, False])),
    }
    if renorm:
        clipping = {}
        for key, values in (("rmin", [0.5, 0.9]), ("rmax", [1.1, 2.0]), ("dmax", [0.1, 1.0])):
            if draw(st.booleans()):
                clipping[key] = draw(st.sampled_from(values))
        config.update(
            renorm=True,
            renorm_clipping=clipping,
            renorm_momentum=draw(st.sampled_from([0.0, 0.5, 0.9])),
        )
    if vbs:
        config.update(
            virtual_batch_size=vbs, ghost_grouping=draw(st.sampled_from(["strided", "contiguous"]))
        )
    use_mask = draw(st.booleans())
    return shape, axes, config, adjust, use_mask, draw(st.integers(0, 2**16))


def test_features_match_the_float64_reference(backend):
    @capped(backend, 120)
    @given(case=feature_cases())
    def check(case):
        shape, axes, config, adjust, use_mask, seed = case
        rng = np.random.default_rng(seed)
        adjustment = None
        if adjust:
            view = [shape[d] if d in axes else 1 for d in range(len(shape))]
            adjustment = (rng.uniform(0.9, 1.1, view), rng.uniform(-0.1, 0.1, view))
            config["adjustment"] = lambda s: (
                torch.tensor(adjustment[0]),
                torch.tensor(adjustment[1]),
            )
        layer = BatchNormalization(**config)
        layer(torch.zeros(shape, dtype=torch.float64), training=False)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
        state = reference.state_of(layer)
        options = reference.Options(
            momentum=config["momentum"],
            epsilon=config["epsilon"],
            bessel=reference.tf_uses_bessel(
                len(shape), axes, None, config["unbiased_moving_variance"], True
            ),
            renorm=config.get("renorm", False),
            clipping=config.get("renorm_clipping", {}),
            renorm_momentum=config.get("renorm_momentum", 0.99),
            virtual_batch_size=config.get("virtual_batch_size"),
            grouping=config.get("ghost_grouping", "strided"),
        )
        for _ in range(2):
            x = rng.normal(1.0, 2.0, shape)
            dy = rng.normal(size=shape)
            mshape = tuple(n for d, n in enumerate(shape) if d not in axes)
            mask = rng.uniform(size=mshape) < 0.7 if use_mask else None
            xt = torch.tensor(x, requires_grad=True)
            for p in layer.trainable_weights:
                p.grad = None
            kwargs = {"mask": torch.tensor(mask)} if use_mask else {}
            y = layer(xt, training=True, **kwargs)
            (y * torch.tensor(dy)).sum().backward()
            y_ref, dx_ref, dg_ref, db_ref, state = reference.train_step(
                x, dy, axes, state, options, mask=mask, adjustment=adjustment
            )
            np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(xt.grad.numpy(), dx_ref, rtol=1e-7, atol=1e-8)
            if dg_ref is not None:
                np.testing.assert_allclose(layer.gamma.grad.numpy(), dg_ref, rtol=1e-7, atol=1e-8)
            if db_ref is not None:
                np.testing.assert_allclose(layer.beta.grad.numpy(), db_ref, rtol=1e-7, atol=1e-8)
            ours = reference.state_of(layer)
            for name in (
                "moving_mean",
                "moving_variance",
                "moving_stddev",
                "renorm_mean",
                "renorm_stddev",
            ):
                if getattr(state, name) is not None:
                    np.testing.assert_allclose(
                        getattr(ours, name),
                        getattr(state, name),
                        rtol=1e-9,
                        atol=1e-12,
                        err_msg=name,
                    )

    check()
