"""Release differences on the compiled and exported paths: how generate() compiles the decode step, and which
export recipe a release has for a decoder-only LM with a static cache (transformers.integrations.executorch).

Checked by running suites/test_compiled.py on every minor release 4.50-5.24.
"""

from __future__ import annotations

import copy

import torch
import transformers
from packaging.version import Version

from cache_conformance.adapter import INSTALLED, greedy_generate, own_static_cache_implementation, text_config

# 4.50-4.51 export only through TorchExportableModuleWithStaticCache, which reads batch size and capacity from the
# generation config; 4.52 added TorchExportableModuleForDecoderOnlyLM (a hybrid cache where the config has sliding
# layers) with its own export() method.
DECODER_ONLY_EXPORT_RECIPE = Version("4.52")
# 4.56 renamed the recipe's `max_batch_size` to `batch_size`, and its export() passes keyword inputs.
EXPORT_BATCH_SIZE_RENAMED = Version("4.56")


def compile_settings() -> dict:
    """`fullgraph` and `dynamic` as the release's own CompileConfig sets them: how generate() compiles the decode
    step (4.50-4.55: fullgraph=True, dynamic=None; from 4.56: fullgraph=False, dynamic=None)."""
    config = transformers.CompileConfig()
    return {"fullgraph": config.fullgraph, "dynamic": config.dynamic}


def generate_compiled(model, input_ids, *, max_new_tokens: int):
    """Greedy generate() with the static cache it builds itself and its own compilation of the decode step (the
    release's CompileConfig, inductor), forced on every device: generate() compiles only on accelerators unless
    `_compile_all_devices` is set (every release 4.50-5.24). Returns (sequences, logits of each new step)."""
    compile_config = transformers.CompileConfig()
    compile_config._compile_all_devices = True
    return greedy_generate(
        model, input_ids, max_new_tokens,
        cache_implementation=own_static_cache_implementation(), compile_config=compile_config,
    )


class ExportedDecoder:
    """A program exported by the release's own recipe, fed one token per call with its position, as ExecuTorch's
    runner feeds it (the recipes export a one-token step; none exports a prompt of another length)."""

    INPUTS = ("input_ids", "cache_position")  # the recipes' forward(input_ids, cache_position), in this order

    def __init__(self, program: torch.export.ExportedProgram):
        self.program = program
        self.module = program.module()
        # The program is called as it was exported: input_ids positional and cache_position by keyword (4.50-4.51),
        # both positional (4.52-4.55) or both by keyword (from 4.56).
        example_args, example_kwargs = program.example_inputs
        self.positional = self.INPUTS[: len(example_args)]
        self.keywords = tuple(example_kwargs)

    def step(self, token_ids: torch.Tensor, position: int) -> torch.Tensor:
        """Logits for one token (shape [1, 1]) at `position`."""
        inputs = {"input_ids": token_ids, "cache_position": torch.tensor([position], device=token_ids.device)}
        with torch.no_grad():
            return self.module(*(inputs[n] for n in self.positional), **{n: inputs[n] for n in self.keywords})

    def cache_buffers(self) -> dict[str, torch.Tensor]:
        """The program's key and value cache buffers by name (every recipe names them key_cache_<layer> and
        value_cache_<layer>)."""
        return {name: buffer for name, buffer in self.module.named_buffers() if "_cache_" in name}


def export_decoder(model, *, capacity: int) -> ExportedDecoder:
    """Export `model` for batch 1 and `capacity` positions with the release's own recipe (strict torch.export, as
    every recipe defaults to). A copy is exported: from 4.53 the recipes change the model they are given (its
    attention implementation, which every later check on the same loaded model inherited), and before 4.52 the
    recipe reads its cache from the generation config set here."""
    model = copy.deepcopy(model)
    example = torch.tensor([[text_config(model.config).bos_token_id]], dtype=torch.long, device=model.device)
    example_position = torch.tensor([0], dtype=torch.long, device=model.device)
    from transformers.integrations import executorch

    if INSTALLED < DECODER_ONLY_EXPORT_RECIPE:
        # The documented 4.50 recipe: a generation config that asks for a static cache of this size.
        model.generation_config = transformers.GenerationConfig(
            use_cache=True, cache_implementation="static",
            cache_config={"batch_size": 1, "max_cache_len": capacity, "device": str(model.device)},
        )
        return ExportedDecoder(executorch.convert_and_export_with_cache(model, example, example_position))
    if INSTALLED < EXPORT_BATCH_SIZE_RENAMED:
        recipe = executorch.TorchExportableModuleForDecoderOnlyLM(model, max_batch_size=1, max_cache_len=capacity)
        return ExportedDecoder(recipe.export(example, example_position))
    recipe = executorch.TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=capacity)
    return ExportedDecoder(recipe.export(input_ids=example, cache_position=example_position))
