"""Quick CUDA checks of the Triton backend (not a test): host synchronizations in a
training step and an inference call, CUDA-graph capture of a training step, and
torch.compile(fullgraph=True) of a layer, each against eager/float64."""

import torch

from batchnorm import BatchNormalization, backends


def main() -> None:
    x = torch.randn(16, 8, 6, 6, device="cuda") * 2 + 1
    layer = BatchNormalization(axis=1, momentum=0.5).cuda()
    layer(x, training=False)
    with backends.use("triton"):
        for renorm in (False, True):
            lyr = BatchNormalization(axis=1, renorm=renorm, renorm_clipping={"rmax": 3.0}).cuda()
            lyr(x, training=False)
            xg = x.clone().requires_grad_()
            torch.cuda.synchronize()
            try:
                torch.cuda.set_sync_debug_mode("error")
                y = lyr(xg, training=True)
                y.square().sum().backward()
                lyr(x, training=False)
                print("sync-free step, renorm", renorm, ": yes")
            except RuntimeError as exc:
                print("sync-free step, renorm", renorm, ": NO:", str(exc).splitlines()[0])
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
