"""The folders show the architecture.

- The suites import the harness (cache_conformance's subpackages by role), never the tools around it (selftest,
  releases, report); the harness imports none of the tools either, and the root conftest.py loads no tool's plugin
  (the self-test's fault injection is loaded by the self-test's own runs).
- cache_conformance/ holds subpackages by role and, beside them, only the package face: each subpackage says its
  role in the first line of its docstring.
- No import cycles between the package's modules.
Each rule has its positive control on a stand-in tree.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "cache_conformance"
TOOLS = ("selftest", "releases", "report", "repro")
TOOL_MODULES = tuple(f"{PACKAGE}.{tool}" for tool in TOOLS)


def imported(path: Path) -> set[str]:
    """The modules a file imports, by full name (`from a import b` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def loaded_plugins(conftest: Path) -> list[str]:
    """The plugins a conftest.py loads by name (`pytest_plugins`)."""
    for node in ast.parse(conftest.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytest_plugins" for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]
    return []


def tool_imports(paths, root: Path = ROOT) -> list[str]:
    found = [f"{path.relative_to(root)} imports {name}" for path in paths for name in imported(path)
             if name.startswith(TOOL_MODULES)]
    found += [f"{path.relative_to(root)} loads {name}" for path in paths if path.name == "conftest.py"
              for name in loaded_plugins(path) if name.startswith(TOOL_MODULES)]
    return sorted(found)


def harness_files(root: Path = ROOT) -> list[Path]:
    return [path for path in (root / PACKAGE).rglob("*.py") if path.relative_to(root / PACKAGE).parts[0] not in TOOLS]


def layout_problems(root: Path = ROOT) -> list[str]:
    """What in cache_conformance/ is neither a subpackage with its role in its docstring nor the package face."""
    problems = []
    for entry in sorted((root / PACKAGE).iterdir()):
        if entry.name == "__pycache__" or entry.name == "__init__.py":
            continue
        if entry.is_file():
            problems.append(f"{entry.name}: a module beside the subpackages (put it in the subpackage of its role)")
        elif not (entry / "__init__.py").exists():
            problems.append(f"{entry.name}/: not a package")
        elif not (ast.get_docstring(ast.parse((entry / "__init__.py").read_text())) or "").strip():
            problems.append(f"{entry.name}/__init__.py: no docstring saying the subpackage's role")
    return problems


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Cycles in the graph of the package's modules importing each other (at any depth of the file: an import
    inside a function can still close a cycle at the time it runs)."""
    files = {module_name(path, root): path for path in (root / PACKAGE).rglob("*.py") if path.stem != "__main__"}
    graph = {name: sorted({target for target in imported(path) if target in files and target != name})
             for name, path in files.items()}
    cycles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in graph[name]:
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_the_suites_and_the_harness_import_no_tool():
    assert tool_imports([*(ROOT / "suites").glob("*.py"), *harness_files(), ROOT / "conftest.py"]) == []


def test_a_tool_import_in_a_suite_is_seen(tmp_path):
    """Positive control: the same check on a stand-in suite that imports the fault catalogue and a stand-in
    conftest.py that loads the fault injection (kept out of suites/, which other tests read at the same time)."""
    suite = tmp_path / "suites" / "test_stand_in.py"
    suite.parent.mkdir()
    suite.write_text("from cache_conformance.selftest import faults\n")
    conftest = tmp_path / "conftest.py"
    conftest.write_text('pytest_plugins = ["cache_conformance.plugin.hooks", "cache_conformance.selftest.injection"]\n')
    assert tool_imports([suite, conftest], tmp_path) == [
        "conftest.py loads cache_conformance.selftest.injection",
        "suites/test_stand_in.py imports cache_conformance.selftest",
        "suites/test_stand_in.py imports cache_conformance.selftest.faults",
    ]


def test_the_package_holds_subpackages_by_role_and_its_face():
    assert layout_problems() == []


def test_a_module_beside_the_subpackages_or_a_silent_subpackage_is_seen(tmp_path):
    """Positive control on a stand-in package: a stray module, a folder that is no package, a subpackage that does
    not say its role."""
    package = tmp_path / PACKAGE
    for folder, text in {"oracles": '"""What the right answer is."""\n', "probes": "", "notes": None}.items():
        (package / folder).mkdir(parents=True)
        if text is not None:
            (package / folder / "__init__.py").write_text(text)
    (package / "__init__.py").write_text('"""The face."""\n')
    (package / "strategies.py").write_text("")
    assert layout_problems(tmp_path) == [
        "notes/: not a package",
        "probes/__init__.py: no docstring saying the subpackage's role",
        "strategies.py: a module beside the subpackages (put it in the subpackage of its role)",
    ]


def test_no_import_cycles():
    assert import_cycles() == []


def test_an_import_cycle_is_seen(tmp_path):
    """Positive control: two stand-in modules that import each other, and one that imports the first."""
    package = tmp_path / PACKAGE / "grading"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "grades.py").write_text("from cache_conformance.grading import evidence\n")
    (package / "evidence.py").write_text("def later():\n    from cache_conformance.grading import grades\n")
    (package / "coverage.py").write_text("from cache_conformance.grading import grades\n")
    assert import_cycles(tmp_path) == [["cache_conformance.grading.grades", "cache_conformance.grading.evidence",
                                        "cache_conformance.grading.grades"]]


def shadowed_imports(paths, root: Path = ROOT) -> list[str]:
    """Functions that bind a name the file imports from the package (a module such as `drafts` or `generated`):
    inside them the module is out of reach, and a branch that uses it before the local is bound crashes."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text())
        imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith(PACKAGE) for alias in node.names}
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                bound = {node.id for node in ast.walk(function) if isinstance(node, ast.Name)
                         and isinstance(node.ctx, ast.Store)} | {node.arg for node in ast.walk(function)
                                                                  if isinstance(node, ast.arg)}
                found += [f"{path.relative_to(root)}:{function.lineno} {function.name} binds {name}"
                          for name in sorted(bound & imported)]
    return found


def test_no_function_binds_a_name_imported_from_the_package():
    files = [*(ROOT / "suites").glob("*.py"), *(ROOT / PACKAGE).rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    assert shadowed_imports(files) == []


def test_a_local_that_shadows_an_imported_module_is_seen(tmp_path):
    """Positive control: the shape of a bug the layout change met (a drawn count named like the drafts module)."""
    suite = tmp_path / "test_stand_in.py"
    suite.write_text("from cache_conformance.inputs import drafts\n\n\ndef test_it(drawn):\n    if drawn:\n"
                     "        drafts = 3\n    return drafts.repeating_prompt\n")
    assert shadowed_imports([suite], tmp_path) == ["test_stand_in.py:4 test_it binds drafts"]


REPORT_ENVIRONMENT_LACKS = ("pytest", "torch", "transformers", "hypothesis", "accelerate")  # tox -e report: jinja2, packaging


def imports_without(modules: list[str], missing=REPORT_ENVIRONMENT_LACKS) -> subprocess.CompletedProcess:
    """Import `modules` in a fresh interpreter where `missing` cannot be imported (as in the report's environment)."""
    code = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in missing) + \
           "".join(f"import {module}\n" for module in modules)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)


def test_the_report_and_the_results_reader_need_only_the_report_environment():
    """`tox -e report` installs jinja2 and packaging: the report, and the results reader it uses, import nothing else."""
    completed = imports_without(["cache_conformance.report", "cache_conformance.report.page",
                                 "cache_conformance.records.results", "cache_conformance.records.registry"])
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_a_report_import_of_pytest_is_seen():
    """Positive control: the results recorder (a pytest plugin) does not import there."""
    completed = imports_without(["cache_conformance.plugin.recorder"])
    assert completed.returncode != 0 and "import of pytest halted" in completed.stderr
