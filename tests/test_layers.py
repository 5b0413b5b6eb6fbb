"""The package's layering: imports go one way only, with no circle, and at module level.

Every module of `preprocessing/` and `oscar_jax/` belongs to one layer of `LAYERS`; a module
may import from its own layer and the layers before it, never from a later one. The failures
name the file, the line and the layers involved.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("preprocessing", "oscar_jax", "configs")

# In import order: a module may import its own layer and earlier ones. A prefix names a
# module and everything under it; the longest matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("configs", ("configs",)),
    ("images", ("preprocessing", "preprocessing.images")),
    ("image operations", ("preprocessing.transforms", "preprocessing.manipulations",
                          "preprocessing.detect", "preprocessing.layout",
                          "preprocessing.record_edits")),
    ("scene graphs", ("preprocessing.scene_graph",)),
    ("data sets", ("preprocessing.datasets",)),
    ("build", ("preprocessing.build",)),
    ("core", ("oscar_jax", "oscar_jax.models", "oscar_jax.hashing", "oscar_jax.losses",
              "oscar_jax.input_pipeline", "oscar_jax.workdir")),
    ("inference", ("oscar_jax.inference",)),
    ("attribution", ("oscar_jax.attribution",)),
    ("evaluation", ("oscar_jax.evaluation",)),
    ("trainer", ("oscar_jax.train",)),
    ("commands", ("oscar_jax.cli", "oscar_jax.hash", "oscar_jax.index", "oscar_jax.evaluate",
                  "oscar_jax.separation", "oscar_jax.attribute", "oscar_jax.explain",
                  "oscar_jax.serve")),
]


def project_modules() -> dict[str, str]:
    """Dotted module name -> file path, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int:
    """Index into LAYERS of the longest prefix that names `module`."""
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise KeyError(module)
    return rank


def imports(path: str, modules: dict[str, str]) -> list[tuple[int, str, bool]]:
    """(line, imported project module, at module level) for every project import of a file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import name` imports the submodule `package.name` if there is one.
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.append((node.lineno, name, id(node) in top_level))
    return found


MODULES = project_modules()
EDGES = {name: imports(path, MODULES) for name, path in MODULES.items()}


def where(module: str, line: int) -> str:
    return f"{os.path.relpath(MODULES[module], ROOT)}:{line}"


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"put these modules into a layer of LAYERS: {unplaced}"


def test_no_import_reaches_a_later_layer():
    upward = []
    for module, edges in EDGES.items():
        for line, target, _ in edges:
            if layer_of(target) > layer_of(module):
                upward.append(f"{where(module, line)}: {module} ({LAYERS[layer_of(module)][0]}) "
                              f"imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports from a later layer:\n" + "\n".join(upward)


def test_the_import_graph_has_no_circle():
    graph = {m: sorted({t for _, t, _ in edges if t != m}) for m, edges in EDGES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                circle = visit(target)
                if circle:
                    return circle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            assert circle is None, "import circle: " + " -> ".join(circle)


def test_project_imports_are_at_module_level():
    inside = [f"{where(module, line)}: imports {target} inside a function or block"
              for module, edges in EDGES.items() for line, target, top in edges if not top]
    assert not inside, "\n".join(inside)


@pytest.mark.parametrize("module", ["oscar_jax.hash", "oscar_jax.train"])
def test_library_code_never_imports_a_command_or_the_trainer(module):
    importers = [f"{where(m, line)}: {m}" for m, edges in EDGES.items()
                 for line, target, _ in edges if target == module
                 and LAYERS[layer_of(m)][0] != "commands"]
    assert not importers, f"{module} is imported by library code:\n" + "\n".join(importers)


def test_the_checks_see_a_planted_upward_import(tmp_path):
    """The parser finds an upward edge in a function body, with its line."""
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n\n\ndef f():\n    from oscar_jax.evaluation import metrics\n")
    edges = imports(str(planted), MODULES)
    assert edges == [(5, "oscar_jax.evaluation.metrics", False)]
    assert layer_of("oscar_jax.evaluation.metrics") > layer_of("oscar_jax.inference.codes")
