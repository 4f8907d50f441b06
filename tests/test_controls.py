"""Checks made to fail on purpose, on the real suites in a fresh pytest process: each must see what it exists to
see (the memory controls' own positive controls are in tests/test_memory_probes.py)."""

GENERATE_CHECK = ["suites/test_equivalence.py::test_generate_with_a_static_cache", "--device", "cpu",
                  "-k", "float32-cpu-eager"]


def test_the_generate_check_passes_on_the_real_generate(run_suites):
    code, output, _ = run_suites(*GENERATE_CHECK)
    assert code == 0, output


def test_the_generate_check_fails_when_generate_does_not_use_the_cache_it_was_given(run_suites):
    code, output, results = run_suites(*GENERATE_CHECK, "-p", "tests.plugins.generate_gets_a_copy_of_the_cache")
    assert code == 1, output
    [record] = results["tests"]
    assert ("after generate() of 12 tokens (16 tokens fed): layer 0 (sliding), slot 0, batch 0: should hold position "
            "8 but holds zeros (unused)") in record["message"], record["message"]
