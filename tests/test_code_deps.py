"""dvc.yaml lists, as each stage's code deps, exactly the modules the stage runs.

A stage's code is its module under stages/ and the import closure of that module over the
pocketbert package: every ``import pocketbert.x``, ``from pocketbert import x`` and
``from pocketbert.x import y``, at module level or inside a function (the lazy imports), followed
through each imported module in turn. Imports under ``if TYPE_CHECKING:`` never run and are not
followed. A module missing from a stage's deps means editing it re-runs nothing, and committed
metrics can come from code that no longer exists; a module listed but not imported re-runs the
stage for nothing.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pocketbert": ROOT / "src" / "pocketbert", "stages": ROOT / "stages"}
DVC_STAGES: dict = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _module_file(package: str, name: str) -> Path | None:
    path = PACKAGES[package] / f"{name}.py"
    return path if path.is_file() else None


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path) -> set[Path]:
    """Files of the pocketbert and stages modules that the source file at ``path`` imports."""
    found: set[Path] = set()
    package_of_file = next((p for p, d in PACKAGES.items() if path.parent == d), None)
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[tuple[str, str | None]] = []  # (package, module name or None)
        if isinstance(node, ast.Import):
            for alias in node.names:
                package, _, rest = alias.name.partition(".")
                targets.append((package, rest.split(".")[0] or None))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                package, rest = package_of_file, node.module or ""
            else:
                package, _, rest = (node.module or "").partition(".")
            if rest:
                targets.append((package, rest.split(".")[0]))
            else:  # from package import a, b: each a module, or a name from __init__
                targets += [(package, alias.name) for alias in node.names]
        for package, name in targets:
            if package in PACKAGES and name and (file := _module_file(package, name)):
                found.add(file)
    return found


def import_closure(path: Path) -> set[Path]:
    """``path`` and every pocketbert/stages module it runs, directly or through another."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(imported_modules(current))
    return seen


def _body(definition: dict) -> dict:
    return definition.get("do", definition)  # foreach stages keep cmd and deps under 'do'


def _code_deps(body: dict) -> set[str]:
    return {d for d in body.get("deps", [])
            if isinstance(d, str) and d.endswith(".py")
            and (d.startswith("src/pocketbert/") or d.startswith("stages/"))}


@pytest.mark.parametrize("name", sorted(DVC_STAGES))
def test_stage_code_deps_are_its_import_closure(name):
    closure = {str(p.relative_to(ROOT)) for p in import_closure(ROOT / "stages" / f"{name}.py")}
    declared = _code_deps(_body(DVC_STAGES[name]))
    assert closure == declared, (
        f"dvc.yaml stage {name!r}: add to deps {sorted(closure - declared)}; "
        f"remove from deps (not imported) {sorted(declared - closure)}")


def test_package_init_files_run_no_code():
    # __init__.py files run on every import but are in no stage's deps: they may hold a
    # docstring and constants only, so that editing them cannot change a stage's output
    for init in (d / "__init__.py" for d in PACKAGES.values()):
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            constant = (isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign)
                        and isinstance(node.value, ast.Constant))
            assert constant, f"{init.relative_to(ROOT)} line {node.lineno} runs code"


def test_the_closure_follows_lazy_and_transitive_imports(tmp_path, monkeypatch):
    pkg, stages = tmp_path / "pocketbert", tmp_path / "stages"
    pkg.mkdir()
    stages.mkdir()
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        (pkg / f"{name}.py").write_text("", encoding="utf-8")
    (pkg / "a.py").write_text("from .b import thing\n", encoding="utf-8")  # relative
    (pkg / "b.py").write_text("import pocketbert.c as c\n", encoding="utf-8")
    (pkg / "e.py").write_text("from . import f\n", encoding="utf-8")
    (stages / "run.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from pocketbert import a, VERSION\n"            # a module and a name from __init__
        "if TYPE_CHECKING:\n    from pocketbert import g\n"  # never runs
        "def main():\n    from pocketbert.e import x\n"     # lazy, inside a function
        "    import numpy\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", {"pocketbert": pkg, "stages": stages})
    got = {p.relative_to(tmp_path).as_posix() for p in import_closure(stages / "run.py")}
    assert got == {"stages/run.py", "pocketbert/a.py", "pocketbert/b.py", "pocketbert/c.py",
                   "pocketbert/e.py", "pocketbert/f.py"}
