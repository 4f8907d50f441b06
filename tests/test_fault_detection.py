"""Each suite fails when the static cache is broken on purpose, and its message points at the fault.

Runs the float32 eager slice of the suite that must catch each fault (the tightest tolerance), with the shipped
expectations, on the installed transformers: the `tests` environment installs the newest release, whose clean
slice must pass.
"""

import re

import pytest

from cache_conformance import faults

SLICES = {
    suite: [f"suites/test_{suite}.py", "--device", "cpu", "-k", "float32-cpu-eager"]
    for suite in ("equivalence", "overflow", "memory", "snapshots", "sliding_window")
}
# What a failure message must say: where (step, chunk, position) and how much, or what the call did.
POINTS_AT_THE_FAULT = {
    "equivalence": re.compile(
        r"(decode step \d+|chunk \d+ of \d+|prefill of \d+ tokens|generate\(\)).*"
        r"max abs diff [0-9.e+-]+ exceeds tolerance.*position \d+"
    ),
    "overflow": re.compile(r"the call returned normally: the cache wrapped around, dropped tokens"),
    "memory": re.compile(
        r"decode step \d+ \(position \d+\): layer \d+ (keys|values) moved to new storage .* bytes"
        r"|grew by \d+ bytes per (step|call)"
    ),
    "sliding_window": re.compile(
        r"(prefill|decode step \d+|chunk \d+ of \d+|generate\(\)).*: layer \d+ \((sliding|full-attention)\), "
        r"slot \d+, batch \d+: should hold position \d+ but holds .*; max abs diff [0-9.e+-]+ exceeds tolerance"
    ),
    "snapshots": re.compile(
        r"(prefill|decode): \d+ of \d+ elements \([0-9.]+%\) differ beyond .*; max abs diff [0-9.e+-]+ at \[\d+, \d+\]; "
        r"rows \[\d+"
    ),
}


@pytest.mark.parametrize("suite", SLICES)
def test_the_slice_passes_without_a_fault(run_suites, suite):
    code, output, results = run_suites(*SLICES[suite])
    assert code == 0, output
    assert results["summary"].get("passed", 0) > 0 and "failed" not in results["summary"]


@pytest.mark.parametrize("fault", sorted(faults.CATALOGUE))
def test_a_fault_makes_its_suite_fail_with_its_location(run_suites, fault):
    suite = faults.CATALOGUE[fault].caught_by
    code, output, results = run_suites(*SLICES[suite], "--inject-fault", fault)
    assert code == 1, output
    assert results["run_info"]["injected_fault"] == fault
    failed = [t for t in results["tests"] if t["outcome"] == "failed"]
    assert failed, output
    for record in failed:
        assert POINTS_AT_THE_FAULT[suite].search(record["message"]), record["message"]
