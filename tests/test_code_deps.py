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


def _module_file(dotted: str) -> Path | None:
    """The file of module ``dotted`` (e.g. pocketbert.core.params) under PACKAGES, if any; a
    package's __init__.py counts as no file (it holds no code: see the test below)."""
    package, *rest = dotted.split(".")
    if package not in PACKAGES or not rest:
        return None
    path = PACKAGES[package].joinpath(*rest[:-1]) / f"{rest[-1]}.py"
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


def _dotted_package(path: Path) -> str | None:
    """pocketbert.core for src/pocketbert/core/params.py; None outside PACKAGES."""
    for name, root in PACKAGES.items():
        if path.is_relative_to(root):
            return ".".join([name, *path.parent.relative_to(root).parts])
    return None


def imported_modules(path: Path) -> set[Path]:
    """Files of the pocketbert and stages modules that the source file at ``path`` imports."""
    found: set[Path] = set()
    here = _dotted_package(path)
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []  # dotted module names, or module.name where name is not a module
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..x import y
                base = (here or "").split(".")[:len((here or "").split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.append(module)  # from a.b import y: a.b is a module, or y is
            names += [f"{module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            # import a.b.c runs a.b and a.b.c: every prefix that is a module file
            found |= {f for k in range(2, len(parts) + 1)
                      if (f := _module_file(".".join(parts[:k])))}
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
    for init in (i for d in PACKAGES.values() for i in d.rglob("__init__.py")):
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            constant = (isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign)
                        and isinstance(node.value, ast.Constant))
            assert constant, f"{init.relative_to(ROOT)} line {node.lineno} runs code"


def test_the_closure_follows_lazy_and_transitive_imports(tmp_path, monkeypatch):
    pkg, stages = tmp_path / "pocketbert", tmp_path / "stages"
    pkg.mkdir()
    stages.mkdir()
    (pkg / "sub").mkdir()
    for name in ("a", "b", "c", "d", "e", "f", "g", "sub/h", "sub/i"):
        (pkg / f"{name}.py").write_text("", encoding="utf-8")
    (pkg / "c.py").write_text("from pocketbert.sub import h\n", encoding="utf-8")
    (pkg / "sub/h.py").write_text("from ..sub.i import thing\n", encoding="utf-8")
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
                   "pocketbert/e.py", "pocketbert/f.py", "pocketbert/sub/h.py",
                   "pocketbert/sub/i.py"}


# the library's layers, bottom first: a module imports its own layer's and lower layers' modules
LAYERS = ("core", "data", "runtime", "training", "teachers", "export", "benchmarks", "apps")


def test_library_imports_point_down_the_layers():
    library = PACKAGES["pocketbert"]
    assert sorted(d.name for d in library.iterdir() if (d / "__init__.py").is_file()) == \
        sorted(LAYERS), "a new subpackage needs its place in LAYERS (and in docs/design.md)"
    assert not [p.name for p in library.glob("*.py") if p.name != "__init__.py"], \
        "modules live in a layer's subpackage"
    upward = []
    for path in library.glob("*/*.py"):
        layer = LAYERS.index(path.relative_to(library).parts[0])
        for target in imported_modules(path):
            other = target.relative_to(library).parts[0]
            if LAYERS.index(other) > layer:
                upward.append(f"{path.relative_to(ROOT)} imports {target.relative_to(ROOT)}")
    assert not upward, "imports up the layers:\n" + "\n".join(sorted(upward))


def test_tests_mirror_the_layout():
    tests = ROOT / "tests"
    folders = sorted(d.name for d in tests.iterdir() if d.is_dir() and d.name != "__pycache__")
    assert set(folders) <= {*LAYERS, "stages", "runs"}, \
        "tests/ holds folders named after a layer, stages/ or runs/"
    assert sorted(p.name for p in tests.glob("test_*.py")) == ["test_code_deps.py",
                                                               "test_docs.py"], \
        "only project-wide tests sit at the top of tests/: put a test beside its layer's peers"
    assert not list(tests.glob("*/*/test_*.py")), "one level of folders, as in src/pocketbert/"


def test_core_imports_no_torch():
    # the bottom layer loads without the training stack: params, contract and artifacts are
    # read by the apps and the drivers too
    for path in (PACKAGES["pocketbert"] / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        heavy = {a.name.split(".")[0] for n in _runtime_nodes(tree)
                 if isinstance(n, ast.Import) for a in n.names} | {
            (n.module or "").split(".")[0] for n in _runtime_nodes(tree)
            if isinstance(n, ast.ImportFrom) and not n.level}
        assert not heavy & {"torch", "transformers", "onnxruntime", "coremltools"}, path


def _declared_file_names() -> dict[str, str]:
    """Artifact file name -> the module that declares it (the one place it may be written)."""
    from pocketbert.core import contract, model_folders
    from pocketbert.data import soft_labels

    names = {}
    for module in (contract, soft_labels, model_folders):
        for key, value in vars(module).items():
            if key.endswith("_FILE") and isinstance(value, str):
                names[value] = module.__file__
    return names


def _string_constants(tree: ast.AST):
    """(line, value) of every string constant that is not a docstring."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.lineno, node.value


def test_artifact_file_names_are_written_only_where_declared():
    # a file name spelled out twice can drift: a writer and a reader then disagree
    declared = _declared_file_names()
    assert {"model.safetensors", "labels.json", "model.int8.onnx", "meta.json",
            "endpoint.json"} <= set(declared)
    found = []
    for path in [*PACKAGES["pocketbert"].rglob("*.py"), *PACKAGES["stages"].glob("*.py")]:
        for line, value in _string_constants(ast.parse(path.read_text(encoding="utf-8"))):
            owner = declared.get(value)
            if owner is not None and Path(owner).resolve() != path.resolve():
                found.append(f"{path.relative_to(ROOT)}:{line}: {value!r}")
    assert not found, "use the declaring module's constant:\n" + "\n".join(found)


@pytest.mark.parametrize("name", sorted(DVC_STAGES))
def test_every_input_path_of_a_stage_is_one_of_its_deps(name):
    # a path the cmd passes to one of the stage's INPUTS but missing from deps: a change to that
    # input would re-run nothing, and the stage's metrics would describe the old input
    import importlib
    import shlex

    body = _body(DVC_STAGES[name])
    argv = shlex.split(body["cmd"])
    module = importlib.import_module(f"stages.{name}")
    deps = [Path(d) for d in body.get("deps", []) if isinstance(d, str)]
    missing = []
    for field in module.INPUTS:
        path = Path(argv[argv.index(f"--{field.replace('_', '-')}") + 1])
        # the path itself, a folder above it, or (a folder read in part) files inside it
        if not any(path == d or d in path.parents or path in d.parents for d in deps):
            missing.append(str(path))
    assert not missing, f"dvc.yaml stage {name!r}: add to deps {missing}"
