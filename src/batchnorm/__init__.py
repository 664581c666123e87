"""batchnorm: the complete batch normalization layer for PyTorch.

Every feature of TensorFlow's ``BatchNormalization`` (multi-axis, batch
renormalization, ghost batches, adjustment, regularizers, constraints, the TF
layer API) with TensorFlow's numbers, as a ``torch.nn.Module``.
"""

from . import constraints, functional, initializers, interop, regularizers
from .interop import (
    convert_sync_batchnorm,
    fold,
    fold_into,
    from_keras,
    from_torch,
    load_keras_weights,
    to_keras,
    to_torch,
)
from .layer import Layer, apply_constraints_on_step, clear_session
from .normalization import BatchNormalization
from .partitioners import (
    PartitionedVariable,
    fixed_size_partitioner,
    min_max_variable_partitioner,
    variable_axis_size_partitioner,
)
from .symbolic import Graph, Input, SymbolicTensor, get_default_graph
from .symbolic_function import Function
from .wrappers import Lambda, Wrap

__version__ = "0.1.0"

__all__ = [
    "BatchNormalization",
    "Function",
    "Graph",
    "Input",
    "Lambda",
    "Layer",
    "PartitionedVariable",
    "SymbolicTensor",
    "Wrap",
    "__version__",
    "apply_constraints_on_step",
    "clear_session",
    "constraints",
    "convert_sync_batchnorm",
    "fixed_size_partitioner",
    "fold",
    "fold_into",
    "from_keras",
    "from_torch",
    "functional",
    "get_default_graph",
    "initializers",
    "interop",
    "load_keras_weights",
    "min_max_variable_partitioner",
    "regularizers",
    "to_keras",
    "to_torch",
    "variable_axis_size_partitioner",
]
