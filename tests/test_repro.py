"""Standalone reproductions (cache_conformance/repro): a script written from a committed record, run on the pinned
release, exits as the suite's own verdict on that release says (1: the record's finding holds there, 0: it does
not); the command line's bad input is one line; the report and the regression issue carry the scripts."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from cache_conformance import ROOT
from cache_conformance.records import results
from cache_conformance.releases import regression
from cache_conformance.report import load_results, page
from cache_conformance.repro import __main__ as repro_command
from cache_conformance.repro import script

# The user-call suite's records with their calls, on eight releases (reports/README.md).
CALLS = ROOT / "reports" / "scans" / "regimes-4.50-5.25-raw" / "reruns" / "calls"
CHECK = "suites/test_user_calls.py::test_generate_as_users_call_it[float32-cpu-eager-{}-longer-than-two-windows]"
# A sample of expectation entries, one record each (release, call): findings that hold on the pinned release and
# findings of earlier releases that do not, over the grades a script tells apart.
SAMPLE = [
    ("5.25.0", "implementation-hybrid-greedy"),  # substituted, 5.0 on
    ("5.25.0", "implementation-offloaded-prompt-lookup"),  # crashed (no accelerator), every release
    ("4.53.3", "implementation-static-greedy"),  # oversized, 4.53-4.55
    ("4.53.3", "implementation-static-beam-2"),  # oversized with beam search (beams are not compared with logits)
    ("4.53.3", "implementation-dynamic-prompt-lookup"),  # wrong (a token too many), 4.53-4.57
    ("4.50.3", "object-DynamicCache-greedy"),  # refused misleadingly, 4.50-4.52
    ("4.50.3", "implementation-quantized-greedy"),  # crashed, 4.50-4.52
]


def run_of(version: str) -> dict:
    return results.read(CALLS / f"transformers-{version}.json")


def record_of(run: dict, test_id: str) -> dict:
    return next(record for record in run["tests"] if record["id"] == test_id)


def verdict_holds(finding: dict, verdict: dict) -> bool:
    """Whether the suite's record on the pinned release shows the same finding: the same grade, and for a raised
    finding the same exception type."""
    same_grade = verdict["metrics"].get("outcome") == finding["metrics"]["outcome"]
    return same_grade and script.raised_type(verdict) == script.raised_type(finding) if same_grade else False


@pytest.mark.parametrize(("release", "call"), SAMPLE, ids=[f"{release}-{call}" for release, call in SAMPLE])
def test_a_script_exits_as_the_suite_judged_the_pinned_release(tmp_path, release, call):
    pinned = run_of(transformers.__version__)
    finding = record_of(run_of(release), CHECK.format(call))
    verdict = record_of(pinned, finding["id"])  # the suite's own record of this call on the pinned release
    path = tmp_path / script.file_name(finding, release)
    path.write_text(script.render(finding, run_of(release)["run_info"]))
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, check=False)
    expected = 1 if verdict_holds(finding, verdict) else 0
    assert done.returncode == expected, (
        f"the script of {finding['metrics']['outcome']} on {release} exited {done.returncode} on "
        f"{transformers.__version__}, where the suite graded the call {verdict['metrics'].get('outcome')}:\n"
        f"{done.stdout}{done.stderr[-2000:]}")


def test_the_sample_has_findings_that_hold_on_the_pinned_release_and_findings_that_do_not():
    """The test above shows both exit codes only if its sample has both kinds; and it covers every grade a script
    tells apart."""
    pinned = run_of(transformers.__version__)
    holds = [verdict_holds(record_of(run_of(release), CHECK.format(call)),
                           record_of(pinned, CHECK.format(call))) for release, call in SAMPLE]
    assert any(holds) and not all(holds)
    grades = {record_of(run_of(release), CHECK.format(call))["metrics"]["outcome"] for release, call in SAMPLE}
    assert grades == set(script.FINDINGS)


def test_a_script_holds_only_torch_transformers_and_the_standard_library():
    finding = record_of(run_of("4.53.3"), CHECK.format("implementation-static-greedy"))
    text = script.render(finding, run_of("4.53.3")["run_info"])
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(text))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"inspect", "re", "sys", "traceback", "pathlib", "torch", "transformers"}
    # the suite's own, copied in: the grading, a user's cache object as the adapter makes it, the weights
    assert "def grade(" in text and "def user_cache_object(" in text and "def tiny_gemma3_weights(" in text


def test_records_no_script_can_reproduce_say_why():
    run = run_of("5.25.0")
    assisted = record_of(run, CHECK.format("implementation-hybrid-assisted"))
    passed = record_of(run, CHECK.format("implementation-static-greedy"))
    beam_wrong = {**record_of(run, CHECK.format("implementation-hybrid-beam-2")), "metrics": {
        **record_of(run, CHECK.format("implementation-hybrid-beam-2"))["metrics"], "outcome": "wrong"}}
    assert "holds no call" in script.why_not_scriptable(assisted)  # an assistant model is not data
    assert "no finding" in script.why_not_scriptable(passed)
    assert "beam search" in script.why_not_scriptable(beam_wrong)
    assert script.why_not_scriptable(record_of(run, CHECK.format("implementation-hybrid-beam-2"))) is None


@pytest.mark.parametrize(("arguments", "said"), [
    (["suites/test_user_calls.py::test_nothing[x]"], "no record of it"),
    ([CHECK.format("implementation-static-greedy"), "--release", "5.25"], "there is no finding to reproduce"),
    ([CHECK.format("implementation-hybrid-assisted"), "--release", "5.25"], "holds no call"),
    ([CHECK.format("implementation-hybrid-greedy"), "--release", "5.99"], "no record of it in transformers 5.99"),
    ([CHECK.format("implementation-hybrid-greedy"), "--release", "five"], "Invalid version"),
    ([CHECK.format("implementation-hybrid-greedy"), "--checkpoint", "tiny-gemma3-other"], "on tiny-gemma3-other"),
])
def test_bad_input_is_one_line(capsys, tmp_path, arguments, said):
    assert repro_command.main([*arguments, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_the_command_writes_the_script_of_the_committed_record(capsys, tmp_path):
    assert repro_command.main([CHECK.format("implementation-hybrid-greedy"), "--release", "5.25",
                               "--out", str(tmp_path)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.parent == tmp_path
    text = path.read_text()
    assert "FINDING = 'substituted'" in text and "Expected: " in text  # the entry that explains it, quoted
    compile(text, str(path), "exec")


def test_the_report_links_a_failing_cell_to_its_script(tmp_path):
    shutil.copy(CALLS / "transformers-5.25.0.json", tmp_path)
    runs, errors = load_results(tmp_path)
    site = tmp_path / "site"
    html = page.write_site(runs, errors, site).read_text()
    name = script.file_name(record_of(run_of("5.25.0"), CHECK.format("implementation-hybrid-greedy")), "5.25.0")
    assert f'href="repro/{name}"' in html
    assert "FINDING = 'substituted'" in (site / "repro" / name).read_text()
    # a passing cell has none
    passed = script.file_name(record_of(run_of("5.25.0"), CHECK.format("implementation-static-greedy")), "5.25.0")
    assert passed not in html and not (site / "repro" / passed).exists()


def test_the_regression_issue_carries_the_new_failures_scripts(tmp_path):
    """4.50 -> 4.53: prompt lookup with no cache choice went from a clear refusal to a token too many (wrong): the
    issue links the scripts on the site and shows the first few in its body."""
    for version in ("4.50.3", "4.53.3"):
        shutil.copy(CALLS / f"transformers-{version}.json", tmp_path)
    runs, _ = load_results(tmp_path)
    issue = regression.regression_issue(runs, "4.53.3", "https://example.org/report/")
    name = script.file_name(record_of(run_of("4.53.3"), CHECK.format("default-prompt-lookup")), "4.53.3")
    assert name in issue.scripts
    assert f"(https://example.org/report/repro/{name})" in issue.body
    assert issue.body.count("```python") == min(len(issue.scripts), regression.SCRIPTS_INLINE)
    for text in issue.scripts.values():
        compile(text, name, "exec")


def test_one_script_per_cell_and_the_issue_links_the_sites(tmp_path):
    """A cell failing on two targets gets one script (its first failing target's), and every script the regression
    issue links is one the site has."""
    shutil.copy(CALLS / "transformers-4.50.3.json", tmp_path)
    run = run_of("4.53.3")
    twins = [{**record, "id": record["id"].replace("float32-cpu-eager", "bfloat16-cpu-eager"),
              "params": {**record["params"], "dtype": "bfloat16"}} for record in run["tests"]]
    results.write(tmp_path / "transformers-4.53.3.json", {**run, "tests": run["tests"] + twins})
    runs, _ = load_results(tmp_path)
    site = tmp_path / "site"
    page.write_site(runs, [], site)
    lookup = CHECK.format("default-prompt-lookup")
    written = {path.name for path in (site / "repro").iterdir()}
    assert script.file_name(record_of(run, lookup), "4.53.3") in written  # float32 comes first
    assert script.file_name(record_of({"tests": twins}, lookup.replace("float32", "bfloat16")), "4.53.3") not in written
    issue = regression.regression_issue(runs, "4.53.3", "https://example.org/report/")
    assert issue.scripts and set(issue.scripts) <= written
