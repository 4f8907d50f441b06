"""Which releases the release workflow runs: the newest final patch of every minor from 4.50 that is not published
yet (or those requested), and which of them to propose adopting."""

from __future__ import annotations

import json
from pathlib import Path

from packaging.version import InvalidVersion, Version

from cache_conformance.releases import ReleasesError, download

FIRST_RELEASE = Version("4.50")  # the first release with Gemma 3


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
        wanted = [parse_version(text) for text in requested]
        unknown = [str(v) for v in wanted if v not in available]
        if unknown:
            raise ReleasesError(f"requested releases {unknown} are not final, installable releases >= {FIRST_RELEASE}")
        return sorted(set(wanted))
    return [version for version in newest_patches(available) if version not in published]


def to_adopt(run: list[str], adopted: Version) -> Version | None:
    """The release a run should propose to adopt: the newest of those it ran, when it is newer than `adopted`."""
    newest = max((parse_version(text) for text in run), default=None)
    return newest if newest is not None and newest > adopted else None


def parse_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise ReleasesError(f"{text!r} is not a release version") from None


def read_index_answer(source: str) -> dict:
    try:
        text = download(source) if source.startswith("https://") else Path(source).read_bytes()
        return json.loads(text)
    except (OSError, ValueError) as error:
        raise ReleasesError(f"{source}: cannot read the package index answer ({error})") from None
