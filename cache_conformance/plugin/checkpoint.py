"""Which Gemma 3 checkpoint the suites load, and a cheap check that it is readable before any test runs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cache_conformance import ROOT

EMBEDDED = ROOT / "fixtures" / "tiny-gemma3"
MULTIMODAL_EMBEDDED = EMBEDDED.parent / "tiny-gemma3-multimodal"
DRAFT_EMBEDDED = EMBEDDED.parent / "tiny-gemma3-draft"  # the draft model of assisted decoding
OTHER_EMBEDDED = EMBEDDED.parent / "tiny-gemma3-other"  # differently shaped: W 5, 3:1 layers, 8/1 heads, head_dim 16
EMBEDDED_TEXT = (EMBEDDED, OTHER_EMBEDDED)  # the text checkpoints the committed scans ran on
ENVIRONMENT_VARIABLE = "GEMMA3_CHECKPOINT"
TEXT_MODEL_TYPES = ("gemma3_text",)
MULTIMODAL_MODEL_TYPES = ("gemma3",)  # Gemma3ForConditionalGeneration: the text suites run on its language model


class CheckpointError(ValueError):
    """The checkpoint can't be used; the message names the path and what is wrong."""


def resolve(option: str | None) -> Path:
    """The --checkpoint option, else $GEMMA3_CHECKPOINT, else the embedded tiny checkpoint."""
    return Path(option or os.environ.get(ENVIRONMENT_VARIABLE) or EMBEDDED).expanduser().resolve()


def validate(path: Path) -> dict:
    """Read config.json and every safetensors header; return the config. Raises CheckpointError."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory")
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {path}: cannot read config.json: {error}") from None
    if config.get("model_type") not in (*TEXT_MODEL_TYPES, *MULTIMODAL_MODEL_TYPES):
        raise CheckpointError(
            f"checkpoint {path}: model_type is {config.get('model_type')!r}; the suites need a Gemma 3 checkpoint: "
            f"text (model_type {' or '.join(TEXT_MODEL_TYPES)}, e.g. gemma-3-1b) or multimodal (model_type "
            f"{' or '.join(MULTIMODAL_MODEL_TYPES)}, e.g. gemma-3-4b)"
        )
    weight_files = sorted(path.glob("*.safetensors"))
    if not weight_files:
        raise CheckpointError(f"checkpoint {path}: no *.safetensors files (only safetensors weights are loaded)")
    for weight_file in weight_files:
        problem = safetensors_problem(weight_file)
        if problem:
            raise CheckpointError(f"checkpoint {weight_file}: unreadable safetensors file: {problem}")
    return config


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (bad header, truncated data), or None. Reads only the header."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        header_length = int.from_bytes(prefix, "little")
        if header_length > size - 8:
            return f"header length {header_length} exceeds the file size {size}"
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return f"header is not JSON ({error})"
    data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_length + data_end != size:
        return f"header describes {8 + header_length + data_end} bytes, the file has {size} (truncated or padded)"
    return None


def key(path: Path) -> str:
    """What reference logits recorded for a checkpoint are kept under: its folder name and a digest of its
    config.json and every safetensors file, so retrained weights or a changed config never meet old references."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weight_file in sorted(path.glob("*.safetensors")):
        with weight_file.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return f"{path.name}-{digest.hexdigest()[:16]}"


def text_window(path: Path) -> int:
    """The sliding window W that the checkpoint's config.json states (the text config's, for a multimodal one)."""
    config = json.loads((path / "config.json").read_text())
    return int(config.get("text_config", config)["sliding_window"])


def is_multimodal(path: Path) -> bool:
    return json.loads((path / "config.json").read_text()).get("model_type") in MULTIMODAL_MODEL_TYPES


def multimodal_checkpoint(path: Path) -> Path:
    """The checkpoint the multimodal checks load: `path` when it is multimodal, else the embedded one."""
    return path if is_multimodal(path) else MULTIMODAL_EMBEDDED


def describe(path: Path) -> str:
    """The checkpoint for the run header and results file, and the one the image checks load when it differs."""
    multimodal = multimodal_checkpoint(path)
    return _described(path) + ("" if multimodal == path else f"; image checks on {_described(multimodal)}")


def config_digest(path: Path) -> str:
    """The checkpoint's identity in results files: the start of its config's sha256 (the folder differs between
    machines)."""
    return hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:12]


def embedded_name(path: Path) -> str | None:
    """The folder name of an embedded text checkpoint (as expectation entries name it), None for any other."""
    return path.name if path in EMBEDDED_TEXT else None


def embedded_name_of_digest(digest: str) -> str | None:
    """The embedded text checkpoint a results file's config digest names (config_digest), None for any other."""
    return next((path.name for path in EMBEDDED_TEXT if config_digest(path) == digest), None)


def _described(path: Path) -> str:
    labels = {EMBEDDED: "embedded tiny Gemma 3", MULTIMODAL_EMBEDDED: "embedded tiny multimodal Gemma 3"}
    return f"{path} ({labels.get(path, 'local checkpoint')}, config sha256 {config_digest(path)})"
