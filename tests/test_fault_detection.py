"""The equivalence suite fails when the static cache is broken on purpose, and says where and by how much.

Runs the float32 eager slice of the suite (the one with the tightest tolerance) under each fault. This needs a
release whose clean run passes that slice: the `tests` environment installs the newest transformers.
"""

import re

import pytest

from cache_conformance import faults

SLICE = ["suites/test_equivalence.py", "--device", "cpu", "-k", "float32-cpu-eager", "--no-expectations"]
# A failure message names a step or chunk, a position and the size of the difference.
WHERE_AND_HOW_MUCH = re.compile(r"(decode step \d+|chunk \d+ of \d+|prefill of \d+ tokens|generate\(\)).*max abs diff [0-9.e+-]+ exceeds tolerance.*position \d+")


def test_the_slice_passes_without_a_fault(run_suites):
    code, output, results = run_suites(*SLICE)
    assert code == 0, output
    assert results["summary"] == {"passed": 9}


@pytest.mark.parametrize("fault", sorted(name for name, f in faults.CATALOGUE.items() if f.caught_by == "equivalence"))
def test_a_fault_makes_the_suite_fail_with_its_location(run_suites, fault):
    code, output, results = run_suites(*SLICE, "--inject-fault", fault)
    assert code == 1, output
    assert results["run_info"]["injected_fault"] == fault
    failed = [t for t in results["tests"] if t["outcome"] == "failed"]
    assert failed, output
    for record in failed:
        assert WHERE_AND_HOW_MUCH.search(record["message"]), record["message"]
