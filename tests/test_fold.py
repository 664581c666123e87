"""Folding batch norm into the Linear/Conv before it: ``fold_into`` for one pair and
``fold`` for a whole model (torch.fx finds the pairs in any structure; nn.Sequential
neighbours when the model cannot be traced), against float64 references written
with plain torch operations and against torch.nn's own modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import batchnorm
from conv_bn_models import PAIRS, Reference, ResNetStyle, randomized
from helpers import assert_unchanged, snapshot
from oracle import rel_error

BN = batchnorm.BatchNormalization


def trained_bn(shape, axis, seed, **kwargs) -> batchnorm.BatchNormalization:
    """A layer with non-trivial gamma, beta and moving statistics."""
    g = torch.Generator().manual_seed(seed)
    bn = batchnorm.BatchNormalization(axis=axis, momentum=0.5, **kwargs)
    for _ in range(3):
        bn(torch.randn(shape, generator=g) * 2 + 1, training=True)
    with torch.no_grad():
        if bn.gamma is not None:
            bn.gamma.copy_(0.5 + torch.rand(bn.gamma.shape, generator=g))
        if bn.beta is not None:
            bn.beta.copy_(torch.randn(bn.beta.shape, generator=g))
    return bn.eval()


def bn64(layer: BN, z: torch.Tensor, training: bool = False) -> torch.Tensor:
    """``layer`` on ``z`` in float64 (one channel axis): moving statistics, or the
    batch's (biased variance) with ``training``."""
    axis = layer._axes[0]
    view = [1] * z.dim()
    view[axis] = -1
    if training:
        dims = [d for d in range(z.dim()) if d != axis]
        mean, var = z.mean(dims).reshape(view), z.var(dims, unbiased=False).reshape(view)
    else:
        mean = layer.moving_mean.detach().double().reshape(view)
        var = layer.moving_variance.detach().double().reshape(view)
    gamma = layer.gamma.detach().double().reshape(view)
    beta = layer.beta.detach().double().reshape(view)
    return (z - mean) / torch.sqrt(var + layer.epsilon) * gamma + beta


def conv64(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    bias = conv.bias.detach().double() if conv.bias is not None else None
    return F.conv2d(x, conv.weight.detach().double(), bias, conv.stride, conv.padding)


def warmed(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """``model`` after three training steps (moving statistics), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(3):
        model(torch.randn(shape, generator=g) * 2 + 1)
    return model.eval()


# --------------------------------------------------------------------------------------
# fold_into


@pytest.mark.parametrize(
    ("module", "x_shape", "axis", "extra"),
    [
        (nn.Linear(6, 5), (8, 6), -1, {}),
        (nn.Linear(6, 5), (8, 6), -1, {"renorm": True}),
        (nn.Linear(6, 5, bias=False), (8, 6), -1, {"virtual_batch_size": 4}),
        (nn.Conv1d(3, 4, 3), (4, 3, 9), 1, {}),
        (nn.Conv2d(3, 4, 3, padding=1, groups=1), (4, 3, 6, 6), 1, {"renorm": True}),
        (nn.Conv2d(4, 6, 3, groups=2, bias=False), (4, 4, 6, 6), 1, {"virtual_batch_size": 2}),
        (nn.Conv3d(2, 3, 2), (4, 2, 4, 4, 4), 1, {"center": False}),
    ],
)
def test_fold_into_matches_the_eval_pair(module, x_shape, axis, extra):
    torch.manual_seed(3)
    with torch.no_grad():
        z = module(torch.randn(x_shape))
    bn = trained_bn(z.shape, axis, 4, **extra)
    folded = batchnorm.fold_into(module, bn)
    x = torch.randn(x_shape)
    with torch.no_grad():
        expected = bn(module(x))
        assert rel_error(folded(x), expected) <= 1e-5
    assert folded is not module and folded.bias is not None


def test_fold_into_errors():
    bn = trained_bn((4, 3, 5), [1, 2], 0)
    with pytest.raises(ValueError, match="single channel axis"):
        batchnorm.fold_into(nn.Conv1d(2, 3, 1), bn)
    with pytest.raises(ValueError, match="axis 1"):
        batchnorm.fold_into(nn.Conv1d(2, 5, 1), trained_bn((4, 3, 5), -1, 0))
    with pytest.raises(ValueError, match="5 channels"):
        batchnorm.fold_into(nn.Linear(2, 3), trained_bn((4, 5), -1, 0))
    with pytest.raises(ValueError, match="nn.Linear or nn.Conv"):
        batchnorm.fold_into(nn.ReLU(), trained_bn((4, 5), -1, 0))
    with pytest.raises(ValueError, match="not built"):
        batchnorm.fold_into(nn.Linear(2, 3), batchnorm.BatchNormalization())


# --------------------------------------------------------------------------------------
# fold


def test_fold_merges_sequential_pairs_at_any_depth():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        batchnorm.BatchNormalization(axis=1, momentum=0.5),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), batchnorm.BatchNormalization(momentum=0.5)),
        nn.ReLU(),
        batchnorm.BatchNormalization(momentum=0.5),  # follows a ReLU: kept
    )
    model.train()
    for _ in range(3):
        model(torch.randn(8, 3, 6, 6) * 2 + 1)
    model.eval()
    folded = batchnorm.fold(model)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3][2], nn.Identity)
    assert isinstance(folded[5], batchnorm.BatchNormalization)
    assert isinstance(model[1], batchnorm.BatchNormalization)  # the original is kept
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        assert rel_error(folded(x), model(x)) <= 1e-5
    assert not folded.training


def test_fold_merges_every_pair_of_a_resnet_style_model():
    torch.manual_seed(6)
    model = randomized(ResNetStyle()).train()  # fold returns an eval copy either way
    before = snapshot(model)
    folded, report = batchnorm.fold(model, report=True)
    assert type(folded) is ResNetStyle and not folded.training
    assert report.traced and report.trace_error is None and report.unfolded == {}
    assert report.folded == [(module, bn) for bn, module in PAIRS.items()]
    assert not any(isinstance(m, BN) for m in folded.modules())
    assert all(isinstance(folded.get_submodule(name), nn.Identity) for name in PAIRS)
    assert_unchanged(model, before)
    assert model.training and isinstance(model.block1.bn2, BN)
    x = torch.randn(5, 3, 6, 6) * 2 + 1
    with torch.no_grad():
        assert rel_error(folded(x), Reference(model)(x, training=False)) <= 1e-5
    assert type(batchnorm.fold(model)) is ResNetStyle  # without the report


class Kept(nn.Module):
    """One folded pair, and layers that must be kept: the module's output is also
    read, a conv called twice, a module under two names, a layer after an activation,
    after an addition, on the wrong axis, and one called in training."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn_reused = BN(axis=1, momentum=0.5)  # conv's output is also added
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_shared_a, self.bn_shared_b = BN(axis=1, momentum=0.5), BN(axis=1, momentum=0.5)
        self.relu = nn.ReLU()
        self.bn_relu = BN(axis=1, momentum=0.5)
        self.bn_add = BN(axis=1, momentum=0.5)
        self.conv_axis = nn.Conv2d(4, 4, 1)
        self.bn_axis = BN(axis=-1, momentum=0.5)  # normalizes the width
        self.alias = self.conv_axis  # the same module under a second name
        self.conv_ok = nn.Conv2d(4, 4, 1)
        self.bn_ok = BN(axis=1, momentum=0.5)
        self.conv_train = nn.Conv2d(4, 4, 1)
        self.bn_train = BN(axis=1, momentum=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        y = self.bn_reused(z) + z
        y = self.bn_shared_a(self.shared(y)) + self.bn_shared_b(self.shared(y * 2))
        y = self.bn_relu(self.relu(y))
        y = self.bn_add(y + 1)
        y = self.bn_axis(self.conv_axis(y))
        y = self.bn_ok(self.conv_ok(y))
        return self.bn_train(self.conv_train(y), training=True)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same forward in float64 with plain torch operations."""
        z = conv64(self.conv, x.double())
        y = bn64(self.bn_reused, z) + z
        y = bn64(self.bn_shared_a, conv64(self.shared, y)) + bn64(
            self.bn_shared_b, conv64(self.shared, y * 2)
        )
        y = bn64(self.bn_relu, torch.relu(y))
        y = bn64(self.bn_add, y + 1)
        y = bn64(self.bn_axis, conv64(self.conv_axis, y))
        y = bn64(self.bn_ok, conv64(self.conv_ok, y))
        return bn64(self.bn_train, conv64(self.conv_train, y), training=True)


def test_fold_reports_each_layer_it_keeps_and_why():
    torch.manual_seed(7)
    model = warmed(Kept(), (8, 3, 5, 4))
    folded, report = batchnorm.fold(model, report=True)
    assert report.traced and report.folded == [("conv_ok", "bn_ok")]
    reasons = report.unfolded
    assert list(reasons) == [
        "bn_reused",
        "bn_shared_a",
        "bn_shared_b",
        "bn_relu",
        "bn_add",
        "bn_axis",
        "bn_train",
    ]
    assert "output of module 'conv' is also used by add" in reasons["bn_reused"]
    assert "module 'shared' is called 2 times" in reasons["bn_shared_a"]
    assert reasons["bn_shared_b"] == reasons["bn_shared_a"]
    assert "input comes from module 'relu' (ReLU)" in reasons["bn_relu"]
    assert "input comes from function operator.add" in reasons["bn_add"]
    assert "several names ('conv_axis', 'alias')" in reasons["bn_axis"]
    assert "training=True" in reasons["bn_train"]
    assert "kept 'bn_relu'" in str(report) and "folded 'bn_ok' into 'conv_ok'" in str(report)
    kept = [name for name, m in folded.named_modules() if isinstance(m, BN)]
    assert kept == list(reasons)
    x = torch.randn(6, 3, 5, 4) * 2 + 1
    with torch.no_grad():
        assert rel_error(folded(x), model.reference(x)) <= 1e-5


def test_fold_reports_the_axis_of_a_layer_that_does_not_fit():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), BN(axis=-1, momentum=0.5))
    model = warmed(model, (8, 3, 5, 4))
    folded, report = batchnorm.fold(model, report=True)
    assert report.folded == [] and "channels are on axis 1" in report.unfolded["1"]
    x = torch.randn(6, 3, 5, 4)
    with torch.no_grad():
        assert rel_error(folded(x), bn64(model[1], conv64(model[0], x.double()))) <= 1e-5


def test_fold_keeps_a_layer_whose_dtype_differs_from_the_module():
    """A float64 layer after a float32 Conv returns float64; folded, the Conv would
    return float32: the layer is kept, with the reason, and the output keeps its dtype."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), BN(axis=1, momentum=0.5, dtype="float64"))
    model = warmed(model, (8, 3, 5, 4))
    folded, report = batchnorm.fold(model, report=True)
    assert report.folded == [] and "folding would change the output's dtype" in str(report)
    x = torch.randn(6, 3, 5, 4)
    with torch.no_grad():
        y = folded(x)
        assert y.dtype == torch.float64
        assert rel_error(y, bn64(model[1], conv64(model[0], x.double()))) <= 1e-5


def test_fold_finds_pairs_inside_wrap_layers():
    """``Wrap`` and ``Lambda`` are traced into like any container, so a pair inside a
    ``Wrap`` folds (layers with variables stay one node)."""
    model = nn.Sequential(
        batchnorm.Wrap(nn.Sequential(nn.Conv2d(3, 4, 1), BN(axis=1, momentum=0.5))),
        batchnorm.Lambda(torch.relu),
    )
    model = warmed(model, (8, 3, 5, 4))
    folded, report = batchnorm.fold(model, report=True)
    assert report.folded == [("0.module.0", "0.module.1")]
    x = torch.randn(6, 3, 5, 4)
    inner = model[0].module
    with torch.no_grad():
        expected = torch.relu(bn64(inner[1], conv64(inner[0], x.double())))
        assert rel_error(folded(x), expected) <= 1e-5


class Branchy(nn.Module):
    """A forward whose path depends on the data: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BN(axis=1, momentum=0.5))
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = BN(axis=1, momentum=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.bn(self.conv(y)) if x.mean() > 0 else -y

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        y = bn64(self.stem[1], conv64(self.stem[0], x.double()))
        return bn64(self.bn, conv64(self.conv, y)) if x.mean() > 0 else -y


def test_fold_falls_back_to_sequential_neighbours_with_a_warning():
    torch.manual_seed(8)
    model = warmed(Branchy(), (8, 3, 4, 4))  # a positive mean: both layers trained
    with pytest.warns(UserWarning, match="torch.fx could not trace Branchy .*TraceError"):
        folded, report = batchnorm.fold(model, report=True)
    assert not report.traced and report.trace_error.startswith("TraceError")
    assert report.folded == [("stem.0", "stem.1")]
    assert "not directly after" in report.unfolded["bn"]
    assert isinstance(folded.stem[1], nn.Identity) and isinstance(folded.bn, BN)
    for shift in (2.0, -2.0):  # both branches
        x = torch.randn(5, 3, 4, 4) + shift
        with torch.no_grad():
            assert rel_error(folded(x), model.reference(x)) <= 1e-5


def test_fold_of_converted_layers_matches_torch():
    """``from_torch`` layers after a Linear hold real variables before their first
    call: they fold, as torch.nn's own pairs do."""
    torch.manual_seed(9)
    reference = nn.Sequential(
        nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4)
    )
    with torch.no_grad():
        for bn in (reference[1], reference[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    model = batchnorm.from_torch(reference)
    assert not model[1].built and not model[4].built
    folded, report = batchnorm.fold(model, report=True)
    assert report.folded == [("0", "1"), ("3", "4")] and report.unfolded == {}
    x = torch.randn(7, 6)
    with torch.no_grad():
        expected = reference.double().eval()(x.double())
        assert rel_error(folded(x), expected) <= 1e-5


def test_fold_keeps_an_unbuilt_layer():
    model = nn.Sequential(nn.Linear(4, 3), BN())
    folded, report = batchnorm.fold(model, report=True)
    assert report.folded == [] and "not built" in report.unfolded["1"]
    x = torch.randn(5, 4)
    with torch.no_grad():  # the copy builds on its first call, initial statistics (0, 1)
        expected = F.linear(x.double(), model[0].weight.double(), model[0].bias.double())
        assert rel_error(folded(x), expected / (1 + 1e-3) ** 0.5) <= 1e-5
    assert not model[1].built  # the original is untouched


def test_fold_bad_arguments():
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        batchnorm.fold("model")
    with pytest.raises(TypeError, match="`report` must be a bool"):
        batchnorm.fold(nn.Linear(2, 2), report="yes")
