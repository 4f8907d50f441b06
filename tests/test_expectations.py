import pytest
from packaging.version import Version

from cache_conformance import expectations

ENTRY = """
[[expected_failure]]
tests = ["suites/test_equivalence.py::test_chunked*[float32-*", "*::test_other"]
releases = ">=4.50,<4.56"
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
        ("[[expected_failure]]\ntests = ['x']\n", "missing ['releases', 'reason', 'evidence']"),
        ("[[expected_failure]]\ntests = 'x'\nreleases = '>=4.50'\nreason = 'r'\nevidence = 'e'\n", "tests must be a list"),
        (ENTRY + "colour = 'red'\n", "unknown keys ['colour']"),
        (ENTRY.replace(">=4.50,<4.56", "four-fifty"), "is not a version specifier"),
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
