"""Quick CUDA checks of the Triton backend (not a test): host synchronizations in a
training step and an inference call, CUDA-graph capture of a training step, and
torch.compile(fullgraph=True) of a layer, each against eager/float64."""

import torch

from batchnorm import BatchNormalization, backends


def _adjustment(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.full((1, 8, 1, 1), 1.1, device=device),
        torch.full((1, 8, 1, 1), 0.1, device=device),
    )


def _variants(device: str) -> dict:
    """(layer options, call options, input transform) of every variant a step takes."""
    clip = {"rmin": torch.tensor(0.5, device=device), "rmax": torch.tensor(3.0, device=device)}
    mask = torch.rand(16, 6, 6, device=device) > 0.2
    return {
        "plain": ({}, {}, None),
        "renorm (float clipping)": ({"renorm": True, "renorm_clipping": {"rmax": 3.0}}, {}, None),
        "renorm (device clipping)": ({"renorm": True, "renorm_clipping": clip}, {}, None),
        "ghost strided": ({"virtual_batch_size": 4}, {}, None),
        "ghost contiguous": ({"virtual_batch_size": 4, "ghost_grouping": "contiguous"}, {}, None),
        "adjustment": ({"adjustment": lambda shape: _adjustment(device)}, {}, None),
        "mask": ({}, {"mask": mask}, None),
        "multi-axis": ({"axis": [1, 2]}, {}, None),
        "frozen": ({"trainable": False}, {}, None),
        "channels-last": ({}, {}, lambda t: t.contiguous(memory_format=torch.channels_last)),
        "bfloat16": ({}, {}, lambda t: t.bfloat16()),
    }


def main() -> None:
    x = torch.randn(16, 8, 6, 6, device="cuda") * 2 + 1
    layer = BatchNormalization(axis=1, momentum=0.5).cuda()
    layer(x, training=False)
    with backends.use("triton"):
        for name, (options, call, transform) in _variants("cuda").items():
            options = {"axis": 1, **options}
            frozen = options.pop("trainable", True) is False
            xin = x if transform is None else transform(x)
            lyr = BatchNormalization(**options).cuda()
            lyr(xin, training=False)
            lyr.trainable = not frozen
            xg = xin.clone().requires_grad_()
            torch.cuda.synchronize()
            try:
                torch.cuda.set_sync_debug_mode("error")
                y = lyr(xg, training=True, **call)
                y.float().square().sum().backward()
                lyr(xin, training=False)
                print(f"sync-free step, {name}: yes")
            except RuntimeError as exc:
                print(f"sync-free step, {name}: NO:", str(exc).splitlines()[0])
            finally:
                torch.cuda.set_sync_debug_mode(0)
        try:
            static = x.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    layer(static, training=True)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = layer(static, training=True)
            g.replay()
            torch.cuda.synchronize()
            want = (static - static.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
                static.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-3
            )
            print("cuda graph capture: ok, max err", float((out - want).abs().max()))
        except Exception as exc:
            print("cuda graph capture: FAILED:", type(exc).__name__, str(exc).splitlines()[0])
    compiled = torch.compile(lambda t: layer(t, training=True), fullgraph=True)
    y = compiled(x)
    xd = x.double()
    want = (xd - xd.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        xd.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-3
    )
    print("compile fullgraph: max err", float((y.double() - want).abs().max()))


if __name__ == "__main__":
    main()
