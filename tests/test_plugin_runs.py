"""The plugin end to end: strict expectations, raw outcomes, the results file and clear errors for bad input.

Each test runs a small slice of the real suites in a fresh pytest process on the installed transformers.
"""

import pytest

from cache_conformance.selftest import injection

ONE_CHECK = ["suites/test_equivalence.py::test_prefill_then_decode_across_the_window", "--device", "cpu",
             "-k", "float32-cpu-eager and prompt-equal"]


def expectation_file(tmp_path, test_pattern, raises="AssertionError", match="max abs diff", releases=">=4.50,<99",
                     adopted="99", checkpoints=None):
    path = tmp_path / "expectations.toml"
    path.write_text(
        f'adopted = "{adopted}"\n[[expected_failure]]\ntests = ["{test_pattern}"]\nreleases = "{releases}"\n'
        f'raises = "{raises}"\nmatch = \'{match}\'\nreason = "made up for this test"\nevidence = "none"\n'
        + (f"checkpoints = {checkpoints!r}\n".replace("'", '"') if checkpoints else "")
    )
    return path


def run_one_check_expected_to_fail(run_suites, tmp_path, *args, **failure):
    """ONE_CHECK with an expectation naming `failure` (raises, match, checkpoints) for it; returns run_suites'
    answer."""
    path = expectation_file(tmp_path, "*test_prefill_then_decode_across_the_window*", **failure)
    return run_suites(*ONE_CHECK, f"--expectations-file={path}", *args)


def test_a_clean_run_records_run_info_params_and_metrics(run_suites):
    code, output, results = run_suites(*ONE_CHECK)
    assert code == 0, output
    assert results["format"] == 1 and results["summary"] == {"passed": 1}
    assert {"transformers", "torch", "python", "platform", "devices", "checkpoint", "suite_commit"} <= set(results["run_info"])
    [record] = results["tests"]
    assert record["params"] == {"dtype": "float32", "device": "cpu", "attn": "eager"}
    assert record["check"] == "suites/test_equivalence.py::test_prefill_then_decode_across_the_window[prompt-equal-to-window]"
    assert record["suite"] == "equivalence" and record["expected"] == "pass"
    assert 0 <= record["metrics"]["max_abs_diff"] <= record["metrics"]["atol"]


def test_an_expected_failure_that_passes_turns_the_run_red(run_suites, tmp_path):
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path)
    assert code == 1 and "XPASS(strict)" in output
    [record] = results["tests"]
    assert (record["outcome"], record["raw_outcome"], record["expected"]) == ("failed", "passed", "fail")
    assert record["reason"] == "made up for this test"


def test_an_expected_failure_that_passes_on_a_checkpoint_the_entry_does_not_name_is_a_pass(run_suites, tmp_path):
    """The entry names only the differently shaped embedded checkpoint: on the embedded one its check passing is
    not an XPASS (that checkpoint does not reach the defect), and the record says so. The test above, with the
    entry's default checkpoints, is the control: there the same pass is XPASS(strict)."""
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path, checkpoints=["tiny-gemma3-other"])
    assert code == 0, output
    [record] = results["tests"]
    assert (record["outcome"], record["raw_outcome"], record["expected"]) == ("passed", "passed", "fail")
    assert record["not_reached"].startswith("passed on this checkpoint; expected to fail on tiny-gemma3-other")


def test_an_expected_failure_that_fails_is_green_and_keeps_the_raw_outcome(run_suites, tmp_path):
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path, *injection.arguments("early-eviction"))
    assert code == 0, output
    [record] = results["tests"]
    assert (record["outcome"], record["raw_outcome"]) == ("xfailed", "failed")
    assert "max abs diff" in record["message"]
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path, *injection.arguments("early-eviction"),
                                                           "--no-expectations")
    assert code == 1 and results["tests"][0]["outcome"] == "failed" and results["run_info"]["expectations"] == "ignored"


def test_a_failure_of_another_kind_than_expected_turns_the_run_red_with_both_texts(run_suites, tmp_path):
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path, *injection.arguments("early-eviction"),
                                                           match="holds position")
    assert code == 1, output
    [record] = results["tests"]
    assert (record["outcome"], record["raw_outcome"], record["expected"]) == ("failed", "failed", "fail")
    expected, _, actual = record["message"].partition("\n")
    assert expected.startswith("expected failure did not match: expected AssertionError matching 'holds position'; "
                               "got AssertionError: ")
    assert "max abs diff" in expected and "max abs diff" in actual and "expected failure did not match" in output


def test_a_harness_crash_inside_an_expected_failure_turns_the_run_red(run_suites, tmp_path):
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path, "-p", "tests.plugins.harness_crash")
    assert code == 1, output
    [record] = results["tests"]
    assert (record["outcome"], record["raw_outcome"]) == ("failed", "failed")
    assert record["message"].startswith("expected failure did not match: expected AssertionError matching "
                                        "'max abs diff'; got RuntimeError: planted harness crash\n")


def test_a_crash_in_setup_is_never_the_expected_failure(run_suites, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CRASH_IN", "setup")
    code, output, results = run_one_check_expected_to_fail(run_suites, tmp_path, "-p", "tests.plugins.harness_crash",
                                                           raises="RuntimeError", match="planted harness crash")
    assert code == 1, output
    [record] = results["tests"]
    assert record["outcome"] == "error" and "planted harness crash" in record["message"]


def test_an_entry_that_matches_nothing_is_reported(run_suites, tmp_path):
    stale = "suites/test_equivalence.py::test_generate_with_a_static_cache[no-such-target]"
    path = expectation_file(tmp_path, stale)
    code, output, results = run_suites("suites/test_equivalence.py::test_generate_with_a_static_cache",
                                       "--device", "cpu", f"--expectations-file={path}")
    assert code == 0, output
    assert f"WARNING: expectation matches no test that ran: tests=['{stale}']" in output
    assert results["run_info"]["unused_expectations"][0]["tests"] == [stale]


@pytest.mark.parametrize(
    "pattern",
    ["suites/test_overflow.py::test_overflow_error_is_clear[*", "suites/test_equivalence.py::*[float32-cuda-eager*",
     "suites/test_equivalence.py::*[float32-cpu-flex_attention*"],
    ids=["another-test-than-the-path-selected", "a-device-left-out", "an-attention-left-out-here"],
)
def test_an_entry_the_narrowed_run_could_not_use_is_not_reported(run_suites, tmp_path, pattern):
    path = expectation_file(tmp_path, pattern)
    code, output, results = run_suites("suites/test_equivalence.py::test_generate_with_a_static_cache",
                                       "--device", "cpu", f"--expectations-file={path}")
    assert code == 0, output
    assert "WARNING: expectation matches no test" not in output and results["run_info"]["unused_expectations"] == []


def test_absent_devices_are_left_out_and_named_with_the_reason(run_suites):
    code, output, results = run_suites("suites/test_equivalence.py::test_generate_with_a_static_cache")
    assert code == 0, output
    assert {t["params"]["device"] for t in results["tests"]} == {"cpu"}
    devices = results["run_info"]["devices"]
    assert devices["cpu"] == "available" and "CUDA is not available" in devices["cuda"], devices


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint=/no/such/checkpoint"], "ERROR: checkpoint /no/such/checkpoint is not a directory"),
        (["--device", "mps"], "ERROR: --device mps was requested but MPS is not available"),
        (["--expectations-file=/no/such/file.toml"], "ERROR: /no/such/file.toml: cannot read expectations"),
        (["--hypothesis-profile=nosuch"],
         "ERROR: --hypothesis-profile=nosuch is not a profile of this suite; choose one of default, ci, thorough, shrink"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(run_suites, args, message):
    code, output, _ = run_suites(*args)
    assert code == 4 and message in output and "Traceback" not in output, output


def test_another_checkpoint_folder_is_used_when_given(run_suites, tmp_path):
    import shutil

    from cache_conformance.plugin.checkpoint import EMBEDDED

    local = tmp_path / "local-gemma3"
    shutil.copytree(EMBEDDED, local)
    code, output, results = run_suites(*ONE_CHECK, f"--checkpoint={local}")
    assert code == 0, output
    assert results["run_info"]["checkpoint"].startswith(f"{local} (local checkpoint")


@pytest.mark.parametrize(
    "reported, recorded",
    [
        ("suites/test_x.py::test_y[float32-cuda-sdpa]@float32-cuda-sdpa", "suites/test_x.py::test_y[float32-cuda-sdpa]"),
        ("suites/test_x.py::test_y[float32-cpu-eager]", "suites/test_x.py::test_y[float32-cpu-eager]"),
        ("suites/test_checkpoint.py::test_z", "suites/test_checkpoint.py::test_z"),
    ],
)
def test_results_keep_the_collected_id_when_xdist_appends_its_group(reported, recorded):
    from cache_conformance.plugin.recorder import without_xdist_group

    assert without_xdist_group(reported) == recorded


def collected(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("suites/")]


def test_slow_checks_run_only_on_the_targets_their_marker_names_unless_included(run_suites):
    code, output, _ = run_suites("suites/test_compiled.py", "--device", "cpu", "--collect-only")
    default = collected(output)
    assert code == 0 and default, output
    assert all("[float32-cpu-sdpa" in nodeid for nodeid in default), default
    assert not any("chunked" in nodeid or "prompt-longer" in nodeid for nodeid in default), default
    code, output, _ = run_suites("suites/test_compiled.py", "--device", "cpu", "--collect-only", "--include-slow")
    everything = collected(output)
    assert code == 0 and set(default) < set(everything), output
    assert any("[bfloat16-cpu-eager" in nodeid and "chunked" in nodeid for nodeid in everything), everything


def test_under_xdist_the_controller_learns_what_its_workers_deselected_as_slow(run_suites):
    """The controller writes the results but never collects: the slow checks' count comes from the workers."""
    code, output, results = run_suites("suites/test_compiled.py::test_exported_program_matches_recomputation",
                                       "--device", "cpu", workers=2)
    assert code == 0, output
    assert [t["params"]["attn"] for t in results["tests"]] == ["sdpa"]
    assert results["run_info"]["slow_deselected"] == 11, results["run_info"]
    assert "11 slow checks deselected" in output


def test_with_another_checkpoint_unused_snapshots_do_not_fail_the_run(run_suites):
    """With a checkpoint other than the embedded one the text snapshots skip, and syrupy reported them as unused
    and failed the run when the multimodal suite's snapshot was used in the same session (seen in the default run
    on 5.24 with syrupy 7.0)."""
    # Every suite but the two with snapshots (and the cheap checkpoint suite) left out: without plugin/hooks.py's
    # warn_unused_snapshots this run still fails as the default run did (checked on 5.25).
    others = ["test_compiled", "test_equivalence", "test_sliding_window", "test_memory", "test_overflow",
              "test_deprecations", "test_dispatch", "test_quantized_cache", "test_strategies", "test_user_calls",
              "test_cache_contract", "test_your_call"]
    code, output, results = run_suites("--checkpoint=fixtures/tiny-gemma3-multimodal",
                                       *[f"--ignore=suites/{name}.py" for name in others], workers=2)
    assert code == 0, output[-3000:]
    skipped = {t["id"] for t in results["tests"] if t["outcome"] == "skipped"}
    assert len(skipped) == 18 and all("test_snapshots.py" in test for test in skipped)


@pytest.mark.parametrize(
    "record, expected",
    [({"raised": "IndexError", "message": "IndexError: index 20 is out"}, ("IndexError", "index 20 is out")),
     ({"raised": "Unsupported", "message": "torch._dynamo.exc.Unsupported: a: b"}, ("Unsupported", "a: b")),
     ({"raised": "IndexError", "message": "IndexError"}, ("IndexError", "")),
     ({"raised": "AssertionError", "mismatch": "expected failure did not match: x",
       "message": "expected failure did not match: x\nAssertionError: the cache"}, ("AssertionError", "the cache")),
     ({"raised": "AssertionError", "message": "assert [- snapshot] == [+ received]\n  decode"},
      ("AssertionError", "assert [- snapshot] == [+ received]\n  decode")),
     ({"message": "AssertionError: chunk 1 of 1"}, ("AssertionError", "chunk 1 of 1")),
     ({"message": "assert [- snapshot] == [+ received]"}, ("AssertionError", "assert [- snapshot] == [+ received]"))],
    ids=["builtin", "qualified", "no-message", "after-a-mismatch", "no-type-in-the-message", "before-raised-existed",
         "before-raised-existed-a-rewritten-assert"],
)
def test_a_records_exception_is_read_as_expectations_judge_it(record, expected):
    from cache_conformance.records.results import exception_of

    assert exception_of(record) == expected
