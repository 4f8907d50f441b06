"""Measure how far static-cache logits drift from recomputation on a clean release, per dtype and attention.

Run:  python benchmarks/calibrate_tolerances.py [--schedules 200] [--device cpu]

Feeds random chunk schedules (the same kind the property test draws) through a fresh static cache and prints
the largest and 99th-percentile max-abs-difference per (dtype, attention). These figures are where the numbers
in cache_conformance/oracles/tolerances.py come from; rerun it when adding a device.
"""

import argparse
import math
import random

import torch

from cache_conformance import adapter
from cache_conformance.oracles.compare import Comparison
from cache_conformance.oracles.decoding import chunks_against_recomputation, random_tokens
from cache_conformance.oracles.tolerances import Tolerance
from cache_conformance.plugin import checkpoint
from cache_conformance.plugin.targets import DTYPES

UNBOUNDED = Tolerance(atol=math.inf, rtol=0.0, greedy_tokens_identical=False)


def random_schedule(rng: random.Random, window: int) -> list[int]:
    return [rng.randint(1, 2 * window + 1)] + [rng.randint(1, window + 2) for _ in range(rng.randint(0, 4))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    path = checkpoint.resolve(args.checkpoint)
    print(f"transformers {adapter.INSTALLED}, torch {torch.__version__}, device {args.device}, {args.schedules} schedules")
    for dtype_name, dtype in DTYPES.items():
        for attn in ("eager", "sdpa"):
            model = adapter.load_model(path, dtype=dtype, device=args.device, attn_implementation=attn)
            window, rng = adapter.window(model.config), random.Random(0)
            worst = []
            for _ in range(args.schedules):
                sizes = random_schedule(rng, window)
                sequence = random_tokens(model, 1, sum(sizes), torch.Generator().manual_seed(rng.randrange(2**31)))
                comparison = Comparison(UNBOUNDED)
                cache = adapter.make_static_cache(model, batch_size=1, capacity=sum(sizes))
                chunks_against_recomputation(model, cache, sequence, sizes, comparison)
                worst.append(comparison.max_abs_diff)
            worst.sort()
            print(f"{dtype_name:9} {attn:6} max {worst[-1]:.3g}  p99 {worst[int(0.99 * (len(worst) - 1))]:.3g}  median {worst[len(worst) // 2]:.3g}", flush=True)


if __name__ == "__main__":
    main()
