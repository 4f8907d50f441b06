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
import sys
from pathlib import Path

from cache_conformance import ROOT
from cache_conformance.records import expectations
from cache_conformance.releases import ReleasesError
from cache_conformance.releases.jobs import job_matrix, tox_minors
from cache_conformance.releases.publishing import fetch, merge, site_url, write_site_results
from cache_conformance.releases.regression import dev_head_issue, regression_issue
from cache_conformance.releases.selection import published_releases, read_index_answer, releases_to_run, to_adopt
from cache_conformance.report import load_results
from cache_conformance.report.page import SCRIPTS


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
    issues_cmd.add_argument("--dev-head", action="store_true",
                            help="also the development head's issue, from the unreleased run among the results")
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
        releases = releases_to_run(read_index_answer(args.index), published_releases(runs), args.requested.split())
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
                write_issue(issue, args.into / release)
                drafted += 1
        issue = dev_head_issue(runs, args.site.rstrip("/") + "/") if args.dev_head else None
        if issue:
            write_issue(issue, args.into / "dev-head")
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


def write_issue(issue, folder: Path) -> None:
    """The issue's title, body and scripts in one folder, which the workflow's issue job reads (and attaches)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "title").write_text(issue.title)
    (folder / "body.md").write_text(issue.body)
    for name, text in issue.scripts.items():
        (folder / SCRIPTS).mkdir(exist_ok=True)
        (folder / SCRIPTS / name).write_text(text)
    print(f"{folder.name}: {issue.title}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
