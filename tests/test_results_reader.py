"""One reader of results files (`results.read`), beside the writer: a bad file gives the same one line in every tool
that reads results files (the report, adopting a release, the release workflow's merge, the evidence replay)."""

import json
from pathlib import Path

import pytest

from cache_conformance.records import results
from cache_conformance.releases import adopt, replay, workflow
from cache_conformance.report import load_results

GOOD = {"format": 1, "run_info": {"transformers": "5.25.0"}, "summary": {}, "tests": []}
BAD = {
    "not-json": ("{", "not valid JSON"),
    "another-format": (json.dumps(GOOD | {"format": 2}), "not a results file of format 1"),
    "no-release": (json.dumps(GOOD | {"run_info": {}}), "run_info.transformers is missing or not a string"),
    "tests-not-a-list": (json.dumps(GOOD | {"tests": {}}), '"tests" is not a list'),
    "selftest-without-faults": (json.dumps({"format": 1, "kind": "selftest", "transformers": "5.25.0"}),
                                'a self-test results file needs "transformers" and a list of "faults"'),
}


def report_line(path: Path, capsys) -> str:
    runs, errors = load_results(path.parent)
    assert runs == []
    return "\n".join(errors) + "\n"


def adopt_line(path: Path, capsys) -> str:
    expectations_file = path.parent / "expectations.toml"
    expectations_file.write_text('adopted = "4.50.3"\n')
    assert adopt.main([str(path), "--expectations", str(expectations_file), "--dry-run"]) == 2
    return capsys.readouterr().err


def merge_line(path: Path, capsys) -> str:
    published = path.parent / "published"
    published.mkdir()
    assert workflow.main(["merge", "--published", str(published), "--new", str(path.parent),
                          "--into", str(path.parent / "merged")]) == 2
    return capsys.readouterr().err


def replay_line(path: Path, capsys) -> str:
    assert replay.main(["--evidence", str(path.parent)]) == 2
    return capsys.readouterr().err


TOOLS = {"report": report_line, "adopt": adopt_line, "release-workflow-merge": merge_line, "replay": replay_line}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("bad", BAD)
def test_a_bad_results_file_is_one_line_naming_it_in_every_tool(tmp_path, capsys, tool, bad):
    text, complaint = BAD[bad]
    folder = tmp_path / "results"
    folder.mkdir()
    path = folder / "transformers-5.25.0.json"
    path.write_text(text)
    line = TOOLS[tool](path, capsys)
    assert line.count("\n") == 1 and str(path) in line and complaint in line, line


@pytest.mark.parametrize("tool", ["adopt", "release-workflow-merge", "replay"])
def test_a_tool_that_needs_a_run_refuses_a_selftest_file_in_one_line(tmp_path, capsys, tool):
    """results.read_run: the tools that read runs of the suites say so of a (well-formed) self-test file."""
    folder = tmp_path / "results"
    folder.mkdir()
    path = folder / "transformers-5.25.0.json"
    path.write_text(json.dumps({"format": 1, "kind": "selftest", "transformers": "5.25.0", "faults": []}))
    line = TOOLS[tool](path, capsys)
    assert line.count("\n") == 1 and f"{path}: a self-test results file, not a run of the suites" in line, line


def test_the_reader_gives_back_a_good_file_and_a_selftest_file():
    """Control: the same reader accepts what the writers write (a run's file, the self-test's), so the failures
    above are the files' and not the reader's."""
    data = Path(__file__).parent / "data" / "report"
    assert results.read(data / "transformers-5.0.0.json")["run_info"]["transformers"] == "5.0.0"
    assert results.read(data / "selftest-transformers-5.0.0.json")["kind"] == "selftest"


def test_one_function_opens_results_files():
    """The tools and the harness read results files only through results.read (json.loads of a file's text appears
    nowhere else but the checkpoint's config (the harness's, a reproduction script's), a safetensors header, a user-call file, the package index answer and
    the published site's index)."""
    package = Path(results.__file__).resolve().parent.parent
    readers = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if "json.loads(" in path.read_text() or "json.load(" in path.read_text())
    assert readers == ["inputs/user_call.py", "oracles/snapshots.py", "plugin/checkpoint.py", "records/results.py",
                       "releases/publishing.py", "releases/selection.py", "repro/script.py"]
