"""A pytest plugin for tests/test_deprecations.py's positive control: the harness passes the cache under the name
transformers deprecated (`past_key_values`), as it did before it learned the new one."""

from cache_conformance import adapter

adapter.CACHE_KEYWORD = adapter.LEGACY_CACHE_KEYWORD
