# The suites' machinery lives in the importable harness package; this file only switches it on.
pytest_plugins = ["cache_conformance.plugin", "cache_conformance.fixtures", "cache_conformance.selftest.injection"]
