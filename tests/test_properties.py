"""Property tests: random shapes, axes and options against the float64 reference."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from batchnorm import BatchNormalization
from conftest import capped


@st.composite
def configs(draw):
    rank = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    if draw(st.booleans()):  # one channel axis, usually first or last (TF's fused layouts)
        axes = [draw(st.sampled_from([1, rank - 1, *range(rank)]))]
    else:
        axes = draw(st.permutations(range(rank)))[: draw(st.integers(1, rank - 1))]
    n_axes = len(axes)
    signed = [a - rank if draw(st.booleans()) else a for a in axes]
    axis = signed[0] if n_axes == 1 and draw(st.booleans()) else signed
    kwargs = {
        "axis": axis,
        "momentum": draw(st.sampled_from([0.0, 0.5, 0.9, 0.99])),
        "epsilon": draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        "center": draw(st.booleans()),
        "scale": draw(st.booleans()),
        "fused": draw(st.sampled_from([None, False])),
        "unbiased_moving_variance": draw(st.sampled_from([None, None, True, False])),
    }
    float64 = draw(st.sampled_from([False, False, True]))
    steps = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    return shape, kwargs, float64, steps, seed


def test_training_steps_match_the_float64_reference(backend):
    @capped(backend, 150)
    @given(case=configs())
    def check(case):
        shape, kwargs, float64, steps, seed = case
        rng = np.random.default_rng(seed)
        dtype = torch.float64 if float64 else torch.float32
        tol = 1e-9 if float64 else 5e-5
        layer = BatchNormalization(**kwargs)
        layer(torch.zeros(shape, dtype=dtype), training=False)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
        axes = layer.axis
        bessel = reference.tf_uses_bessel(
            len(shape), axes, kwargs["fused"], kwargs["unbiased_moving_variance"], float64
        )
        state = reference.state_of(layer)
        for _ in range(steps):
            x = rng.normal(1.0, 2.0, shape)
            dy = rng.normal(size=shape)
            xt = torch.tensor(x, dtype=dtype, requires_grad=True)
            for p in layer.trainable_weights:
                p.grad = None
            y = layer(xt, training=True)
            (y.double() * torch.tensor(dy)).sum().backward()
            options = reference.Options(kwargs["momentum"], kwargs["epsilon"], bessel)
            y_ref, dx_ref, dg_ref, db_ref, state = reference.train_step(
                x.astype(np.float32) if not float64 else x, dy, axes, state, options
            )
            scale = lambda ref: max(1.0, float(np.abs(ref).max()))  # noqa: E731
            assert np.abs(y.detach().double().numpy() - y_ref).max() <= tol * scale(y_ref)
            assert np.abs(xt.grad.double().numpy() - dx_ref).max() <= 4 * tol * scale(dx_ref)
            for ours, ref in ((layer.gamma, dg_ref), (layer.beta, db_ref)):
                if ref is not None:
                    assert np.abs(ours.grad.double().numpy() - ref).max() <= 4 * tol * scale(ref)
            for name in ("moving_mean", "moving_variance"):
                ours = getattr(layer, name).double().numpy()
                ref = getattr(state, name)
                assert np.abs(ours - ref).max() <= tol * scale(ref), name
        # inference from the layer's final weights (already checked above), so an
        # ill-conditioned tiny variance does not amplify float32 rounding of the state
        x = rng.normal(size=shape)
        y = layer(torch.tensor(x, dtype=dtype), training=False)
        xr = x.astype(np.float32) if not float64 else x
        y_ref = reference.inference(xr, axes, reference.state_of(layer), kwargs["epsilon"])
        assert np.abs(y.detach().double().numpy() - y_ref).max() <= tol * max(
            1.0, np.abs(y_ref).max()
        )

    check()
