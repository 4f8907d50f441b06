"""transformers' development head (the release workflow's dev-head job), offline: its one issue drafted from
recorded results, its column marked unreleased, its results replacing the previous head's, never adopted; and the
local path, a wheel built from the installed release's files with a development version, run through the suites."""

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import transformers

from cache_conformance import ROOT
from cache_conformance.releases import adopt, publishing, regression
from cache_conformance.report import load_results, page

# The user-call suite's records with their calls (reports/README.md): 4.50.3 refuses prompt lookup with no cache
# choice clearly, 4.53.3 returns a token too many.
CALLS = ROOT / "reports" / "scans" / "regimes-4.50-5.25-raw" / "reruns" / "calls"
LOOKUP = ("suites/test_user_calls.py::test_generate_as_users_call_it[default-prompt-lookup-longer-than-two-windows]",
          "float32-cpu-eager")
SITE = "https://example.org/report/"


def results_as(folder: Path, source: str, version: str) -> Path:
    """A recorded results file written as the run of `version` (a development build's, say)."""
    data = json.loads((CALLS / f"transformers-{source}.json").read_text())
    data["run_info"]["transformers"] = version
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"transformers-{version}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_check_passing_on_the_newest_release_and_failing_on_the_head_opens_the_one_issue(tmp_path):
    shutil.copy(CALLS / "transformers-4.50.3.json", tmp_path)
    results_as(tmp_path, "4.53.3", "4.51.0.dev0")  # the head fails what 4.50.3, the newest release, passes
    runs, _ = load_results(tmp_path)
    issue = regression.dev_head_issue(runs, SITE)
    assert issue.title == regression.DEV_HEAD_TITLE  # one issue, found again by its title
    assert "transformers 4.51.0.dev0 fails" in issue.body and "passed on 4.50.3" in issue.body
    assert f"| `{LOOKUP[0]}` | float32 | cpu | eager | passed | failed |" in issue.body
    assert f'TRANSFORMERS_DEV="{regression.DEV_HEAD}" tox -e py311-transformers-dev' in issue.body
    assert any("default_prompt" in name or "generate_as_users_call_it" in name for name in issue.scripts)


def test_no_head_issue_when_the_head_fails_nothing_the_newest_release_passes_or_there_is_no_head(tmp_path):
    shutil.copy(CALLS / "transformers-4.53.3.json", tmp_path)
    assert regression.dev_head_issue(load_results(tmp_path)[0], SITE) is None  # no head run
    results_as(tmp_path, "4.53.3", "4.54.0.dev0")  # the head does what the newest release does
    assert regression.dev_head_issue(load_results(tmp_path)[0], SITE) is None


def test_a_release_is_compared_with_the_release_before_it_not_with_the_head(tmp_path):
    """4.50.3, then a head that fails the lookup call (4.51.0.dev0), then the release 4.53.3 that fails it too:
    4.53.3's regression issue is against 4.50.3, where the check passed."""
    shutil.copy(CALLS / "transformers-4.50.3.json", tmp_path)
    shutil.copy(CALLS / "transformers-4.53.3.json", tmp_path)
    results_as(tmp_path, "4.53.3", "4.51.0.dev0")
    issue = regression.regression_issue(load_results(tmp_path)[0], "4.53.3", SITE)
    assert "passed on 4.50.3" in issue.body and issue.title == "Release regression: transformers 4.53.3"


def test_the_issues_command_drafts_the_head_issue_beside_the_releases(tmp_path):
    results_as(tmp_path / "results", "4.53.3", "4.51.0.dev0")
    shutil.copy(CALLS / "transformers-4.50.3.json", tmp_path / "results")
    completed = subprocess.run(
        [sys.executable, "-m", "cache_conformance.releases", "issues", "--results", str(tmp_path / "results"),
         "--releases", "", "--site", SITE, "--into", str(tmp_path / "issues"), "--dev-head"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "count=1"
    folder = tmp_path / "issues" / "dev-head"
    assert (folder / "title").read_text() == regression.DEV_HEAD_TITLE
    assert list((folder / "repro").glob("*.py"))  # the scripts, attached to the run with the folder


def test_a_new_head_run_replaces_the_published_one_and_releases_stay(tmp_path):
    published, new, merged = tmp_path / "published", tmp_path / "new", tmp_path / "merged"
    results_as(published, "4.50.3", "4.50.3")
    results_as(published, "4.53.3", "4.54.0.dev0")
    results_as(new, "4.53.3", "4.55.0.dev0")
    assert publishing.merge(published, new, merged) == ["transformers-4.55.0.dev0.json"]
    assert sorted(path.name for path in merged.iterdir()) == ["transformers-4.50.3.json",
                                                              "transformers-4.55.0.dev0.json"]


def test_the_head_is_a_column_marked_unreleased_and_never_adopted(tmp_path):
    shutil.copy(CALLS / "transformers-4.50.3.json", tmp_path)
    head = results_as(tmp_path, "4.53.3", "4.54.0.dev0")
    runs, _ = load_results(tmp_path)
    contents = page.context(runs, [])
    assert [column["unreleased"] for column in contents["columns"]] == [False, True]
    assert "unreleased" in page.render(contents)
    with pytest.raises(adopt.AdoptionError, match="development build .* never adopted"):
        adopt.release_of([json.loads(head.read_text())])


def development_wheel(source: Path, out: Path, version: str) -> Path:
    """A wheel of transformers built from a source tree: here, the installed release's files with `version`."""
    shutil.copytree(source, out / "src" / "transformers", ignore=shutil.ignore_patterns("__pycache__"))
    init = out / "src" / "transformers" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{transformers.__version__}"', f'__version__ = "{version}"'))
    needs = [need for need in metadata.requires("transformers") if "extra ==" not in need]  # the release's own
    (out / "src" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "transformers"\nversion = "{version}"\ndependencies = {json.dumps(needs)}\n'
        '[tool.setuptools.packages.find]\ninclude = ["transformers*"]\n[tool.setuptools.package-data]\n"*" = ["*"]\n')
    built = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"],
                           cwd=out / "src", capture_output=True, text=True, check=True)
    return out / built.stdout.strip().splitlines()[-1]


def test_the_local_path_runs_the_suites_on_a_wheel_built_from_a_source_tree(tmp_path):
    """Nothing but package registries is reachable here, so the head is stood in for by a wheel built from the
    installed release's files as version X.dev0, unpacked over the pinned environment: the suites run on it, the
    results are the head's, and the issue logic compares them with the newest release's."""
    version = f"{transformers.__version__.rsplit('.', 1)[0]}.99.dev0"
    wheel = development_wheel(Path(transformers.__file__).parent, tmp_path, version)
    shutil.unpack_archive(wheel, tmp_path / "head", format="zip")
    results = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
         f"--results-file={results / f'transformers-{version}.json'}",
         "suites/test_user_calls.py", "-k", "float32-cpu-eager and users_call_it and greedy and (default or hybrid)"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "head")})
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "PROVISIONAL" in completed.stdout  # newer than the adopted release: verdicts carried, not adopted
    run = json.loads((results / f"transformers-{version}.json").read_text())
    assert run["run_info"]["transformers"] == version
    shutil.copy(CALLS / f"transformers-{transformers.__version__}.json", results)
    runs, _ = load_results(results)
    assert [run.unreleased for run in runs] == [False, True]
    assert regression.dev_head_issue(runs, SITE) is None  # the same files: nothing newly failing
