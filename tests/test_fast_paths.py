"""The layer's fast paths: torch.compile with the same numbers, the kernels' status, the
short call against the general path (and following changes to the layer), one thread
for small inputs, and functional.train_forward's batch statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import batchnorm
import reference
from batchnorm import BatchNormalization
from batchnorm import functional as F
from batchnorm.backends.c import build as _native
from helpers import (
    CLIP,
    step_against_reference,
)


# ---------------------------------------------------------------------- compile
def test_torch_compile_fullgraph_trains_and_infers_with_the_same_numbers():
    torch.manual_seed(0)

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(8, 16),
            BatchNormalization(momentum=0.9, renorm=True),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 4),
        )

    model, ref = make(), make()
    x = torch.randn(32, 8)
    model(x[:2])
    ref(x[:2])
    ref.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    y_ref = ref(x)
    y_ref.square().sum().backward()
    assert torch.allclose(y, y_ref, atol=1e-5)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)
    for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean"):
        assert torch.allclose(getattr(model[1], name), getattr(ref[1], name), atol=1e-6)
    model.eval()
    ref.eval()
    assert torch.allclose(compiled(x), ref(x), atol=1e-5)


def test_kernel_status_is_reported():
    assert isinstance(_native.status(), str) and _native.status()
    assert "batchnorm" in batchnorm.__name__


SHORT_CALLS = {
    "rows": ((64, 24), {"axis": -1}, torch.float32),
    "nchw": ((6, 5, 4, 3), {"axis": 1}, torch.float32),
    "multi-axis": ((6, 5, 4, 3), {"axis": [1, 3]}, torch.float32),
    "renorm": ((32, 7), {"renorm": True, "renorm_clipping": CLIP}, torch.float32),
    "ghost-strided": ((32, 3, 5), {"virtual_batch_size": 8}, torch.float32),
    "ghost-contiguous": (
        (32, 5),
        {"virtual_batch_size": 4, "ghost_grouping": "contiguous"},
        torch.float32,
    ),
    "float64": ((20, 6), {"axis": -1}, torch.float64),
    "float16": ((63, 40), {"axis": -1}, torch.float16),  # rows in fours and three more
    "frozen": ((16, 6), {"trainable": False}, torch.float32),
}


@pytest.mark.parametrize("route", ["short", "general"])
@pytest.mark.parametrize("name", list(SHORT_CALLS))
def test_short_call_matches_general_path(name, route, node):
    """A built layer's later calls skip the general path (the C backend's short call); a
    forward hook sends them through it. Both routes, with either autograd node, two
    training steps (the second reuses what the first worked out for the layout) and an
    inference call, against the float64 reference."""
    shape, config, dtype = SHORT_CALLS[name]
    rng = np.random.default_rng(5)
    layer = BatchNormalization(momentum=0.5, **config)
    layer(torch.zeros((2, *shape[1:]), dtype=dtype), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    calls = []
    if route == "general":
        layer.register_forward_hook(lambda *args: calls.append(1))
    frozen = not layer.trainable
    options = reference.Options(
        momentum=0.5,
        bessel=layer._bessel,
        renorm=layer.renorm,
        clipping=CLIP,
        virtual_batch_size=config.get("virtual_batch_size"),
        grouping=config.get("ghost_grouping", "strided"),
    )
    eps = 1e-5 if dtype != torch.float16 else 4 * float(torch.finfo(dtype).eps)
    for _ in range(2):  # the second step reuses the layout entry
        x = torch.tensor(rng.normal(4.0, 2.0, shape)).to(dtype).requires_grad_()
        dy = torch.tensor(rng.normal(size=shape)).to(dtype)
        state = reference.state_of(layer)
        y = layer(x, training=True)
        if not frozen:
            cpp = y.grad_fn.name() == "BatchNormTrainBackward"
            assert cpp == (node == "cpp"), y.grad_fn.name()
        y.backward(dy)
        xd, dyd = x.detach().double().numpy(), dy.double().numpy()
        if frozen:  # inference arithmetic; nothing updated
            inv = state.gamma / np.sqrt(state.moving_variance + 1e-3)
            y_ref, dx_ref, new = reference.inference(xd, layer.axis, state, 1e-3), dyd * inv, state
        else:
            y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(
                xd, dyd, layer.axis, state, options
            )
            np.testing.assert_allclose(layer.gamma.grad.double().numpy(), dg_ref, rtol=1e-3)
            np.testing.assert_allclose(layer.beta.grad.double().numpy(), db_ref, rtol=1e-3)
            layer.gamma.grad = layer.beta.grad = None
        np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=eps, atol=eps)
        scale = np.abs(dx_ref).max()
        np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, rtol=eps, atol=eps * scale)
        for field in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean"):
            if getattr(new, field) is not None:
                got = getattr(layer, field).double().numpy()
                np.testing.assert_allclose(got, getattr(new, field), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        x = torch.tensor(rng.normal(4.0, 2.0, shape)).to(dtype)
        y = layer(x, training=False)
    y_ref = reference.inference(x.double().numpy(), layer.axis, reference.state_of(layer), 1e-3)
    np.testing.assert_allclose(y.double().numpy(), y_ref, rtol=eps, atol=eps)
    if route == "short":  # the layouts were worked out once and the C passes ran
        assert any(entry is not None for entry in layer._short_entries.values())
    else:
        assert len(calls) == 3 and not layer._short_entries


def test_short_call_follows_changes_to_the_layer():
    """What the short call keeps per layout never outlives a change to the layer: new
    variable values, a dtype change, a hook registered later (the layer's or a global
    one), freezing, eval mode; an input with other strides has its own layout."""
    rng = np.random.default_rng(7)
    layer = BatchNormalization(momentum=0.5)
    x = torch.tensor(rng.normal(1.0, 2.0, (32, 6)), dtype=torch.float32)
    layer(x, training=True)
    layer(x, training=True)  # a layout entry now exists
    assert any(entry is not None for entry in layer._short_entries.values())

    def expect_inference(y, x):
        state = reference.state_of(layer)
        ref = reference.inference(x.double().numpy(), [1], state, 1e-3)
        np.testing.assert_allclose(y.detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)

    # new values in place (load_state_dict copies into the same tensors)
    values = {
        k: torch.tensor(rng.uniform(0.5, 1.5, v.shape)) for k, v in layer.state_dict().items()
    }
    layer.load_state_dict(values)
    expect_inference(layer(x, training=False), x)
    # a dtype change: float64 input runs in float64; float32 input is computed in float64
    # and returned in its own dtype (the general path's rule)
    layer.double()
    y64 = layer(x.double(), training=False)
    assert y64.dtype == torch.float64
    expect_inference(y64, x)
    y32 = layer(x, training=False)
    assert y32.dtype == torch.float32
    expect_inference(y32, x)
    # a hook registered after the entries exist is called
    calls = []
    handle = layer.register_forward_hook(lambda *args: calls.append(1))
    layer(x.double(), training=False)
    assert calls == [1]
    handle.remove()
    # so are PyTorch's global module hooks, and a non-contiguous input of a seen shape
    # gets its own layout entry
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: calls.append(2))
    layer(x.double(), training=False)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: calls.append(3))
    layer(x.double(), training=False)
    handle.remove()
    assert calls == [1, 2, 3]
    strided = torch.tensor(rng.normal(1.0, 2.0, (6, 32))).t()
    expect_inference(layer(strided, training=False), strided)
    expect_inference(layer(strided.contiguous(), training=False), strided)
    # frozen: training=True runs the inference arithmetic and updates nothing
    layer.trainable = False
    before = layer.moving_mean.clone()
    expect_inference(layer(x.double(), training=True), x)
    assert torch.equal(layer.moving_mean, before)
    # eval mode with training=None is inference; train mode with None trains
    layer.trainable = True
    layer.eval()
    expect_inference(layer(x.double()), x)
    layer.train()
    state = reference.state_of(layer)
    y = layer(x.double())
    options = reference.Options(momentum=0.5, bessel=layer._bessel)
    dy = np.zeros(x.shape)
    y_ref, _, _, _, new = reference.train_step(x.double().numpy(), dy, [1], state, options)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-10)


@pytest.mark.default_grain
@pytest.mark.parametrize("shape", [(40, 24), (300, 200)], ids=["one-thread", "threads"])
def test_small_inputs_run_on_one_thread(shape, backend):
    """Inputs below _native.GRAIN elements run on one thread, larger ones on PyTorch's
    thread count; a training step and an inference call match float64 either way."""
    numel = shape[0] * shape[1]
    expected = 1 if numel < _native.GRAIN else torch.get_num_threads()
    assert _native.threads(numel) == expected
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, requires_grad=True)
    dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    layer, y, _, (y_ref, dx_ref, dg_ref, db_ref, new) = step_against_reference(
        x, dy, {"axis": -1}, rng
    )
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), dx_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), dg_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.beta.grad.numpy(), db_ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-5)
    with torch.no_grad():
        y = layer(x, training=False)
    state = reference.state_of(layer)
    np.testing.assert_allclose(
        y.numpy(), reference.inference(x.detach().numpy(), [1], state, 1e-3), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("ghost", [None, 2], ids=["plain", "ghost"])
def test_train_forward_batch_statistics(ghost, backend):
    """functional.train_forward's BatchStatistics (unpacked from the C pass's state on
    first use there) hold the ghost-averaged mean, biased and Bessel-corrected variance
    in parameter layout, and can be replaced."""
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.normal(2.0, 3.0, (8, 5, 3)))
    _, stats = F.train_forward(x, [2], None, None, 1e-3, virtual_batch_size=ghost, param_shape=(3,))
    xs = x.numpy().reshape(ghost, -1, 5, 3) if ghost else x.numpy()[None]
    groups = (
        xs.reshape(xs.shape[0], -1, 3)
        if not ghost
        else np.stack([xs[:, g].reshape(-1, 3) for g in range(xs.shape[1])])
    )
    mean = groups.mean(axis=1).mean(axis=0)
    var = groups.var(axis=1).mean(axis=0)
    count = groups.shape[1]
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(stats.variance.numpy(), var, rtol=1e-12)
    np.testing.assert_allclose(
        stats.unbiased_variance.numpy(), var * count / (count - 1), rtol=1e-12
    )
    assert stats.mean.shape == (3,)
    stats.variance = torch.zeros(3, dtype=torch.float64)
    assert float(stats.variance.abs().sum()) == 0.0
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-12)
