import pytest
from packaging.version import Version

from cache_conformance import expectations

ENTRY = r"""
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


def test_entries_match_by_node_id_pattern_and_release(tmp_path):
    [entry] = expectations.load(write(tmp_path, ENTRY))
    node = "suites/test_equivalence.py::test_chunked_prefill[float32-cpu-sdpa-onto]"
    assert expectations.find([entry], node, Version("4.55.4")) is entry
    assert expectations.find([entry], node, Version("4.56.0")) is None
    assert expectations.find([entry], node.replace("float32", "float16"), Version("4.50.0")) is None
    assert expectations.find([entry], "suites/x.py::test_other", Version("4.50.0")) is entry
    assert expectations.find([entry], "suites/x.py::test_other[float32]", Version("4.50.0")) is None


def test_brackets_in_patterns_are_literal(tmp_path):
    [entry] = expectations.load(write(tmp_path, ENTRY.replace('"*::test_other"', '"*::test_x[*-shorter]"')))
    assert expectations.find([entry], "suites/t.py::test_x[float32-cpu-shorter]", Version("4.50.0")) is entry
    assert expectations.find([entry], "suites/t.py::test_x[float32-cpu-longer]", Version("4.50.0")) is None


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("[[expected_failure]]\ntests = ['x']\n", "missing ['releases', 'raises', 'match', 'reason', 'evidence']"),
        (ENTRY.replace('["suites/test_equivalence.py::test_chunked*[float32-*", "*::test_other"]', "'x'"),
         "tests must be a list"),
        (ENTRY + "colour = 'red'\n", "unknown keys ['colour']"),
        (ENTRY.replace(">=4.50,<4.56", "four-fifty"), "is not a version specifier"),
        (ENTRY.replace(">=4.50,<4.56", ">=4.50"), "has no upper bound"),
        (ENTRY.replace(">=4.50,<4.56", ">=4.50,!=4.52.*"), "has no upper bound"),
        (ENTRY.replace('raises = "AssertionError"', 'raises = "not a type"'), "raises must name an exception type"),
        (ENTRY.replace("match = 'chunk", "match = '(chunk"), "is not a regular expression"),
        ("[[expected_failures]]\n", "unknown top-level keys"),
        ("test = [", "cannot read expectations"),
    ],
)
def test_a_malformed_file_is_one_clear_error_naming_the_file(tmp_path, text, complaint):
    path = write(tmp_path, text)
    with pytest.raises(expectations.ExpectationsError) as error:
        expectations.load(path)
    assert str(path) in str(error.value) and complaint in str(error.value)


def test_the_shipped_expectations_file_loads():
    from cache_conformance.plugin import DEFAULT_EXPECTATIONS

    for entry in expectations.load(DEFAULT_EXPECTATIONS):
        assert all(pattern.startswith("suites/") for pattern in entry.tests), entry.tests


def test_an_entry_explains_only_the_failure_it_names(tmp_path):
    [entry] = expectations.load(write(tmp_path, ENTRY.replace('raises = "AssertionError"',
                                                              'raises = ["AssertionError", "Failed"]')))
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


def test_no_shipped_entry_reaches_past_the_newest_release_checked():
    from cache_conformance import pins
    from cache_conformance.plugin import DEFAULT_EXPECTATIONS

    newest = Version(pins.pinned("transformers"))
    next_patch = Version(f"{newest.major}.{newest.minor}.{newest.micro + 1}")
    for entry in expectations.load(DEFAULT_EXPECTATIONS):
        assert next_patch not in entry.releases, (entry.tests, str(entry.releases))
