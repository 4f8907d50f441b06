"""The tools around releases: the matrix runner (`matrix`); the release workflow (`workflow`, its command line, started
as `python -m cache_conformance.releases`, over its steps: `selection` of the releases to run, the `jobs` matrix,
`publishing` the results, the `regression` issue); adopting a release (`adopt`); replaying the committed scans
against the expectations (`replay`) and the project's pins (`pins`)."""

import urllib.request


class ReleasesError(ValueError):
    """Bad input to a step of the release workflow (index answer, results folder, requested version); the message is
    one line."""


def download(url: str) -> bytes:
    """What `url` answers (the package index, the published site)."""
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read()
