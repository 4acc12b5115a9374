"""No tensor is made on the default device where the data's device was meant.

DESIGN.md: every random tensor, permutation and generator is created on the data's device.
A ``torch.randn(...)`` or ``torch.Generator()`` without ``device=`` lands on the CPU, and
fails (or silently moves data) when the data is on CUDA: the smoothing chapter did exactly
that. The scan reads the package and every chapter's code (``ast``, not text) and lists each
such call; the legitimate ones are allowed below, each with its reason.
"""

import ast
import json
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
RANDOM = {"randn", "rand", "randint", "randperm", "Generator", "normal", "bernoulli", "multinomial",
          "randn_like", "rand_like", "randint_like"}
CREATION = {"zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye", "tensor"}
LIKE = {"randn_like", "rand_like", "randint_like"}  # these follow their argument's device


def _calls(source: str):
    """(function, name, has_device) for each torch.<RANDOM or CREATION>(...) call in ``source``."""
    tree = ast.parse(source)
    enclosing = {}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(function):
                enclosing.setdefault(inner, function.name) if inner is not function else None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and node.func.attr in RANDOM | CREATION and node.func.attr not in LIKE):
            has_device = any(k.arg in ("device", None) for k in node.keywords)  # None: **options
            if node.func.attr == "Generator" and node.args:
                has_device = True  # torch.Generator(device) positionally
            yield enclosing.get(node, "<top>"), node.func.attr, has_device


def _sources():
    for path in sorted((REPOSITORY / "sgdlab").glob("*.py")):
        yield path.relative_to(REPOSITORY).as_posix(), path.read_text()
    for path in sorted((REPOSITORY / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                lines = [l for l in "".join(cell["source"]).splitlines() if not l.lstrip().startswith(("%", "!"))]
                yield f"{path.relative_to(REPOSITORY).as_posix()} cell {i}", "\n".join(lines)


def deviceless_calls() -> set[str]:
    """``"<file or notebook cell> <function>: torch.<name>"`` for each call without a device."""
    return {f"{where} {function}: torch.{name}" for where, source in _sources()
            for function, name, has_device in _calls(source) if not has_device}


TOY = "the 1-D and 2-D toy losses (sgdlab.toy) run on the CPU in float64 by design, whatever the data's device"
ALLOWED = {
    # draws made on the CPU on purpose, then moved: the same vectors and batches on every device
    "sgdlab/lanczos.py lanczos: torch.Generator": "Lanczos start vector drawn on the CPU, moved: device-independent",
    "sgdlab/lanczos.py lanczos: torch.randn": "the same; .to(device) follows",
    "sgdlab/hessian.py alignment: torch.Generator": "batches drawn on the CPU, moved: the same batches on every device",
    "sgdlab/hessian.py alignment: torch.randperm": "the same; .to(x.device) follows",
    "sgdlab/lanczos.py lanczos: torch.zeros": "Lanczos' small tridiagonal matrix lives on the CPU",
    "sgdlab/hessian.py alignment: torch.tensor": "results are returned on the CPU",
    "sgdlab/walk.py state_dict: torch.tensor": "checkpoints are saved from the CPU",
    # permutations are small index tensors, kept on the CPU (apply_permutation indexes with them)
    "sgdlab/permutation.py identity_permutation: torch.arange": "index tensors on the CPU",
    "sgdlab/permutation.py random_permutation: torch.Generator": "index tensors on the CPU",
    "sgdlab/permutation.py random_permutation: torch.randperm": "index tensors on the CPU",
    "sgdlab/permutation.py check_permutation: torch.arange": "compared with pi.cpu()",
    "sgdlab/toy.py run_sgd: torch.Generator": TOY, "sgdlab/toy.py run_sgd: torch.randn": TOY,
    "sgdlab/toy.py run_sgd: torch.empty": TOY, "sgdlab/toy.py _per_start: torch.full": TOY,
    "sgdlab/toy.py smoothed: torch.arange": TOY, "sgdlab/toy.py sweep_rates: torch.tensor": TOY,
    "book/trajectory.ipynb cell 20 <top>: torch.tensor": "a planted permutation: index tensors on the CPU",
    "book/trajectory.ipynb cell 20 <top>: torch.arange": "the same",
    "book/sgd_vs_gd.ipynb cell 40 <top>: torch.arange": "row indices of the gradient matrix: CPU indices index a CUDA tensor",
    "book/sgd_vs_gd.ipynb cell 42 <top>: torch.arange": "the same",
}
TOY_CELLS = {"book/nonconvexity.ipynb cell 4", "book/nonconvexity.ipynb cell 13", "book/sgd_vs_gd.ipynb cell 11",
             "book/sgd_vs_gd.ipynb cell 21", "book/smoothing.ipynb cell 4", "book/smoothing.ipynb cell 7",
             "book/smoothing.ipynb cell 13", "book/smoothing.ipynb cell 16",
             "book/smoothing.ipynb cell 28"}


def _allowed(call: str) -> bool:
    return call in ALLOWED or " ".join(call.split(" ")[:3]) in TOY_CELLS


def test_every_random_draw_and_tensor_takes_the_data_device_or_is_allowed_with_a_reason():
    unexplained = sorted(c for c in deviceless_calls() if not _allowed(c))
    assert not unexplained, ("made on the default device where the data's device was meant "
                             "(pass device=, or allow it in tests/test_devices.py with a reason):\n" + "\n".join(unexplained))


def test_the_allow_list_holds_no_stale_entries():
    calls = deviceless_calls()
    assert not sorted(set(ALLOWED) - calls)
    assert not sorted(cell for cell in TOY_CELLS if not any(c.startswith(cell + " ") for c in calls))


def test_the_scan_sees_a_cpu_generator_like_the_one_smoothing_had():
    calls = list(_calls("g = torch.Generator().manual_seed(0)\nu = torch.randn(3, generator=g)\n"
                        "v = torch.randn(3, generator=g, device=x.device)"))
    assert sorted(calls) == [("<top>", "Generator", False), ("<top>", "randn", False), ("<top>", "randn", True)]


if __name__ == "__main__":
    print("\n".join(sorted(deviceless_calls())))
