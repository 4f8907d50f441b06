"""The pins of the project's own tests (constraints/project-tests.txt) move together with what the project claims
to have checked: the adopted release of the expectations file, its tox environment, the release runner's torch."""

from pathlib import Path

from packaging.version import Version

from cache_conformance.records import expectations
from cache_conformance.releases import jobs, pins

ROOT = Path(__file__).resolve().parent.parent


def test_the_pinned_transformers_is_the_adopted_release():
    pinned = Version(pins.pinned("transformers"))
    adopted = expectations.load(expectations.DEFAULT_PATH).adopted
    assert pinned == adopted, (
        f"constraints/project-tests.txt pins transformers {pinned} but suites/expectations.toml adopted {adopted}: "
        "python -m cache_conformance.releases.adopt moves both"
    )


def test_the_pinned_release_has_its_own_tox_environment():
    minor = ".".join(pins.pinned("transformers").split(".")[:2])
    assert minor in jobs.tox_minors((ROOT / "tox.ini").read_text())


def test_the_pinned_torch_is_the_one_the_environments_install():
    assert pins.pinned("torch") == jobs.TORCH
    assert f"torch=={jobs.TORCH}" in (ROOT / "tox.ini").read_text()


def test_a_pin_is_read_exactly(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# transformers==0.0 in a comment is no pin\ntransformers-extra==1.0\ntransformers==5.24.0\n")
    assert pins.pinned("transformers", path) == "5.24.0"
    assert pins.pinned("torch", path) is None
