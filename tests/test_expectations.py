import pytest
from packaging.version import Version

from cache_conformance.records import expectations

ENTRY = r"""
adopted = "5.24.0"

[[expected_failure]]
tests = ["suites/test_equivalence.py::test_chunked*[float32-*", "*::test_other"]
releases = ">=4.50,<4.56"
raises = "AssertionError"
match = 'chunk \d+ of \d+ .*max abs diff'
reason = "sliding layer loses a token"
evidence = "max abs diff 4.9"
"""


def write(tmp_path, text):
    path = tmp_path / "expectations.toml"
    path.write_text(text)
    return path


def found(known, nodeid, version):
    applied = known.find(nodeid, Version(version))
    return applied and (applied.entry, applied.carried_from)


def test_entries_match_by_node_id_pattern_and_release(tmp_path):
    known = expectations.load(write(tmp_path, ENTRY))
    [entry] = known.entries
    node = "suites/test_equivalence.py::test_chunked_prefill[float32-cpu-sdpa-onto]"
    assert found(known, node, "4.55.4") == (entry, None)
    assert found(known, node, "4.56.0") is None
    assert found(known, node.replace("float32", "float16"), "4.50.0") is None
    assert found(known, "suites/x.py::test_other", "4.50.0") == (entry, None)
    assert found(known, "suites/x.py::test_other[float32]", "4.50.0") is None


def test_brackets_in_patterns_are_literal(tmp_path):
    known = expectations.load(write(tmp_path, ENTRY.replace('"*::test_other"', '"*::test_x[*-shorter]"')))
    assert found(known, "suites/t.py::test_x[float32-cpu-shorter]", "4.50.0") == (known.entries[0], None)
    assert found(known, "suites/t.py::test_x[float32-cpu-longer]", "4.50.0") is None


def test_entries_that_reach_the_adopted_release_are_carried_to_newer_releases_only(tmp_path):
    known = expectations.load(write(tmp_path, ENTRY.replace(">=4.50,<4.56", ">=4.50,<=5.24.0")))
    [entry] = known.entries
    assert found(known, "suites/x.py::test_other", "5.24.0") == (entry, None)
    assert found(known, "suites/x.py::test_other", "5.24.1") == (entry, Version("5.24.0"))
    assert found(known, "suites/x.py::test_other", "6.0.0") == (entry, Version("5.24.0"))
    assert known.find("suites/x.py::test_other", Version("6.0.0")).label == "carried from 5.24.0, release not adopted"
    assert not known.provisional(Version("5.24.0")) and known.provisional(Version("5.25.0"))
    ended = expectations.load(write(tmp_path, ENTRY))  # ends before the adopted release: not carried
    assert found(ended, "suites/x.py::test_other", "5.25.0") is None


def test_an_entry_whose_range_includes_the_release_wins_over_a_carried_one(tmp_path):
    later = ENTRY.replace(">=4.50,<4.56", ">=5.25,<=5.25").replace('adopted = "5.24.0"', "")
    known = expectations.load(write(tmp_path, ENTRY.replace(">=4.50,<4.56", ">=4.50,<=5.24.0") + later))
    assert found(known, "suites/x.py::test_other", "5.25.0") == (known.entries[1], None)
    assert found(known, "suites/x.py::test_other", "5.26.0") == (known.entries[0], Version("5.24.0"))


@pytest.mark.parametrize(
    "releases, extended",
    [(">=4.50,<=5.24.0", ">=4.50,<=5.25.0"), (">=4.50,!=4.52.*,<=5.24.0", ">=4.50,!=4.52.*,<=5.25.0"),
     (">=5.24,<=5.24", ">=5.24,<=5.25.0"), (">=4.57,<5.25", ">=4.57,<=5.25.0"), ("==5.24.*", ">=5.24,<=5.25.0"),
     ("~=5.24", ">=5.24,<=5.25.0")],
)
def test_extending_a_range_moves_only_its_upper_bound(releases, extended):
    assert expectations.extended_to(releases, Version("5.25.0")) == extended


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("adopted = '5.24'\n[[expected_failure]]\ntests = ['x']\n", "missing ['releases', 'raises', 'match', 'reason', 'evidence']"),
        (ENTRY.replace('["suites/test_equivalence.py::test_chunked*[float32-*", "*::test_other"]', "'x'"),
         "tests must be a list"),
        (ENTRY + "colour = 'red'\n", "unknown keys ['colour']"),
        (ENTRY + "checkpoints = 'tiny-gemma3'\n", "checkpoints must be a list of embedded checkpoints' folder names"),
        (ENTRY.replace(">=4.50,<4.56", "four-fifty"), "is not a version specifier"),
        (ENTRY.replace(">=4.50,<4.56", ">=4.50"), "has no upper bound"),
        (ENTRY.replace(">=4.50,<4.56", ">=4.50,!=4.52.*"), "has no upper bound"),
        (ENTRY.replace('raises = "AssertionError"', 'raises = "not a type"'), "raises must name an exception type"),
        (ENTRY.replace("match = 'chunk", "match = '(chunk"), "is not a regular expression"),
        ('adopted = "5.24.0"\n[[expected_failures]]\n', "unknown top-level keys"),
        (ENTRY.replace('adopted = "5.24.0"', ""), "adopted = None must name the newest adopted release"),
        (ENTRY.replace('adopted = "5.24.0"', 'adopted = "newest"'), "must name the newest adopted release"),
        ("test = [", "cannot read expectations"),
    ],
)
def test_a_malformed_file_is_one_clear_error_naming_the_file(tmp_path, text, complaint):
    path = write(tmp_path, text)
    with pytest.raises(expectations.ExpectationsError) as error:
        expectations.load(path)
    assert str(path) in str(error.value) and complaint in str(error.value)


def test_the_shipped_expectations_file_loads():

    for entry in expectations.load(expectations.DEFAULT_PATH).entries:
        assert all(pattern.startswith("suites/") for pattern in entry.tests), entry.tests


def test_an_entry_explains_only_the_failure_it_names(tmp_path):
    [entry] = expectations.load(write(tmp_path, ENTRY.replace('raises = "AssertionError"',
                                                              'raises = ["AssertionError", "Failed"]'))).entries
    assert entry.explains("AssertionError", "chunk 2 of 4 (sizes [4, 6]): max abs diff 3.2 exceeds tolerance")
    assert entry.explains("Failed", "prefix; chunk 1 of 1 (...) max abs diff 1")
    assert not entry.explains("IndexError", "chunk 2 of 4 (sizes [4, 6]): max abs diff 3.2")
    assert not entry.explains("AssertionError", "chunk 2 of 4 raised IndexError: index 8 is out of bounds")
    assert entry.describe() == "AssertionError or Failed matching 'chunk \\\\d+ of \\\\d+ .*max abs diff'"


def test_a_pattern_names_test_functions_by_its_part_before_the_parameters():
    pattern = "suites/test_equivalence.py::test_chunked*[float32-*"
    assert expectations.names_function(pattern, {"suites/test_equivalence.py::test_chunked_prefill"})
    assert not expectations.names_function(pattern, {"suites/test_equivalence.py::test_generate"})
    assert expectations.names_function("*::test_other", {"suites/x.py::test_other"})


def test_no_shipped_entry_reaches_past_the_adopted_release():

    known = expectations.load(expectations.DEFAULT_PATH)
    next_patch = Version(f"{known.adopted.major}.{known.adopted.minor}.{known.adopted.micro + 1}")
    for entry in known.entries:
        assert next_patch not in entry.releases, (entry.tests, str(entry.releases))
