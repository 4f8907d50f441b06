"""A pytest plugin for tests/test_controls.py: generate() is handed a copy of the user's static cache, as a
generate() that copied or ignored the cache it was given would behave; its logits stay right."""

import copy

from cache_conformance import adapter

_generate_with_static_cache = adapter.generate_with_static_cache


def _with_a_copy(model, input_ids, *, cache, **kwargs):
    return _generate_with_static_cache(model, input_ids, cache=copy.deepcopy(cache), **kwargs)


adapter.generate_with_static_cache = _with_a_copy
