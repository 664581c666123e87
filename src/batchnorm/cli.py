"""Command line: ``python -m batchnorm demo|info`` (also the ``batchnorm`` script)."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from . import __version__, _native
from .normalization import BatchNormalization


def _load_digits(seed: int) -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise SystemExit("The demo needs scikit-learn: pip install 'batchnorm[demo]'") from exc
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    to_x = lambda a: torch.tensor(a, dtype=torch.float32) / 16.0  # noqa: E731
    to_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return to_x(x_train), to_x(x_test), to_y(y_train), to_y(y_test)


def make_mlp(features: int = 64, hidden: int = 128, classes: int = 10) -> nn.Sequential:
    """Linear → BatchNormalization → ReLU, twice, then a linear classifier."""
    return nn.Sequential(
        nn.Linear(features, hidden),
        BatchNormalization(momentum=0.9),
        nn.ReLU(),
        nn.Linear(hidden, hidden // 2),
        BatchNormalization(momentum=0.9),
        nn.ReLU(),
        nn.Linear(hidden // 2, classes),
    )


def demo(epochs: int = 10, batch_size: int = 64, seed: int = 0) -> float:
    """Train the MLP on scikit-learn's digits; print loss and accuracy per epoch."""
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = _load_digits(seed)
    model = make_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, 8x8 pixels, 10 classes")
    print(f"{'epoch':>5} {'loss':>8} {'train acc':>9} {'test acc':>8} {'time':>7}")
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            logits = model(x_train[idx])
            loss = loss_fn(logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y_train[idx]).sum().item()
            total += len(idx)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        elapsed = time.perf_counter() - start
        print(
            f"{epoch:>5} {loss_sum / total:>8.4f} {correct / total:>9.3f} {accuracy:>8.3f} "
            f"{elapsed * 1000:>5.0f}ms"
        )
    return accuracy


def info() -> None:
    """Print versions and what this machine offers."""
    print(f"batchnorm {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CUDA available: {torch.cuda.is_available()}")
    print(f"CPU kernels: {_native.status()}")
    if torch.cuda.is_available():
        print(f"  device: {torch.cuda.get_device_name(0)}")
    try:
        import tensorflow as tf

        print(f"tensorflow {tf.__version__} (oracle for tests)")
    except ImportError:
        print("tensorflow: not installed (only needed for the comparison tests)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchnorm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="train a small MLP with BatchNormalization on digits")
    p_demo.add_argument("--epochs", type=int, default=10)
    p_demo.add_argument("--batch-size", type=int, default=64)
    p_demo.add_argument("--seed", type=int, default=0)
    sub.add_parser("info", help="versions and available backends")
    sub.add_parser(
        "bench", help="benchmarks against PyTorch, a plain copy and tf_keras", add_help=False
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.epochs < 1 or args.batch_size < 2:
            parser.error("--epochs must be >= 1 and --batch-size >= 2")
        demo(args.epochs, args.batch_size, args.seed)
    elif args.command == "info":
        info()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
