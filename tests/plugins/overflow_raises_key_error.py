"""A pytest plugin for tests/test_provisional.py: a stand-in for a release whose overflow fails in another way. The
static cache's update turns the IndexError of a write past its capacity into a KeyError, as a release that
rewrote its indexing might."""

import functools

import pytest

from cache_conformance.selftest import faults


def _index_error_as_key_error(update):
    @functools.wraps(update)
    def patched(*args, **kwargs):
        try:
            return update(*args, **kwargs)
        except IndexError as error:
            raise KeyError(str(error)) from None

    return patched


def pytest_configure(config):
    patch = pytest.MonkeyPatch()
    faults.cache_update_wrapped_by(_index_error_as_key_error)(patch)
    config.add_cleanup(patch.undo)
