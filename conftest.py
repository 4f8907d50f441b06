# The suites' machinery lives in the importable harness package; this file only switches it on. (The self-test's
# fault injection is a plugin of its own, loaded only by the self-test's runs: -p cache_conformance.selftest.injection.)
pytest_plugins = ["cache_conformance.plugin.hooks", "cache_conformance.plugin.suite_fixtures"]
