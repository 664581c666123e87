"""batchnorm: the complete batch normalization layer for PyTorch.

Every feature of TensorFlow's ``BatchNormalization`` (multi-axis, batch
renormalization, ghost batches, adjustment, regularizers, constraints, the TF
layer API) with TensorFlow's numbers, as a ``torch.nn.Module``.
"""

from . import constraints, functional, initializers, regularizers
from .layer import Layer, apply_constraints_on_step, clear_session
from .normalization import BatchNormalization

__version__ = "0.1.0"

__all__ = [
    "BatchNormalization",
    "Layer",
    "__version__",
    "apply_constraints_on_step",
    "clear_session",
    "constraints",
    "functional",
    "initializers",
    "regularizers",
]
