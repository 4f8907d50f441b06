"""The published results: fetched from the site, merged with a run's new ones (per-device files combined), copied
back into the site with the index that the next run fetches, and the site's address."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
from collections import Counter
from pathlib import Path

from cache_conformance.records import results
from cache_conformance.releases import ReleasesError, download

RESULTS_FILE = re.compile(r"transformers-[0-9][0-9A-Za-z.+]*(-cuda)?\.json")


def merge(published: Path, new: Path, into: Path) -> list[str]:
    """Published results plus the new ones (a release run again replaces its published file); a release's
    per-device files from separate jobs become one results file. Returns the file names written."""
    into.mkdir(parents=True, exist_ok=True)
    by_release: dict[str, list[dict]] = {}
    # The cpu job's file first: its run info heads the combined file.
    for path in sorted(new.glob("transformers-*.json"), key=lambda path: (path.name.endswith("-cuda.json"), path.name)):
        release, data = _read_results(path)
        by_release.setdefault(release, []).append(data)
    # One development-head column: a new unreleased run replaces the published one, whatever its version.
    new_head = any(map(results.unreleased, by_release))
    for path in sorted(published.glob("transformers-*.json")):
        if not (new_head and results.unreleased(_read_results(path)[0])):
            shutil.copyfile(path, into / path.name)
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


def write_site_results(folder: Path, into: Path) -> list[str]:
    """Copy the results files into the site and list them in index.json, which `fetch` reads on the next run."""
    into.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in folder.glob("transformers-*.json"))
    for name in names:
        shutil.copyfile(folder / name, into / name)
    (into / "index.json").write_text(json.dumps({"files": names}, indent=1) + "\n")
    return names


def fetch(site_url: str, into: Path) -> list[str]:
    """Download the published results files; none when nothing is published yet (the index answers 404)."""
    into.mkdir(parents=True, exist_ok=True)
    base = site_url.rstrip("/") + "/results/"
    try:
        index = json.loads(download(base + "index.json"))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise ReleasesError(f"{base}index.json: HTTP {error.code}") from None
    names = index.get("files", []) if isinstance(index, dict) else []
    for name in names:
        if not isinstance(name, str) or not RESULTS_FILE.fullmatch(name):
            raise ReleasesError(f"{base}index.json lists {name!r}, which is not a results file name")
        (into / name).write_bytes(download(base + name))
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


def _read_results(path: Path) -> tuple[str, dict]:
    """(release, contents) of a new results file; merge needs run_info.transformers and the tests list."""
    try:
        data = results.read_run(path)
    except results.ResultsError as error:
        raise ReleasesError(str(error)) from None
    return data["run_info"]["transformers"], data
