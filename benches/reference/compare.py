"""Time vivit-for-pytorch 1.0.0 on the benchmarks of ``benches/computations/``.

Not part of CI: a manual comparison of this crate with the Python library it ports.
From the repository root, with a venv holding torch, backpack-for-pytorch 1.7.1 and
vivit-for-pytorch 1.0.0 (``tests/reference/README.md``):

    cargo bench --bench computations                  # this crate (criterion)
    .venv-reference/bin/python benches/reference/compare.py [FILTER ...]

The benchmarks and problems are those of ``benches/computations/``, with the same
ids (``eigvalsh/digits_mlp``, ``newton/mnist_mlp/mc1``, ...; FILTERs select ids by
substring): ``eigvalsh``, ``eigh``, a plain SGD step, ``directional_derivatives`` and
``newton`` (``DirectionalDampedNewtonComputation``, constant damping 1), the last two
exact and with ``mc_samples_ggn=1``; top-10 criterion, one parameter group of all
parameters, float32, CPU, 2 threads, forward and backward included.

With ``--paired ROUNDS`` (before the FILTERs) the script instead runs the reference and
this crate's bench binary alternately, ``ROUNDS`` times per id, seconds apart, and prints
the median seconds of each and the median, lowest and highest of the per-round ratios:
the machine's drift over minutes cancels in each ratio. This crate's seconds are then
the median of the binary's calls after its first (``VIVIT_BENCH_ONCE``):

    .venv-reference/bin/python benches/reference/compare.py --paired 5 eigvalsh/fmnist

With ``--gpu [FILTER ...]`` the script times the reference alone, in this process, on
GPU 0 (the CPU where torch finds none), each call ended by a synchronization: the ids
that ``examples/device_check`` times (SGD step, eigh, newton exact and mc1), with the
peak memory torch allocated; ``scripts/device-check.sh`` runs it beside the binary.

Each benchmark of the reference runs in a fresh subprocess (this script with
``--once ID``): the median seconds of 5 calls after a warm-up, and the peak RSS of
that process. This crate is timed the same way, in the same statistic: the newest
bench binary ``target/release/deps/computations-*`` run with ``VIVIT_BENCH_ONCE=<id>``
(a warm-up and 5 calls, no criterion), which also gives its peak RSS; the ratio
``ref/viv`` compares those two medians. Criterion's median
(``target/criterion/<id>/new/estimates.json``) is printed beside it with its ratio
``ref/crit``: a median of samples that each average 1 to 10 calls, a different
statistic (a call that stalls raises every sample it falls in, where a median of
single calls leaves it out). Machines are noisy: run both one right after the other,
on a quiet machine (the load average is printed). Peak RSS needs GNU time
(``apt-get install time``). With another job busy on one of 2 cores, torch's OpenMP
threads spin and run up to 100x slower; ``OMP_WAIT_POLICY=PASSIVE`` avoids that.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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
from vivit import (  # noqa: E402
    DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation,
    EighComputation,
    EigvalshComputation,
)

ROOT = Path(__file__).resolve().parents[2]
CRITERION_DIR = ROOT / "target" / "criterion"
BENCH_BINARIES = ROOT / "target" / "release" / "deps"
CALLS = 5
TOP_K = 10
THREADS = 2
# group -> computation class (None: SGD step), variants (None: a single one)
GROUPS = {
    "eigvalsh": (EigvalshComputation, [None]),
    "eigh": (EighComputation, [None]),
    "sgd_step": (None, [None]),
    "directional_derivatives": (DirectionalDerivativesComputation, ["exact", "mc1"]),
    "newton": (DirectionalDampedNewtonComputation, ["exact", "mc1"]),
}


def digits_mlp() -> nn.Module:
    """Linear 64-128-64-10 with ReLU."""
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def mnist_mlp() -> nn.Module:
    """DeepOBS mnist_mlp: Linear 784-1000-500-100-10 with ReLU."""
    return nn.Sequential(
        nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 500), nn.ReLU(),
        nn.Linear(500, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def fmnist_2c2d() -> nn.Module:
    """DeepOBS fmnist_2c2d ('same' padding = 2 for its 5x5 convolutions)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
    )  # fmt: skip


def fmnist_2c2d_bn() -> nn.Module:
    """fmnist_2c2d with a BatchNorm2d (evaluation mode) after each convolution."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
    ).eval()  # fmt: skip


def cifar10_3c3d() -> nn.Module:
    """DeepOBS cifar10_3c3d; its pools' 'same' padding is one zero row and column at
    the end (after a ReLU, zeros pad like -inf)."""
    def pool():
        return [nn.ReLU(), nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, stride=2)]
    return nn.Sequential(
        nn.Conv2d(3, 64, 5), *pool(),
        nn.Conv2d(64, 96, 3), *pool(),
        nn.Conv2d(96, 128, 3, padding=1), *pool(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 128, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


# name -> (model builder, input shape)
PROBLEMS = {
    "digits_mlp": (digits_mlp, (128, 64)),
    "mnist_mlp": (mnist_mlp, (64, 784)),
    "fmnist_2c2d": (fmnist_2c2d, (32, 1, 28, 28)),
    "cifar10_3c3d": (cifar10_3c3d, (32, 3, 32, 32)),
    "fmnist_2c2d_bn": (fmnist_2c2d_bn, (32, 1, 28, 28)),
}


def bench_ids():
    """All ids ``group/problem[/variant]``, by problem, as ``computations.rs`` names them."""
    return [
        "/".join([group, problem] + ([variant] if variant else []))
        for problem in PROBLEMS
        for group, (_, variants) in GROUPS.items()
        for variant in variants
    ]


def problem(name: str, device="cpu"):
    """``(model, inputs, targets)`` on ``device``; weights N(0, 0.05²), biases 0.05,
    seed 0 (drawn on the CPU, so every device gets the same values)."""
    torch.manual_seed(0)
    build, shape = PROBLEMS[name]
    model = build()
    for param in model.parameters():
        if param.dim() == 1:
            nn.init.constant_(param, 0.05)
        else:
            nn.init.normal_(param, std=0.05)
    x, y = torch.randn(shape), torch.randint(10, (shape[0],))
    return model.to(device), x.to(device), y.to(device)


def top_k(evals: Tensor):
    """Indices of the ``TOP_K`` largest of the ascending ``evals``."""
    return list(range(evals.numel() - TOP_K, evals.numel()))


def constant_damping(evals: Tensor, evecs: Tensor, gammas: Tensor, lambdas: Tensor):
    """Damping 1 along every direction."""
    return torch.ones_like(evals)


def vivit_call(computation, model, loss_fn, x, y):
    """One call: forward, backward with the computation's BackPACK extensions."""
    group = {
        "params": list(model.parameters()),
        "criterion": top_k,
        "damping": constant_damping,
    }
    if hasattr(computation, "get_extensions"):
        extensions = computation.get_extensions()
    else:
        extensions = [computation.get_extension()]
    loss = loss_fn(model(x), y)
    with backpack(
        *extensions, extension_hook=computation.get_extension_hook([group])
    ):
        loss.backward()
    return computation.get_result(group)


def sgd_call(optimizer, model, loss_fn, x, y):
    """One plain training step: forward, backward, SGD update."""
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()


def median_seconds(call, sync=lambda: None) -> float:
    """Median wall time of ``CALLS`` calls after one warm-up call, each ended by ``sync``
    (a device synchronization)."""
    call()
    sync()
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def once(bench_id: str, device="cpu") -> float:
    """Median seconds of the reference on benchmark ``bench_id`` on ``device``."""
    group, name, *variant = bench_id.split("/")
    cls, _ = GROUPS[group]
    model, x, y = problem(name, device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    loss_fn = nn.CrossEntropyLoss()
    if cls is None:
        sgd = torch.optim.SGD(model.parameters(), lr=1e-3)
        return median_seconds(lambda: sgd_call(sgd, model, loss_fn, x, y), sync)
    model, loss_fn = extend(model), extend(loss_fn)
    kwargs = {"mc_samples_ggn": 1} if variant == ["mc1"] else {}
    return median_seconds(lambda: vivit_call(cls(**kwargs), model, loss_fn, x, y), sync)


# what ``examples/device_check`` times that the reference has
GPU_IDS = ["sgd_step", "eigh", "newton/{}/exact", "newton/{}/mc1"]


def gpu(filters):
    """The reference alone on GPU 0 (the CPU where there is none): the median seconds
    and peak allocated memory of the benchmarks ``examples/device_check`` times, in
    ``device_check``'s ids, for ``scripts/device-check.sh``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
    print(f"reference on {device} ({name}); torch {torch.__version__}")
    print("{:<40} {:>9} {:>11}".format("id", "ref s", "peak MiB"))
    for problem_name in PROBLEMS:
        for pattern in GPU_IDS:
            bench_id = (
                pattern.format(problem_name) if "{}" in pattern else f"{pattern}/{problem_name}"
            )
            if filters and not any(f in bench_id for f in filters):
                continue
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = once(bench_id, device)
            peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
            print("{:<40} {:>9.5f} {:>11}".format(bench_id, seconds, text(peak, ".0f")), flush=True)


def run_measured(command, env=None):
    """``(stdout, peak RSS in bytes)`` of a subprocess, from GNU time: a child's own
    ``ru_maxrss`` would start at this process's RSS (fork, then exec keeps it)."""
    with tempfile.NamedTemporaryFile("r") as peak:
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, *command],
            stdout=subprocess.PIPE, env=env, text=True, check=True,
        ).stdout  # fmt: skip
        return out, int(peak.read().split()[-1]) * 1024  # KiB


def bench_binary():
    """The newest bench binary of ``computations.rs``, or None."""
    candidates = [
        path
        for path in BENCH_BINARIES.glob("computations-*")
        if path.suffix == "" and os.access(path, os.X_OK)
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def criterion_seconds(bench_id: str):
    """Criterion's median for this crate in seconds, or None if not benchmarked."""
    path = CRITERION_DIR / bench_id / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] * 1e-9


def text(value, fmt):
    """``value`` formatted, ``-`` for None."""
    return "-" if value is None else format(value, fmt)


def ratio(reference, ours):
    """``reference / ours`` formatted, ``-`` if either is missing."""
    return "-" if reference is None or ours is None else f"{reference / ours:.2f}"


def once_env(bench_id: str):
    """The environment in which the bench binary runs ``bench_id`` once, quietly."""
    env = dict(os.environ, VIVIT_BENCH_ONCE=bench_id)
    env.pop("VIVIT_BENCH_VERBOSE", None)
    return env


def once_median(out: str) -> float:
    """Median seconds of the calls the bench binary printed in ``VIVIT_BENCH_ONCE`` mode,
    its first call (the warm-up: cold caches, fresh pages) left out, as ``once`` times
    the reference."""
    times = [float(line.split()[-2]) for line in out.splitlines() if line.endswith(" s")]
    return statistics.median(times[1:] or times)


def vivit_once(binary, bench_id: str) -> float:
    """:func:`once_median` of this crate's bench binary on ``bench_id``."""
    out = subprocess.run(
        [str(binary)], stdout=subprocess.PIPE, env=once_env(bench_id), text=True, check=True
    ).stdout
    return once_median(out)


def paired(rounds: int, filters):
    """The reference and this crate alternately, ``rounds`` times per benchmark."""
    binary = bench_binary()
    if binary is None:
        sys.exit("no bench binary: run `cargo bench --bench computations --no-run`")
    print(f"bench binary: {binary}; load average: {os.getloadavg()}")
    row = "{:<40} {:>9} {:>9} {:>8} {:>8} {:>8}"
    print(row.format("id", "ref s", "vivit s", "ref/viv", "lowest", "highest"))
    for bench_id in bench_ids():
        if filters and not any(f in bench_id for f in filters):
            continue
        refs, ours = [], []
        for _ in range(rounds):
            out = subprocess.run(
                [sys.executable, __file__, "--once", bench_id],
                stdout=subprocess.PIPE, text=True, check=True,
            ).stdout  # fmt: skip
            refs.append(float(out))
            ours.append(vivit_once(binary, bench_id))
        ratios = [r / o for r, o in zip(refs, ours)]
        print(
            row.format(
                bench_id, f"{statistics.median(refs):.5f}", f"{statistics.median(ours):.5f}",
                f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}", f"{max(ratios):.2f}",
            ),  # fmt: skip
            flush=True,
        )
    print(f"load average: {os.getloadavg()}")


def main(filters):
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    binary = bench_binary()
    print(f"{cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}, {THREADS} threads")
    print(f"bench binary: {binary}; load average: {os.getloadavg()}")
    row = "{:<40} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9} {:>8}"
    print(
        row.format(
            "id", "ref s", "vivit s", "ref/viv", "crit. s", "ref/crit", "ref MB", "vivit MB",
            "ref/viv",
        )  # fmt: skip
    )
    for bench_id in bench_ids():
        if filters and not any(f in bench_id for f in filters):
            continue
        out, ref_rss = run_measured([sys.executable, __file__, "--once", bench_id])
        ref = float(out)
        ours, ours_rss = None, None
        if binary is not None:
            out, ours_rss = run_measured([str(binary)], env=once_env(bench_id))
            ours = once_median(out)
        crit = criterion_seconds(bench_id)
        mb = [None if rss is None else rss / 2**20 for rss in (ref_rss, ours_rss)]
        print(
            row.format(
                bench_id, f"{ref:.5f}", text(ours, ".5f"), ratio(ref, ours),
                text(crit, ".5f"), ratio(ref, crit), text(mb[0], ".0f"), text(mb[1], ".0f"),
                ratio(*mb),
            ),  # fmt: skip
            flush=True,
        )
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    torch.set_num_threads(THREADS)
    if sys.argv[1:2] == ["--once"]:
        print(once(sys.argv[2]))
    elif sys.argv[1:2] == ["--paired"]:
        paired(int(sys.argv[2]), sys.argv[3:])
    elif sys.argv[1:2] == ["--gpu"]:
        gpu(sys.argv[2:])
    else:
        main(sys.argv[1:])
