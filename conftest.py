# The suites' machinery lives in the importable harness package; this file only switches it on.
pytest_plugins = ["cache_conformance.plugin"]
