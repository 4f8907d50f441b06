"""The fixtures every suite uses: the checkpoint and the models loaded from it per target, the draws of tokens,
the comparison and the metrics that go into the results file, and the reference-logit snapshots."""

from __future__ import annotations

import copy
import zlib
from pathlib import Path

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.adapter import multimodal
from cache_conformance.inputs.user_call import UserCall
from cache_conformance.oracles import snapshots
from cache_conformance.oracles.compare import Comparison
from cache_conformance.oracles.decoding import random_tokens
from cache_conformance.oracles.tolerances import reference_tolerance_for, tolerance_for
from cache_conformance.plugin import checkpoint

CHECKPOINT_KEY = pytest.StashKey[Path]()  # the checkpoint of this run, validated by the plugin
CHECKPOINT_KEYS_KEY = pytest.StashKey[dict]()  # reference-folder keys, by checkpoint path
COMPARISON_KEY = pytest.StashKey[Comparison]()  # a test's comparison, whose metrics go into its record
METRICS_KEY = pytest.StashKey[dict]()  # a test's figures for its record
USER_CALL_KEY = pytest.StashKey[UserCall]()  # --user-call FILE, read when the run starts


@pytest.fixture(scope="session")
def checkpoint_path(pytestconfig) -> Path:
    return pytestconfig.stash[CHECKPOINT_KEY]


@pytest.fixture(scope="session")
def model(target, pytestconfig):
    """The checkpoint loaded once per target (pytest groups tests by target), in eval mode. Never modify it."""
    return adapter.load_model(
        pytestconfig.stash[CHECKPOINT_KEY],
        dtype=target.dtype,
        device=target.device,
        attn_implementation=target.attn_implementation,
    )


@pytest.fixture
def logits_snapshot(snapshot, target, metrics, pytestconfig):
    """syrupy's snapshot of the checkpoint's reference logits, at this target's tolerance (see `_logits_snapshot`)."""
    return _logits_snapshot(snapshot, target, metrics, pytestconfig, pytestconfig.stash[CHECKPOINT_KEY],
                            committed_for=checkpoint.EMBEDDED)


@pytest.fixture
def multimodal_logits_snapshot(snapshot, target, metrics, pytestconfig):
    """Like `logits_snapshot`, for the checkpoint the multimodal checks load."""
    return _logits_snapshot(snapshot, target, metrics, pytestconfig,
                            checkpoint.multimodal_checkpoint(pytestconfig.stash[CHECKPOINT_KEY]),
                            committed_for=checkpoint.MULTIMODAL_EMBEDDED)


def _checkpoint_key(config, path: Path) -> str:
    """checkpoint.key, computed once per checkpoint and session: it reads every weight file."""
    keys = config.stash.setdefault(CHECKPOINT_KEYS_KEY, {})
    if path not in keys:
        keys[path] = checkpoint.key(path)
    return keys[path]


def _logits_snapshot(snapshot, target, metrics, config, checkpoint_path: Path, *, committed_for: Path):
    """syrupy's snapshot with the tensor extension at this target's tolerance, kept in the checkpoint's reference
    folder; its max abs diff goes to `metrics`. Only the float32 CPU eager target records on --snapshot-update; every
    other target compares with it. Skips for a checkpoint that has no reference folder (the committed references
    are `committed_for`'s)."""
    chosen = config.getoption("reference_folder")
    folder = snapshots.reference_folder(checkpoint_path, chosen, committed_for,
                                        key=lambda path: _checkpoint_key(config, path))
    if folder is None:
        pytest.skip(f"no reference logits are kept for {checkpoint_path}: choose a folder for them with "
                    f"--reference-folder=DIR and record them with: {snapshots.update_command(checkpoint_path, Path('DIR'))}")
    tolerance = reference_tolerance_for(target.dtype_name, target.device)
    extension = snapshots.TensorSnapshotExtension.configured(tolerance, folder,
                                                              snapshots.update_command(checkpoint_path, chosen))
    assertion = snapshot.use_extension(extension)
    assertion.update_snapshots = assertion.update_snapshots and target == snapshots.REFERENCE_TARGET
    assertion.extension.metrics = metrics
    return assertion


@pytest.fixture(scope="session")
def multimodal_model(target, pytestconfig):
    """The multimodal checkpoint (Gemma3ForConditionalGeneration) loaded once per target, in eval mode: the
    --checkpoint when it is multimodal, else the embedded tiny one."""
    return multimodal.load_model(
        checkpoint.multimodal_checkpoint(pytestconfig.stash[CHECKPOINT_KEY]),
        dtype=target.dtype,
        device=target.device,
        attn_implementation=target.attn_implementation,
    )


@pytest.fixture(scope="session")
def loaded_draft_model(target, model):
    """The embedded draft model of assisted decoding (the embedded text model's first sliding and full layer) in
    the target's dtype and device, and its generation config as loaded; skips when the checkpoint's vocabulary is
    not the draft's (a draft proposes token ids, so it must share the vocabulary)."""
    draft = adapter.load_model(checkpoint.DRAFT_EMBEDDED, dtype=target.dtype, device=target.device,
                               attn_implementation=target.attn_implementation)
    vocabulary, draft_vocabulary = (adapter.text_config(m.config).vocab_size for m in (model, draft))
    if vocabulary != draft_vocabulary:
        pytest.skip(f"assisted decoding needs a draft model with the checkpoint's vocabulary ({vocabulary} tokens); "
                    f"the embedded draft has {draft_vocabulary}")
    return draft, copy.deepcopy(draft.generation_config)


@pytest.fixture
def draft_model(loaded_draft_model):
    """The draft model with the generation config it was loaded with: assisted decoding's heuristic schedule rewrites
    the assistant's own `num_assistant_tokens` after every call, so a draft shared as it was left would carry one
    check's (or drawn call's: call `fresh_draft` again) schedule into the next, and outcomes would depend on order."""
    return fresh_draft(loaded_draft_model)


def fresh_draft(loaded_draft_model):
    draft, as_loaded = loaded_draft_model
    draft.generation_config = copy.deepcopy(as_loaded)
    return draft


@pytest.fixture(scope="session")
def multimodal_window(multimodal_model) -> int:
    return adapter.window(multimodal_model.config)


@pytest.fixture
def multimodal_tokens(request, multimodal_model):
    """Like `tokens`, drawn for the multimodal model (its vocabulary and device)."""
    return _tokens(request, multimodal_model, request.config.getoption("seed"))


@pytest.fixture
def multimodal_recorded_tokens(request, multimodal_model):
    """Like `recorded_tokens`, for the multimodal model."""
    return _tokens(request, multimodal_model, 0)


@pytest.fixture(scope="session")
def window(model) -> int:
    return adapter.window(model.config)


@pytest.fixture
def compare(request, target) -> Comparison:
    """Logit comparisons with the target's tolerance; the worst difference goes into the results file."""
    comparison = Comparison(tolerance_for(target.dtype_name, target.device))
    request.node.stash[COMPARISON_KEY] = comparison
    return comparison


@pytest.fixture
def metrics(request) -> dict:
    """Figures for the results file: whatever a test puts in this dict is recorded with its outcome."""
    return request.node.stash.setdefault(METRICS_KEY, {})


@pytest.fixture
def tokens(request, model):
    """tokens(batch, length) -> random token ids on the target device, reproducible per test and --seed.

    The seed depends on the test's check name, not on the target, so every dtype and device sees the same tokens.
    """
    return _tokens(request, model, request.config.getoption("seed"))


@pytest.fixture
def recorded_tokens(request, model):
    """Like `tokens`, always with seed 0: the tokens the snapshots were recorded with, whatever --seed says."""
    return _tokens(request, model, 0)


@pytest.fixture(scope="session")
def named_tokens(pytestconfig, model):
    """named_tokens(name) -> tokens(batch, length) seeded by `name` and --seed rather than by the test: for a
    scenario that several tests grade (run once, shared through a session fixture)."""
    return lambda name: _token_source(model, name, pytestconfig.getoption("seed"))


def _tokens(request, model, seed: int):
    return _token_source(model, dict(request.node.user_properties).get("check", request.node.nodeid), seed)


def _token_source(model, name: str, seed: int):
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()) ^ seed)
    return lambda batch, length: random_tokens(model, batch, length, generator)


@pytest.fixture
def your_call(request) -> UserCall:
    """The team's own call of --user-call FILE; without it the test skips (the suite grades nothing of its own)."""
    call = request.config.stash.get(USER_CALL_KEY, None)
    if call is None:
        pytest.skip("no --user-call FILE given: this suite grades your own generate() call (docs/suites/your_call.md)")
    return call
