"""Partitioned variables (TF1's ``partitioner`` argument of ``add_weight``): the three
partitioners split a weight into the shards TensorFlow makes, the shards train as one
tensor, and their regularizer adds one loss per shard in symbolic mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import batchnorm as bn


class PartitionedDense(bn.Layer):
    def __init__(self, units, partitioner, regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.partitioner, self.regularizer = units, partitioner, regularizer

    def build(self, input_shape):
        self.kernel = self.add_weight(
            "kernel",
            (input_shape[-1], self.units),
            initializer="glorot_uniform",
            regularizer=self.regularizer,
            partitioner=self.partitioner,
        )
        super().build(input_shape)

    def call(self, inputs):
        return inputs @ self.kernel


@pytest.mark.parametrize(
    ("partitioner", "sizes"),
    [
        (bn.fixed_size_partitioner(3), [4, 3, 3]),
        (bn.fixed_size_partitioner(20), [1] * 10),
        (bn.variable_axis_size_partitioner(max_shard_bytes=5 * 4 * 4), [5, 5]),
        (bn.variable_axis_size_partitioner(max_shard_bytes=4 * 4 * 4), [4, 3, 3]),
        (bn.variable_axis_size_partitioner(max_shard_bytes=4 * 4, max_shards=3), [4, 3, 3]),
        (bn.min_max_variable_partitioner(max_partitions=4, min_slice_size=2 * 4 * 4), [3, 3, 2, 2]),
        (bn.min_max_variable_partitioner(max_partitions=4, min_slice_size=10**6), [10]),
    ],
)
def test_partitioners_split_like_tf(partitioner, sizes):
    layer = PartitionedDense(4, partitioner)
    x = torch.randn(5, 10)
    y = layer(x)
    shards = layer.kernel.shards
    assert [s.shape[0] for s in shards] == sizes
    assert all(isinstance(s, nn.Parameter) for s in shards)
    assert layer.trainable_weights == shards
    assert layer.weight_names == [f"partitioned_dense/kernel/part_{i}" for i in range(len(sizes))]
    full = torch.cat([s.detach() for s in shards])
    assert torch.allclose(y, x @ full, atol=1e-6)  # used as one tensor
    assert layer.kernel.shape == (10, 4)
    y.sum().backward()
    assert all(s.grad is not None for s in shards)  # each shard trains


def test_partitioned_regularizer_needs_symbolic_mode():
    layer = PartitionedDense(4, bn.fixed_size_partitioner(2), regularizer="l2")
    with pytest.raises(RuntimeError, match="eager mode"):
        layer(torch.randn(2, 6))
    symbolic_layer = PartitionedDense(4, bn.fixed_size_partitioner(2), regularizer="l2")
    symbolic_layer(bn.Input((6,)))
    losses = symbolic_layer.get_losses_for(None)
    assert len(losses) == 2  # one per partition, as TF1
    total = sum(float(loss.value()) for loss in losses)
    assert total == pytest.approx(0.01 * float(symbolic_layer.kernel.as_tensor().square().sum()))


def test_partitioner_validation():
    with pytest.raises(ValueError, match="num_shards"):
        bn.fixed_size_partitioner(0)
    with pytest.raises(ValueError, match="max_shard_bytes"):
        bn.variable_axis_size_partitioner(0)
    with pytest.raises(ValueError, match="max_partitions"):
        bn.min_max_variable_partitioner(0)
    with pytest.raises(ValueError, match="out of range"):
        PartitionedDense(4, bn.fixed_size_partitioner(2, axis=3))(torch.randn(2, 6))
