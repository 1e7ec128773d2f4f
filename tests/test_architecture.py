"""The package's shape, as README "Architecture" states it: layers, no import cycle, small modules,
and local commands that never load Spark."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.oracles import ROOT

PACKAGE = ROOT / "bams3_spark"

#: Layers, lowest first; a module may import its own package and lower layers only.
LAYERS: list[set[str]] = [
    {"exceptions", "arrays"},
    {"format", "parallel"},
    {"io"},
    {"bam"},
    {"dataset"},
    {"convert", "query", "coverage", "genotype"},
    {"api", "spark"},
    {"cli"},
    {"demo", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, at module level or inside functions (as modules)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t.startswith("bams3_spark") and t != name:
                found.add(t)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer() -> None:
    tops = {_top(m) for m in _modules()} - {""}
    assert tops <= set(RANK), f"modules without a layer: {sorted(tops - set(RANK))}"


def test_layers_import_only_below() -> None:
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        here = _top(name)
        if not here:
            continue  # the package root: __version__ and lazy conveniences
        for target in _imports(name, path, modules):
            there = _top(target)
            if not there or there == here:
                continue
            if RANK[there] >= RANK[here]:
                wrong.append(f"{name} -> {target}")
            elif here == "cli" and there == "spark":
                wrong.append(f"{name} -> {target} (local commands never load Spark)")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def _inside(module: str, package: str) -> bool:
    return module.startswith(package + ".")


def test_no_import_cycle() -> None:
    modules = _modules()
    # Edges to a package's __init__ re-exports are not dependencies of their own.
    edges = {
        m: {t for t in _imports(m, p, modules) if modules[t].name != "__init__.py" and not _inside(m, t)}
        for m, p in modules.items()
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle.extend([*stack[stack.index(nxt):], nxt])
                return True
            if nxt not in state and visit(nxt, stack):
                return True
        stack.pop()
        state[node] = 2
        return False

    for m in sorted(edges):
        if m not in state and visit(m, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_modules_are_small_and_say_their_job() -> None:
    for name, path in _modules().items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{name}: over {MAX_LINES} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.strip(), f"{name}: no docstring stating its job"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["convert", "--help"],
        ["query", "--help"],
        ["coverage", "--help"],
        ["info", "MISSING"],
        ["coverage", "MISSING", "-o", "x"],
    ],
)
def test_local_commands_never_import_pyspark(argv: list[str], tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from bams3_spark.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j'))\n"
        "print(loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def test_every_package_directory_is_a_regular_package() -> None:
    # setuptools' package discovery (pyproject's packages.find) skips a directory
    # without __init__.py: the wheel of `make dist` would lack its modules.
    missing = sorted(
        str(d.relative_to(ROOT)) for d in [PACKAGE, *PACKAGE.rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()
    )
    assert not missing, f"directories without __init__.py (left out of the wheel): {missing}"
