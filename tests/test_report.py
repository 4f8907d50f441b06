"""The compatibility report and the matrix runner's results files, on hand-made results in tests/data/report:
4.50.3 (known upstream failures), 4.57.1 (fixed), 5.0.0 (a regression on eager attention and a growing static
cache), and a stand-in for `latest` that failed to install; a self-test file for 5.0.0."""

import json
import shutil
from pathlib import Path

import pytest

from cache_conformance.releases import matrix
from cache_conformance.report import changes, direction, load_results, main, page
from cache_conformance.report.changes import outcome

FIXTURES = Path(__file__).resolve().parent / "data" / "report"
EVICT = "suites/test_equivalence.py::test_prefill_then_decode_across_the_window[prompt-equal-to-window]"
MEMORY = "suites/test_memory.py::test_static_cache_memory_stays_flat"


@pytest.fixture(scope="module")
def runs():
    loaded, errors = load_results(FIXTURES)
    assert errors == []
    return {run.release: run for run in loaded}


def test_runs_are_in_release_order_with_the_stand_in_last_and_the_selftest_attached():
    loaded, _ = load_results(FIXTURES)
    assert [run.release for run in loaded] == ["4.50.3", "4.57.1", "5.0.0", "latest"]
    assert loaded[-1].crashed.startswith("exit code 1: py311-transformers-latest: failed with could not install")
    assert (loaded[2].selftest["detected"], loaded[2].selftest["total"]) == (1, 2)
    assert loaded[0].selftest is None


def test_changes_lists_every_flipped_check_and_target(runs):
    found = {(c.check, c.params["attn"], c.params["dtype"], c.old_outcome, c.new_outcome)
             for c in changes(runs["4.57.1"], runs["5.0.0"])}
    assert found == {
        (EVICT, "eager", "float32", "passed", "failed"),
        (EVICT, "eager", "bfloat16", "passed", "failed"),
        (MEMORY, "eager", "float32", "passed", "failed"),
        (MEMORY, "sdpa", "float32", "passed", "failed"),
        (MEMORY, "eager", "bfloat16", "passed", "failed"),
    }
    assert all(direction(c.old_outcome, c.new_outcome) == "newly failing" for c in changes(runs["4.57.1"], runs["5.0.0"]))


def test_fixed_upstream_problems_show_as_newly_passing(runs):
    flipped = changes(runs["4.50.3"], runs["4.57.1"])
    assert {direction(c.old_outcome, c.new_outcome) for c in flipped} == {"newly passing"}
    assert {c.check for c in flipped} == {
        EVICT, "suites/test_equivalence.py::test_chunked_prefill_and_multi_token_continuation[onto-a-full-window]"}


def test_a_crashed_release_changes_every_test_to_crashed(runs):
    flipped = changes(runs["5.0.0"], runs["latest"])
    assert len(flipped) == len(runs["5.0.0"].tests)
    assert {c.new_outcome for c in flipped} == {"crashed"}


@pytest.mark.parametrize("old, new, expected", [
    ("passed", "failed", "newly failing"),
    ("passed", "xfailed", "newly failing"),  # a known problem still means the property does not hold
    ("xfailed", "passed", "newly passing"),
    ("xfailed", "xpassed", "newly passing"),
    ("error", "passed", "newly passing"),
    ("skipped", "passed", "other"),
    ("passed", "not run", "other"),
    ("xfailed", "failed", "other"),
])
def test_direction(old, new, expected):
    assert direction(old, new) == expected


def test_a_strict_unexpected_pass_is_told_apart_from_a_failure():
    assert outcome({"outcome": "failed", "raw_outcome": "passed"}) == "xpassed"
    assert outcome({"outcome": "failed", "raw_outcome": "failed"}) == "failed"


def test_a_cell_shows_the_worst_outcome_and_how_many_targets_have_it(runs):
    columns = [page.column(n, run) for n, run in enumerate(runs.values())]
    regression = page.cell(columns[2], EVICT, page.ALL)
    assert (regression["outcome"], regression["count"]) == ("failed", "2/3")
    assert page.cell(columns[2], EVICT, "float32-cpu-sdpa")["outcome"] == "passed"
    assert page.cell(columns[3], EVICT, page.ALL)["outcome"] == "crashed"
    assert page.cell(columns[0], "suites/test_new.py::test_later", page.ALL)["outcome"] == "not run"


def test_what_changed_skips_a_crashed_release_when_comparing(runs):
    columns = [page.column(n, run) for n, run in enumerate(runs.values())]
    changed = {entry["col"]["release"]: entry for entry in page.what_changed(columns)}
    assert changed["latest"]["crashed"]
    regressions = changed["5.0.0"]["kinds"]["newly failing"]
    assert changed["5.0.0"]["previous"]["release"] == "4.57.1"
    assert {(c["check"], tuple(c["targets"])) for c in regressions} == {
        (EVICT, ("float32-cpu-eager", "bfloat16-cpu-eager")),
        (MEMORY, ("float32-cpu-eager", "float32-cpu-sdpa", "bfloat16-cpu-eager")),
    }


def test_drift_is_the_largest_snapshot_difference_per_release_and_dtype(runs):
    columns = [page.column(n, run) for n, run in enumerate(runs.values())]
    table = page.drift(columns)["table"]
    assert table == {"float32": [0.0, 1e-6, 2e-6, None], "bfloat16": [0.0, 0.01, 0.03, None]}


def test_page_escapes_upstream_messages_and_draws_series(tmp_path):
    assert main(["--results", str(FIXTURES), "--output", str(tmp_path)]) == 0
    html = (tmp_path / "index.html").read_text()
    assert "&lt;script&gt;alert(&#34;upstream&#34;)&lt;/script&gt; &amp; more" in html
    assert '<script>alert("upstream")' not in html
    assert html.count("<polyline") >= 2 * 3 * 2, "static and dynamic series, 3 targets of 2 releases at least"
    assert "1 KiB per step against detection threshold 512 B per step" in html
    assert (tmp_path / "assets" / "report.css").exists() and (tmp_path / "assets" / "report.js").exists()


def test_malformed_results_give_one_line_each_naming_the_file_and_the_rest_is_built(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    broken_entry = results / "transformers-5.0.0.json"
    data = json.loads(broken_entry.read_text())
    del data["tests"][0]["outcome"]
    broken_entry.write_text(json.dumps(data))
    (results / "transformers-5.1.0.json").write_text('{"format": 1, "run_info": {"transformers": "5.1.0"}, "tests": [')

    assert main(["--results", str(results), "--output", str(tmp_path / "site")]) == 1

    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0] == f"error: {results / 'transformers-5.0.0.json'}: tests[0] ({data['tests'][0]['id']}) left out: " \
                        "'outcome' is missing or not a str"
    assert errors[1].startswith(f"error: {results / 'transformers-5.1.0.json'}: not valid JSON")
    html = (tmp_path / "site" / "index.html").read_text()
    assert all(f">{release}" in html for release in ("4.50.3", "4.57.1", "5.0.0", "latest"))
    assert "transformers-5.1.0.json: not valid JSON" in html


def test_a_missing_results_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--results", str(tmp_path / "nowhere")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'} is not a folder of results files\n"


def test_the_runners_stand_in_is_read_as_a_crashed_release(tmp_path):
    matrix.write_stand_in(tmp_path, "5.1", "exit code 1: could not install deps", env="py311-transformers-5.1",
                          started="2026-11-22T15:00:00+00:00", command="tox run -e py311-transformers-5.1",
                          log=tmp_path / "5.1.log")
    loaded, errors = load_results(tmp_path)
    assert errors == []
    assert [(run.release, run.crashed) for run in loaded] == [("5.1", "exit code 1: could not install deps")]


def test_crash_reason_is_the_first_line_naming_an_error(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("$ tox run -e py311-transformers-4.50\ninstalling\n"
                   "  × No solution found when resolving dependencies\nERROR: could not install deps\n"
                   "  py311-transformers-4.50: FAIL code 1 (3.2 seconds)\n\n")
    assert matrix.crash_reason(log, 1) == "exit code 1: × No solution found when resolving dependencies"
    log.write_text("$ tox run -e py311-transformers-4.51\n\x1b[31mUsing Python 3.11.7 environment\n"
                   "error: No solution found when resolving dependencies\n"
                   "  cause: Because there is no version of torch==0.0.1 and you require torch==0.0.1, ...\n"
                   "\x1b[39mpy311-transformers-4.51: exit 1 (0.92 seconds)\n  py311-transformers-4.51: FAIL code 1\n")
    assert matrix.crash_reason(log, 1) == ("exit code 1: error: No solution found when resolving dependencies "
                                           "cause: Because there is no version of torch==0.0.1 and you require "
                                           "torch==0.0.1, ...")
    log.write_text("$ tox run -e py311-transformers-4.50\nsuites/test_equivalence.py ....\nSegmentation fault\n")
    assert matrix.crash_reason(log, -11) == "exit code -11: Segmentation fault"


def test_crash_reason_skips_the_commands_the_log_records(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("$ tox run -e py311-transformers-4.50 --notest --installpkg error.whl\n  OK\n"
                   "$ tox run -e py311-transformers-4.50 --skip-pkg-install -- --results-file=x\nKilled\n")
    assert matrix.crash_reason(log, -9) == "exit code -9: Killed"


def test_two_releases_that_install_one_version_run_once():
    claims = matrix.VersionClaims()
    assert claims.claim("5.24.0", "5.24") is None
    assert claims.claim("5.24.0", "latest") == "5.24"
    assert claims.claim("5.24.0", "5.24") is None  # the owner asking again
    assert claims.claim("5.23.0", "5.23") is None


def test_parallel_releases_split_the_cores():
    assert matrix.thread_settings(2, 2) == (["-n", "0"], {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert matrix.thread_settings(2, 8) == (["-n", "0"], {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"})
    assert matrix.thread_settings(1, 2) == ([], {})


def test_one_releases_files_from_different_devices_are_merged(tmp_path):
    cpu = json.loads((FIXTURES / "transformers-5.0.0.json").read_text())
    cuda = json.loads(json.dumps(cpu))
    cuda["tests"] = [t for t in cuda["tests"] if t["params"].get("device") == "cuda"]
    cuda["tests"][0]["outcome"] = cuda["tests"][0]["raw_outcome"] = "passed"  # ran on the GPU job
    (tmp_path / "transformers-5.0.0.json").write_text(json.dumps(cpu))
    (tmp_path / "transformers-5.0.0-cuda.json").write_text(json.dumps(cuda))
    loaded, errors = load_results(tmp_path)
    assert errors == [] and len(loaded) == 1
    merged = loaded[0].tests
    assert len(merged) == len(cpu["tests"])
    assert merged[(cuda["tests"][0]["check"], "float32-cuda-eager")]["outcome"] == "passed"


def test_a_selftest_file_from_cache_conformance_selftest_is_read(tmp_path):
    """What selftest.py writes: a crashed fault, a 16-bit run with its margin."""
    shutil.copy(FIXTURES / "transformers-5.0.0.json", tmp_path)
    (tmp_path / "selftest-transformers-5.0.0.json").write_text(json.dumps({
        "format": 1, "kind": "selftest", "transformers": "5.0.0", "detected": 1, "total": 2,
        "faults": [{"name": "hidden-copy", "description": "d", "property": "memory", "caught": False,
                    "crashed": True, "dtype": "float32", "margin": None, "tests_failed": ["t"],
                    "evidence": "crashed, not caught: TypeError: boom"},
                   {"name": "early-eviction", "description": "d", "property": "sliding_window", "caught": True,
                    "crashed": False, "dtype": "bfloat16", "margin": 7.25, "tests_failed": ["t"], "evidence": "e"}]}))
    loaded, errors = load_results(tmp_path)
    assert errors == []
    assert [f["name"] for f in loaded[0].selftest["faults"]] == ["hidden-copy", "early-eviction"]
    assert main(["--results", str(tmp_path), "--output", str(tmp_path / "site")]) == 0
    html = (tmp_path / "site" / "index.html").read_text()
    assert "CRASHED" in html and "7.25x" in html and "<td>bfloat16</td>" in html


def test_deprecations_are_listed_per_release_as_information(tmp_path):
    def results(version: str, deprecations: list[dict]) -> dict:
        record = {"id": "suites/test_deprecations.py::test_call[float32-cpu-eager]", "outcome": "passed",
                  "check": "suites/test_deprecations.py::test_call", "suite": "deprecations",
                  "params": {"dtype": "float32", "device": "cpu", "attn": "eager"},
                  "metrics": {"deprecations": deprecations}}
        return {"format": 1, "run_info": {"transformers": version}, "tests": [record, record | {
            "id": record["id"].replace("float32", "bfloat16"), "params": record["params"] | {"dtype": "bfloat16"}}]}

    renamed = {"kind": "FutureWarning", "message": "`past_key_values` is deprecated <and> will be removed in "
               "version 5.40.0", "removal": "5.40.0", "origin": "transformers/utils/generic.py"}
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "transformers-5.23.0.json").write_text(json.dumps(results("5.23.0", [])))
    (folder / "transformers-5.24.0.json").write_text(json.dumps(results("5.24.0", [renamed])))
    loaded, errors = load_results(folder)
    assert errors == []
    columns = [page.column(n, run) for n, run in enumerate(loaded)]
    assert page.deprecations(columns) == {
        "announced": [{"release": "5.24.0", "entries": [{"kind": "FutureWarning", "message": renamed["message"],
                                                         "removal": "5.40.0", "calls": ["test_call"]}]}],
        "quiet": ["5.23.0"],
    }
    assert main(["--results", str(folder), "--output", str(tmp_path / "site")]) == 0
    html = (tmp_path / "site" / "index.html").read_text()
    assert "<code>`past_key_values` is deprecated &lt;and&gt; will be removed in version 5.40.0</code>" in html
    assert '<p class="quiet">None announced on 5.23.0.</p>' in html


def test_verdicts_carried_to_a_release_not_adopted_are_marked_in_the_cell_the_detail_and_the_column(tmp_path):
    results = json.loads((FIXTURES / "transformers-4.50.3.json").read_text())
    results["run_info"] |= {"transformers": "9.0.0", "adopted": "5.24.0", "provisional": True, "carried": 1}
    record = next(r for r in results["tests"] if r["outcome"] == "xfailed")
    record["carried_from"] = "5.24.0"
    (tmp_path / "transformers-9.0.0.json").write_text(json.dumps(results))
    [run], errors = load_results(tmp_path)
    assert errors == []
    col = page.column(0, run)
    assert page.cell(col, record["check"], page.ALL)["carried"] == "5.24.0"
    assert any(n.startswith("provisional: 9.0.0 is newer than 5.24.0, the adopted release") for n in col["notes"])
    expected = {e["target"]: e["expected"] for e in page.detail(col, record["check"])["entries"]}
    assert expected[page.target_id(record["params"])] == "fail (carried from 5.24.0, release not adopted)"
    html = page.render(page.context([run], []))
    assert 'title="provisional: carried from 5.24.0, release not adopted">*</span>' in html


def test_the_api_surface_tables_each_member_per_release_and_frames_a_change(tmp_path):
    def results(version: str, crop: str | None) -> dict:
        records = [{"id": f"suites/test_cache_contract.py::test_{name}[float32-cpu-eager-StaticCache]",
                    "outcome": "passed", "check": f"suites/test_cache_contract.py::test_{name}",
                    "suite": "cache_contract", "params": {"dtype": "float32", "device": "cpu", "attn": "eager"},
                    "metrics": {"api": {"owner": "StaticCache", "member": name, "signature": signature}}}
                   for name, signature in (("crop", crop), ("reset", "()"))]
        return {"format": 1, "run_info": {"transformers": version}, "tests": records}

    folder = tmp_path / "results"
    folder.mkdir()
    for version, crop in (("4.50.3", None), ("5.0.0", "(max_length)"), ("5.25.0", "(tokens_to_remove)")):
        (folder / f"transformers-{version}.json").write_text(json.dumps(results(version, crop)))
    loaded, errors = load_results(folder)
    assert errors == []
    surface = page.api_surface([page.column(n, run) for n, run in enumerate(loaded)])
    assert surface["releases"] == ["4.50.3", "5.0.0", "5.25.0"]
    plain = {"deprecated": False, "removed_undeprecated": False}
    assert surface["rows"] == [
        {"member": "StaticCache.crop", "cells": [{"signature": None, "changed": False, **plain},
                                                 {"signature": "(max_length)", "changed": True, **plain},
                                                 {"signature": "(tokens_to_remove)", "changed": True, **plain}]},
        {"member": "StaticCache.reset", "cells": [{"signature": "()", "changed": False, **plain}] * 3},
    ]
    assert main(["--results", str(folder), "--output", str(tmp_path / "site")]) == 0
    html = (tmp_path / "site" / "index.html").read_text()
    assert '<td class="changed"><code>(tokens_to_remove)</code></td>' in html


@pytest.mark.parametrize(("states", "flagged"), [
    (["present", "present", None], [False, False, True]),  # gone without warning: a finding
    (["present", "deprecated", None], [False, False, False]),  # deprecated first: announced
    (["present", None, None], [False, True, False]),  # flagged once, where it went
])
def test_the_api_surface_flags_a_member_removed_without_a_deprecation_first(tmp_path, states, flagged):
    folder = tmp_path / "results"
    folder.mkdir()
    for version, state in zip(("5.11.0", "5.12.0", "5.13.0"), states, strict=True):
        api = {"owner": "StaticCache", "member": "get_max_cache_shape", "signature": "()" if state else None,
               "state": state or "absent"}
        record = {"id": "suites/test_cache_contract.py::test_member[float32-cpu-eager-StaticCache]",
                  "outcome": "passed" if state else "skipped", "check": "suites/test_cache_contract.py::test_member",
                  "suite": "cache_contract", "params": {"dtype": "float32", "device": "cpu", "attn": "eager"},
                  "metrics": {"api": api}}
        (folder / f"transformers-{version}.json").write_text(json.dumps(
            {"format": 1, "run_info": {"transformers": version}, "tests": [record]}))
    loaded, _ = load_results(folder)
    [row] = page.api_surface([page.column(n, run) for n, run in enumerate(loaded)])["rows"]
    assert [cell["removed_undeprecated"] for cell in row["cells"]] == flagged
    assert [cell["deprecated"] for cell in row["cells"]] == [state == "deprecated" for state in states]


def test_a_strategy_checks_coverage_is_shown_beside_its_verdict():
    coverage = {"calls": 3, "longest_accepted_run": 6, "regimes": {"several-accepted": 2, "rollback": 1},
                "certifies": ["several-accepted"]}
    [line] = page.metric_lines({"coverage": coverage})
    assert line == ("coverage: reached *several-accepted 2, rollback 1 (certifies several-accepted; * a certified "
                    "regime); calls 3, longest accepted run 6")
