"""Verdicts on a release newer than the adopted one, end to end: the installed transformers stands in for a new
release by adopting an older one in a test's own expectations file (adopted = "5.0.0")."""

import json

from test_plugin_runs import expectation_file

from cache_conformance.releases import regression
from cache_conformance.report import load_results

STAND_IN_ADOPTED = "5.0.0"
OVERFLOW = ["suites/test_overflow.py::test_overflow_error_is_clear", "--device", "cpu",
            "-k", "float32-cpu-eager and decode-one-token-past-capacity"]


def overflow_expected(tmp_path):
    """The overflow-clarity entry as the shipped file has it, ending at the stand-in adopted release."""
    return expectation_file(tmp_path, "suites/test_overflow.py::test_overflow_error_is_clear[*",
                            match="^(IndexError|RuntimeError) is neither a ValueError nor a transformers exception",
                            releases=f">=4.50,<={STAND_IN_ADOPTED}", adopted=STAND_IN_ADOPTED)


def test_a_failure_the_adopted_release_explains_is_carried_and_said_to_be(run_suites, tmp_path):
    code, output, results = run_suites(*OVERFLOW, f"--expectations-file={overflow_expected(tmp_path)}",
                                       "-v")  # with run_suites' -q: the run header too
    assert code == 0, output
    [record] = results["tests"]
    assert (record["outcome"], record["raw_outcome"], record["carried_from"]) == ("xfailed", "failed", STAND_IN_ADOPTED)
    assert record["raised"] == "AssertionError"
    info = results["run_info"]
    assert (info["adopted"], info["provisional"], info["carried"]) == (STAND_IN_ADOPTED, True, 1)
    assert f"newer than {STAND_IN_ADOPTED}, the newest adopted release" in output  # the run header
    assert f"PROVISIONAL: 1 of the expected failures are carried from {STAND_IN_ADOPTED}" in output  # the summary
    assert "1 xfailed" in output


def test_a_carried_failure_that_changes_its_exception_is_red_and_in_the_regression_issue(run_suites, tmp_path):
    path = overflow_expected(tmp_path)
    code, output, before = run_suites(*OVERFLOW, f"--expectations-file={path}", results_name="before.json")
    assert code == 0, output
    code, output, after = run_suites(*OVERFLOW, f"--expectations-file={path}",
                                     "-p", "tests.plugins.overflow_raises_key_error", results_name="after.json")
    assert code == 1, output
    [record] = after["tests"]
    assert (record["outcome"], record["raw_outcome"]) == ("failed", "failed")
    assert record["mismatch"].startswith(f"expected failure (carried from {STAND_IN_ADOPTED}, release not adopted) "
                                         "did not match: expected AssertionError matching '^(IndexError|RuntimeError)")
    assert "got AssertionError: KeyError is neither a ValueError" in record["mismatch"]

    # The release workflow's view: the stand-in adopted release ran before, the installed one now.
    published = tmp_path / "published"
    published.mkdir()
    before["run_info"]["transformers"] = STAND_IN_ADOPTED
    (published / f"transformers-{STAND_IN_ADOPTED}.json").write_text(json.dumps(before))
    release = after["run_info"]["transformers"]
    (published / f"transformers-{release}.json").write_text(json.dumps(after))
    runs, errors = load_results(published)
    assert not errors
    title, body, _ = regression.regression_issue(runs, release, "https://example.org/report/")
    assert title == f"Release regression: transformers {release}"
    assert "fails 1 check(s) in another way than on 5.0.0" in body
    row = next(line for line in body.splitlines() if "test_overflow_error_is_clear" in line)
    assert "xfailed" in row and "KeyError is neither a ValueError" in row, row
