"""A pytest plugin for tests/test_plugin_runs.py: the harness itself crashes, once in a test's call (building the
static cache) or, with HARNESS_CRASH_IN=setup, in the `model` fixture: neither is any expected failure."""

import os

from cache_conformance import adapter


def _crash(*args, **kwargs):
    raise RuntimeError("planted harness crash")


if os.environ.get("HARNESS_CRASH_IN") == "setup":
    adapter.load_model = _crash
else:
    adapter.make_static_cache = _crash
