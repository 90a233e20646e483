"""The package's shape (docs/design.md §12): no import cycle between hf_dimml's modules (imports inside functions
included), the self-contained remote-code files import nothing of hf_dimml but each other, and the trainer decides
nothing by a method's name."""

from __future__ import annotations

import ast
from pathlib import Path

from hf_dimml.methods import METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "hf_dimml"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """hf_dimml modules that `path` imports at run time (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    type_checking = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and getattr(node.test, "id", "") == "TYPE_CHECKING" for sub in ast.walk(node)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.update(name for name in [target, *(f"{target}.{alias.name}" for alias in node.names)]
                         if name.startswith("hf_dimml"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("hf_dimml"))
    return found


def test_no_import_cycle_between_the_package_modules():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {target for target in imports(path) if target in modules and target != name}
             for name, path in modules.items()}
    # A cycle through a package's own __init__ (a submodule importing its package's re-exports) counts too.
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in graph[name]:
            assert state.get(target) != 1, " -> ".join([*stack, name, target])
            if target not in state:
                visit(target, [*stack, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_remote_code_files_are_self_contained():
    for name in ("configuration_dimml", "modeling_dimml", "processing_dimml", "pipeline_dimml"):
        targets = imports(PACKAGE / f"{name}.py")
        assert targets <= {"hf_dimml.configuration_dimml", "hf_dimml.configuration_dimml.DIMMLConfig"}, (name, targets)


def test_the_trainer_names_no_method():
    tree = ast.parse((PACKAGE / "trainer.py").read_text())
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not literals & set(METHODS)
