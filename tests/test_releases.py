"""CI on every release, offline: new-release detection from a saved PyPI answer, the job matrix, merging results,
the published-results round trip over a local HTTP server, and the regression issue body."""

import functools
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from packaging.version import Version

from cache_conformance.releases import ReleasesError, jobs, publishing, regression, selection
from cache_conformance.report.load import load_results

ROOT = Path(__file__).resolve().parent.parent
INDEX_FILE = ROOT / "tests" / "data" / "pypi-transformers.json"
INDEX = json.loads(INDEX_FILE.read_text())
TOX_MINORS = jobs.tox_minors((ROOT / "tox.ini").read_text())


def record(check: str, outcome: str, *, dtype: str = "float32", device: str = "cpu", message: str = "") -> dict:
    params = {"dtype": dtype, "device": device, "attn": "eager"}
    name, _, case = check.partition("[")
    target = f"{dtype}-{device}-eager"
    return {
        "id": f"{name}[{target}-{case}" if case else f"{name}[{target}]", "check": check, "suite": "equivalence",
        "params": params, "outcome": outcome, "raw_outcome": "failed" if outcome == "xfailed" else outcome,
        "expected": "fail" if outcome == "xfailed" else "pass", "message": message, "metrics": {}, "duration_s": 0.1,
    }


def write_results(folder: Path, version: str, tests: list[dict], *, name: str = "", devices=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"transformers-{version}.json")
    info = {"transformers": version, "torch": "2.13.0", "devices": devices or {"cpu": "available"}}
    path.write_text(json.dumps({"format": 1, "run_info": info, "summary": {}, "tests": tests}))
    return path


def write_published(folder: Path, versions) -> None:
    for version in versions:
        write_results(folder, str(version), [record("suites/test_equivalence.py::test_a", "passed")])


def published_in(folder: Path) -> set:
    runs, errors = load_results(folder)
    assert errors == []
    return selection.published_releases(runs)


NEWEST_PATCHES = selection.newest_patches(selection.final_releases(INDEX))


def test_final_releases_leave_out_older_pre_and_yanked_releases():
    found = selection.final_releases(INDEX)
    assert found[0] == Version("4.50.0") and found[-1] == Version("5.23.0")
    for left_out in ("4.49.0", "5.0.0rc3", "4.52.0", "4.57.0", "5.10.0"):  # 4.52.0, 4.57.0, 5.10.0 are yanked
        assert Version(left_out) not in found
    assert {Version("4.52.1"), Version("5.0.0"), Version("5.10.1")} <= set(found)


def test_a_release_not_in_the_results_is_selected(tmp_path):
    assert NEWEST_PATCHES[-1] == Version("5.23.0") and Version("4.57.6") in NEWEST_PATCHES
    write_published(tmp_path, NEWEST_PATCHES[:-1])
    assert selection.releases_to_run(INDEX, published_in(tmp_path)) == [Version("5.23.0")]


def test_nothing_runs_when_every_release_is_published(tmp_path):
    write_published(tmp_path, NEWEST_PATCHES)
    assert selection.releases_to_run(INDEX, published_in(tmp_path)) == []
    completed = subprocess.run(
        [sys.executable, "-m", "cache_conformance.releases", "plan", "--index", str(INDEX_FILE), "--published",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert completed.stdout.splitlines() == ["count=0", "releases=", 'matrix={"include": []}']


def test_a_new_patch_of_an_old_minor_runs_in_that_minors_environment_pinned_exactly(tmp_path):
    write_published(tmp_path, [v if v != Version("4.57.6") else Version("4.57.5") for v in NEWEST_PATCHES])
    found = selection.releases_to_run(INDEX, published_in(tmp_path))
    assert found == [Version("4.57.6")]
    [job] = jobs.job_matrix(found, minors_with_env=TOX_MINORS, gpu_runner=False)["include"]
    assert (job["tox_env"], job["constraint"], job["device"]) == ("py311-transformers-4.57", "transformers==4.57.6", "cpu")
    assert job["results_file"] == "transformers-4.57.6.json" and job["runs_on"] == "ubuntu-latest"


def test_a_minor_without_a_tox_environment_runs_in_latest_and_a_gpu_runner_adds_a_cuda_job():
    newest_minor = max(TOX_MINORS, key=Version)
    unknown = Version(newest_minor).major, Version(newest_minor).minor + 1
    release = Version(f"{unknown[0]}.{unknown[1]}.0")
    planned = jobs.job_matrix([release], minors_with_env=TOX_MINORS, gpu_runner=True)["include"]
    assert [(j["device"], j["tox_env"], j["results_file"]) for j in planned] == [
        ("cpu", "py311-transformers-latest", f"transformers-{release}.json"),
        ("cuda", "py311-transformers-latest", f"transformers-{release}-cuda.json"),
    ]
    assert planned[1]["runs_on"] == ["self-hosted", "gpu"] and "+cpu" not in planned[1]["torch"]


def test_a_crashed_stand_in_does_not_count_as_published(tmp_path):
    write_published(tmp_path, NEWEST_PATCHES[:-1])
    path = write_results(tmp_path, "5.23.0", [])
    data = json.loads(path.read_text())
    data["run_info"]["crashed"] = "tox could not install the environment"
    path.write_text(json.dumps(data))
    assert selection.releases_to_run(INDEX, published_in(tmp_path)) == [Version("5.23.0")]


def test_requested_releases_run_again_and_unknown_ones_are_refused(tmp_path):
    write_published(tmp_path, NEWEST_PATCHES)
    assert selection.releases_to_run(INDEX, set(NEWEST_PATCHES), ["5.0.0", "4.50.3"]) == [Version("4.50.3"),
                                                                                        Version("5.0.0")]
    with pytest.raises(ReleasesError, match=r"\['5.0.0rc1'\] are not final"):
        selection.releases_to_run(INDEX, set(), ["5.0.0rc1"])
    completed = subprocess.run(
        [sys.executable, "-m", "cache_conformance.releases", "plan", "--index", str(INDEX_FILE), "--published",
         str(tmp_path), "--requested", "4.52.0"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr == "error: requested releases ['4.52.0'] are not final, installable releases >= 4.50\n"


def test_a_bad_index_answer_is_one_line_of_error(tmp_path):
    bad = tmp_path / "index.json"
    bad.write_text('{"info": {}}')
    with pytest.raises(ReleasesError, match='no "releases" object'):
        selection.final_releases(json.loads(bad.read_text()))


def test_merge_adds_new_results_and_makes_one_file_per_release_from_the_device_jobs(tmp_path):
    published, new, merged = tmp_path / "published", tmp_path / "new", tmp_path / "merged"
    check = "suites/test_equivalence.py::test_a"
    write_results(published, "5.22.2", [record(check, "passed")])
    write_results(published, "5.23.0", [record(check, "failed")])  # run again below: replaced
    write_results(new, "5.23.0", [record(check, "passed")], devices={"cpu": "available", "cuda": "no CUDA"})
    write_results(new, "5.23.0", [record(check, "xfailed", device="cuda")], name="transformers-5.23.0-cuda.json",
                  devices={"cpu": "available", "cuda": "available"})
    assert publishing.merge(published, new, merged) == ["transformers-5.23.0.json"]
    assert sorted(p.name for p in merged.iterdir()) == ["transformers-5.22.2.json", "transformers-5.23.0.json"]
    combined = json.loads((merged / "transformers-5.23.0.json").read_text())
    assert [(t["params"]["device"], t["outcome"]) for t in combined["tests"]] == [("cpu", "passed"), ("cuda", "xfailed")]
    assert combined["summary"] == {"passed": 1, "xfailed": 1}
    assert combined["run_info"]["devices"] == {"cpu": "available", "cuda": "available"}
    assert [job["devices"]["cuda"] for job in combined["run_info"]["jobs"]] == ["no CUDA", "available"]  # cpu first
    runs, errors = load_results(merged)
    assert errors == [] and [run.release for run in runs] == ["5.22.2", "5.23.0"]


def test_published_results_round_trip_through_the_site(tmp_path):
    results, site = tmp_path / "results", tmp_path / "site"
    write_published(results, ["5.22.2", "5.23.0"])
    assert publishing.write_site_results(results, site / "results") == ["transformers-5.22.2.json",
                                                                      "transformers-5.23.0.json"]
    with serve(site) as url:
        assert publishing.fetch(url, tmp_path / "fetched") == ["transformers-5.22.2.json", "transformers-5.23.0.json"]
    assert (tmp_path / "fetched" / "transformers-5.23.0.json").read_bytes() == (results / "transformers-5.23.0.json").read_bytes()
    (site / "results" / "index.json").unlink()
    with serve(site) as url:  # nothing published yet: the index answers 404
        assert publishing.fetch(url, tmp_path / "first") == []
    (site / "results" / "index.json").write_text('{"files": ["../../etc/passwd"]}')
    with serve(site) as url, pytest.raises(ReleasesError, match="not a results file name"):
        publishing.fetch(url, tmp_path / "bad")


class serve:
    """A local HTTP server on `folder` for the duration of a with block; yields its URL."""

    def __init__(self, folder: Path):
        handler = functools.partial(QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_site_url_of_a_project_a_user_site_and_a_custom_domain():
    assert publishing.site_url("Acme/gemma3-cache") == "https://acme.github.io/gemma3-cache/"
    assert publishing.site_url("Acme/acme.github.io") == "https://acme.github.io/"
    assert publishing.site_url("Acme/gemma3-cache", "https://cache.example.org") == "https://cache.example.org/"


CHUNKED = "suites/test_equivalence.py::test_chunked_prefill[chunks-3-5]"
DECODE = "suites/test_equivalence.py::test_prefill_then_decode_across_the_window[prompt-longer-than-window]"
GENERATE = "suites/test_equivalence.py::test_generate_with_a_static_cache"
SITE = "https://acme.github.io/gemma3-cache/"


def two_releases(folder: Path, new_outcomes: dict) -> list:
    """Results of 5.22.2 (all passing but one expected failure) and 5.23.0 with the given outcomes."""
    before = {(DECODE, "float32"): "passed", (DECODE, "bfloat16"): "passed", (CHUNKED, "float32"): "passed",
              (GENERATE, "float32"): "xfailed"}
    write_results(folder, "5.22.2", [record(c, o, dtype=d) for (c, d), o in before.items()])
    after = before | new_outcomes
    write_results(folder, "5.23.0", [
        record(c, o, dtype=d, message=f"decode step 1 | max abs diff 1.07 exceeds `atol` 0.0001\nat {d}")
        for (c, d), o in after.items()])
    runs, errors = load_results(folder)
    assert errors == []
    return runs


def test_the_regression_issue_lists_the_checks_that_flipped_to_failing(tmp_path):
    runs = two_releases(tmp_path, {(DECODE, "bfloat16"): "failed", (CHUNKED, "float32"): "error",
                                   (GENERATE, "float32"): "passed"})
    title, body, _ = regression.regression_issue(runs, "5.23.0", SITE)
    assert title == "Release regression: transformers 5.23.0"
    assert "transformers 5.23.0 fails 2 check(s) that passed on 5.22.2" in body
    rows = [line for line in body.splitlines() if line.startswith("| `suites/")]
    assert rows == [
        (f"| `{CHUNKED}` | float32 | cpu | eager | passed | error | decode step 1 \\| max abs diff 1.07 exceeds "
         "'atol' 0.0001 at float32 |"),
        (f"| `{DECODE}` | bfloat16 | cpu | eager | passed | failed | decode step 1 \\| max abs diff 1.07 exceeds "
         "'atol' 0.0001 at bfloat16 |"),
    ]  # GENERATE went the other way (xfailed -> passed): not a regression
    assert f"{SITE}results/transformers-5.23.0.json" in body


def test_no_issue_when_nothing_turned_red_or_there_is_no_earlier_release(tmp_path):
    runs = two_releases(tmp_path, {(GENERATE, "float32"): "passed"})
    assert regression.regression_issue(runs, "5.23.0", SITE) is None
    assert regression.regression_issue(runs, "5.22.2", SITE) is None  # the first release has nothing to compare with
    with pytest.raises(ReleasesError, match="no results for transformers 5.24.0"):
        regression.regression_issue(runs, "5.24.0", SITE)


def test_the_issues_command_writes_a_title_and_body_per_release_that_regressed(tmp_path):
    """5.24.0 was planned but its jobs wrote no results: a warning, not a failure that would stop publication."""
    two_releases(tmp_path / "results", {(DECODE, "float32"): "failed"})
    completed = subprocess.run(
        [sys.executable, "-m", "cache_conformance.releases", "issues", "--results", str(tmp_path / "results"),
         "--releases", "5.22.2 5.23.0 5.24.0", "--site", SITE.rstrip("/"), "--into", str(tmp_path / "issues")],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert completed.stdout == "count=1\n"
    assert completed.stderr.splitlines() == ["5.23.0: Release regression: transformers 5.23.0",
                                             "warning: no results for transformers 5.24.0; no issue drafted"]
    assert sorted(p.name for p in (tmp_path / "issues").iterdir()) == ["5.23.0"]
    body = (tmp_path / "issues" / "5.23.0" / "body.md").read_text()
    assert f"| `{DECODE}` | float32 | cpu | eager | passed | failed |" in body


def test_the_release_to_adopt_is_the_newest_one_run_when_it_is_newer_than_the_adopted_one():
    assert selection.to_adopt(["5.23.1", "5.25.0"], Version("5.24.0")) == Version("5.25.0")
    assert selection.to_adopt(["5.24.1"], Version("5.24.0")) == Version("5.24.1")
    assert selection.to_adopt(["5.23.1", "5.24.0"], Version("5.24.0")) is None
    assert selection.to_adopt([], Version("5.24.0")) is None

