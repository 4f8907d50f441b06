"""The checkpoint under test loads completely through from_pretrained on this release.

A release that renamed or dropped a parameter would initialise it at random and every other suite would test
a different model than the checkpoint: this check says so first.
"""

from cache_conformance import adapter
from cache_conformance.adapter import multimodal
from cache_conformance.plugin import checkpoint


def test_from_pretrained_loads_every_weight(checkpoint_path):
    problems = adapter.weights_not_loaded(checkpoint_path)
    assert not problems, f"from_pretrained({checkpoint_path}) did not load every weight: {problems}"


def test_multimodal_from_pretrained_loads_every_weight():
    """The embedded multimodal checkpoint, written under the names Gemma 3's published checkpoints use, loads
    whole through the image-text-to-text auto class (releases that renamed the modules map the names back)."""
    path = checkpoint.MULTIMODAL_EMBEDDED
    problems = adapter.weights_not_loaded(path, multimodal.auto_class())
    assert not problems, f"from_pretrained({path}) did not load every weight: {problems}"
