"""The folders show the architecture: the suites import the harness (cache_conformance and its adapter), never the
tools around it (selftest, releases, report), and the harness imports none of the tools either."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("cache_conformance.selftest", "cache_conformance.releases", "cache_conformance.report")


def imported(path: Path) -> set[str]:
    """The modules a file imports, by full name (`from a import b` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def tool_imports(paths, root: Path = ROOT) -> list[str]:
    return sorted(f"{path.relative_to(root)} imports {name}" for path in paths for name in imported(path)
                  if name.startswith(TOOLS))


def harness_files() -> list[Path]:
    package = ROOT / "cache_conformance"
    return [*package.glob("*.py"), *(package / "adapter").glob("*.py")]


def test_the_suites_and_the_harness_import_no_tool():
    assert tool_imports([*(ROOT / "suites").glob("*.py"), *harness_files()]) == []


def test_a_tool_import_in_a_suite_is_seen(tmp_path):
    """Positive control: the same check on a stand-in suite that imports the fault catalogue (kept out of suites/,
    which other tests read at the same time)."""
    suite = tmp_path / "suites" / "test_stand_in.py"
    suite.parent.mkdir()
    suite.write_text("from cache_conformance.selftest import faults\n")
    assert tool_imports([suite], tmp_path) == [
        "suites/test_stand_in.py imports cache_conformance.selftest",
        "suites/test_stand_in.py imports cache_conformance.selftest.faults",
    ]
