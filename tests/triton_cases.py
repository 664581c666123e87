"""What the Triton backend's tests share: the device they run on (the GPU when there is
one, else CPU tensors in Triton's interpreter), the layouts and options of the split and
mask cases, and the tile overrides that reach the split, multi-tile and merge paths."""

from __future__ import annotations

import pytest
import torch

from batchnorm.backends.triton import INTERPRET
from helpers import CLIP

DEVICE = "cpu" if INTERPRET else "cuda"
NEEDS = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="needs a GPU or the interpreter"
)


def strided(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in memory that is not dense (every other element of a buffer)."""
    buffer = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    buffer[..., ::2] = t
    return buffer[..., ::2]


CASES = {  # (shape, axis, memory format or a transform, layer options)
    "rows": ((13, 5), -1, None, {}),
    "ncl": ((5, 3, 7), 1, None, {}),
    "5-d channels-last": ((3, 3, 2, 3, 2), 1, torch.channels_last_3d, {}),
    "transposed": ((5, 3, 7), 1, lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), {}),
    "not dense": ((5, 3, 7), 1, strided, {}),
    "nchw": ((5, 3, 3, 3), 1, None, {}),
    "channels-last": ((5, 3, 3, 3), 1, torch.channels_last, {}),
    "nlc": ((5, 7, 3), -1, None, {}),
    "multi-axis": ((5, 3, 2, 3), [1, 2], None, {}),
    "ghost-renorm": ((6, 3, 5), 1, None, {"virtual_batch_size": 2, "renorm_clipping": CLIP}),
    "ghost-contiguous": (
        (6, 5, 3),
        -1,
        None,
        {"virtual_batch_size": 3, "ghost_grouping": "contiguous", "renorm_clipping": CLIP},
    ),
}
SPLITS = [
    {"block_r": 2, "block_c": 2, "splits": 3},  # several tiles per split, uneven last split
    {"block_r": 4, "block_c": 1, "splits": 2},
    {"block_r": 1, "block_c": 4, "splits": 7},  # one position per tile
]
