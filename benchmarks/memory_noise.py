"""Noise of the memory suite's CPU probe over 20 runs, beside resident memory (RSS), and the smallest per-step
growth the probe detects.

Run:  python benchmarks/memory_noise.py [--runs 20] [--dtype float32]

Each run is the suite's decoding scenario (cache_conformance/probes/memory.py: batch 4, prompt W/2, decode to capacity 3W)
with a static cache and with the dynamic control, measured by both CPU held-bytes probes (memory.cpu_probes(): the
allocator's running total, which the suite uses, and the profiler's allocator events) and, in a separate run
without either, by RSS. Printed per probe: growth per step over the steady steps (what the suite judges) and
the largest change from one step to the next, as min .. max over the runs. Then a static cache that also keeps g
bytes alive per step, for a few g, shows where growth is first reported against
memory.DETECTION_THRESHOLD_BYTES_PER_STEP. docs/suites/memory.md quotes these figures."""

import argparse
from pathlib import Path

import torch

from cache_conformance import adapter
from cache_conformance.oracles.decoding import random_tokens
from cache_conformance.plugin import checkpoint
from cache_conformance.plugin.targets import DTYPES
from cache_conformance.probes import memory

PAGE_SIZE = 4096


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_SIZE


def scenario_for(model, make_cache, sequence, grow_by: int = 0):
    """The suite's decoding scenario; `grow_by` bytes are kept alive per decode step on purpose."""

    def scenario(reading):
        kept = []

        def after_step(step):
            if step and grow_by:
                kept.append(torch.empty(grow_by, dtype=torch.uint8))
            reading()

        memory.decode(model, make_cache(), sequence, after_step)

    return scenario


def held_bytes(scenario) -> list[int]:
    return memory.held_bytes("cpu", scenario).series


def probe_series(probe):
    return lambda scenario: probe(scenario).series


def resident(scenario) -> list[int]:
    """RSS after each step, without a held-bytes probe (the profiler's own event buffers would grow RSS by ~0.8 MB per
    step)."""
    series = []
    scenario(lambda: series.append(resident_bytes()))
    return series


def steady_figures(series: list[int], first: int) -> tuple[float, int]:
    """(growth per step over the steady steps, largest absolute change from one step to the next)."""
    changes = [abs(b - a) for a, b in zip(series[first:], series[first + 1 :])]
    return memory.growth_per_step(series, first), max(changes)


def spread(values: list[float]) -> str:
    return f"{min(values):.0f} .. {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = adapter.load_model(checkpoint.resolve(args.checkpoint), dtype=DTYPES[args.dtype], device="cpu",
                               attn_implementation="eager")
    window = adapter.window(model.config)
    capacity, first = memory.capacity_for(window), memory.first_steady_reading(window)
    sequence = random_tokens(model, memory.BATCH, capacity, torch.Generator().manual_seed(0))
    caches = {
        "static": lambda: adapter.make_static_cache(model, batch_size=memory.BATCH, capacity=capacity),
        "dynamic": lambda: adapter.make_dynamic_cache(model),
    }
    last_step = capacity - memory.prompt_length_for(window)
    print(f"transformers {adapter.INSTALLED}, torch {torch.__version__}, {args.dtype}, cpu, batch {memory.BATCH}, "
          f"window {window}, capacity {capacity}, steady decode steps {first + 1}..{last_step}, {args.runs} runs")
    print(f"{'cache':8} {'probe':32} {'growth per step':>20} {'largest step change':>22}")
    for name, make_cache in caches.items():
        probes = {f"held bytes ({name})": probe_series(probe) for name, probe in memory.cpu_probes().items()}
        probes["RSS, no probe"] = resident
        figures = {probe: [] for probe in probes}
        for _ in range(args.runs):
            for probe, read in probes.items():
                figures[probe].append(steady_figures(read(scenario_for(model, make_cache, sequence)), first))
        for probe, runs in figures.items():
            print(f"{name:8} {probe:32} {spread([r[0] for r in runs]):>20} {spread([r[1] for r in runs]):>22}")

    threshold = memory.DETECTION_THRESHOLD_BYTES_PER_STEP
    print(f"static cache keeping g extra bytes alive per step (detection threshold {threshold} bytes per step):")
    for grow_by in (16, 32, 48, 64, 128, 256):
        rate = memory.growth_per_step(held_bytes(scenario_for(model, caches["static"], sequence, grow_by)), first)
        print(f"  g = {grow_by:4} bytes: measured {rate:.0f} bytes per step, {'reported' if rate >= threshold else 'not reported'}")


if __name__ == "__main__":
    main()
