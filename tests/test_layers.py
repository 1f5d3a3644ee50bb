"""The package's architecture, checked: every import runs down the layers below (or within its
own package), and no modules import each other in a circle."""
import ast
from pathlib import Path
from typing import Dict, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "colorize"

# From the bottom up; a module may import from its own layer (without circles) and those below.
LAYERS = [
    ("colorize", "colorize.errors", "colorize.io"),
    ("colorize.core", "colorize.registry", "colorize.settings", "colorize.run_dir"),
    ("colorize.models",),
    ("colorize.data",),
    ("colorize.losses", "colorize.optim"),
    ("colorize.config",),
    ("colorize.show",),
    ("colorize.engine",),
    ("colorize.commands", "colorize.bench"),
    ("colorize.cli", "colorize.__main__"),
]


def layer(module: str) -> int:
    """The layer of ``module``: that of the longest prefix named in LAYERS."""
    owners = [(len(name), index) for index, names in enumerate(LAYERS) for name in names
              if module == name or module.startswith(name + ".")]
    if not owners:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to one")
    return max(owners)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Set[str]:
    """The colorize modules ``path`` imports, anywhere in it (the package root's own imports are
    lazy, on first use of ``colorize.load_model``, and do not count)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if path == PACKAGE / "__init__.py" else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("colorize"):
            found |= {f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}") else node.module
                      for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("colorize")}
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


GRAPH: Dict[str, Set[str]] = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_down_the_layers(module):
    upward = sorted(name for name in GRAPH[module] if layer(name) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from a layer above it: {upward}"


def test_no_modules_import_each_other_in_a_circle():
    def visit(module, trail):
        if module in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(module):] + [module]))
        for name in sorted(GRAPH.get(module, ())):
            if name != module and not module.startswith(name + "."):  # a module's own package is its parent
                visit(name, trail + [module])

    for module in GRAPH:
        visit(module, [])


def test_the_layer_check_sees_an_upward_import():
    assert layer("colorize.models.fusion") < layer("colorize.engine.trainer")
    assert "colorize.models.saved" in GRAPH["colorize.engine.trainer"]
