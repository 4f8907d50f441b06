"""Shared machinery of the Gemma 3 KV-cache conformance suite: the version adapter, targets, tolerances,
comparisons, expectations, results and the pytest plugin that ties them together."""
