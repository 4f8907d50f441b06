"""A pytest plugin for tests/test_selftest.py: a fault patch that is itself broken. The static cache's update
raises a TypeError of the patch's own, as a patch written against another release's signature would."""

import pytest

from cache_conformance.selftest import faults


def _broken(update):
    def patched(self, *args, **kwargs):
        raise TypeError("patched() got an unexpected keyword argument 'cache_position'")

    return patched


def pytest_configure(config):
    # for this session only, as --inject-fault applies a catalogued fault (the self-test runs many in one process)
    patch = pytest.MonkeyPatch()
    faults.cache_update_wrapped_by(_broken)(patch)
    config.add_cleanup(patch.undo)
