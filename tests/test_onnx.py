"""ONNX export of a model holding the layer (renorm, multi-axis, ghost batches, after
training steps): the TorchScript and the dynamo exporters' graphs run in onnxruntime and
give the model's inference outputs, for new data and other batch sizes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

import batchnorm
from oracle import rel_error


def onnx_model() -> nn.Module:
    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        batchnorm.BatchNormalization(axis=1, renorm=True, momentum=0.5),
        nn.ReLU(),
        batchnorm.BatchNormalization(axis=[1, 2], momentum=0.5),  # multi-axis
        nn.Flatten(),
        nn.Linear(144, 5),
        batchnorm.BatchNormalization(virtual_batch_size=2, momentum=0.5),
    )
    for _ in range(3):
        model(torch.randn(4, 3, 8, 8) * 2 + 1)
    return model.eval()


def run_onnx(data: bytes, x: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_torchscript_export_runs_in_onnxruntime():
    model = onnx_model()
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.randn(4, 3, 8, 8),),
        buffer,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    for batch in (4, 7):
        x = torch.randn(batch, 3, 8, 8) * 2 + 1
        with torch.no_grad():
            expected = model(x).numpy()
        assert rel_error(run_onnx(buffer.getvalue(), x), expected) <= 1e-5


def test_onnx_dynamo_export_runs_in_onnxruntime():
    pytest.importorskip("onnxscript")
    model = onnx_model()
    program = torch.onnx.export(model, (torch.randn(4, 3, 8, 8),), dynamo=True)
    data = program.model_proto.SerializeToString()
    for seed in (0, 1):  # new data: nothing was baked into the graph
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 + 1
        with torch.no_grad():
            expected = model(x).numpy()
        assert rel_error(run_onnx(data, x), expected) <= 1e-5
