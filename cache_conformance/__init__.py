"""The harness the suites import: the version adapter (`adapter/`), targets, tolerances, oracles, comparisons,
probes, expectations, results and the pytest plugin that ties them together.

The tools around it live in subpackages that the suites never import: `selftest/` (the fault catalogue and the
self-test), `releases/` (the matrix runner, the release workflow, adoption, the evidence replay, the pins) and
`report/` (the HTML report)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project folder: suites/, fixtures/, reports/, constraints/
