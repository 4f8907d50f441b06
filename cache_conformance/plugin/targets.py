"""What the suites run on: every (dtype, device, attention implementation) combination, and why some can't run."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("cpu", "cuda", "mps")
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")


@dataclass(frozen=True)
class Target:
    dtype_name: str
    device: str
    attn_implementation: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    @property
    def id(self) -> str:
        return f"{self.dtype_name}-{self.device}-{self.attn_implementation}"

    def as_dict(self) -> dict[str, str]:
        return {"dtype": self.dtype_name, "device": self.device, "attn": self.attn_implementation}


def device_problem(device: str) -> str | None:
    """Why `device` can't be used on this machine, or None."""
    if device == "cpu":
        return None
    if device == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available (torch.cuda.is_available() is False)"
    if device == "mps":
        return None if torch.backends.mps.is_available() else "MPS is not available (not an Apple-silicon torch build)"
    raise ValueError(f"unknown device {device!r}; known devices: {', '.join(DEVICES)}")


def attention_problem(attn_implementation: str) -> str | None:
    """Why an attention implementation is left out of the parameterisation on this machine, or None."""
    if attn_implementation in ("eager", "sdpa"):
        return None
    if attn_implementation == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            return "the flash_attn package is not installed"
        return None if torch.cuda.is_available() else "flash_attention_2 needs CUDA"
    if attn_implementation == "flex_attention":
        # On CPU flex attention compiles through inductor for every new shape: minutes per test.
        return None if torch.cuda.is_available() else "flex_attention is only run on CUDA (compiles per shape on CPU)"
    raise ValueError(f"unknown attention implementation {attn_implementation!r}")


def target_problem(target: Target) -> str | None:
    """Why this combination can't run although its device and attention implementation exist, or None."""
    if target.attn_implementation == "flash_attention_2" and target.dtype_name == "float32":
        return "flash_attention_2 supports only float16 and bfloat16"
    if target.attn_implementation in ("flash_attention_2", "flex_attention") and target.device != "cuda":
        return f"{target.attn_implementation} runs on CUDA only"
    return None


def all_targets(devices=DEVICES) -> list[Target]:
    attns = [a for a in ATTENTION_IMPLEMENTATIONS if attention_problem(a) is None]
    return [Target(dtype, device, attn) for device in devices for dtype in DTYPES for attn in attns]
