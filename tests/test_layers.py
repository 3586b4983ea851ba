"""The package's house (README "Package layout"): which module may import which, read from the source.

The rules: the diffusion process knows nothing about networks, data or pipelines; models and pipelines never
import the ShapesWorld renderer (a data source); the checkpoint store never imports the evaluators or the
measures; nothing imports the CLI; checks.py is the bottom layer. Imports sit at the top of modules; a lazy
import inside a function says why on its line or the line above.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "glide_minimal"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The glide_minimal modules an ImportFrom names (`from .x import y` may import module x.y)."""
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported glide_minimal module, line, inside a function) for every import in the file."""
    tree, module = ast.parse(path.read_text()), module_name(path)
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = resolve(module, node, path.name == "__init__.py")
        else:
            continue
        found += [(n, node.lineno, id(node) in inside) for n in names if n.startswith("glide_minimal")]
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {n for n, _, _ in imports(p) if n in modules} for m, p in modules.items()}


def test_the_graph_is_read_from_real_imports():
    g = graph()
    assert "glide_minimal.diffusion.gaussian" in g["glide_minimal.diffusion.sampling"]
    assert "glide_minimal.pretrained" in g["glide_minimal.pipelines.loading"]


FORBIDDEN = [  # (importer prefix, imported prefix, why)
    ("glide_minimal.models", "glide_minimal.shapesworld", "models must not know the ShapesWorld renderer"),
    ("glide_minimal.pipelines", "glide_minimal.shapesworld", "pipelines must not know the ShapesWorld renderer"),
    ("glide_minimal.pretrained", "glide_minimal.metrics", "the store must not build evaluators or measures"),
    ("glide_minimal.pretrained", "glide_minimal.evaluators", "the store must not build evaluators"),
    ("glide_minimal.diffusion", "glide_minimal.models", "the diffusion process knows nothing about networks"),
    ("glide_minimal.diffusion", "glide_minimal.pipelines", "the diffusion process knows nothing about pipelines"),
    ("glide_minimal.diffusion", "glide_minimal.shapesworld", "the diffusion process knows nothing about data"),
    ("glide_minimal.checks", "glide_minimal", "checks.py is the bottom layer"),
    ("glide_minimal", "glide_minimal.cli", "nothing imports the CLI"),
]


@pytest.mark.parametrize("importer, imported, why", FORBIDDEN)
def test_no_arrow_against_the_layering(importer, imported, why):
    bad = sorted(f"{m} -> {n}" for m, targets in graph().items() if m.startswith(importer) and m != imported
                 for n in targets if n.startswith(imported) and not (importer == imported == "glide_minimal")
                 and n != m and not (m == "glide_minimal.cli"))
    assert not bad, f"{why}: {bad}"


def test_lazy_imports_say_why():
    unexplained = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(f):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                    if "#" not in here and not above.strip().startswith("#"):
                        unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {here.strip()}")
    assert not unexplained, "imports inside functions without a comment saying why:\n" + "\n".join(unexplained)
