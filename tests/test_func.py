"""The layer under ``torch.func`` transforms (vmap, grad, jvp, jacrev): the calls take
PyTorch's operations, whose batching and derivative rules functorch knows, and give
the float64 reference's numbers; the moving statistics follow functorch's rule for
in-place updates (inputs of the transformed function, as for ``nn.BatchNorm``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from helpers import CLIP, assert_unchanged, snapshot, step_options, weighted_layer

CASES = {
    "nchw": ((8, 6, 5, 4), {"axis": 1}),
    "nhwc": ((8, 5, 4, 6), {}),
    "renorm-ghost": ((16, 6), {"renorm": True, "renorm_clipping": CLIP, "virtual_batch_size": 4}),
    "multi-axis": ((6, 3, 5, 4), {"axis": [1, 3]}),
}


def _split(layer):
    params = {k: v.detach() for k, v in layer.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in layer.named_buffers()}
    return params, buffers


@pytest.mark.parametrize("grad_mode", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_vmap_inference_matches_float64(name, grad_mode):
    """vmap over a stack of inputs: each is normalized with the moving statistics."""
    shape, config = CASES[name]
    rng = np.random.default_rng(0)
    layer = weighted_layer(shape, rng, **config)
    state = reference.state_of(layer)
    before = snapshot(layer)
    stack = rng.normal(2.0, 3.0, (3, *shape))
    x = torch.tensor(stack, dtype=torch.float32)
    with torch.set_grad_enabled(grad_mode):
        y = torch.func.vmap(lambda t: layer(t, training=False))(x)
    assert y.shape == x.shape
    for i in range(3):
        ref = reference.inference(stack[i], layer._axes, state, layer.epsilon)
        np.testing.assert_allclose(y[i].detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert_unchanged(layer, before)


@pytest.mark.parametrize("name", list(CASES))
def test_grad_of_a_training_step_matches_float64(name):
    """torch.func.grad of Σ y·dy with respect to γ, β and x, the moving statistics
    passed in as buffers and updated in place by TensorFlow's rule."""
    shape, config = CASES[name]
    rng = np.random.default_rng(1)
    layer = weighted_layer(shape, rng, **config)
    state = reference.state_of(layer)
    params, buffers = _split(layer)
    x64, dy64 = rng.normal(2.0, 3.0, shape), rng.normal(size=shape)
    x, dy = torch.tensor(x64, dtype=torch.float32), torch.tensor(dy64, dtype=torch.float32)

    def loss(p, b, t):
        y = torch.func.functional_call(layer, (p, b), (t,), {"training": True})
        return (y * dy).sum()

    dparams, dx = torch.func.grad(loss, argnums=(0, 2))(params, buffers, x)
    _, ref_dx, ref_dgamma, ref_dbeta, new = reference.train_step(
        x64, dy64, layer._axes, state, step_options(layer, config)
    )
    scale = np.abs(ref_dx).max()
    np.testing.assert_allclose(dx.double().numpy(), ref_dx, atol=1e-5 * scale)
    np.testing.assert_allclose(dparams["gamma"].double().numpy(), ref_dgamma, rtol=1e-4)
    np.testing.assert_allclose(dparams["beta"].double().numpy(), ref_dbeta, rtol=1e-4)
    for key in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"):
        if key in buffers:
            np.testing.assert_allclose(
                buffers[key].double().numpy(), getattr(new, key), rtol=1e-5, err_msg=key
            )


def test_per_example_gradients_with_vmap_of_grad_match_float64():
    """An ensemble of independent batches: vmap(grad) with per-member buffers gives each
    member its own gradients and its own moving statistics."""
    shape, config = CASES["nchw"]
    rng = np.random.default_rng(2)
    layer = weighted_layer(shape, rng, **config)
    state = reference.state_of(layer)
    params, buffers = _split(layer)
    members = 3
    x64, dy64 = rng.normal(2.0, 3.0, (members, *shape)), rng.normal(size=(members, *shape))
    x, dy = torch.tensor(x64, dtype=torch.float32), torch.tensor(dy64, dtype=torch.float32)
    stacked = {k: v.expand(members, *v.shape).clone() for k, v in buffers.items()}

    def loss(p, b, t, g):
        return (torch.func.functional_call(layer, (p, b), (t,), {"training": True}) * g).sum()

    dparams = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0))(
        params, stacked, x, dy
    )
    for i in range(members):
        _, _, ref_dgamma, ref_dbeta, new = reference.train_step(
            x64[i], dy64[i], layer._axes, state, step_options(layer, config)
        )
        np.testing.assert_allclose(dparams["gamma"][i].double().numpy(), ref_dgamma, rtol=1e-4)
        np.testing.assert_allclose(dparams["beta"][i].double().numpy(), ref_dbeta, rtol=1e-4)
        np.testing.assert_allclose(stacked["moving_mean"][i].numpy(), new.moving_mean, rtol=1e-5)
        np.testing.assert_allclose(
            stacked["moving_variance"][i].numpy(), new.moving_variance, rtol=1e-5
        )


def test_jacrev_and_jvp_of_inference_are_the_per_channel_scale():
    """Inference is affine per channel: ∂y/∂x = γ/√(moving variance + ε) on the
    diagonal, and zero elsewhere."""
    rng = np.random.default_rng(3)
    layer = weighted_layer((4, 3), rng, axis=-1).double()
    x = torch.tensor(rng.normal(size=(4, 3)))
    g = layer.gamma.detach().numpy()
    v = layer.moving_variance.numpy()
    slope = g / np.sqrt(v + layer.epsilon)
    jac = torch.func.jacrev(lambda t: layer(t, training=False))(x).detach().numpy()
    expected = np.einsum("ac,bd,b->abcd", np.eye(4), np.eye(3), slope)  # ∂y[a,b]/∂x[c,d]
    np.testing.assert_allclose(jac.reshape(12, 12), expected.reshape(12, 12), rtol=1e-12)
    tangent = torch.tensor(rng.normal(size=(4, 3)))
    _, out = torch.func.jvp(lambda t: layer(t, training=False), (x,), (tangent,))
    np.testing.assert_allclose(out.detach().numpy(), tangent.numpy() * slope, rtol=1e-12)


def test_training_with_captured_moving_statistics_is_refused_without_changes():
    """Captured buffers cannot be updated under grad (functorch's rule, as for
    nn.BatchNorm): a RuntimeError that names the fix, and no variable changes."""
    rng = np.random.default_rng(4)
    layer = weighted_layer((8, 3), rng)
    before = snapshot(layer)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = torch.tensor(rng.normal(size=(8, 3)), dtype=torch.float32)

    def loss(p):
        return torch.func.functional_call(layer, p, (x,), {"training": True}).sum()

    with pytest.raises(RuntimeError, match="moving statistics in place.*functional_call"):
        torch.func.grad(loss)(params)
    assert_unchanged(layer, before)
