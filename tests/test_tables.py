"""The release tables of the README and the docs are rendered from the data (suites/expectations.toml and the
committed scans), never typed: a page whose tables differ from what the data renders now fails here, with the
command that renders them."""

import re

import pytest

from cache_conformance.records import expectations
from cache_conformance.report import tables


@pytest.fixture(scope="module")
def data():
    return tables.Data()


def test_every_page_holds_its_tables_as_the_data_renders_them(data):
    stale = [str(page) for page in tables.stale_pages(data, write=False)]
    assert not stale, f"{', '.join(stale)}: tables differ from the data; run {tables.COMMAND}"


def test_the_readme_and_every_suite_page_hold_their_tables(data):
    names = {match.group("name") for page in tables.PAGES for match in tables.MARKED.finditer(page.read_text())}
    assert "summary" in names
    assert {f"findings {suite}" for suite in data.suites} <= names


def test_a_changed_range_changes_the_readme_and_the_suite_page(data, tmp_path):
    """Positive control: the multimodal model's entries end one release earlier in a copy of the expectations; the
    README's summary and the multimodal page's findings then render otherwise, so the check above would fail."""
    text = expectations.DEFAULT_PATH.read_text()
    changed, count = re.subn(r'releases = ">=5\.13,<5\.17"', 'releases = ">=5.13,<5.16"', text)
    assert count, "no multimodal entry with the range 5.13-5.16 left to change: pick another for this control"
    path = tmp_path / "expectations.toml"
    path.write_text(changed)
    other = tables.Data(expectations_path=path)
    assert tables.render("summary", other) != tables.render("summary", data)
    assert tables.render("findings multimodal", other) != tables.render("findings multimodal", data)
    assert "5.13-5.15" in tables.render("findings multimodal", other)


def test_an_unknown_table_is_one_clear_line(data):
    with pytest.raises(ValueError, match=r"unknown table 'findings nowhere' \(summary, findings SUITE"):
        tables.render("findings nowhere", data)


def test_release_ranges_merge_consecutive_scanned_releases(data):
    releases = data.releases
    chosen = {releases[0], releases[1], releases[3]}
    assert tables.ranges(releases, chosen) == f"{tables.minor(releases[0])}-{tables.minor(releases[1])}, " \
                                              f"{tables.minor(releases[3])}"
