"""Interoperability: ``torch.nn`` batch norm, folding for deployment, tf_keras layers
and Keras weight files. TensorFlow is never imported here except by ``to_keras``."""

from .folding import FoldReport, fold, fold_into
from .keras_files import load_keras_weights
from .keras_layers import from_keras, to_keras
from .sync import convert_sync_batchnorm
from .torch_nn import from_torch, to_torch

__all__ = [
    "FoldReport",
    "convert_sync_batchnorm",
    "fold",
    "fold_into",
    "from_keras",
    "from_torch",
    "load_keras_weights",
    "to_keras",
    "to_torch",
]
