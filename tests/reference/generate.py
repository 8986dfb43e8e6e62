"""Generate the reference fixtures of the ``vivit`` crate with vivit-for-pytorch 1.0.0.

Run from the repository root (see ``tests/reference/README.md`` for the venv):

    .venv-reference/bin/python tests/reference/generate.py

For every case in ``CASES``, one JSON file per dtype is written to ``tests/fixtures/``
(``<case>_f64.json`` and ``<case>_f32.json``); the golden problems of
vivit-reference.md §8 are written in float64 only. A file holds the model (as layer
specs), the data, the parameters, the loss value and the results of ViViT's four
computations (``EigvalshComputation``, ``EighComputation``,
``DirectionalDerivativesComputation``, ``DirectionalDampedNewtonComputation``), run
through BackPACK as ViViT's documentation and test-suite do.

Each case is built in float32 from ``torch.manual_seed(0)`` (model, then input, then
target, like ViViT's test problems); the float64 fixture is the same problem cast to
float64, so both dtypes describe identical inputs and parameters.

Results of ``eigh``, ``directional_derivatives`` and ``newton`` carry a
``"degenerate"`` flag: true where the kept eigenvectors are not unique up to sign (two
kept eigenvalues coincide, or the smallest kept one coincides with the largest dropped
one), so that eigenvectors, gammas, lambdas and steps depend on the eigensolver's
choice of basis there.

Checks printed (never written to the fixtures), float64 only, against the explicit
GGN ``Jᵀ H J`` built with ``torch.autograd`` (sub-sampling and blocks included):
Eigvalsh spectra, ``G e = λ e`` for Eigh, |gammas| and lambdas, and Newton steps
(the last three for non-degenerate results), all to 1e-10; and the golden problems
against the values written in vivit-reference.md §8.

vivit 1.0.0 calls ``Tensor.symeig``, which torch 2 removed; it is re-implemented on
top of ``torch.linalg.eigh``/``eigvalsh`` before vivit is imported (vivit does not
use the function form ``torch.symeig``).
"""

import copy
import json
import math
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn


def _symeig(self: Tensor, eigenvectors: bool = False, upper: bool = True):
    """Stand-in for the removed ``Tensor.symeig`` (ascending eigenvalues)."""
    uplo = "U" if upper else "L"
    if eigenvectors:
        return torch.linalg.eigh(self, UPLO=uplo)
    empty = torch.empty(0, dtype=self.dtype, device=self.device)
    return torch.linalg.eigvalsh(self, UPLO=uplo), empty


torch.Tensor.symeig = _symeig

from backpack import backpack, extend  # noqa: E402
from backpack.custom_module.branching import Parallel  # noqa: E402
from backpack.custom_module.pad import Pad  # noqa: E402
from backpack.custom_module.slicing import Slicing  # noqa: E402
from vivit import (  # noqa: E402
    DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation,
    EighComputation,
    EigvalshComputation,
)

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures"
CHECK_TOL = 1e-10
# Two eigenvalues a <= b coincide if b - a <= RTOL * |b| + ATOL * max |evals|.
DEGENERACY_RTOL = 1e-5
DEGENERACY_ATOL = 1e-6

# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def linear(i: int, o: int, bias: bool = True) -> Dict:
    return {"type": "linear", "in": i, "out": o, "bias": bias}


def conv(dim: int, i: int, o: int, k: int, s=1, p=0, d=1, bias=True) -> Dict:
    return {
        "type": f"conv{dim}d",
        "in": i,
        "out": o,
        "kernel": k,
        "stride": s,
        "padding": p,
        "dilation": d,
        "bias": bias,
    }


def layer(kind: str, **kwargs) -> Dict:
    return {"type": kind, **kwargs}


# name -> (input shape, layer specs, loss, target: number of classes or MSE shape)
CASES = {
    "mlp_ce": (
        (4, 7),
        [
            linear(7, 6),
            layer("sigmoid"),
            linear(6, 5),
            layer("relu"),  # with ReLU third, all of its units are dead for seed 0
            linear(5, 4),
            layer("tanh"),
            linear(4, 3),
        ],
        "cross_entropy",
        3,
    ),
    "mlp_mse": (
        (3, 7),
        [linear(7, 6), layer("sigmoid"), linear(6, 5), layer("sigmoid")],
        "mse",
        (3, 5),
    ),
    "linear_relu_end_ce": (
        (3, 7),
        [linear(7, 6), linear(6, 5), layer("relu")],
        "cross_entropy",
        5,
    ),
    "cnn_ce": (
        (4, 3, 6, 6),
        [
            conv(2, 3, 2, 3, s=1, p=1),
            layer("relu"),
            layer("maxpool2d", kernel=3, stride=2),
            layer("flatten"),
            linear(8, 5),
            layer("sigmoid"),
        ],
        "cross_entropy",
        5,
    ),
    "cnn_stride_pad_mse": (
        (3, 2, 7, 7),
        [
            conv(2, 2, 3, 3, s=2, p=1),
            layer("tanh"),
            layer("avgpool2d", kernel=2, stride=2),
            layer("flatten"),
            linear(12, 4),
        ],
        "mse",
        (3, 4),
    ),
    "cnn_dilation_nobias_ce": (
        (3, 2, 8, 8),
        [
            conv(2, 2, 3, 3, s=1, p=2, d=2, bias=False),
            layer("relu"),
            conv(2, 3, 2, 2, s=2, p=0),
            layer("flatten"),
            linear(32, 4),
        ],
        "cross_entropy",
        4,
    ),
    "conv1d_ce": (
        (3, 2, 9),
        [
            conv(1, 2, 3, 3, s=2, p=1),
            layer("sigmoid"),
            layer("flatten"),
            linear(15, 3),
        ],
        "cross_entropy",
        3,
    ),
    "extra_dims_1_mse": (
        (3, 4, 5),
        [
            linear(5, 3),
            layer("sigmoid"),
            linear(3, 2),
            layer("sigmoid"),
            layer("flatten"),
        ],
        "mse",
        (3, 8),
    ),
    "extra_dims_2_mse": (
        (3, 4, 2, 5),
        [linear(5, 3), layer("tanh"), linear(3, 2), layer("tanh"), layer("flatten")],
        "mse",
        (3, 16),
    ),
    "batchnorm_ce": (
        # 4×4: candle 0.10.2's avg_pool2d backward is wrong where the kernel
        # does not divide the size (it upsamples the gradient to the input)
        (4, 2, 4, 4),
        [
            conv(2, 2, 3, 3, s=1, p=1),
            layer("batchnorm2d", features=3, eps=1e-5),
            layer("relu"),
            layer("avgpool2d", kernel=2, stride=2),
            layer("flatten"),
            linear(12, 4),
        ],
        "cross_entropy",
        4,
    ),
    "convtranspose_mse": (
        (3, 2, 3, 3),
        [
            layer(
                "conv_transpose2d",
                **{"in": 2, "out": 2, "kernel": 3, "stride": 2, "padding": 1},
                output_padding=0,  # BackPACK 1.7.1's unfold takes none
                bias=True,
            ),
            layer("sigmoid"),
            layer("flatten"),
            linear(50, 3),
        ],
        "mse",
        (3, 3),
    ),
    "branching_ce": (
        (3, 7),
        [
            linear(7, 4),
            layer("relu"),
            layer("pad", left=1, right=1, value=0.5),
            layer(
                "parallel_sum",
                branches=[
                    [layer("identity")],
                    [linear(6, 8), layer("slice", start=0, end=6)],
                ],
            ),
            layer("sigmoid"),
            linear(6, 4),
        ],
        "cross_entropy",
        4,
    ),
}

GOLDEN_MODEL = [linear(3, 4), layer("sigmoid"), linear(4, 2)]

# ---------------------------------------------------------------------------
# Model construction
# ---------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
    "flatten": nn.Flatten,
}


def build_layer(spec: Dict) -> nn.Module:
    """Instantiate the torch module of a layer spec."""
    kind = spec["type"]
    if kind in ACTIVATIONS:
        return ACTIVATIONS[kind]()
    if kind == "linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if kind in ("conv1d", "conv2d"):
        cls = nn.Conv1d if kind == "conv1d" else nn.Conv2d
        return cls(
            spec["in"],
            spec["out"],
            spec["kernel"],
            stride=spec["stride"],
            padding=spec["padding"],
            dilation=spec["dilation"],
            bias=spec["bias"],
        )
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(spec["features"], eps=spec["eps"])
    if kind == "conv_transpose2d":
        return nn.ConvTranspose2d(
            spec["in"],
            spec["out"],
            spec["kernel"],
            stride=spec["stride"],
            padding=spec["padding"],
            output_padding=spec["output_padding"],
            bias=spec["bias"],
        )
    if kind in ("maxpool2d", "avgpool2d"):
        cls = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        return cls(spec["kernel"], stride=spec["stride"])
    if kind == "pad":
        return Pad((spec["left"], spec["right"]), mode="constant", value=spec["value"])
    if kind == "slice":
        return Slicing((slice(None), slice(spec["start"], spec["end"])))
    if kind == "parallel_sum":
        return Parallel(*[build_branch(branch) for branch in spec["branches"]])
    raise ValueError(f"Unknown layer type {kind}")


def build_branch(specs: List[Dict]) -> nn.Module:
    """A branch of a ``Parallel``: the layer itself if it is a single one."""
    if len(specs) == 1:
        return build_layer(specs[0])
    return build_model(specs)


def build_model(specs: List[Dict]) -> nn.Sequential:
    return nn.Sequential(*[build_layer(spec) for spec in specs])


def build_loss(loss: str) -> nn.Module:
    if loss == "cross_entropy":
        return nn.CrossEntropyLoss(reduction="mean")
    return nn.MSELoss(reduction="mean")


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


class Problem:
    """Model, loss function and data of one fixture, extended with BackPACK.

    ``plain_model`` is an un-extended copy for the checks against autograd.
    """

    def __init__(self, name, dtype, specs, loss, model, x, y):
        self.name = name
        self.dtype = dtype
        self.specs = specs
        self.loss = loss
        self.plain_model = copy.deepcopy(model)
        self.model = extend(model)
        self.loss_fn = extend(build_loss(loss))
        self.x = x
        self.y = y

    def params(self) -> List[nn.Parameter]:
        return list(self.model.parameters())

    def loss_value(self) -> Tensor:
        return self.loss_fn(self.model(self.x), self.y)


def random_problem(name: str, dtype: torch.dtype) -> Problem:
    """Seeded float32 problem (model, input, target), cast to ``dtype``."""
    input_shape, specs, loss, target = CASES[name]
    torch.manual_seed(0)
    model = build_model(specs)
    with_batch_norm(model, specs)
    x = torch.rand(*input_shape)
    if loss == "cross_entropy":
        y = torch.randint(0, target, (input_shape[0],))
    else:
        y = torch.rand(*target).to(dtype)
    return Problem(name, dtype, specs, loss, model.to(dtype), x.to(dtype), y)


def with_batch_norm(model: nn.Sequential, specs: List[Dict]) -> None:
    """Batch norms in evaluation mode with drawn running statistics, weights
    and biases (the statistics written into their specs for the fixture)."""
    for module, spec in zip(model, specs):
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.3 * torch.randn(c))
                module.running_var.copy_(0.5 + torch.rand(c))
                module.weight.copy_(1.0 + 0.3 * torch.randn(c))
                module.bias.copy_(0.3 * torch.randn(c))
            spec["running_mean"] = module.running_mean.tolist()
            spec["running_var"] = module.running_var.tolist()
            module.eval()


def golden_problem(loss: str) -> Problem:
    """Deterministic float64 problem of vivit-reference.md §8."""
    model = build_model(GOLDEN_MODEL).double()
    k = 0
    with torch.no_grad():
        for p in model.parameters():
            values = [0.5 * math.sin(k + j + 1) for j in range(p.numel())]
            p.copy_(torch.tensor(values, dtype=torch.float64).reshape(p.shape))
            k += p.numel()
    x = torch.tensor(
        [[math.cos(3 * n + j) for j in range(3)] for n in range(4)],
        dtype=torch.float64,
    )
    if loss == "cross_entropy":
        y = torch.tensor([0, 1, 1, 0])
    else:
        y = torch.tensor(
            [[0.1 * (n + d) for d in range(2)] for n in range(4)], dtype=torch.float64
        )
    name = "golden_ce" if loss == "cross_entropy" else "golden_mse"
    return Problem(name, torch.float64, GOLDEN_MODEL, loss, model, x, y)


# ---------------------------------------------------------------------------
# Parameter groups, criteria, dampings
# ---------------------------------------------------------------------------


def group_layouts(problem: Problem) -> Dict[str, List[List[int]]]:
    """Parameter index groups: one group, one per parameter, one per layer."""
    names = [name for name, _ in problem.model.named_parameters()]
    layers: Dict[str, List[int]] = {}
    for idx, name in enumerate(names):
        layers.setdefault(name.rsplit(".", 1)[0], []).append(idx)
    return {
        "one": [list(range(len(names)))],
        "per_param": [[idx] for idx in range(len(names))],
        "per_layer": list(layers.values()),
    }


def make_groups(problem: Problem, groups: List[List[int]], **entries) -> List[Dict]:
    params = problem.params()
    return [{"params": [params[i] for i in idx], **entries} for idx in groups]


def make_criterion(spec: Dict) -> Callable[[Tensor], List[int]]:
    """Criterion function of a JSON criterion spec (evals arrive ascending).

    ``top_k_above`` keeps the last ``k`` indices among those with ``evals > x``, which
    equals ``make_criterion(k, must_exceed=x)`` of ViViT's test-suite.
    """

    def criterion(evals: Tensor) -> List[int]:
        keep = list(range(evals.numel()))
        if spec["type"] in ("above", "top_k_above"):
            keep = [i for i in keep if evals[i] > spec["x"]]
        if spec["type"] in ("top_k", "top_k_above"):
            keep = keep[max(len(keep) - spec["k"], 0) :]
        return keep

    return criterion


def constant_damping(damping: float) -> Callable[..., Tensor]:
    def damping_fn(evals, gram_evecs, gammas, lambdas):
        return damping * torch.ones_like(evals)

    return damping_fn


def is_degenerate(evals: Tensor, keep: List[int]) -> bool:
    """Whether the kept eigenvectors are not unique up to sign.

    ``keep`` is a suffix of the ascending ``evals`` for all criteria used here, so it
    suffices to compare neighbours from the largest dropped eigenvalue on.
    """
    if not keep:
        return False
    values = evals[max(min(keep) - 1, 0) :]
    gaps = values[1:] - values[:-1]
    atol = DEGENERACY_ATOL * evals.abs().max()
    return bool((gaps <= DEGENERACY_RTOL * values[1:].abs() + atol).any())


# ---------------------------------------------------------------------------
# ViViT computations
# ---------------------------------------------------------------------------


def floats(t: Tensor) -> List[float]:
    return t.detach().to(torch.float64).flatten().tolist()


def tensor_json(t: Tensor) -> Dict:
    return {"shape": list(t.shape), "data": floats(t)}


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Temporarily set torch's default dtype.

    BackPACK's AvgPool derivative builds its transposed convolution in the default
    dtype, so float64 runs through ``AvgPool2d`` fail without this.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def backward(problem: Problem, computation, param_groups: List[Dict]) -> None:
    """One forward-backward pass with ``computation``'s extensions and hook."""
    if hasattr(computation, "get_extensions"):
        extensions = computation.get_extensions()
    else:
        extensions = [computation.get_extension()]
    hook = computation.get_extension_hook(param_groups)
    problem.model.zero_grad()
    with default_dtype(problem.dtype), backpack(*extensions, extension_hook=hook):
        problem.loss_value().backward()


def eigvalsh(problem: Problem, groups, subsampling) -> List[Tensor]:
    param_groups = make_groups(problem, groups)
    computation = EigvalshComputation(subsampling=subsampling)
    backward(problem, computation, param_groups)
    return [computation.get_result(g) for g in param_groups]


def eigh(problem: Problem, groups, subsampling, criterion: Dict) -> List[Tuple]:
    """``EighComputation``'s ``(evals, evecs)`` per group."""
    param_groups = make_groups(problem, groups, criterion=make_criterion(criterion))
    computation = EighComputation(subsampling=subsampling)
    backward(problem, computation, param_groups)
    return [computation.get_result(g) for g in param_groups]


def kept_directions(problem: Problem, groups, subsampling, criterion) -> List[Dict]:
    """Per group: the kept eigenvalues and eigenvectors, and the degeneracy flag."""
    select = make_criterion(criterion)
    all_evals = eigvalsh(problem, groups, subsampling)
    return [
        {"evals": evals, "evecs": evecs, "degenerate": is_degenerate(a, select(a))}
        for (evals, evecs), a in zip(
            eigh(problem, groups, subsampling, criterion), all_evals
        )
    ]


def eigvalsh_run(problem: Problem, groups, subsampling) -> Dict:
    results = [{"evals": floats(e)} for e in eigvalsh(problem, groups, subsampling)]
    return {
        "computation": "eigvalsh",
        "subsampling": subsampling,
        "groups": groups,
        "results": results,
    }


def eigh_run(problem: Problem, groups, subsampling, criterion: Dict) -> Dict:
    results = [
        {
            "evals": floats(kept["evals"]),
            "degenerate": kept["degenerate"],
            "evecs": [tensor_json(v) for v in kept["evecs"]],
        }
        for kept in kept_directions(problem, groups, subsampling, criterion)
    ]
    return {
        "computation": "eigh",
        "subsampling": subsampling,
        "groups": groups,
        "criterion": criterion,
        "results": results,
    }


def directional_run(problem: Problem, groups, sub_grad, sub_ggn, criterion) -> Dict:
    param_groups = make_groups(problem, groups, criterion=make_criterion(criterion))
    computation = DirectionalDerivativesComputation(
        subsampling_grad=sub_grad, subsampling_ggn=sub_ggn
    )
    backward(problem, computation, param_groups)
    results = []
    for group, kept in zip(
        param_groups, kept_directions(problem, groups, sub_ggn, criterion)
    ):
        gammas, lambdas = computation.get_result(group)
        results.append(
            {
                "evals": floats(kept["evals"]),
                "degenerate": kept["degenerate"],
                "gammas": tensor_json(gammas),
                "lambdas": tensor_json(lambdas),
            }
        )
    return {
        "computation": "directional_derivatives",
        "subsampling_grad": sub_grad,
        "subsampling_ggn": sub_ggn,
        "groups": groups,
        "criterion": criterion,
        "results": results,
    }


def newton_run(
    problem: Problem, groups, sub_grad, sub_ggn, criterion: Dict, damping: float
) -> Dict:
    param_groups = make_groups(
        problem,
        groups,
        criterion=make_criterion(criterion),
        damping=constant_damping(damping),
    )
    computation = DirectionalDampedNewtonComputation(
        subsampling_grad=sub_grad, subsampling_ggn=sub_ggn
    )
    backward(problem, computation, param_groups)
    results = [
        {
            "evals": floats(kept["evals"]),
            "degenerate": kept["degenerate"],
            "step": [tensor_json(s) for s in computation.get_result(group)],
        }
        for group, kept in zip(
            param_groups, kept_directions(problem, groups, sub_ggn, criterion)
        )
    ]
    return {
        "computation": "newton",
        "subsampling_grad": sub_grad,
        "subsampling_ggn": sub_ggn,
        "groups": groups,
        "criterion": criterion,
        "damping": damping,
        "results": results,
    }


ABOVE = {"type": "above", "x": 1e-4}
TOP_K_ABOVE = {"type": "top_k_above", "k": 3, "x": 1e-5}
TOP_2 = {"type": "top_k", "k": 2}
SUBSAMPLINGS = [None, [1, 0]]
OPTIM_SUBSAMPLINGS = [(g, c) for g in (None, [0, 1]) for c in (None, [0, 1])]


def standard_runs(problem: Problem) -> List[Dict]:
    layouts = group_layouts(problem)
    runs = [
        eigvalsh_run(problem, groups, sub)
        for sub in SUBSAMPLINGS
        for groups in layouts.values()
    ]
    runs += [
        eigh_run(problem, groups, sub, ABOVE)
        for sub in SUBSAMPLINGS
        for groups in layouts.values()
    ]
    runs.append(eigh_run(problem, layouts["one"], None, TOP_2))
    optim_settings = [(layouts["one"], g, c) for g, c in OPTIM_SUBSAMPLINGS]
    optim_settings.append((layouts["per_layer"], None, None))
    runs += [
        directional_run(problem, groups, g, c, TOP_K_ABOVE)
        for groups, g, c in optim_settings
    ]
    runs += [
        newton_run(problem, groups, g, c, TOP_K_ABOVE, 1.0)
        for groups, g, c in optim_settings
    ]
    return runs


def golden_runs(problem: Problem) -> List[Dict]:
    """The extra settings of vivit-reference.md §8 (one group)."""
    one = group_layouts(problem)["one"]
    return [
        eigvalsh_run(problem, one, [0, 2]),
        directional_run(problem, one, None, None, TOP_2),
        directional_run(problem, one, [1, 3], [0, 2], TOP_2),
        newton_run(problem, one, None, None, TOP_2, 0.5),
    ]


# ---------------------------------------------------------------------------
# Checks against the explicit GGN (float64)
# ---------------------------------------------------------------------------


class ExplicitGGN:
    """GGN blocks and gradients of a problem from autograd, on sample subsets."""

    def __init__(self, problem: Problem):
        self.problem = problem
        model = problem.plain_model
        names = [name for name, _ in model.named_parameters()]
        shapes = [p.shape for p in model.parameters()]
        self.sizes = [p.numel() for p in model.parameters()]
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])

        def output(theta: Tensor) -> Tensor:
            chunks = theta.split(self.sizes)
            params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
            return torch.func.functional_call(model, params, (problem.x,))

        out = output(flat).detach()
        self.batch_size = out.shape[0]
        loss_fn = build_loss(problem.loss)
        self.jac = torch.autograd.functional.jacobian(output, flat)
        self.hess = torch.autograd.functional.hessian(
            lambda o: loss_fn(o, problem.y), out
        )

    def samples(self, subsampling: Optional[List[int]]) -> List[int]:
        return list(range(self.batch_size)) if subsampling is None else subsampling

    def indices(self, group: List[int]) -> Tensor:
        """Positions of a group's parameters in the flattened parameter vector."""
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        return torch.cat(
            [torch.arange(starts[i], starts[i] + self.sizes[i]) for i in group]
        )

    def ggn(self, group: List[int], subsampling=None) -> Tensor:
        """``G_S = (1/|S|) Σ_{n∈S} J_nᵀ H_n J_n`` (mean loss: H carries 1/N)."""
        samples = self.samples(subsampling)
        idx = self.indices(group)
        jac = self.jac[samples].flatten(end_dim=-2)[:, idx]
        hess = self.hess[samples][:, :, samples].reshape(jac.shape[0], jac.shape[0])
        return self.batch_size / len(samples) * jac.T @ hess @ jac

    def grad(self, group: List[int], subsampling=None) -> Tensor:
        """Gradient of the mean loss over the samples."""
        samples = self.samples(subsampling)
        model, problem = self.problem.plain_model, self.problem
        loss = build_loss(problem.loss)(model(problem.x[samples]), problem.y[samples])
        grad = torch.autograd.grad(loss, list(model.parameters()))
        return torch.cat([g.flatten() for g in grad])[self.indices(group)]

    def top_eigh(self, group: List[int], subsampling, k: int) -> Tuple[Tensor, Tensor]:
        evals, evecs = torch.linalg.eigh(self.ggn(group, subsampling))
        return evals[-k:], evecs[:, -k:]


def f64(data) -> Tensor:
    return torch.as_tensor(data, dtype=torch.float64)


def deviation(a, b) -> float:
    a, b = f64(a), f64(b)
    return (a.flatten() - b.flatten()).abs().max().item() if a.numel() else 0.0


def check_eigvalsh(ref: ExplicitGGN, run: Dict) -> float:
    """Eigvalsh = top eigenvalues of the GGN block; remaining ones zero."""
    worst = 0.0
    for group, result in zip(run["groups"], run["results"]):
        reference = torch.linalg.eigvalsh(ref.ggn(group, run["subsampling"]))
        ours = f64(result["evals"])
        m = min(len(reference), len(ours))
        worst = max(worst, deviation(ours[-m:], reference[-m:]))
        worst = max(worst, deviation(ours[:-m], torch.zeros(len(ours) - m)))
    return worst


def check_eigh(ref: ExplicitGGN, run: Dict) -> float:
    """Residual ``G e - λ e`` of the non-degenerate eigenpairs."""
    worst = 0.0
    for group, result in zip(run["groups"], run["results"]):
        if result["degenerate"]:
            continue
        evecs = torch.cat(
            [f64(v["data"]).reshape(v["shape"][0], -1) for v in result["evecs"]], dim=1
        ).T
        evals = f64(result["evals"])
        residual = ref.ggn(group, run["subsampling"]) @ evecs - evecs * evals
        worst = max(worst, residual.abs().max().item())
    return worst


def check_directional(ref: ExplicitGGN, run: Dict) -> float:
    """|gammas| = |e_kᵀ g_n| and lambdas = e_kᵀ G_n e_k, per sample."""
    worst = 0.0
    for group, result in zip(run["groups"], run["results"]):
        if result["degenerate"]:
            continue
        _, evecs = ref.top_eigh(group, run["subsampling_ggn"], len(result["evals"]))
        gammas = [
            ref.grad(group, [n]) @ evecs for n in ref.samples(run["subsampling_grad"])
        ]
        lambdas = [
            ((ref.ggn(group, [n]) @ evecs) * evecs).sum(0)
            for n in ref.samples(run["subsampling_ggn"])
        ]
        worst = max(
            worst,
            deviation(f64(result["gammas"]["data"]).abs(), torch.stack(gammas).abs()),
            deviation(result["lambdas"]["data"], torch.stack(lambdas)),
        )
    return worst


def check_newton(ref: ExplicitGGN, run: Dict) -> float:
    """Step ``-Σ_k (e_kᵀ ḡ)/(λ_k + δ) e_k`` per group."""
    worst = 0.0
    for group, result in zip(run["groups"], run["results"]):
        if result["degenerate"]:
            continue
        evals, evecs = ref.top_eigh(group, run["subsampling_ggn"], len(result["evals"]))
        grad = ref.grad(group, run["subsampling_grad"])
        step = -evecs @ ((evecs.T @ grad) / (evals + run["damping"]))
        ours = [v for s in result["step"] for v in s["data"]]
        worst = max(worst, deviation(ours, step))
    return worst


CHECKS = {
    "eigvalsh": check_eigvalsh,
    "eigh": check_eigh,
    "directional_derivatives": check_directional,
    "newton": check_newton,
}


def check_against_explicit_ggn(problem: Problem, runs: List[Dict]) -> None:
    ref = ExplicitGGN(problem)
    deviations = {
        name: max(check(ref, run) for run in runs if run["computation"] == name)
        for name, check in CHECKS.items()
    }
    status = "OK" if max(deviations.values()) < CHECK_TOL else "FAILED"
    summary = ", ".join(f"{name} {dev:.1e}" for name, dev in deviations.items())
    print(f"  {problem.name} vs explicit GGN: {summary} -> {status}")


# ---------------------------------------------------------------------------
# Golden values of vivit-reference.md §8
# ---------------------------------------------------------------------------

# Written as in the note. Each value must agree to one unit of its last written digit
# plus 1e-15 (float64 round-off); "0e-15" stands for a numerically-zero eigenvalue.
# fmt: off
GOLDEN_REFERENCE = {
    "golden_ce": {
        "loss": ["0.7141564828076223"],
        "eigvalsh": ["0e-15"] * 4
        + ["1.2317221980e-05", "9.4157426331e-04", "7.8571124074e-02", "1.0748562611"],
        "eigvalsh sub [0,2]": ["0e-15", "0e-15", "1.1015984848e-03", "1.1279047258"],
        "eigh top-2 evals": ["0.0785711241", "1.0748562611"],
        "|top evec|[:6]": [
            "0.0069003735",
            "0.0106808241",
            "0.0046413743",
            "0.0053818411",
            "0.0016711791",
            "0.0035759573",
        ],
        "|gammas| top-2": [
            "0.3604741896", "1.3740148705", "0.2266974144", "0.8950417251",
            "0.2197168278", "0.7524144444", "0.3322950494", "1.2161534438",
        ],
        "lambdas top-2": [
            "0.0727834217", "1.0574673977", "0.0705186669", "1.0992526551",
            "0.0884718799", "1.0375113669", "0.0825105278", "1.1051936245",
        ],
        "|gammas| grad [1,3] ggn [0,2]": [
            "0.1758766346", "0.8019682444", "0.3138724015", "1.0832981126",
        ],
        "lambdas grad [1,3] ggn [0,2]": [
            "1.0994387963e-03", "1.1301159878", "1.1037581733e-03", "1.1256934638",
        ],
        "newton δ=0.5 s[16:20]": [
            "0.0421088544", "0.0394635183", "0.0432832768", "0.0300926960",
        ],
        "newton δ=0.5 s[24:26]": ["0.0701578187", "-0.0701578187"],
    },
    "golden_mse": {
        "loss": ["0.12273981478156555"],
        "eigvalsh": [
            "9.7065138374e-06", "2.5546296891e-05", "3.3971390500e-04",
            "1.9859369983e-03", "1.0108096647e-01", "1.6606008901e-01",
            "2.2253307930", "2.2703060221",
        ],
        "eigvalsh sub [0,2]": [
            "1.1427795942e-03", "2.4047867322e-03", "2.3606113493", "2.4601130847",
        ],
        "|gammas| top-2": [
            "0.2643412761", "0.5179941736", "0.4638579767", "0.2330778115",
            "0.6877722880", "0.5475059082", "0.8777265046", "0.2101367977",
        ],
        "lambdas top-2": [
            "2.2711811822", "2.3086839183", "2.1874700832", "2.2431212762",
            "2.2527663896", "2.2835200201", "2.1899055167", "2.2458988735",
        ],
        "newton δ=0.5 s[24:26]": ["0.16328520713", "0.037346126077"],
    },
}
# fmt: on


def find_result(runs: List[Dict], computation: str, **fields) -> Dict:
    """Result of the first one-group run of ``computation`` matching ``fields``."""
    for run in runs:
        if (
            run["computation"] == computation
            and len(run["groups"]) == 1
            and all(run.get(key) == value for key, value in fields.items())
        ):
            return run["results"][0]
    raise KeyError(f"No {computation} run with {fields}")


def golden_values(fixture: Dict) -> Dict[str, List[float]]:
    """The quantities of §8, read back from a golden fixture."""
    runs = fixture["runs"]
    top2 = find_result(runs, "eigh", criterion=TOP_2)
    full_dd = find_result(
        runs, "directional_derivatives", criterion=TOP_2, subsampling_grad=None
    )
    sub_dd = find_result(
        runs, "directional_derivatives", criterion=TOP_2, subsampling_grad=[1, 3]
    )
    newton = find_result(runs, "newton", criterion=TOP_2, damping=0.5)
    step = [v for s in newton["step"] for v in s["data"]]
    # the top eigenvector is row k = 1 of each [K=2, *p.shape] tensor; W1 comes first
    w1 = top2["evecs"][0]
    top_w1 = w1["data"][math.prod(w1["shape"][1:]) :]
    eigvalsh_full = find_result(runs, "eigvalsh", subsampling=None)
    eigvalsh_sub = find_result(runs, "eigvalsh", subsampling=[0, 2])
    return {
        "loss": [fixture["loss_value"]],
        "eigvalsh": eigvalsh_full["evals"],
        "eigvalsh sub [0,2]": eigvalsh_sub["evals"],
        "eigh top-2 evals": top2["evals"],
        "|top evec|[:6]": [abs(v) for v in top_w1[:6]],
        "|gammas| top-2": [abs(v) for v in full_dd["gammas"]["data"]],
        "lambdas top-2": full_dd["lambdas"]["data"],
        "|gammas| grad [1,3] ggn [0,2]": [abs(v) for v in sub_dd["gammas"]["data"]],
        "lambdas grad [1,3] ggn [0,2]": sub_dd["lambdas"]["data"],
        "newton δ=0.5 s[16:20]": step[16:20],
        "newton δ=0.5 s[24:26]": step[24:26],
    }


def compare_golden(fixture: Dict) -> None:
    values = golden_values(fixture)
    for key, reference in GOLDEN_REFERENCE[fixture["name"][: -len("_f64")]].items():
        ours = values[key]
        deviations = [abs(a - float(r)) for a, r in zip(ours, reference)]
        ok = len(ours) == len(reference) and all(
            dev <= 10 ** Decimal(r).as_tuple().exponent + 1e-15
            for dev, r in zip(deviations, reference)
        )
        status = "OK" if ok else "MISMATCH"
        print(f"    {key:30s} max |ours - §8| = {max(deviations):.1e} {status}")
        print(f"      ours: {[f'{v:.10g}' for v in ours]}")
        print(f"      §8:   {reference}")


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def make_fixture(problem: Problem, runs: List[Dict]) -> Dict:
    f64 = problem.dtype == torch.float64
    if problem.loss == "cross_entropy":
        y = {"shape": list(problem.y.shape), "data": problem.y.tolist()}
    else:
        y = tensor_json(problem.y)
    return {
        "name": f"{problem.name}_{'f64' if f64 else 'f32'}",
        "dtype": "float64" if f64 else "float32",
        "model": problem.specs,
        "loss": problem.loss,
        "x": tensor_json(problem.x),
        "y": y,
        "loss_value": problem.loss_value().item(),
        "params": [
            {"name": name, **tensor_json(p)}
            for name, p in problem.model.named_parameters()
        ],
        "runs": runs,
    }


def write_fixture(fixture: Dict) -> None:
    path = FIXTURE_DIR / f"{fixture['name']}.json"
    with open(path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote tests/fixtures/{path.name} ({path.stat().st_size} bytes)")


def main() -> None:
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        for dtype in (torch.float64, torch.float32):
            problem = random_problem(name, dtype)
            runs = standard_runs(problem)
            write_fixture(make_fixture(problem, runs))
            if dtype == torch.float64:
                check_against_explicit_ggn(problem, runs)
    for loss in ("cross_entropy", "mse"):
        problem = golden_problem(loss)
        runs = standard_runs(problem) + golden_runs(problem)
        fixture = make_fixture(problem, runs)
        write_fixture(fixture)
        check_against_explicit_ggn(problem, runs)
        compare_golden(fixture)


if __name__ == "__main__":
    main()
