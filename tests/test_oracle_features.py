"""Renorm, ghost batches, adjustment and masks against tf_keras 2.21.

Same protocol as ``test_oracle_core.py``: three training steps with identical
inputs, starting weights (all seven with renorm) and upstream gradients, then
an inference call; outputs, dL/dx, dL/dγ, dL/dβ and every weight compared.
The last test walks the whole combination table renorm × virtual batches ×
adjustment × (center, scale) × axis forms.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tf_keras

from batchnorm import BatchNormalization
from oracle import assert_close, compare

CLIP = {"rmax": 1.1, "rmin": 0.9, "dmax": 0.1}


def _adjustment(shape, axis, seed=0):
    """A fixed (scale, bias) pair in [0.93, 1.07] × [−0.1, 0.1] broadcastable as TF needs."""
    rng = np.random.default_rng(seed)
    view = [1] * len(shape)
    if isinstance(axis, int):
        axis = [axis]
    for a in axis:
        view[a] = shape[a]
    view = view[1:] if view[0] == 1 else view  # TF broadcasts these against the input as is
    return (
        rng.uniform(0.93, 1.07, view).astype(np.float32),
        rng.uniform(-0.1, 0.1, view).astype(np.float32),
    )


def _masks(shape, axis, steps=3, seed=0, p=0.6):
    rng = np.random.default_rng(seed)
    axes = [axis % len(shape)] if isinstance(axis, int) else [a % len(shape) for a in axis]
    mshape = tuple(n for d, n in enumerate(shape) if d not in axes)
    return [rng.uniform(size=mshape) < p for _ in range(steps)]


RENORM = [
    ("2d", {"renorm": True, "momentum": 0.6}, (16, 3)),
    ("2d-clip", {"renorm": True, "renorm_clipping": CLIP, "momentum": 0.6}, (16, 3)),
    ("2d-rmax-only", {"renorm": True, "renorm_clipping": {"rmax": 1.05}}, (16, 3)),
    ("2d-dmax-only", {"renorm": True, "renorm_clipping": {"dmax": 0.05}}, (16, 3)),
    ("3d", {"renorm": True, "renorm_momentum": 0.5}, (4, 6, 3)),
    ("nhwc-clip", {"renorm": True, "renorm_clipping": CLIP, "momentum": 0.6}, (4, 5, 6, 3)),
    ("nchw", {"renorm": True, "axis": 1, "renorm_momentum": 0.5}, (4, 3, 5, 6)),
    ("multi-axis", {"renorm": True, "axis": [1, 2], "renorm_clipping": CLIP}, (4, 3, 5, 6)),
    ("5d", {"renorm": True, "axis": 1, "momentum": 0.5}, (2, 3, 4, 2, 3)),
    ("no-center", {"renorm": True, "center": False, "renorm_momentum": 0.3}, (16, 3)),
    ("no-scale", {"renorm": True, "scale": False, "renorm_clipping": CLIP}, (16, 3)),
    ("epsilon", {"renorm": True, "epsilon": 0.1, "renorm_momentum": 0.3}, (16, 3)),
    ("frozen", {"renorm": True, "trainable": False}, (16, 3)),
]

GHOST = [
    ("2d-vbs2", {"virtual_batch_size": 2, "momentum": 0.6}, (8, 3)),
    ("2d-vbs4", {"virtual_batch_size": 4, "momentum": 0.6}, (16, 3)),
    ("2d-vbs-all", {"virtual_batch_size": 8, "momentum": 0.6}, (8, 3)),
    ("3d", {"virtual_batch_size": 2}, (6, 4, 3)),
    ("nhwc", {"virtual_batch_size": 2, "momentum": 0.6}, (8, 5, 6, 3)),
    ("nchw", {"virtual_batch_size": 4, "axis": 1, "momentum": 0.6}, (8, 3, 5, 6)),
    ("multi-axis", {"virtual_batch_size": 2, "axis": [1, 3]}, (8, 3, 5, 2)),
    ("renorm", {"virtual_batch_size": 2, "renorm": True, "renorm_clipping": CLIP}, (8, 3)),
    ("renorm-nchw", {"virtual_batch_size": 2, "renorm": True, "axis": 1}, (4, 3, 5, 6)),
    ("no-center-no-scale", {"virtual_batch_size": 2, "center": False, "scale": False}, (8, 3)),
]


@pytest.mark.parametrize(("config", "shape"), [c[1:] for c in RENORM], ids=[c[0] for c in RENORM])
def test_renorm_matches_tf_keras(config, shape):
    assert_close(compare(config, shape))


@pytest.mark.parametrize(("config", "shape"), [c[1:] for c in GHOST], ids=[c[0] for c in GHOST])
def test_ghost_batches_match_tf_keras(config, shape):
    assert_close(compare(config, shape))


ADJUST = [
    ("2d", {"momentum": 0.6}, (8, 3), -1),
    ("nhwc", {"momentum": 0.6}, (4, 5, 6, 3), -1),
    ("nchw", {"axis": 1, "momentum": 0.6}, (4, 3, 5, 6), 1),
    ("multi-axis", {"axis": [1, 2]}, (4, 3, 5, 6), [1, 2]),
    ("renorm", {"renorm": True, "renorm_clipping": CLIP}, (4, 5, 6, 3), -1),
    ("no-scale", {"scale": False}, (8, 3), -1),
    ("no-center-no-scale", {"scale": False, "center": False}, (8, 3), -1),
]


@pytest.mark.parametrize(
    ("config", "shape", "axis"), [c[1:] for c in ADJUST], ids=[c[0] for c in ADJUST]
)
def test_adjustment_matches_tf_keras(config, shape, axis):
    assert_close(compare(config, shape, adjustment=_adjustment(shape, axis)))


def test_per_example_adjustment_matches_tf_keras():
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.9, 1.1, (8, 1)).astype(np.float32)
    bias = rng.uniform(-0.1, 0.1, (8, 3)).astype(np.float32)
    assert_close(compare({"momentum": 0.6}, (8, 3), adjustment=(scale, bias)))


MASKED = [
    ("2d", {"momentum": 0.6}, (8, 3)),
    ("3d", {"momentum": 0.6}, (4, 5, 3)),
    ("4d-nonfused", {"fused": False, "momentum": 0.6}, (4, 5, 6, 3)),
    ("renorm", {"renorm": True, "renorm_clipping": CLIP}, (4, 5, 3)),
    ("no-center", {"center": False, "momentum": 0.5}, (4, 5, 3)),
]


@pytest.mark.parametrize(("config", "shape"), [c[1:] for c in MASKED], ids=[c[0] for c in MASKED])
def test_mask_matches_tf_keras(config, shape):
    assert_close(compare(config, shape, masks=_masks(shape, -1)))


def test_all_masked_batch_matches_tf_keras():
    """TF's div_no_nan: zero statistics, which the moving averages then move toward."""
    shape = (4, 5, 3)
    masks = [np.zeros(shape[:-1], bool)] * 3
    assert_close(compare({"momentum": 0.5}, shape, masks=masks))


# ---------------------------------------------------------------------- combinations
AXIS_FORMS = [
    ("2d", -1, (8, 3)),
    ("nhwc", -1, (4, 3, 2, 3)),
    ("nchw", 1, (4, 3, 3, 2)),
    ("multi", [1, 2], (4, 3, 2, 2)),
]
COMBOS = list(
    itertools.product(
        [False, True],  # renorm
        [None, 2],  # virtual_batch_size
        [False, True],  # adjustment
        [(True, True), (False, True), (True, False), (False, False)],  # (center, scale)
        AXIS_FORMS,
    )
)


def _combo_id(combo):
    renorm, vbs, adjust, (center, scale), (form, _, _) = combo
    return f"renorm{int(renorm)}-vbs{vbs or 0}-adj{int(adjust)}-c{int(center)}s{int(scale)}-{form}"


@pytest.mark.parametrize("combo", COMBOS, ids=[_combo_id(c) for c in COMBOS])
def test_every_combination_matches_tf_or_raises_the_same_error(combo):
    renorm, vbs, adjust, (center, scale), (_, axis, shape) = combo
    config = {"axis": axis, "center": center, "scale": scale, "momentum": 0.6}
    if renorm:
        config.update(renorm=True, renorm_clipping=CLIP, renorm_momentum=0.7)
    if vbs:
        config["virtual_batch_size"] = vbs
    adjustment = _adjustment(shape, axis, seed=1) if adjust else None
    if vbs and adjust:  # TF: ValueError at build; ours: at construction
        with pytest.raises(ValueError, match="adjustment cannot be specified"):
            tf_layer = tf_keras.layers.BatchNormalization(**config, adjustment=lambda s: (1, 0))
            tf_layer.build(shape)
        with pytest.raises(ValueError, match="adjustment cannot be specified"):
            BatchNormalization(**config, adjustment=lambda s: (1, 0))
        return
    assert_close(compare(config, shape, steps=2, adjustment=adjustment))
