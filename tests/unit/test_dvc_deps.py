"""Each stage of the pipeline depends on exactly the project code it runs, so `dvc repro` reruns exactly the stale stages.

A stage's command is `loramerge <command> …`, and its code is `loramerge/stages/<command>.py` plus every project
module that module imports, transitively (function-local imports and the package `__init__`s that an import runs
included). Merge methods are found by name at run time (`get_method` imports every module of
`loramerge/merging`), so a module that calls the registry needs the whole folder. `loramerge/cli.py` parses
arguments, validates params.yaml and dispatches: it changes no output, so it is no stage's dependency (adding a
command reruns nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from loramerge.lockfile import pipeline_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "loramerge"
REGISTRY_CALLS = {"get_method", "available_methods"}


def module_path(name: str) -> Path | None:
    """The file of a dotted project module name, or None for a name that is not a module (a function, a class)."""
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def package_inits(name: str) -> list[Path]:
    """The `__init__.py` files that importing `name` runs: one per enclosing package."""
    parts = name.split(".")
    return [p for i in range(1, len(parts)) if (p := ROOT / Path(*parts[:i]) / "__init__.py").exists()]


def imported_names(path: Path) -> set[str]:
    """Every project module name a file imports anywhere (relative imports resolved), plus `pkg.member` forms."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = (
                ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level else node.module
            )
            module = (module or "").strip(".")
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == PACKAGE}


def calls_registry(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    called = {getattr(n.func, "id", getattr(n.func, "attr", None)) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return bool(called & REGISTRY_CALLS)


def import_closure(root: Path) -> set[Path]:
    """Every project file that running `root` executes."""
    seen: set[Path] = set()
    todo = [root]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            found = module_path(name)
            todo.extend([found] if found else [])
            todo.extend(package_inits(name))
        if calls_registry(path):
            todo.extend((ROOT / PACKAGE / "merging").glob("*.py"))
    return seen


def declared_code(deps: list[str]) -> set[Path]:
    """The project .py files a stage's deps cover (a folder dep covers every file in it)."""
    covered: set[Path] = set()
    for dep in deps:
        path = ROOT / dep
        if dep.startswith(f"{PACKAGE}/") and path.is_dir():
            covered.update(path.rglob("*.py"))
        elif dep.startswith(f"{PACKAGE}/"):
            covered.add(path)
    return covered


def is_trivial(path: Path) -> bool:
    """A package `__init__` holding only its docstring: it can change no output."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return path.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body
    )


def stage_groups() -> dict[str, dict]:
    """Every stage group of the pipeline (the root dvc.yaml's and each `pipelines/<group>/dvc.yaml`'s), by name."""
    groups = {}
    for file in pipeline_files(ROOT):
        stages = yaml.safe_load(file.read_text(encoding="utf-8")).get("stages") or {}
        groups.update({name: stage.get("do", stage) for name, stage in stages.items()})
    return groups


@pytest.mark.parametrize("stage", sorted(stage_groups()))
def test_a_stages_code_deps_are_exactly_the_project_modules_its_command_runs(stage):
    body = stage_groups()[stage]
    command = body["cmd"].split()
    assert command[0] == PACKAGE, f"{stage}: the command should be `loramerge <stage command> …`"
    entry = ROOT / PACKAGE / "stages" / f"{command[1]}.py"
    assert entry.exists(), f"{stage}: `loramerge {command[1]}` has no stage module at {entry.relative_to(ROOT)}"
    needed = {p for p in import_closure(entry) if not is_trivial(p)}
    declared = {p for p in declared_code(body.get("deps", [])) if not is_trivial(p)}
    relative = lambda paths: sorted(str(p.relative_to(ROOT)) for p in paths)  # noqa: E731
    assert relative(needed - declared) == [], f"{stage}: imported but not in deps (stale results)"
    assert relative(declared - needed) == [], f"{stage}: in deps but not imported (needless reruns)"


def test_the_closure_follows_function_local_imports_package_inits_and_the_method_registry(tmp_path):
    merge = import_closure(ROOT / PACKAGE / "stages" / "merge.py")
    assert ROOT / PACKAGE / "merging" / "ties.py" in merge, "merge finds methods through the registry"
    assert ROOT / PACKAGE / "merging" / "__init__.py" in merge, "importing loramerge.merging.x runs the package init"
    prepare = import_closure(ROOT / PACKAGE / "stages" / "prepare.py")
    assert ROOT / PACKAGE / "merging" / "ties.py" not in prepare


def test_each_stage_group_has_its_own_folder_and_lock_and_runs_at_the_project_root():
    """A group's lock holds only its stages (DVC rewrites a stage's whole lock after it runs), while every path in it
    stays relative to the root, as in the lock entries and the error messages."""
    for file in pipeline_files(ROOT)[1:]:
        pipeline = yaml.safe_load(file.read_text(encoding="utf-8"))
        assert list(pipeline["stages"]) == [file.parent.name], f"{file}: one stage group, named as its folder"
        assert pipeline["vars"] == ["../../params.yaml"], f"{file}: the project's params.yaml"
        body = next(iter(pipeline["stages"].values()))
        assert body.get("do", body)["wdir"] == "../..", f"{file}: runs at the project root"


def test_dvc_repro_at_the_root_reaches_every_stage_and_each_stage_is_found_by_the_address_errors_give():
    """The root dvc.yaml holds the report, which depends on every stage group: plain `dvc repro` runs the whole DAG.
    An error naming a stage to rerun gives `paths.dvc_target`, which DVC must resolve from the root."""
    import networkx as nx
    from dvc.repo import Repo

    from loramerge.paths import dvc_target

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph
        (report,) = [stage for stage in graph if stage.name == "report"]
        upstream = nx.descendants(graph, report)  # DVC's edges point from a stage to the stages it depends on
        assert {s.addressing for s in graph} - {s.addressing for s in upstream | {report}} == set()
        for stage in graph:
            assert repo.stage.collect(dvc_target(stage.name)) == [stage], stage.addressing
