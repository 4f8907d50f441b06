"""The harness the suites import, in subpackages by role: `adapter/` (the one place that knows transformers release
differences), `plugin/` (the pytest plugin every suite runs under), `records/` (results files, expectations, the
suite registry), `oracles/` (what the right answer is), `probes/` (what a run did), `grading/` (how a call is
judged) and `inputs/` (what the checks feed the model).

The tools around it are subpackages the suites and the harness never import: `selftest/` (the fault catalogue and
the self-test), `releases/` (the matrix runner, the release workflow, adoption, the evidence replay, the pins),
`report/` (the HTML report and the docs' release tables) and `repro/` (a finding as a standalone script).
docs/layout.md has the map."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project folder: suites/, fixtures/, reports/, constraints/
