"""Time vivit-for-pytorch 1.0.0 on the problems of ``benches/computations.rs``.

Not part of CI: a manual comparison of this crate with the Python library it ports.
From the repository root, with a venv holding torch, backpack-for-pytorch 1.7.1 and
vivit-for-pytorch 1.0.0 (``tests/reference/README.md``):

    cargo bench --bench computations                  # this crate (criterion)
    /work/pyenv/bin/python benches/reference/compare.py

The script times ``eigvalsh``, ``eigh`` (top-10 criterion) and a plain SGD step on
``digits_mlp`` (Linear 64-128-64-10, N=128) and ``fmnist_2c2d`` (DeepOBS shape, N=32),
float32, CPU, 2 threads, one parameter group of all parameters: the median seconds
of 5 calls after a warm-up, forward and backward included. It then prints the
matching criterion medians (``target/criterion/<group>/<problem>/new/estimates.json``)
and the ratio reference / vivit, when the Rust benchmarks have been run. Machines
are noisy: run both one right after the other.
"""

import json
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn


def _symeig(self: Tensor, eigenvectors: bool = False, upper: bool = True):
    """Stand-in for ``Tensor.symeig``, removed in torch 2, which vivit 1.0.0 calls."""
    uplo = "U" if upper else "L"
    if eigenvectors:
        return torch.linalg.eigh(self, UPLO=uplo)
    return torch.linalg.eigvalsh(self, UPLO=uplo), torch.empty(0, dtype=self.dtype)


torch.Tensor.symeig = _symeig

from backpack import backpack, extend  # noqa: E402
from vivit import EighComputation, EigvalshComputation  # noqa: E402

CRITERION_DIR = Path(__file__).resolve().parents[2] / "target" / "criterion"
CALLS = 5
TOP_K = 10
COMPUTATIONS = {"eigvalsh": EigvalshComputation, "eigh": EighComputation}


def digits_mlp() -> nn.Module:
    """Linear 64-128-64-10 with ReLU."""
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def fmnist_2c2d() -> nn.Module:
    """DeepOBS fmnist_2c2d ('same' padding = 2 for its 5x5 convolutions)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
    )  # fmt: skip


def problems():
    """``name -> (model, inputs, targets)``; weights N(0, 0.05²), biases 0.05."""
    torch.manual_seed(0)
    result = {}
    for name, build, shape in [
        ("digits_mlp", digits_mlp, (128, 64)),
        ("fmnist_2c2d", fmnist_2c2d, (32, 1, 28, 28)),
    ]:
        model = build()
        for param in model.parameters():
            if param.dim() == 1:
                nn.init.constant_(param, 0.05)
            else:
                nn.init.normal_(param, std=0.05)
        result[name] = (model, torch.randn(shape), torch.randint(10, (shape[0],)))
    return result


def top_k(evals: Tensor):
    """Indices of the ``TOP_K`` largest of the ascending ``evals``."""
    return list(range(evals.numel() - TOP_K, evals.numel()))


def vivit_call(computation_class, model, loss_fn, x, y):
    """One call: forward, backward with the computation's BackPACK extension."""
    computation = computation_class()
    group = {"params": list(model.parameters())}
    if computation_class is EighComputation:
        group["criterion"] = top_k
    loss = loss_fn(model(x), y)
    with backpack(
        computation.get_extension(),
        extension_hook=computation.get_extension_hook([group]),
    ):
        loss.backward()
    return computation.get_result(group)


def sgd_call(optimizer, model, loss_fn, x, y):
    """One plain training step: forward, backward, SGD update."""
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()


def median_seconds(call) -> float:
    """Median wall time of ``CALLS`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_times():
    """``{(problem, computation): seconds}`` of vivit-for-pytorch."""
    times = {}
    for name, (model, x, y) in problems().items():
        loss_fn = nn.CrossEntropyLoss()
        sgd = torch.optim.SGD(model.parameters(), lr=1e-3)
        times[name, "sgd_step"] = median_seconds(
            lambda: sgd_call(sgd, model, loss_fn, x, y)
        )
        model, loss_fn = extend(model), extend(loss_fn)
        for computation, cls in COMPUTATIONS.items():
            times[name, computation] = median_seconds(
                lambda: vivit_call(cls, model, loss_fn, x, y)
            )
    return times


def criterion_seconds(problem: str, computation: str):
    """Criterion's median for this crate in seconds, or None if not benchmarked."""
    path = CRITERION_DIR / computation / problem / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] * 1e-9


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    row = "{:<12} {:<9} {:>12} {:>10} {:>9}"
    print(row.format("problem", "computation", "reference s", "vivit s", "ref/vivit"))
    for (problem, computation), ref in reference_times().items():
        ours = criterion_seconds(problem, computation)
        ours_text = "-" if ours is None else f"{ours:.5f}"
        ratio = "-" if ours is None else f"{ref / ours:.2f}"
        print(row.format(problem, computation, f"{ref:.5f}", ours_text, ratio))


if __name__ == "__main__":
    main()
