"""The Triton backend under torch.compile: a training call's pieces as ``triton_op``s
(checked through AOTAutograd, without Inductor, which generates GPU code the interpreter
cannot run), what stays PyTorch operations (export, inference), and shape specialization
under ``dynamic=True``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, backends
from helpers import CLIP
from triton_cases import DEVICE, NEEDS, check_step, layer_and_input

pytestmark = NEEDS


def _compiled(fn, graphs: list[list[str]]):
    """``torch.compile(fn, fullgraph=True)`` through AOTAutograd without Inductor (which
    generates GPU code the interpreter cannot run), keeping each graph's call targets."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.debugging import aot_eager

    def keep(gm, inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    return torch.compile(
        fn, fullgraph=True, backend=lambda g, i: aot_eager(g, i, fw_compiler=keep, bw_compiler=keep)
    )


COMPILED = {  # (layer options, masked)
    "plain": ({}, False),
    "renorm-ghost": ({"virtual_batch_size": 2, "renorm": True, "renorm_clipping": CLIP}, False),
    "mask": ({}, True),
}


@pytest.mark.parametrize("variant", list(COMPILED))
def test_torch_compile_runs_the_kernels_as_custom_operators(triton_forced, variant, monkeypatch):
    """Under torch.compile the training pass's pieces are ``triton_op``s: the forward graph
    launches the moments, merge and normalize kernels, the backward graph the sums and
    the input gradient, and the step matches float64 (on CPU: the interpreter, with
    AOTAutograd but not Inductor)."""
    monkeypatch.setattr(backends.get("triton"), "compile_interpreted", True)
    options, masked = COMPILED[variant]
    shape, config = (6, 3, 4), {"axis": 1, **options}
    rng = np.random.default_rng(8)
    layer, x = layer_and_input(shape, config, rng)
    mask = rng.uniform(size=(6, 4)) > 0.3 if masked else None
    dy = rng.normal(size=shape)
    state = reference.state_of(layer)
    graphs: list[list[str]] = []
    kwargs = {} if mask is None else {"mask": torch.tensor(mask, device=DEVICE)}
    step = _compiled(lambda t: layer(t, training=True, **kwargs), graphs)
    y = step(x)
    (y * torch.tensor(dy, dtype=torch.float32, device=DEVICE)).sum().backward()
    launches = [g.count("triton_kernel_wrapper_functional") for g in graphs]
    assert launches == [3, 2], graphs  # forward: moments, merge, normalize; backward: 2
    check_step(layer, x, y, dy, state, config, mask=mask, dx_atol=5e-5)


def test_export_and_inference_trace_pytorch_operations_dynamic_shapes_specialize(
    triton_forced, monkeypatch
):
    """What stays the composite formula under tracing: torch.export (portable graphs) and
    inference (one pointwise pass, which Inductor fuses with its neighbours). A compiled
    training call with ``dynamic=True`` specializes on the shape (the kernels' view and
    tiles come from it) and still runs the kernels."""
    monkeypatch.setattr(backends.get("triton"), "compile_interpreted", True)
    layer = BatchNormalization(axis=1).to(DEVICE)
    x = torch.randn(6, 3, 4, device=DEVICE) * 2 + 1
    layer(x, training=False)
    graphs: list[list[str]] = []
    y = _compiled(lambda t: layer(t, training=False), graphs)(x)
    assert graphs and not any("triton" in t for g in graphs for t in g)
    torch.testing.assert_close(y, layer(x, training=False))
    torch._dynamo.reset()
    seen: list[str] = []

    def keep(gm, inputs):  # (the autograd.Function's graphs are submodules)
        graphs = [m.graph for m in gm.modules() if isinstance(m, torch.fx.GraphModule)]
        seen.extend(str(n.target) for g in graphs for n in g.nodes)
        return gm.forward

    f = torch.compile(lambda t: layer(t, training=True), backend=keep, dynamic=True)
    x4 = torch.randn(6, 3, 4, 2, device=DEVICE) * 2 + 1  # (every size symbolic)
    built, unbuilt = BatchNormalization(axis=1).to(DEVICE), BatchNormalization(axis=1)
    built(x4, training=False)
    f4 = torch.compile(lambda t: built(t, training=True), backend=keep, dynamic=True)
    f5 = torch.compile(lambda t: unbuilt(t, training=True), backend=keep, dynamic=True)
    cases = ((f, x[:6]), (f, x[:5]), (f4, x4), (f4, x4[:4]), (f5, x4), (f5, x4[:4]))
    for step, t in cases:
        xd, dims = t.double(), [0, *range(2, t.dim())]
        want = (xd - xd.mean(dims, keepdim=True)) / torch.sqrt(xd.var(dims, False, True) + 1e-3)
        torch.testing.assert_close(step(t).double(), want, atol=1e-5, rtol=1e-5)
    assert seen.count("batchnorm.triton_moments.default") == len(cases)  # (a graph a shape)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = layer

        def forward(self, t):
            return self.bn(t, training=True)

    exported = torch.export.export(Step(), (x,))
    assert not any("triton" in str(n.target) for n in exported.graph.nodes)
