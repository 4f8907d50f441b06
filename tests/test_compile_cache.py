"""torch.compile's on-disk cache is kept between runs (tox.ini's TORCHINDUCTOR_CACHE_DIR, restored on CI): a stale
or corrupt one must never change a verdict. One compiled check of the suites, in fresh pytest processes, against a
cache filled by another program (the same check under a fault that changes only what is compiled), then against the
same cache with every file overwritten by random bytes."""

import os

from cache_conformance.selftest import injection

COMPILED_CHECK = ["suites/test_compiled.py::test_compiled_decode_matches_recomputation", "--device", "cpu",
                  "-k", "float32-cpu-sdpa", "--no-expectations"]
CHECK_ID = "suites/test_compiled.py::test_compiled_decode_matches_recomputation[float32-cpu-sdpa]"


def outcome(results: dict | None) -> str | None:
    records = [record for record in (results or {}).get("tests", []) if record["id"] == CHECK_ID]
    return records[0]["outcome"] if records else None


def test_a_stale_or_corrupt_compile_cache_does_not_change_the_verdict(run_suites, tmp_path, monkeypatch):
    cache = tmp_path / "torch-compile-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))

    # Positive control, and the stale cache: compiled with keys rounded, the check fails and its graphs are cached.
    code, output, results = run_suites(*COMPILED_CHECK, *injection.arguments("compiled-keys-rounded"),
                                       results_name="stale.json")
    assert outcome(results) == "failed", output[-3000:]
    stale_files = [path for path in cache.rglob("*") if path.is_file()]
    assert stale_files, "the faulty run cached nothing: this test could not see a stale entry used"

    code, output, results = run_suites(*COMPILED_CHECK, results_name="on-stale.json")
    assert (code, outcome(results)) == (0, "passed"), output[-3000:]

    for path in cache.rglob("*"):
        if path.is_file():
            path.write_bytes(os.urandom(64))
    code, output, results = run_suites(*COMPILED_CHECK, results_name="on-corrupt.json")
    assert (code, outcome(results)) == (0, "passed"), output[-3000:]
