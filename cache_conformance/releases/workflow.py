"""CI on every transformers release: which releases to run, merging their results into the published ones, and
the issue opened when a release turns passing checks red.

.github/workflows/releases.yml only wires these commands together (python -m cache_conformance.releases ...):

    site-url --repository OWNER/NAME [--configured URL]    the report's address on GitHub Pages
    adoptable --releases "V ..."       prints `release=V`: the newest of them when it is newer than the adopted
                                       release (suites/expectations.toml), else `release=` (nothing to adopt)
    plan   --index URL|FILE --published DIR [--requested "V ..."] [--gpu-runner true]
           prints `count=N`, `releases=V ...` and `matrix=JSON` (for $GITHUB_OUTPUT): one job per release x device
    fetch  --site URL --into DIR       the published results files (none on the first publication)
    merge  --published DIR --new DIR --into DIR
    index  --results DIR --into DIR    copies the results into the site and lists them in index.json
    issues --results DIR --releases "V ..." --site URL --into DIR
           DIR/<version>/title and DIR/<version>/body.md for each release that turns a passing check red or
           fails a failing one in another way (another exception, or a failure its expectation does not explain);
           prints `count=N` (for $GITHUB_OUTPUT)

Where the results live: the published site keeps its own inputs, results/<results file> for every release run
so far and results/index.json listing them (static hosting lists no folders). The next run reads them back from
the site to know which releases are done and to compare a new release with the one before it.

Which releases run: for every minor release from 4.50 on, its newest final patch (no pre-releases, no yanked
releases) when its exact version is not in the published results yet. A new patch of a minor that has a tox
environment runs in that environment (its pins, e.g. huggingface-hub<1.0 for 4.x); a minor newer than tox.ini
knows runs in `latest`. Either way UV_CONSTRAINT pins the exact version (`transformers==5.23.1`).
A release whose jobs wrote no results (it failed to install) stays "new" and is tried again on the next run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from packaging.version import InvalidVersion, Version

from cache_conformance import ROOT, expectations
from cache_conformance.report import changes, direction, load_results
from cache_conformance.report.changes import FAILING, outcome
from cache_conformance.report.load import target_id

FIRST_RELEASE = Version("4.50")  # the first release with Gemma 3
TORCH = "2.13.0"  # tox.ini's default torch; jobs on GitHub's machines pick the build for their device
JOBS = {
    "cpu": {"runs_on": "ubuntu-latest", "torch": f"torch=={TORCH}+cpu",
            "torch_index": "https://download.pytorch.org/whl/cpu"},
    # PyPI's Linux torch wheels are the CUDA build.
    "cuda": {"runs_on": ["self-hosted", "gpu"], "torch": f"torch=={TORCH}", "torch_index": ""},
}
RESULTS_FILE = re.compile(r"transformers-[0-9][0-9A-Za-z.+]*(-cuda)?\.json")
MESSAGE_LIMIT = 300


class ReleasesError(ValueError):
    """Bad input (index answer, results folder, requested version); the message is one line."""


def final_releases(index_answer: dict) -> list[Version]:
    """Final, not yanked releases from FIRST_RELEASE on, in version order, from a PyPI JSON API answer."""
    releases = index_answer.get("releases")
    if not isinstance(releases, dict):
        raise ReleasesError('the package index answer has no "releases" object (expected PyPI\'s JSON API)')
    found = []
    for text, files in releases.items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue  # PyPI still lists a few pre-PEP 440 versions of old packages
        # PyPI yanks a release by marking every file of it; a release without files cannot be installed.
        installable = bool(files) and not all(file.get("yanked") for file in files)
        if version >= FIRST_RELEASE and not version.is_prerelease and not version.is_devrelease and installable:
            found.append(version)
    return sorted(found)


def newest_patches(versions: list[Version]) -> list[Version]:
    """The newest patch of each minor release: what a tox environment `transformers~=X.Y.0` installs."""
    newest: dict[tuple[int, int], Version] = {}
    for version in versions:
        minor = (version.major, version.minor)
        newest[minor] = max(newest.get(minor, version), version)
    return sorted(newest.values())


def published_releases(runs: list) -> set[Version]:
    """Releases with results among the published runs (load_results); a stand-in for a crashed run is no result."""
    return {Version(run.release) for run in runs if not run.crashed}


def releases_to_run(index_answer: dict, published: set[Version], requested: list[str] | None = None) -> list[Version]:
    """The requested releases (they must exist), else the newest patch of each minor that is not published yet."""
    available = final_releases(index_answer)
    if requested:
        wanted = [_version(text) for text in requested]
        unknown = [str(v) for v in wanted if v not in available]
        if unknown:
            raise ReleasesError(f"requested releases {unknown} are not final, installable releases >= {FIRST_RELEASE}")
        return sorted(set(wanted))
    return [version for version in newest_patches(available) if version not in published]


def tox_minors(tox_ini: str) -> set[str]:
    """The minors that have their own tox environment (lines `4.50: transformers~=4.50.0` of tox.ini)."""
    return set(re.findall(r"^\s*(\d+\.\d+): transformers~=", tox_ini, flags=re.MULTILINE))


def job_matrix(releases: list[Version], *, minors_with_env: set[str], gpu_runner: bool) -> dict:
    """GitHub Actions matrix: one job per release x device (cuda only when a GPU runner is configured)."""
    devices = ["cpu", "cuda"] if gpu_runner else ["cpu"]
    include = []
    for version in releases:
        minor = f"{version.major}.{version.minor}"
        env = minor if minor in minors_with_env else "latest"
        for device in devices:
            suffix = "" if device == "cpu" else f"-{device}"
            include.append({
                "release": str(version),
                "device": device,
                "tox_env": f"py311-transformers-{env}",
                "constraint": f"transformers=={version}",
                "results_file": f"transformers-{version}{suffix}.json",
                **JOBS[device],
            })
    return {"include": include}


def merge(published: Path, new: Path, into: Path) -> list[str]:
    """Published results plus the new ones (a release run again replaces its published file); a release's
    per-device files from separate jobs become one results file. Returns the file names written."""
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(published.glob("transformers-*.json")):
        shutil.copyfile(path, into / path.name)
    by_release: dict[str, list[dict]] = {}
    # The cpu job's file first: its run info heads the combined file.
    for path in sorted(new.glob("transformers-*.json"), key=lambda path: (path.name.endswith("-cuda.json"), path.name)):
        release, data = _read_results(path)
        by_release.setdefault(release, []).append(data)
    written = []
    for release, parts in by_release.items():
        name = f"transformers-{release}.json"
        (into / name).write_text(json.dumps(combine(parts), indent=1) + "\n")
        written.append(name)
    return written


def combine(parts: list[dict]) -> dict:
    """One results file from the same release's runs on different devices: all tests, run info of the first run
    with every device that any run found, and each run's own run info under "jobs"."""
    if len(parts) == 1:
        return parts[0]
    tests = sorted((test for part in parts for test in part["tests"]), key=lambda test: test["id"])
    devices = {}
    for part in parts:
        for device, state in part["run_info"].get("devices", {}).items():
            if devices.get(device) != "available":
                devices[device] = state
    return {
        "format": parts[0]["format"],
        "run_info": parts[0]["run_info"] | {"devices": devices, "jobs": [part["run_info"] for part in parts]},
        "summary": dict(Counter(test["outcome"] for test in tests)),
        "tests": tests,
    }


def write_site_results(results: Path, into: Path) -> list[str]:
    """Copy the results files into the site and list them in index.json, which `fetch` reads on the next run."""
    into.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in results.glob("transformers-*.json"))
    for name in names:
        shutil.copyfile(results / name, into / name)
    (into / "index.json").write_text(json.dumps({"files": names}, indent=1) + "\n")
    return names


def fetch(site_url: str, into: Path) -> list[str]:
    """Download the published results files; none when nothing is published yet (the index answers 404)."""
    into.mkdir(parents=True, exist_ok=True)
    base = site_url.rstrip("/") + "/results/"
    try:
        index = json.loads(_download(base + "index.json"))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise ReleasesError(f"{base}index.json: HTTP {error.code}") from None
    names = index.get("files", []) if isinstance(index, dict) else []
    for name in names:
        if not isinstance(name, str) or not RESULTS_FILE.fullmatch(name):
            raise ReleasesError(f"{base}index.json lists {name!r}, which is not a results file name")
        (into / name).write_bytes(_download(base + name))
    return names


def site_url(repository: str, configured: str = "") -> str:
    """The report's address: the configured one (a custom domain), else GitHub Pages' address of the repository."""
    if configured:
        return configured.rstrip("/") + "/"
    owner, _, name = repository.partition("/")
    if not owner or not name:
        raise ReleasesError(f"repository {repository!r} is not owner/name")
    if name.lower() == f"{owner.lower()}.github.io":  # a user or organisation site is served from the root
        return f"https://{owner.lower()}.github.io/"
    return f"https://{owner.lower()}.github.io/{name}/"


def to_adopt(run: list[str], adopted: Version) -> Version | None:
    """The release a run should propose to adopt: the newest of those it ran, when it is newer than `adopted`."""
    newest = max((_version(text) for text in run), default=None)
    return newest if newest is not None and newest > adopted else None


def regression_issue(runs: list, release: str, site: str) -> tuple[str, str] | None:
    """(title, markdown body) listing the checks that passed on the release before `release` and fail on it, and
    those that failed before and now fail in another way (`changed_failures`), or None when there are neither.
    `runs` are the merged results (load_results), in version order."""
    position = next((i for i, run in enumerate(runs) if run.release == release), None)
    if position is None:
        raise ReleasesError(f"no results for transformers {release} in the merged results")
    new_run = runs[position]
    earlier = [run for run in runs[:position] if not run.crashed]  # runs are in version order
    if not earlier:
        return None
    previous_run = earlier[-1]
    flipped = [change for change in changes(previous_run, new_run)
               if direction(change.old_outcome, change.new_outcome) == "newly failing"]
    changed = changed_failures(previous_run, new_run)
    if not flipped and not changed:
        return None
    previous = previous_run.release
    results_link = f"{site}results/{new_run.path.name}"
    header = f"| check | dtype | device | attention | {previous} | {release} | message on {release} |"
    lines = []
    if flipped:
        lines.append(f"transformers {release} fails {len(flipped)} check(s) that passed on {previous}, the release "
                     "before it in the published results.")
    if changed:
        lines.append(f"transformers {release} fails {len(changed)} check(s) in another way than on {previous}: "
                     "another exception, or a message that the check's expectation does not explain.")
    lines += ["", f"Report: {site} · results file: {results_link}"]
    tables = [("Newly failing", [(change.check, change.params, change.old_outcome, change.new_outcome)
                                 for change in flipped]),
              ("Failing in another way", changed)]
    for heading, rows in tables:
        if not rows:
            continue
        lines += ["", f"### {heading}", "", header, "|---|---|---|---|---|---|---|"]
        for check, params, old_cell, new_cell in rows:
            record = new_run.tests[(check, target_id(params))]  # failing: the new run has it
            lines.append(
                f"| `{check}` | {params.get('dtype', '')} | {params.get('device', '')} | {params.get('attn', '')} "
                f"| {old_cell} | {new_cell} | {_table_text(record.get('message', ''))} |"
            )
    minor = f"{Version(release).major}.{Version(release).minor}"
    lines += [
        "",
        (f"Reproduce: `echo transformers=={release} > constraints.txt && UV_CONSTRAINT=constraints.txt "
         f"tox -e py311-transformers-{minor}` (`py311-transformers-latest` for a minor without its own environment)."),
        "",
        "Opened by the releases workflow; it updates this issue when it runs this release again.",
    ]
    return f"Release regression: transformers {release}", "\n".join(lines) + "\n"


def changed_failures(previous_run, new_run) -> list[tuple[str, dict, str, str]]:
    """(check, params, outcome before, outcome now) of every check that failed on the previous release (expected or
    not) and now fails red in another way: another exception type, or a failure its expectation does not explain
    (on a release not adopted yet, the expectation carried from the adopted one). Outcomes say the exception."""
    found = []
    for key, record in sorted(new_run.tests.items()):
        old = previous_run.tests.get(key)
        red = (record["outcome"], record.get("raw_outcome")) == ("failed", "failed")
        if old is None or outcome(old) not in FAILING or not red:
            continue
        if record.get("mismatch") or record.get("raised") != old.get("raised"):
            found.append((key[0], record["params"], f"{outcome(old)} ({old.get('raised', '?')})",
                          f"failed ({record.get('raised', '?')})"))
    return found


def _table_text(message: str) -> str:
    """Upstream text inside one Markdown table cell: one line, no pipes or backticks, bounded length."""
    text = " ".join(message.split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise ReleasesError(f"{text!r} is not a release version") from None


def _read_results(path: Path) -> tuple[str, dict]:
    """(release, contents) of a new results file; merge needs run_info.transformers and the tests list."""
    try:
        data = json.loads(path.read_text())
        release = data["run_info"]["transformers"]
        if not isinstance(release, str) or not isinstance(data["tests"], list):
            raise TypeError("run_info.transformers is not a string or tests is not a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReleasesError(f"{path}: not a results file ({error.__class__.__name__}: {error})") from None
    return release, data


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read()


def _index_answer(source: str) -> dict:
    try:
        text = _download(source) if source.startswith("https://") else Path(source).read_bytes()
        return json.loads(text)
    except (OSError, ValueError) as error:
        raise ReleasesError(f"{source}: cannot read the package index answer ({error})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_conformance.releases", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="releases to run and the job matrix, as $GITHUB_OUTPUT lines")
    plan.add_argument("--index", default="https://pypi.org/pypi/transformers/json", help="PyPI JSON answer: URL or file")
    plan.add_argument("--published", type=Path, required=True, help="folder of the published results files")
    plan.add_argument("--requested", default="", help="space-separated versions to run instead of the new ones")
    plan.add_argument("--gpu-runner", default="", help="'true' adds a cuda job per release on [self-hosted, gpu]")
    fetch_cmd = commands.add_parser("fetch", help="download the published results")
    fetch_cmd.add_argument("--site", required=True)
    fetch_cmd.add_argument("--into", type=Path, required=True)
    merge_cmd = commands.add_parser("merge", help="published results plus the new ones")
    merge_cmd.add_argument("--published", type=Path, required=True)
    merge_cmd.add_argument("--new", type=Path, required=True)
    merge_cmd.add_argument("--into", type=Path, required=True)
    index_cmd = commands.add_parser("index", help="copy the results into the site with their index.json")
    index_cmd.add_argument("--results", type=Path, required=True)
    index_cmd.add_argument("--into", type=Path, required=True)
    issues_cmd = commands.add_parser("issues", help="draft the regression issue of each new release")
    issues_cmd.add_argument("--results", type=Path, required=True)
    issues_cmd.add_argument("--releases", required=True, help="space-separated versions that were just run")
    issues_cmd.add_argument("--site", required=True)
    issues_cmd.add_argument("--into", type=Path, required=True)
    adoptable_cmd = commands.add_parser("adoptable", help="the release to propose adopting, as a $GITHUB_OUTPUT line")
    adoptable_cmd.add_argument("--releases", required=True, help="space-separated versions that were just run")
    site_cmd = commands.add_parser("site-url", help="print the report's address")
    site_cmd.add_argument("--repository", required=True, help="owner/name")
    site_cmd.add_argument("--configured", default="", help="an address set by the repository (custom domain)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ReleasesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "plan":
        runs, errors = load_results(args.published)
        for error in errors:  # a published file that cannot be read: its release counts as not published
            print(f"warning: {error}", file=sys.stderr)
        releases = releases_to_run(_index_answer(args.index), published_releases(runs), args.requested.split())
        matrix = job_matrix(releases, minors_with_env=tox_minors((ROOT / "tox.ini").read_text()),
                            gpu_runner=args.gpu_runner == "true")
        print(f"count={len(releases)}")
        print(f"releases={' '.join(str(v) for v in releases)}")
        print(f"matrix={json.dumps(matrix)}")
        print(f"releases to run: {' '.join(str(v) for v in releases) or 'none'}", file=sys.stderr)
    elif args.command == "fetch":
        names = fetch(args.site, args.into)
        print(f"{len(names)} published results files in {args.into}")
    elif args.command == "merge":
        names = merge(args.published, args.new, args.into)
        print(f"merged into {args.into}: {', '.join(names) or 'no new results'}")
    elif args.command == "index":
        names = write_site_results(args.results, args.into)
        print(f"{len(names)} results files in {args.into}")
    elif args.command == "issues":
        runs, errors = load_results(args.results)
        for error in errors:
            print(f"warning: {error}", file=sys.stderr)
        drafted = 0
        with_results = {run.release for run in runs}
        for release in args.releases.split():
            if release not in with_results:  # its jobs wrote no results: nothing to compare, tried again next run
                print(f"warning: no results for transformers {release}; no issue drafted", file=sys.stderr)
                continue
            issue = regression_issue(runs, release, args.site.rstrip("/") + "/")
            if issue:
                folder = args.into / release
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "title").write_text(issue[0])
                (folder / "body.md").write_text(issue[1])
                print(f"{release}: {issue[0]}", file=sys.stderr)
                drafted += 1
        print(f"count={drafted}")
    elif args.command == "adoptable":
        adopted = expectations.load(ROOT / "suites" / "expectations.toml").adopted
        release = to_adopt(args.releases.split(), adopted)
        print(f"release={release or ''}")
        print(f"to adopt: {release or f'nothing (adopted: {adopted})'}", file=sys.stderr)
    elif args.command == "site-url":
        print(site_url(args.repository, args.configured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
