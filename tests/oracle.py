"""Run the same training steps through tf_keras and through batchnorm.

``compare(config, shape, ...)`` builds both layers from one config, gives them
the same starting weights, feeds the same inputs and upstream gradients for a
few training steps, then one inference call, and returns the largest error of
every compared quantity under DESIGN.md's metric
``max|ours − ref| / max(1, max|ref|)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tf_keras
import torch

import batchnorm

OUTPUT_TOL = 5e-5
GRAD_TOL = 2e-4

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
TF_DTYPES = {"float16": tf.float16, "bfloat16": tf.bfloat16, "float32": tf.float32}


def rel_error(ours: Any, ref: Any) -> float:
    """DESIGN.md's metric: ``max|ours − ref| / max(1, max|ref|)`` in float64."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(ours - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def ulp_error(ours: np.ndarray, ref: np.ndarray, dtype: str) -> float:
    """Largest difference in units of the last place of ``dtype`` at the reference value."""
    eps = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    tiny = {"float16": 2.0**-24, "bfloat16": 2.0**-133}[dtype]
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    ulp = np.maximum(2.0 ** np.floor(np.log2(np.maximum(np.abs(ref), tiny))) * eps, tiny)
    return float(np.max(np.abs(ours - ref) / ulp))


@dataclass
class Trace:
    """Everything one framework produced for the steps."""

    outputs: list[np.ndarray] = field(default_factory=list)
    grads_x: list[np.ndarray] = field(default_factory=list)
    grads_params: list[list[np.ndarray]] = field(default_factory=list)
    weights: list[list[np.ndarray]] = field(default_factory=list)
    inference: np.ndarray | None = None


def _tf_config(config: dict[str, Any], adjustment) -> dict[str, Any]:
    cfg = {
        k: v for k, v in config.items() if k not in ("unbiased_moving_variance", "ghost_grouping")
    }
    if adjustment is not None:
        scale, bias = adjustment
        cfg["adjustment"] = lambda shape: (tf.constant(scale), tf.constant(bias))
    return cfg


def _torch_config(config: dict[str, Any], adjustment) -> dict[str, Any]:
    cfg = dict(config)
    if adjustment is not None:
        scale, bias = adjustment
        cfg["adjustment"] = lambda shape: (torch.tensor(scale), torch.tensor(bias))
    return cfg


def run_tf(config, xs, dys, weights, dtype: str, masks=None, adjustment=None) -> Trace:
    layer = tf_keras.layers.BatchNormalization(dtype=dtype, **_tf_config(config, adjustment))
    layer.build(xs[0].shape)
    layer.set_weights(weights)
    trace = Trace()
    tdtype = TF_DTYPES[dtype]
    for i, (x, dy) in enumerate(zip(xs, dys, strict=True)):
        xt = tf.constant(x, dtype=tdtype)
        kwargs = {}
        if masks is not None:
            kwargs["mask"] = tf.constant(masks[i])
        params = [v for v in (layer.gamma, layer.beta) if v is not None] if layer.trainable else []
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True, **kwargs)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.constant(dy, tf.float64))
        grads = tape.gradient(loss, [xt, *params])
        trace.outputs.append(y.numpy().astype(np.float64))
        trace.grads_x.append(grads[0].numpy().astype(np.float64))
        trace.grads_params.append(
            [g.numpy().astype(np.float64) if g is not None else None for g in grads[1:]]
        )
        trace.weights.append([w.astype(np.float64) for w in layer.get_weights()])
    trace.inference = layer(tf.constant(xs[0], dtype=tdtype), training=False).numpy()
    return trace


def run_ours(config, xs, dys, weights, dtype: str, masks=None, adjustment=None) -> Trace:
    layer = batchnorm.BatchNormalization(**_torch_config(config, adjustment))
    tdtype = TORCH_DTYPES[dtype]
    layer(torch.tensor(xs[0], dtype=tdtype), training=False)  # builds, dtype from the input
    layer.set_weights(weights)
    trace = Trace()
    for i, (x, dy) in enumerate(zip(xs, dys, strict=True)):
        xt = torch.tensor(x, dtype=tdtype, requires_grad=True)
        kwargs = {}
        if masks is not None:
            kwargs["mask"] = torch.tensor(masks[i])
        params = [p for p in (layer.gamma, layer.beta) if p is not None] if layer.trainable else []
        for p in params:
            p.grad = None
        y = layer(xt, training=True, **kwargs)
        (y.double() * torch.tensor(dy, dtype=torch.float64)).sum().backward()
        trace.outputs.append(y.detach().double().numpy())
        trace.grads_x.append(xt.grad.double().numpy())
        trace.grads_params.append(
            [p.grad.double().numpy() if p.grad is not None else None for p in params]
        )
        trace.weights.append([w.astype(np.float64) for w in layer.get_weights()])
    with torch.no_grad():
        trace.inference = layer(torch.tensor(xs[0], dtype=tdtype), training=False).double().numpy()
    return trace


def random_weights(config: dict[str, Any], shapes: list[tuple[int, ...]], rng) -> list[np.ndarray]:
    """Non-trivial starting weights: gamma≈1, beta≈0, mean≈0, variance≈1 (positive)."""
    out = []
    names = []
    if config.get("scale", True):
        names.append("gamma")
    if config.get("center", True):
        names.append("beta")
    names += ["moving_mean", "moving_variance"]
    if config.get("renorm"):
        names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
    for name, shape in zip(names, shapes, strict=True):
        if name in ("gamma", "moving_variance", "moving_stddev", "renorm_stddev"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        out.append(value.astype(np.float32))
    if config.get("renorm"):  # keep TF's invariant moving_variance = moving_stddev² − ε
        eps = config.get("epsilon", 1e-3)
        out[names.index("moving_variance")] = np.maximum(
            out[names.index("moving_stddev")].astype(np.float64) ** 2 - eps, 0
        ).astype(np.float32)
    return out


def compare(
    config: dict[str, Any],
    shape: tuple[int, ...],
    steps: int = 3,
    dtype: str = "float32",
    seed: int = 0,
    data_mean: float = 0.5,
    data_std: float = 2.0,
    masks: list[np.ndarray] | None = None,
    adjustment: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Largest errors (rel metric; ulps for 16-bit outputs) over ``steps`` training steps.

    ``adjustment`` is a fixed ``(scale, bias)`` pair both layers' adjustment
    callables return; ``masks`` one boolean mask per step.
    """
    rng = np.random.default_rng(seed)
    xs = [(rng.normal(data_mean, data_std, shape)).astype(np.float32) for _ in range(steps)]
    if dtype != "float32":
        xs = [x.astype(np.float16) if dtype == "float16" else x for x in xs]
    dys = [rng.normal(0.0, 1.0, shape) for _ in range(steps)]
    probe = batchnorm.BatchNormalization(**_torch_config(config, adjustment))
    probe.build(shape)
    weights = random_weights(config, [tuple(w.shape) for w in probe.weights], rng)
    ref = run_tf(config, xs, dys, weights, dtype, masks, adjustment)
    ours = run_ours(config, xs, dys, weights, dtype, masks, adjustment)
    errors: dict[str, float] = {"output": 0.0, "grad_x": 0.0, "grad_params": 0.0, "weights": 0.0}
    for i in range(steps):
        if dtype == "float32":
            errors["output"] = max(errors["output"], rel_error(ours.outputs[i], ref.outputs[i]))
        else:
            errors["output_ulp"] = max(
                errors.get("output_ulp", 0.0), ulp_error(ours.outputs[i], ref.outputs[i], dtype)
            )
        errors["grad_x"] = max(errors["grad_x"], rel_error(ours.grads_x[i], ref.grads_x[i]))
        for g_ours, g_ref in zip(ours.grads_params[i], ref.grads_params[i], strict=True):
            if g_ref is None:
                assert g_ours is None or not np.any(g_ours), "TF has no gradient here; we do"
                continue
            errors["grad_params"] = max(errors["grad_params"], rel_error(g_ours, g_ref))
        assert len(ours.weights[i]) == len(ref.weights[i])
        for w_ours, w_ref in zip(ours.weights[i], ref.weights[i], strict=True):
            errors["weights"] = max(errors["weights"], rel_error(w_ours, w_ref))
    key = "inference" if dtype == "float32" else "inference_ulp"
    errors[key] = (
        rel_error(ours.inference, ref.inference)
        if dtype == "float32"
        else ulp_error(ours.inference, ref.inference, dtype)
    )
    return errors


def assert_close(errors: dict[str, float], dtype: str = "float32") -> None:
    """Apply DESIGN.md's tolerances to the errors from ``compare``."""
    if dtype == "float32":
        assert errors["output"] <= OUTPUT_TOL, errors
        assert errors["inference"] <= OUTPUT_TOL, errors
    else:
        assert errors["output_ulp"] <= 2.0, errors
        assert errors["inference_ulp"] <= 2.0, errors
    assert errors["weights"] <= OUTPUT_TOL, errors
    assert errors["grad_x"] <= GRAD_TOL, errors
    assert errors["grad_params"] <= GRAD_TOL, errors


def report(cases, dtype: str = "float32") -> dict[str, float]:
    """Print the errors of every case ``(id, config, shape[, compare kwargs])`` and
    return the largest of each column."""
    columns: dict[str, float] = {}
    for case in cases:
        case_id, config, shape = case[:3]
        extra = case[3] if len(case) > 3 else {}
        errors = compare(config, shape, dtype=dtype, **extra)
        print(f"{case_id:34s} " + " ".join(f"{k}={v:.1e}" for k, v in errors.items()))
        for k, v in errors.items():
            columns[k] = max(columns.get(k, 0.0), v)
    print("largest: " + " ".join(f"{k}={v:.2e}" for k, v in columns.items()))
    return columns


if __name__ == "__main__":  # python tests/oracle.py: the error tables behind the docs' figures
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    import test_oracle_features as feat
    from test_oracle_core import CASES, FLOAT16_CASES

    report(CASES)
    report(FLOAT16_CASES, dtype="float16")
    report(feat.RENORM + feat.GHOST)
    report([(i, c, s, {"adjustment": feat._adjustment(s, a)}) for i, c, s, a in feat.ADJUST])
    report([(i, c, s, {"masks": feat._masks(s, -1)}) for i, c, s in feat.MASKED])
