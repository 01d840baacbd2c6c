"""The package's imports flow one way: model <- data <- inference <- train <- accel <- fitting <- lab/serve <- cli, with
no cycle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mtbert"
# Each part of the package and the parts it may import (besides itself and the leaves errors and config).
LAYERS = {
    "errors": set(),
    "outputs": {"errors"},
    "config": {"errors"},
    "task_file": {"errors"},
    "model": set(),
    "data": {"model"},
    "inference": {"model", "data"},
    "train": {"model", "data", "inference"},
    "accel": {"model", "data", "inference", "train"},
    "fitting": {"train", "accel"},
    "lab": {"model", "data", "inference", "train", "fitting"},
    "serve": {"model", "data", "inference", "accel"},
    "cli": {"model", "data", "inference", "train", "fitting", "lab", "serve"},
    "__main__": {"cli"},
    "__init__": {"model", "fitting", "serve"},
}
LEAVES = {"errors", "config", "outputs", "task_file"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(path: Path, node: ast.ImportFrom) -> str | None:
    """The module an import names, a relative one (`from ..model import x`) resolved against the file's package."""
    if not node.level:
        return node.module
    package = module_name(path).split(".")
    package = package if path.name == "__init__.py" else package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path) -> set[str]:
    """The mtbert modules a file imports, at any depth of the file (function-level and relative imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        module = absolute(path, node) if isinstance(node, ast.ImportFrom) else None
        if module is not None and module.startswith("mtbert"):
            for alias in node.names:  # `from mtbert.train import distributed` imports a module
                sub = f"{module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file()
                found.add(sub if is_module else module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mtbert")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def part(module: str) -> str:
    """mtbert.train.loop -> train; mtbert.cli -> cli; mtbert -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_is_known() -> None:
    assert {part(m) for m in graph()} <= set(LAYERS)


def test_imports_flow_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if part(target) != part(module) and part(target) not in LAYERS[part(module)] | LEAVES
    ]
    assert not wrong, "\n".join(wrong)


def test_model_data_and_train_never_import_accel() -> None:
    assert not [
        m
        for m, targets in graph().items()
        if part(m) in ("model", "data", "train") and any(part(t) == "accel" for t in targets)
    ]


def test_the_encoder_imports_only_torch() -> None:
    assert imports(PACKAGE / "model" / "encoder.py") == set()


def test_no_import_cycle() -> None:
    edges = graph()
    edges = {m: {t for t in targets if t in edges} for m, targets in edges.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        for target in sorted(edges[module]):
            visit(target, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_the_checks_catch_a_wrong_way_import(tmp_path: Path) -> None:
    """The walker sees function-level imports (as a hidden cycle would use)."""
    file = tmp_path / "x.py"
    file.write_text("def f():\n    from mtbert.accel.passes import ShapedPasses\n")
    assert imports(file) == {"mtbert.accel.passes"}


def test_only_train_is_imported_from_the_loop_module() -> None:
    """The loop file holds the loop: setup, records and checkpoints are imported from their own modules, and callers
    train through mtbert.fit (the loop's `train` alone is for the seam's own tests)."""
    root = PACKAGE.parents[1]
    wrong = []
    for path in [*root.glob("src/**/*.py"), *root.glob("tests/*.py"), *root.glob("benchmarks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "mtbert.train.loop":
                wrong += [f"{path.name}: {a.name}" for a in node.names if a.name != "train"]
    assert not wrong, wrong
    callers = [p.name for p in root.glob("src/**/*.py") if "from mtbert.train.loop import" in p.read_text()]
    assert callers == ["fitting.py"]


def test_relative_imports_are_seen() -> None:
    """A relative import counts as the absolute one it means (a layering breach cannot hide behind dots)."""
    node = ast.parse("from ..model import tasks\nfrom . import step").body
    train_file = PACKAGE / "train" / "loop.py"
    assert absolute(train_file, node[0]) == "mtbert.model" and absolute(train_file, node[1]) == "mtbert.train"
