from packaging.version import Version

from cache_conformance import adapter


def test_a_release_before_gemma3_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(adapter, "INSTALLED", Version("4.49.0"))
    assert adapter.release_problem() == (
        "transformers 4.49.0 is not supported: Gemma 3 first appeared in 4.50. "
        "Install transformers>=4.50 (e.g. tox -e py311-transformers-latest)."
    )


def test_supported_releases_pass_and_newer_ones_are_noted(monkeypatch):
    monkeypatch.setattr(adapter, "INSTALLED", Version("4.50.0"))
    assert adapter.release_problem() is None and adapter.release_note() is None
    monkeypatch.setattr(adapter, "INSTALLED", Version("9.1.0"))
    assert adapter.release_problem() is None
    assert f"9.1.0 is newer than {adapter.NEWEST_CHECKED}," in adapter.release_note()
