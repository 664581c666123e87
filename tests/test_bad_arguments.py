"""Bad constructor arguments, argument by argument: the exception type, a message naming
the argument and what was expected (with the known names for string lookups)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bad_input import NAN, ones_adjustment, param
from batchnorm import BatchNormalization


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
