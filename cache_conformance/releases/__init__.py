"""The tools around releases: the matrix runner (`matrix`), the release workflow's steps (`workflow`, started as
`python -m cache_conformance.releases`), adopting a release (`adopt`), replaying the committed scans against the
expectations (`evidence`) and the project's pins (`pins`)."""
