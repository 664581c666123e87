"""Bad input, argument by argument: each case checks the exception type, that the
message names the argument (or input) and what was expected, and that a failing
call leaves the layer exactly as it was (every weight and buffer bit-identical,
or still unbuilt when the call was the first one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot

param = pytest.param
NAN = float("nan")
X = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 2 + 1
NAN_X = X.clone().index_fill_(0, torch.tensor([2]), NAN)


def trained(**kwargs):
    """A layer built and trained for one step, so its statistics are not the initial ones."""
    kwargs.setdefault("momentum", 0.5)
    layer = BatchNormalization(**kwargs)
    layer(torch.randn(8, 3) * 3 - 2, training=True)
    assert not torch.equal(layer.moving_mean, torch.zeros(3))
    return layer


def assert_unbuilt(layer):
    """Unbuilt, as PyTorch's lazy modules: no weights, and every parameter and buffer an
    uninitialized placeholder (gamma, beta, the moving statistics)."""
    assert not layer.built
    assert layer.weights == []
    params, buffers = dict(layer.named_parameters()), dict(layer.named_buffers())
    assert all(isinstance(p, UninitializedParameter) for p in params.values()), params
    assert all(isinstance(b, UninitializedBuffer) for b in buffers.values()), buffers
    assert set(buffers) >= {"moving_mean", "moving_variance"}


class Flaky:
    """A user callable that behaves until ``broken`` is set, then raises."""

    def __init__(self, good):
        self.good = good
        self.broken = False

    def __call__(self, *args, **kwargs):
        if self.broken:
            raise RuntimeError("user bug")
        return self.good(*args, **kwargs)


def ones_adjustment(shape):
    return torch.ones(shape[-1]), torch.zeros(shape[-1])


# ---------------------------------------------------------------------- constructor
def renorm(clipping=None, **kwargs):
    return {"renorm": True, "renorm_clipping": clipping, **kwargs}


LOOKUPS = [  # argument, what it resolves to, a name its "Known names" list includes
    ("beta_initializer", "initializer", "zeros"),
    ("gamma_initializer", "initializer", "ones"),
    ("moving_mean_initializer", "initializer", "random_normal"),
    ("moving_variance_initializer", "initializer", "constant"),
    ("beta_regularizer", "regularizer", "l2"),
    ("gamma_regularizer", "regularizer", "l1"),
    ("activity_regularizer", "regularizer", "l1_l2"),
    ("beta_constraint", "constraint", "non_neg"),
    ("gamma_constraint", "constraint", "max_norm"),
]

CONSTRUCTOR = [
    # axis
    param({"axis": [1, 1]}, ValueError, r"Duplicate axis: \[1\] in axis=\[1, 1\]", id="axis-dup"),
    param({"axis": 1.5}, TypeError, r"int or a list/tuple of ints.*'axis'.*1\.5", id="axis-float"),
    param({"axis": "a"}, TypeError, r"int or a list/tuple of ints.*'axis'.*'a'", id="axis-str"),
    param({"axis": True}, TypeError, r"int or a list/tuple of ints.*'axis'.*True", id="axis-bool"),
    param({"axis": None}, TypeError, r"int or a list/tuple of ints.*'axis'.*None", id="axis-none"),
    param({"axis": [1, 2.0]}, TypeError, r"list/tuple of ints.*\[1, 2\.0\]", id="axis-list-float"),
    param({"axis": []}, ValueError, r"`axis` must not be empty", id="axis-empty"),
    # momentum
    param({"momentum": 1.5}, ValueError, r"`momentum` must be in \[0, 1\].*1\.5", id="mom-gt-1"),
    param({"momentum": -0.1}, ValueError, r"`momentum` must be in \[0, 1\].*-0\.1", id="mom-lt-0"),
    param({"momentum": NAN}, ValueError, r"`momentum` must be in \[0, 1\].*nan", id="mom-nan"),
    param({"momentum": "0.9"}, TypeError, r"`momentum` must be a float in \[0, 1\]", id="mom-str"),
    param({"momentum": True}, TypeError, r"`momentum` must be a float.*True", id="mom-bool"),
    param(
        {"momentum": torch.full((2,), 0.5)},
        TypeError,
        r"`momentum` must be a float in \[0, 1\]; received tensor",
        id="mom-vector-tensor",
    ),
    # epsilon
    param({"epsilon": -1e-3}, ValueError, r"`epsilon` must be a finite float >= 0", id="eps-neg"),
    param(
        {"epsilon": NAN}, ValueError, r"`epsilon` must be a finite float >= 0.*nan", id="eps-nan"
    ),
    param({"epsilon": float("inf")}, ValueError, r"`epsilon` must be a finite.*inf", id="eps-inf"),
    param({"epsilon": "1e-3"}, TypeError, r"`epsilon` must be a float >= 0", id="eps-str"),
    param({"epsilon": True}, TypeError, r"`epsilon` must be a float >= 0.*True", id="eps-bool"),
    # center / scale
    param({"center": "yes"}, TypeError, r"`center` must be True or False.*'yes'", id="center"),
    param({"scale": 1}, TypeError, r"`scale` must be True or False; received 1", id="scale"),
    # initializers, regularizers, constraints: unknown name, wrong type, bad config, None
    *[
        param(
            {arg: "no_such_thing"},
            ValueError,
            rf"Unknown {kind} 'no_such_thing' for `{arg}`. Known names: .*{known}",
            id=f"{arg}-unknown",
        )
        for arg, kind, known in LOOKUPS
    ],
    *[
        param(
            {arg: 3.0},
            TypeError,
            rf"Could not interpret {kind} for `{arg}`: expected None, a name, a config dict or "
            r"a callable; received 3\.0 of type float",
            id=f"{arg}-not-callable",
        )
        for arg, kind, _ in LOOKUPS
    ],
    *[
        param(
            {arg: {"config": {}}},
            ValueError,
            rf"An? {kind} config for `{arg}` needs a 'class_name' key",
            id=f"{arg}-config-without-class-name",
        )
        for arg, kind, _ in LOOKUPS
    ],
    *[
        param({arg: None}, ValueError, rf"`{arg}` must not be None", id=f"{arg}-none")
        for arg, kind, _ in LOOKUPS
        if kind == "initializer"
    ],
    # renorm and its options (read only with renorm=True, as in TF)
    param({"renorm": 1}, TypeError, r"`renorm` must be True or False; received 1", id="renorm"),
    param(
        renorm({"rmax": 2.0, "r_min": 0.5}),
        ValueError,
        r"invalid keys for `renorm_clipping` argument: \['r_min'\]. Supported values: "
        r"\['rmax', 'rmin', 'dmax'\]",
        id="clip-bad-key",
    ),
    param(renorm({"rmin": -1.0}), ValueError, r"'rmin'\]` must be >= 0.*-1\.0", id="clip-rmin-neg"),
    param(
        renorm({"rmin": 2.0, "rmax": 1.0}),
        ValueError,
        r"'rmax'\]` must be >= rmin.*rmax=1\.0, rmin=2\.0",
        id="clip-rmax-lt-rmin",
    ),
    param(renorm({"dmax": -0.5}), ValueError, r"'dmax'\]` must be >= 0.*-0\.5", id="clip-dmax-neg"),
    param(
        renorm({"rmax": NAN}),
        ValueError,
        r"`renorm_clipping` values must not be NaN",
        id="clip-nan",
    ),
    param(
        renorm({"dmax": "big"}),
        TypeError,
        r"`renorm_clipping\['dmax'\]` must be a float or a 0-dim floating tensor; received 'big'",
        id="clip-str",
    ),
    param(renorm({"rmax": True}), TypeError, r"renorm_clipping\['rmax'\]`.*True", id="clip-bool"),
    param(
        renorm({"rmax": torch.ones(2)}),
        TypeError,
        r"`renorm_clipping\['rmax'\]` must be a float or a 0-dim floating tensor",
        id="clip-vector-tensor",
    ),
    param(renorm([1, 2]), TypeError, r"`renorm_clipping` must be a dict with keys", id="clip-list"),
    param(
        renorm(renorm_momentum=2.0),
        ValueError,
        r"`renorm_momentum` must be in \[0, 1\].*2\.0",
        id="renorm_momentum-gt-1",
    ),
    param(
        renorm(renorm_momentum=-1.0),
        ValueError,
        r"`renorm_momentum` must be in \[0, 1\]",
        id="renorm_momentum-lt-0",
    ),
    param(
        renorm(renorm_momentum=NAN),
        ValueError,
        r"`renorm_momentum` must be in \[0, 1\].*nan",
        id="renorm_momentum-nan",
    ),
    param(
        renorm(renorm_momentum="0.9"),
        TypeError,
        r"`renorm_momentum` must be a float",
        id="renorm_momentum-str",
    ),
    # fused, including TF's constructor-time "cannot fuse" errors
    param(
        {"fused": 1}, TypeError, r"`fused` must be None, True or False; received 1", id="fused-int"
    ),
    param(
        {"fused": True, "renorm": True},
        ValueError,
        r"Passing both `fused=True` and `renorm=True` is not supported",
        id="fused-renorm",
    ),
    param(
        {"fused": True, "axis": [1, 3]},
        ValueError,
        r"`fused=True` is only supported when axis is 1 or 3.*Got axis \[1, 3\]",
        id="fused-multi-axis",
    ),
    param(
        {"fused": True, "axis": 2},
        ValueError,
        r"`fused=True` is only supported when axis is 1 or 3.*Got axis \[2\]",
        id="fused-axis-2",
    ),
    param(
        {"fused": True, "virtual_batch_size": 2},
        ValueError,
        r"`fused=True` is not supported when `virtual_batch_size` is specified",
        id="fused-vbs",
    ),
    param(
        {"fused": True, "adjustment": ones_adjustment},
        ValueError,
        r"`fused=True` is not supported when `adjustment` is specified",
        id="fused-adjustment",
    ),
    param(
        {"fused": True, "dtype": "float64"},
        ValueError,
        r"`fused=True` is only supported when the compute dtype is float16, bfloat16, or "
        r"float32. Got dtype: torch.float64",
        id="fused-float64",
    ),
    param(
        {"fused": True, "synchronized": True},
        ValueError,
        r"`fused=True` is not supported when `synchronized=True`",
        id="fused-synchronized",
    ),
    # trainable
    param(
        {"trainable": "no"}, TypeError, r"`trainable` must be a bool; received 'no'", id="trainable"
    ),
    # virtual_batch_size
    param(
        {"virtual_batch_size": 2.0},
        TypeError,
        r"`virtual_batch_size` must be a positive int or None; received 2\.0",
        id="vbs-float",
    ),
    param(
        {"virtual_batch_size": "2"}, TypeError, r"`virtual_batch_size` must be a pos", id="vbs-str"
    ),
    param({"virtual_batch_size": True}, TypeError, r"`virtual_batch_size`.*True", id="vbs-bool"),
    param(
        {"virtual_batch_size": 0},
        ValueError,
        r"`virtual_batch_size` must be a positive integer.*virtual_batch_size=0",
        id="vbs-zero",
    ),
    param(
        {"virtual_batch_size": -4},
        ValueError,
        r"`virtual_batch_size` must be a positive integer.*virtual_batch_size=-4",
        id="vbs-negative",
    ),
    param(
        {"virtual_batch_size": 2, "adjustment": ones_adjustment},
        ValueError,
        r"When using `virtual_batch_size`, adjustment cannot be specified",
        id="vbs-with-adjustment",
    ),
    # adjustment
    param(
        {"adjustment": (1.0, 0.0)},
        TypeError,
        r"`adjustment` must be a callable \(input shape -> \(scale, bias\)\); received \(1\.0",
        id="adjustment-not-callable",
    ),
    # name
    param({"name": 3}, TypeError, r"`name` must be a string or None; received 3", id="name-int"),
    param({"name": ""}, ValueError, r"`name` must not be empty", id="name-empty"),
    # dtype
    param(
        {"dtype": "float8"},
        ValueError,
        r"`dtype` must be a floating torch.dtype or one of \['bfloat16', .*'float32'.*\]; "
        r"received 'float8'",
        id="dtype-unknown-name",
    ),
    param(
        {"dtype": "int32"},
        ValueError,
        r"`dtype` must be a floating torch.dtype or one of .*received 'int32'",
        id="dtype-integer-name",
    ),
    param(
        {"dtype": torch.int32},
        ValueError,
        r"`dtype` must be a floating dtype; received torch.int32",
        id="dtype-integer",
    ),
    param(
        {"dtype": torch.complex64},
        ValueError,
        r"`dtype` must be a floating dtype; received torch.complex64",
        id="dtype-complex",
    ),
    param(
        {"dtype": np.dtype("int32")},
        ValueError,
        r"`dtype` must be a floating dtype; received int32",
        id="dtype-numpy-integer",
    ),
    param(
        {"dtype": 32},
        TypeError,
        r"`dtype` must be a torch.dtype or a dtype name; received 32 of type int",
        id="dtype-int",
    ),
    # keywords: unknown ones, base-layer shape keywords and the project's extras
    param(
        {"data_format": "NCHW"},
        TypeError,
        r"BatchNormalization\(\) got unexpected keyword argument\(s\) \['data_format'\]",
        id="unknown-kwarg",
    ),
    param({"input_shape": "3"}, TypeError, r"`input_shape` must be a shape", id="input_shape-str"),
    param(
        {"batch_input_shape": (None, -3)},
        TypeError,
        r"`batch_input_shape` must be a shape \(a tuple/list of non-negative ints or None\)",
        id="batch_input_shape-negative",
    ),
    param(
        {"input_shape": (3,), "batch_size": 2.0},
        TypeError,
        r"`batch_size` must be a non-negative int; received 2\.0",
        id="batch_size-float",
    ),
    param(
        {"synchronized": "yes"},
        TypeError,
        r"`synchronized` must be True or False; received 'yes'",
        id="synchronized",
    ),
    param(
        {"process_group": "world"},
        TypeError,
        r"`process_group` must be None or a torch.distributed.ProcessGroup.*'world'",
        id="process_group",
    ),
    param(
        {"unbiased_moving_variance": 1},
        TypeError,
        r"`unbiased_moving_variance` must be True or False; received 1",
        id="unbiased_moving_variance",
    ),
    param(
        {"ghost_grouping": "random"},
        ValueError,
        r"`ghost_grouping` must be one of \['strided', 'contiguous'\]; received 'random'",
        id="ghost_grouping-unknown",
    ),
    param(
        {"ghost_grouping": 1},
        TypeError,
        r"`ghost_grouping` must be one of \['strided', 'contiguous'\]; received 1",
        id="ghost_grouping-not-str",
    ),
    param(
        {"check_numerics": None},
        TypeError,
        r"`check_numerics` must be True or False; received None",
        id="check_numerics",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), CONSTRUCTOR)
def test_constructor_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        BatchNormalization(**kwargs)
    assert BatchNormalization().name == "batch_normalization"  # no default name was taken


# ---------------------------------------------------------------------- build
BUILD = [
    param(
        {"axis": 4},
        torch.zeros(2, 3, 4, 5),
        r"Invalid value for `axis` argument. Expected 0 <= axis < inputs.rank \(with "
        r"inputs.rank=4\). Received: axis=4",
        id="axis-above-rank",
    ),
    param({"axis": -5}, torch.zeros(2, 3, 4, 5), r"Expected 0 <= axis.*axis=-5", id="axis-below"),
    param(
        {"axis": [1, 4]}, torch.zeros(2, 3, 4, 5), r"Expected 0 <= axis.*\[1, 4\]", id="axis-list"
    ),
    param(
        {"axis": [1, -3]},
        torch.zeros(2, 3, 4, 5),
        r"Duplicate axis: \[1\] \(axis=\[1, -3\], rank=4\)",
        id="axis-dup-after-normalizing",
    ),
    param(
        {"axis": 0, "virtual_batch_size": 2},
        torch.zeros(4, 3),
        r"When using `virtual_batch_size`, the batch dimension must be 0 and thus axis cannot "
        r"include 0. Received axis=0",
        id="vbs-axis-0",
    ),
    param(
        {"fused": True},
        torch.zeros(4, 3),
        r"`fused=True` only support 4D or 5D input tensors. Received tensor with rank 2",
        id="fused-rank-2",
    ),
    param(
        {"fused": True, "axis": -4},
        torch.zeros(2, 3, 4, 5),
        r"Unsupported axis. The use of `fused=True` is only possible with `axis=1` or `axis=3` "
        r"for 4D input tensors. Received: axis=-4",
        id="fused-axis-minus-4",
    ),
    param(
        {"fused": True},
        torch.zeros(2, 3, 4, 5, dtype=torch.float64),
        r"`fused=True` is only supported when the compute dtype is.*Got dtype: torch.float64",
        id="fused-float64-input",
    ),
    param({}, torch.tensor(1.0), r"Input has undefined rank \(a scalar\)", id="scalar-input"),
    param(
        {"axis": 1},
        (None, None, 3),
        r"Input has undefined `axis` dimension. Received input with shape \(None, None, 3\) and "
        r"axis=1",
        id="undefined-channel",
    ),
]


@pytest.mark.parametrize(("kwargs", "x", "match"), BUILD)
def test_build_rejects_and_leaves_the_layer_unbuilt(kwargs, x, match):
    layer = BatchNormalization(**kwargs)
    with pytest.raises(ValueError, match=match):
        if isinstance(x, torch.Tensor):
            layer(x, training=True)
        else:
            layer.build(x)
    assert_unbuilt(layer)
    assert layer.axis == kwargs.get("axis", -1)
    assert layer.compute_dtype is None and layer.dtype is None


# ---------------------------------------------------------------------- calls on a trained layer
BAD_CALLS = [
    # the input itself
    param(
        {},
        torch.randn(8, 3, 2),
        {},
        ValueError,
        r"Input 0 of layer batch_normalization is incompatible with the layer: expected shape "
        r"\(None, 3\) \(rank 2, None = any size\), received shape \(8, 3, 2\)",
        id="input-rank-higher",
    ),
    param(
        {}, torch.randn(3), {}, ValueError, r"expected shape.*shape \(3,\)", id="input-rank-lower"
    ),
    param({}, torch.tensor(1.0), {}, ValueError, r"expected shape.*shape \(\)", id="input-scalar"),
    param(
        {},
        torch.randn(8, 4),
        {},
        ValueError,
        r"expected shape \(None, 3\).*received shape \(8, 4\)",
        id="input-channels",
    ),
    param(
        {},
        torch.randn(8, 3, dtype=torch.complex64),
        {},
        TypeError,
        r"Layer batch_normalization does not support complex input \(received torch.complex64\)",
        id="input-complex",
    ),
    param(
        {},
        [[1.0, 2.0, 3.0]],
        {},
        TypeError,
        r"Layer batch_normalization expects a torch.Tensor or NumPy array; received list",
        id="input-list",
    ),
    param({}, None, {}, TypeError, r"expects a torch.Tensor.*received NoneType", id="input-none"),
    param(
        {},
        np.array([["a", "b", "c"]]),
        {},
        TypeError,
        r"Layer batch_normalization expects numeric input; received a NumPy array of dtype <U1",
        id="input-numpy-str",
    ),
    param(
        {},
        np.ones((2, 3), dtype=object),
        {},
        TypeError,
        r"expects numeric input; received a NumPy array of dtype object",
        id="input-numpy-object",
    ),
    param(
        {},
        torch.randn(8, 3, device="meta"),
        {},
        ValueError,
        r"Input of layer batch_normalization is on meta but the layer's variables are on cpu; "
        r"move one of them \(e.g. `layer.to\('meta'\)`\)",
        id="input-other-device",
    ),
    param(
        {},
        torch.randn(8, 3, device="meta"),
        {"training": False},
        ValueError,
        r"is on meta but the layer's variables are on cpu",
        id="input-other-device-inference",
    ),
    # mask
    param(
        {},
        X,
        {"mask": torch.ones(8, 3, dtype=torch.bool)},
        ValueError,
        r"`mask` of layer batch_normalization must have the input's shape without its channel "
        r"axis \[1\]: expected \(8,\), received \(8, 3\)",
        id="mask-shape",
    ),
    param(
        {},
        X,
        {"mask": torch.ones(8, dtype=torch.complex64)},
        TypeError,
        r"`mask` must be boolean \(or real weights\); received complex values",
        id="mask-complex",
    ),
    param(
        {},
        X,
        {"mask": np.array(["y"] * 8)},
        TypeError,
        r"`mask` must be a boolean tensor or array; received a NumPy array of dtype <U1",
        id="mask-numpy-str",
    ),
    param(
        {},
        X,
        {"mask": "all"},
        TypeError,
        r"`mask` must be a boolean tensor or None; received str",
        id="mask-not-a-tensor",
    ),
    param(
        {},
        X,
        {"mask": torch.ones(8, dtype=torch.bool, device="meta")},
        ValueError,
        r"`mask` is on meta but the input is on cpu",
        id="mask-other-device",
    ),
    # training
    param(
        {},
        X,
        {"training": "yes"},
        TypeError,
        r"`training` must be None \(follow the module's train\(\)/eval\(\) mode\), a Python or "
        r"NumPy bool, an integer \(nonzero means training\), or a one-element bool or integer "
        r"tensor; received 'yes' of type str",
        id="training-str",
    ),
    param(
        {}, X, {"training": 1.0}, TypeError, r"`training` must be None.*1\.0", id="training-float"
    ),
    param(
        {},
        X,
        {"training": np.array([True])},
        TypeError,
        r"`training` must be None .*, or a one-element bool or integer tensor; received array",
        id="training-numpy-array",
    ),
    param(
        {},
        X,
        {"training": torch.tensor([True, False])},
        ValueError,
        r"`training` must be None .*one-element bool or integer tensor; received a tensor of shape "
        r"\(2,\)",
        id="training-vector",
    ),
    param(
        {},
        X,
        {"training": torch.tensor(0.5)},
        TypeError,
        r"`training` must be None .*one-element bool or integer tensor; received a torch.float32 "
        r"tensor",
        id="training-float-tensor",
    ),
    param(
        {},
        X,
        {"training": torch.tensor(True, device="meta")},
        ValueError,
        r"`training` is a meta tensor, which holds no value",
        id="training-meta-tensor",
    ),
    # other keywords and data-dependent checks
    param(
        {},
        X,
        {"bogus": 1},
        TypeError,
        r"call\(\) got an unexpected keyword argument 'bogus'",
        id="unknown-call-kwarg",
    ),
    param(
        {"virtual_batch_size": 4},
        X[:6],
        {},
        ValueError,
        r"the batch size 6 is not divisible by virtual_batch_size=4; in training every ghost "
        r"batch needs 4 examples",
        id="vbs-not-dividing",
    ),
    param(
        {},
        torch.empty(0, 3),
        {},
        ValueError,
        r"received an empty batch \(shape \(0, 3\)\) in training: batch statistics are undefined",
        id="empty-batch",
    ),
    param(
        {"check_numerics": True},
        NAN_X,
        {},
        ValueError,
        r"the training batch holds NaN or Inf \(check_numerics=True\); nothing was updated",
        id="check-numerics-nan",
    ),
]


@pytest.mark.parametrize(("layer_kwargs", "x", "call_kwargs", "error", "match"), BAD_CALLS)
def test_bad_call_raises_and_changes_nothing(layer_kwargs, x, call_kwargs, error, match):
    layer = trained(**layer_kwargs)
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer(x, **{"training": True, **call_kwargs})
    assert_unchanged(layer, before)
    assert layer(X, training=False).shape == (8, 3)


def test_scheduled_clipping_made_invalid_changes_nothing():
    rmax = torch.tensor(3.0)
    layer = trained(renorm=True, renorm_clipping={"rmin": 0.5, "rmax": rmax})
    rmax.fill_(0.25)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"`renorm_clipping\['rmax'\]` must be >= rmin.*0\.25"):
        layer(X, training=True)
    assert_unchanged(layer, before)


class Adjustment:
    """A user adjustment whose result (or exception) the test sets after training."""

    def __init__(self):
        self.result = (torch.ones(3), torch.zeros(3))

    def __call__(self, shape):
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


ADJUSTMENT = [
    param(
        (torch.ones(4), torch.zeros(3)),
        ValueError,
        r"`adjustment` returned a scale of shape \(4,\), which does not broadcast to the input "
        r"shape \(8, 3\)",
        id="scale-wrong-shape",
    ),
    param(
        (torch.ones(3), torch.zeros(2, 3)),
        ValueError,
        r"`adjustment` returned a bias of shape \(2, 3\), which does not broadcast",
        id="bias-not-broadcastable",
    ),
    param(
        (torch.ones(1, 8, 3), torch.zeros(3)),
        ValueError,
        r"`adjustment` returned a scale of shape \(1, 8, 3\), which does not broadcast to the "
        r"input shape \(8, 3\)",
        id="scale-grows-the-input",
    ),
    param(
        torch.ones(3),
        ValueError,
        r"`adjustment` must return a pair \(scale, bias\); returned Tensor",
        id="not-a-tuple",
    ),
    param(
        (1.0, 1.0, 0.0),
        ValueError,
        r"`adjustment` must return a pair \(scale, bias\); returned tuple",
        id="three-values",
    ),
    param(
        ("big", torch.zeros(3)),
        TypeError,
        r"`adjustment` must return real tensors \(scale, bias\); returned a scale of type str",
        id="scale-str",
    ),
    param(
        (torch.ones(3), None),
        TypeError,
        r"`adjustment` must return real tensors.*a bias of type NoneType",
        id="bias-none",
    ),
    param(
        (torch.ones(3) * 1j, torch.zeros(3)),
        TypeError,
        r"`adjustment` returned a complex scale; expected real values",
        id="scale-complex",
    ),
    param(RuntimeError("user bug"), RuntimeError, r"user bug", id="raises"),
]


@pytest.mark.parametrize(("result", "error", "match"), ADJUSTMENT)
def test_bad_adjustment_changes_nothing(result, error, match):
    adjustment = Adjustment()
    layer = trained(adjustment=adjustment, renorm=True)
    adjustment.result = result
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer(X, training=True)
    assert_unchanged(layer, before)


# ---------------------------------------------------------------------- user callables
def test_raising_activity_regularizer_undoes_the_step():
    regularizer = Flaky(lambda y: y.abs().sum())
    layer = trained(activity_regularizer=regularizer)
    regularizer.broken = True
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="user bug"):
        layer(X, training=True)
    assert_unchanged(layer, before)


@pytest.mark.parametrize("argument", ["gamma_regularizer", "beta_regularizer"])
def test_raising_weight_regularizer_changes_nothing(argument):
    regularizer = Flaky(lambda w: w.square().sum())
    layer = trained(**{argument: regularizer})
    regularizer.broken = True
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="user bug"):
        _ = layer.losses
    assert_unchanged(layer, before)


CONSTRAINTS = [
    param(RuntimeError("user bug"), RuntimeError, r"user bug", id="raises"),
    param(
        torch.zeros(2),
        ValueError,
        r"The constraint of batch_normalization/beta returned shape \(2,\); expected \(3,\)",
        id="wrong-shape",
    ),
    param(
        None,
        TypeError,
        r"The constraint of batch_normalization/beta must return a tensor; returned NoneType",
        id="not-a-tensor",
    ),
    param(
        torch.zeros(3, dtype=torch.complex64),
        TypeError,
        r"The constraint of batch_normalization/beta returned complex values",
        id="complex",
    ),
]


@pytest.mark.parametrize(("result", "error", "match"), CONSTRAINTS)
def test_bad_constraint_changes_nothing(result, error, match):
    """gamma's constraint runs first and would change gamma; beta's then fails."""

    def beta_constraint(w):
        if isinstance(result, BaseException):
            raise result
        return result

    layer = trained(gamma_constraint="non_neg", beta_constraint=beta_constraint)
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([-1.0, 2.0, -3.0]))
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer.apply_constraints()
    assert_unchanged(layer, before)


INITIALIZERS = [
    "gamma_initializer",
    "beta_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
]


@pytest.mark.parametrize("argument", INITIALIZERS)
def test_raising_initializer_leaves_the_layer_unbuilt(argument):
    initializer = Flaky(lambda shape, dtype=None: torch.full(shape, 2.0, dtype=dtype))
    initializer.broken = True
    layer = BatchNormalization(renorm=True, momentum=0.5, **{argument: initializer})
    with pytest.raises(RuntimeError, match="user bug"):
        layer(X, training=True)
    assert_unbuilt(layer)
    initializer.broken = False
    expected = BatchNormalization(renorm=True, momentum=0.5, **{argument: initializer})
    assert torch.equal(layer(X, training=True), expected(X, training=True))
    assert [n for n, _ in layer.named_parameters()] == ["gamma", "beta"]
    for mine, theirs in zip(layer.weights, expected.weights, strict=True):
        assert torch.equal(mine, theirs)


BAD_INITIAL_VALUES = [
    param(
        torch.ones(5),
        ValueError,
        r"`{arg}` returned a value of shape \(5,\); expected shape \(3,\)",
        id="wrong-shape",
    ),
    param(
        "ones",
        TypeError,
        r"`{arg}` must return a tensor or array of real numbers; returned str",
        id="str",
    ),
    param(
        torch.ones(3, dtype=torch.complex64),
        TypeError,
        r"`{arg}` must return real numbers; returned complex values",
        id="complex",
    ),
]


@pytest.mark.parametrize(("value", "error", "match"), BAD_INITIAL_VALUES)
@pytest.mark.parametrize("argument", INITIALIZERS)
def test_bad_initial_value_names_the_initializer(argument, value, error, match):
    layer = BatchNormalization(**{argument: lambda shape, dtype=None: value})
    with pytest.raises(error, match=match.format(arg=argument)):
        layer.build((None, 3))
    assert_unbuilt(layer)


def test_initializer_returning_one_tensor_twice_does_not_alias_variables():
    shared = torch.zeros(3)
    layer = BatchNormalization(
        renorm=True, momentum=0.5, moving_mean_initializer=lambda shape, dtype=None: shared
    )
    layer(X, training=True)
    assert torch.equal(shared, torch.zeros(3))
    assert layer.moving_mean.data_ptr() != layer.renorm_mean.data_ptr()
    assert not torch.equal(layer.moving_mean, layer.renorm_mean)  # momentum 0.5 vs 0.99


# ---------------------------------------------------------------------- a failing first call
FIRST_CALLS = [
    param({}, X.to(torch.complex64), {}, TypeError, r"does not support complex", id="complex"),
    param({}, X, {"mask": torch.ones(8, 3)}, ValueError, r"`mask` of layer", id="mask-shape"),
    param({}, X, {"training": "yes"}, TypeError, r"`training` must be None", id="training"),
    param({}, X, {"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'", id="call-kwarg"),
    param({}, X, {"scope": 3}, TypeError, r"`scope` must be a string; received 3", id="scope"),
    param({"virtual_batch_size": 3}, X, {}, ValueError, r"not divisible by", id="vbs"),
    param({}, X[:0], {}, ValueError, r"empty batch", id="empty-batch"),
    param({"check_numerics": True}, NAN_X, {}, ValueError, r"NaN or Inf", id="check-numerics"),
    param(
        {"adjustment": Flaky(ones_adjustment)},
        X,
        {},
        RuntimeError,
        r"user bug",
        id="adjustment-raises",
    ),
    param(
        {"activity_regularizer": Flaky(torch.sum)},
        X,
        {},
        RuntimeError,
        r"user bug",
        id="activity-regularizer-raises",
    ),
    param(
        {},
        X.double(),
        {"mask": "yes"},
        TypeError,
        r"`mask` must be a boolean tensor",
        id="float64-input-with-bad-mask",
    ),
]


@pytest.mark.parametrize(("layer_kwargs", "x", "call_kwargs", "error", "match"), FIRST_CALLS)
def test_failing_first_call_leaves_the_layer_unbuilt(layer_kwargs, x, call_kwargs, error, match):
    layer = BatchNormalization(momentum=0.5, **layer_kwargs)
    for value in layer_kwargs.values():
        if isinstance(value, Flaky):
            value.broken = True
    with pytest.raises(error, match=match):
        layer(x, **{"training": True, **call_kwargs})
    assert_unbuilt(layer)
    assert layer.axis == -1 and layer.dtype is None
    for value in layer_kwargs.values():
        if isinstance(value, Flaky):
            value.broken = False
    fresh = BatchNormalization(momentum=0.5, **layer_kwargs)
    y = layer(X[:6], training=True)
    assert y.dtype == torch.float32 and layer.fused is False
    assert torch.equal(y, fresh(X[:6], training=True))
    assert_unchanged(layer, snapshot(fresh))


# ---------------------------------------------------------------------- set_weights
def new_values(dtype=np.float32):
    return [np.full(3, 0.5 + i, dtype) for i in range(4)]


SET_WEIGHTS = [
    param(
        new_values()[:3],
        ValueError,
        r"Layer batch_normalization expects 4 weights \(batch_normalization/gamma, "
        r"batch_normalization/beta, batch_normalization/moving_mean, "
        r"batch_normalization/moving_variance\); received 3",
        id="too-few",
    ),
    param([*new_values(), np.ones(3)], ValueError, r"expects 4 weights.*received 5", id="too-many"),
    param(
        [*new_values()[:3], np.ones(4, np.float32)],
        ValueError,
        r"Weight batch_normalization/moving_variance has shape \(3,\); received an array of "
        r"shape \(4,\)",
        id="wrong-shape",
    ),
    param(
        [*new_values()[:3], np.ones((3, 1), np.float32)],
        ValueError,
        r"Weight batch_normalization/moving_variance has shape \(3,\); received.*\(3, 1\)",
        id="wrong-rank",
    ),
    *[
        param(
            [*new_values()[:3], bad],
            TypeError,
            rf"Weight batch_normalization/moving_variance must be a floating-point array; "
            rf"received dtype {dtype}",
            id=f"dtype-{dtype.strip('<')}",
        )
        for bad, dtype in [
            (np.ones(3, np.int64), "int64"),
            (np.ones(3, bool), "bool"),
            (np.array(["1", "2", "3"]), "<U1"),
            (np.ones(3, np.complex64), "complex64"),
            ([1.0, None, 3.0], "object"),
            (torch.ones(3, dtype=torch.int32), "torch.int32"),
            (torch.ones(3, dtype=torch.bool), "torch.bool"),
        ]
    ],
    param(
        [*new_values()[:3], [1.0, [2.0], 3.0]],
        TypeError,
        r"Weight batch_normalization/moving_variance must be a floating-point array; received "
        r"list, which is not an array",
        id="ragged-list",
    ),
    param(
        [*new_values()[:3], torch.ones(3, device="meta")],
        ValueError,
        r"Weight batch_normalization/moving_variance received a meta tensor, which holds no "
        r"values",
        id="meta-tensor",
    ),
    param(
        None,
        TypeError,
        r"Layer batch_normalization: `set_weights` expects a list of arrays in `weights` order "
        r"\(batch_normalization/gamma, .*\); received NoneType",
        id="none",
    ),
    param(
        dict(zip(["gamma", "beta", "moving_mean", "moving_variance"], new_values(), strict=True)),
        TypeError,
        r"`set_weights` expects a list of arrays.*received dict",
        id="dict",
    ),
    param("abcd", TypeError, r"`set_weights` expects a list of arrays.*received str", id="str"),
]


@pytest.mark.parametrize(("weights", "error", "match"), SET_WEIGHTS)
def test_bad_set_weights_changes_nothing(weights, error, match):
    layer = trained()
    before = snapshot(layer)
    with pytest.raises(error, match=match):
        layer.set_weights(weights)
    assert_unchanged(layer, before)


def test_set_weights_counts_the_renorm_variables():
    layer = trained(renorm=True)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"expects 7 weights.*renorm_stddev\); received 4"):
        layer.set_weights(new_values())
    assert_unchanged(layer, before)


def test_set_weights_on_an_unbuilt_layer():
    layer = BatchNormalization()
    with pytest.raises(
        ValueError, match=r"expects 0 weights \(none: it is not built\); received 4"
    ):
        layer.set_weights(new_values())
    assert_unbuilt(layer)


@pytest.mark.parametrize(
    ("convert", "via"),
    [
        param(lambda v: v, np.float64, id="float64-arrays"),
        param(lambda v: v.astype(np.float16), np.float16, id="float16-arrays"),
        param(lambda v: torch.tensor(v, requires_grad=True), np.float64, id="float64-tensors"),
        param(lambda v: v.tolist(), np.float64, id="lists"),
    ],
)
def test_set_weights_casts_floating_values(convert, via):
    layer = trained()
    values = [np.array([0.1, 0.2, 0.3]) + i for i in range(4)]  # float64, not exact in float32
    layer.set_weights([convert(v) for v in values])
    for got, value in zip(layer.get_weights(), values, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, value.astype(via).astype(np.float32))
    assert all(w.dtype == torch.float32 for w in layer.weights)


# ---------------------------------------------------------------------- inputs that must work
@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool], ids=str
)
def test_integer_and_bool_inputs_are_cast_to_float32(dtype):
    x = torch.randint(0, 5, (16, 3)).to(dtype)
    layer, reference = BatchNormalization(momentum=0.5), BatchNormalization(momentum=0.5)
    y = layer(x, training=True)
    assert y.dtype == torch.float32 and layer.dtype == torch.float32
    assert torch.equal(y, reference(x.float(), training=True))
    assert_unchanged(layer, snapshot(reference))
    assert torch.equal(layer(x, training=False), reference(x.float(), training=False))


def test_numpy_inputs_work_and_give_numpy():
    x = X.numpy()
    layer, reference = BatchNormalization(momentum=0.5), BatchNormalization(momentum=0.5)
    y = layer(x[::-1], training=True)  # negative strides too
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(y, reference(X.flip(0), training=True).detach().numpy())
    y = layer(x.astype(np.int64), training=False)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32


def test_numpy_mask_with_negative_strides():
    mask = np.array([True, False] * 4)
    layer, reference = BatchNormalization(momentum=0.5), BatchNormalization(momentum=0.5)
    y = layer(X, training=True, mask=mask[::-1])
    assert torch.equal(y, reference(X, training=True, mask=torch.from_numpy(mask[::-1].copy())))
    assert_unchanged(layer, snapshot(reference))


def assert_close(actual, expected):
    """Within 1e-6 of the larger of 1 and max|expected| (layouts may sum in another order)."""
    actual, expected = actual.detach(), expected.detach()
    assert float((actual - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))


LAYOUTS = [
    param((8, 3, 5, 6), 1, lambda x: x.contiguous(memory_format=torch.channels_last), id="nhwc"),
    param(
        (4, 3, 5, 6, 2),
        1,
        lambda x: x.contiguous(memory_format=torch.channels_last_3d),
        id="ndhwc",
    ),
    param((8, 3, 5, 6), 1, lambda x: x.transpose(2, 3).contiguous().transpose(2, 3), id="hw-swap"),
    param((8, 5, 3), -1, lambda x: x.transpose(0, 1).contiguous().transpose(0, 1), id="nlc-swap"),
    param((8, 3), -1, lambda x: torch.cat([x, x], 1)[:, ::2], id="strided"),
    param((8, 3), -1, lambda x: x[:1].expand(8, 3), id="expanded"),
    param(
        (8, 5, 3), [0, 2], lambda x: x.permute(2, 1, 0).contiguous().permute(2, 1, 0), id="multi"
    ),
]


@pytest.mark.parametrize(("shape", "axis", "layout"), LAYOUTS)
def test_non_contiguous_inputs_match_the_contiguous_result(shape, axis, layout):
    x = torch.randn(*shape) * 3 + 2
    variant = layout(x)
    contiguous = variant.contiguous()
    assert torch.equal(variant, contiguous) and not variant.is_contiguous()
    layer, reference = (BatchNormalization(axis=axis, momentum=0.5) for _ in range(2))
    assert_close(layer(variant, training=True), reference(contiguous, training=True))
    for name, value in snapshot(reference).items():
        assert_close(getattr(layer, name), value)
    assert_close(layer(variant, training=False), reference(contiguous, training=False))


def test_unbuilt_layer_follows_the_device_of_its_first_input():
    layer = BatchNormalization()
    y = layer(torch.randn(8, 3, device="meta"), training=True)
    assert y.device.type == "meta"
    assert all(w.device.type == "meta" for w in layer.weights)
    with pytest.raises(ValueError, match=r"Input of layer .* is on cpu but the layer's variables"):
        layer(X, training=False)
