import shutil
import subprocess
import sys

import pytest

from cache_conformance.plugin import checkpoint

SCRIPT = checkpoint.EMBEDDED.parent / "make_tiny_gemma3.py"


def test_the_script_regenerates_the_embedded_checkpoints_byte_for_byte(tmp_path):
    text, multimodal, draft, other = (tmp_path / name for name in ("text", "multimodal", "draft", "other"))
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(text), "--multimodal-out", str(multimodal),
                    "--draft-out", str(draft), "--other-out", str(other)], check=True)
    for written, embedded in ((text, checkpoint.EMBEDDED), (multimodal, checkpoint.MULTIMODAL_EMBEDDED),
                              (draft, checkpoint.DRAFT_EMBEDDED), (other, checkpoint.OTHER_EMBEDDED)):
        assert sorted(path.name for path in written.iterdir()) == sorted(path.name for path in embedded.iterdir())
        for path in embedded.iterdir():
            assert (written / path.name).read_bytes() == path.read_bytes(), path


def test_the_multimodal_checkpoint_holds_the_text_checkpoints_language_model():
    from safetensors.torch import load_file

    text = load_file(checkpoint.EMBEDDED / "model.safetensors")
    multimodal = load_file(checkpoint.MULTIMODAL_EMBEDDED / "model.safetensors")
    for name, tensor in text.items():
        assert multimodal["language_model." + name].equal(tensor), name
    assert any(name.startswith("vision_tower.") for name in multimodal)


def test_the_embedded_checkpoint_is_valid():
    assert checkpoint.validate(checkpoint.EMBEDDED)["model_type"] == "gemma3_text"


@pytest.fixture
def copy(tmp_path):
    target = tmp_path / "checkpoint"
    shutil.copytree(checkpoint.EMBEDDED, target)
    return target


def test_a_truncated_weight_file_is_named(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(checkpoint.CheckpointError, match=r"model\.safetensors: unreadable safetensors file: .*truncated"):
        checkpoint.validate(copy)


def test_a_garbage_weight_file_is_named(copy):
    (copy / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable safetensors file"):
        checkpoint.validate(copy)


def test_a_non_gemma3_config_is_refused(copy):
    (copy / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(checkpoint.CheckpointError, match="model_type is 'llama'"):
        checkpoint.validate(copy)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="is not a directory"):
        checkpoint.validate(tmp_path / "nowhere")


def test_the_environment_variable_points_at_another_checkpoint(monkeypatch, copy):
    monkeypatch.setenv(checkpoint.ENVIRONMENT_VARIABLE, str(copy))
    assert checkpoint.resolve(None) == copy.resolve()
    assert checkpoint.resolve(str(checkpoint.EMBEDDED)) == checkpoint.EMBEDDED


def test_a_weight_missing_from_the_checkpoint_is_reported(copy):
    from safetensors.torch import load_file, save_file

    from cache_conformance import adapter

    weights = load_file(copy / "model.safetensors")
    del weights["model.layers.3.self_attn.k_norm.weight"]
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert adapter.weights_not_loaded(copy) == {"missing_keys": ["model.layers.3.self_attn.k_norm.weight"]}
    assert adapter.weights_not_loaded(checkpoint.EMBEDDED) == {}


def test_a_multimodal_checkpoint_is_accepted_and_drives_the_image_checks():
    assert checkpoint.validate(checkpoint.MULTIMODAL_EMBEDDED)["model_type"] == "gemma3"
    assert checkpoint.multimodal_checkpoint(checkpoint.MULTIMODAL_EMBEDDED) == checkpoint.MULTIMODAL_EMBEDDED
    # With a text checkpoint the image checks run on the embedded multimodal one.
    assert checkpoint.multimodal_checkpoint(checkpoint.EMBEDDED) == checkpoint.MULTIMODAL_EMBEDDED


def test_text_config_overrides_reach_a_multimodal_checkpoints_language_model():
    import torch

    from cache_conformance import adapter

    model = adapter.load_model(checkpoint.MULTIMODAL_EMBEDDED, dtype=torch.float32, device="cpu",
                               attn_implementation="eager", sliding_window=3)
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert adapter.window(model.config) == 3


def test_the_run_header_names_the_checkpoint_the_image_checks_load():
    text = checkpoint.describe(checkpoint.EMBEDDED)
    assert text.startswith(f"{checkpoint.EMBEDDED} (embedded tiny Gemma 3, config sha256 ")
    assert f"; image checks on {checkpoint.MULTIMODAL_EMBEDDED} (embedded tiny multimodal Gemma 3" in text
    assert "image checks" not in checkpoint.describe(checkpoint.MULTIMODAL_EMBEDDED)
