"""What issue 18's per-dataset bound asks of a learner told the answer's shape.

Draws datasets like the reports' (1,000 points, the lesson's split) at each noise rate, from
generator seeds no set of ``bench.quality`` uses, fits the reference learner to each (two lines,
``bench.quality.reference_lines``) and prints, per noise rate, its mean gap to the ceiling and
the share of datasets more than 1.0 point below it. From those shares it prints the chance that
a report of the fresh sets' size (12, 24 and 12 datasets at 4%, 8% and 12% noise) has no dataset
over 1.0 point, and that a spot check of 5 datasets at 8% noise has none.

    python -m bench._bound [--datasets 2000] [--first-seed 700000]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from bench._sweep import split
from bench.quality import WORST_GAP, Data, reference_accuracy

NOISES = (0.04, 0.08, 0.12)
# A fresh set's datasets per noise rate (bench.quality._seeds' counts).
REPORT_COUNTS = {0.04: 12, 0.08: 24, 0.12: 12}
SPOT_CHECK = {0.08: 5}
# Seeds of noise rate k start at first_seed + k * SEED_STRIDE.
SEED_STRIDE = 10_000


def reference_gaps(noise: float, seeds: Sequence[int]) -> list[float]:
    """The reference learner's gap to the ceiling, in points, on each generated dataset."""
    gaps = []
    for seed in seeds:
        d = split(Data(f"noise {noise:.0%} seed {seed}", noise, seed=seed))
        accuracy = reference_accuracy(d.fit, d.fit_labels, d.test, d.test_labels)
        gaps.append((d.ceiling - accuracy) * 100)
    return gaps


def chance_none_over(share_over: Mapping[float, float], counts: Mapping[float, int]) -> float:
    """Chance that independent datasets, ``counts[noise]`` of each noise rate, each over the
    bound with chance ``share_over[noise]``, have none over it."""
    return math.prod((1 - share_over[noise]) ** n for noise, n in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench._bound",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--datasets", type=int, default=2000, help="datasets per noise rate")
    parser.add_argument("--first-seed", type=int, default=700_000, help="first generator seed")
    args = parser.parse_args(argv)
    if args.datasets < 1:
        print(f"--datasets must be >= 1, got {args.datasets}", file=sys.stderr)
        return 2
    limit = WORST_GAP * 100
    print(f"reference learner on {args.datasets} generated datasets per noise rate")
    print("\n| noise | mean gap (pt) | datasets over 1.0 pt |\n|---|---:|---:|")
    share_over = {}
    for k, noise in enumerate(NOISES):
        first = args.first_seed + k * SEED_STRIDE
        gaps = np.array(reference_gaps(noise, range(first, first + args.datasets)))
        share_over[noise] = float(np.mean(gaps > limit + 1e-9))
        print(f"| {noise:.0%} | {gaps.mean():.3f} | {share_over[noise]:.1%} |")
    report = ", ".join(f"{n} at {noise:.0%}" for noise, n in REPORT_COUNTS.items())
    print(f"\nchance of no dataset over 1.0 pt in a report ({report}): "
          f"{chance_none_over(share_over, REPORT_COUNTS):.0%}")  # fmt: skip
    print(f"chance of none over 1.0 pt in a spot check of 5 at 8%: "
          f"{chance_none_over(share_over, SPOT_CHECK):.0%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
