"""Quality target of the default model (issue 2, item 7); exits 1 when a target is missed.

* The lesson's CSV (``../shared/data/xor.csv`` next to the repository): mean test accuracy
  over 5 seeds >= 98% and no run below 96%.
* Generated data with 8% label noise (ten data seeds nobody tuned on): mean test
  accuracy within 1.5 points of the noise ceiling, the accuracy of the true rule x*y < 0 on
  the same test split.

Every run uses the default ModelConfig and the same code path as ``xor-dnn train``;
``--validation-size 0.2`` measures the previous default (a 20% validation cut).

    python -m bench.quality [--runs 5] [--data CSV] [--noisy-seeds 101,202,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LESSON_CSV = REPO.parent / "shared" / "data" / "xor.csv"
RESULTS = REPO / "bench" / "results" / "quality.json"
CLEAN_MEAN, CLEAN_MIN = 0.98, 0.96
NOISY_GAP = 0.015
# 101, 202, 303 were the first unseen seeds; the other seven were fixed before any result.
NOISY_SEEDS = "101,202,303,404,505,606,707,808,909,1010"


@dataclass
class Row:
    dataset: str
    noisy: bool
    runs: list[float]
    mean: float
    std: float
    min: float
    ceiling: float
    target: str
    margin: float
    """Mean test accuracy minus the mean it needs (for the clean data, the smaller of the
    mean's and the min's margins); negative is a miss."""
    passed: bool
    seconds: float


def evaluate(name: str, dataset: object, runs: int, config: object, *, noisy: bool) -> Row:
    from training.train import train_runs

    started = time.monotonic()
    report = train_runs(dataset, config, runs)  # type: ignore[arg-type]
    mean, low = report.test_accuracy_mean, report.test_accuracy_min
    ceiling = report.true_rule_test_accuracy
    if noisy:
        target = f"mean >= {ceiling - NOISY_GAP:.4f} (ceiling - {NOISY_GAP * 100:.1f} pt)"
        margin = mean - (ceiling - NOISY_GAP)
    else:
        target = f"mean >= {CLEAN_MEAN:.2f}, min >= {CLEAN_MIN:.2f}"
        margin = min(mean - CLEAN_MEAN, low - CLEAN_MIN)
    return Row(
        name,
        noisy,
        [round(a, 4) for a in report.test_accuracies],
        mean,
        report.test_accuracy_std,
        low,
        ceiling,
        target,
        margin,
        margin >= -1e-9,
        round(time.monotonic() - started, 1),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5, help="seeds per dataset (default 5)")
    parser.add_argument(
        "--data", type=Path, default=LESSON_CSV, help=f"the lesson's CSV (default {LESSON_CSV})"
    )
    parser.add_argument(
        "--require-data",
        action="store_true",
        help="fail instead of skipping when the lesson's CSV is missing",
    )
    parser.add_argument("--noise", type=float, default=0.08, help="label noise (default 0.08)")
    parser.add_argument("--n", type=int, default=1000, help="generated points (default 1000)")
    parser.add_argument(
        "--noisy-seeds",
        default=NOISY_SEEDS,
        help=f"generator seeds of the noisy datasets (default {NOISY_SEEDS})",
    )
    parser.add_argument(
        "--validation-size",
        type=float,
        default=None,
        help="override the default's validation cut (0.2 = the previous default)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file ({RESULTS})")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from training.data import generated_dataset, load_csv
    from training.model import ModelConfig

    config = ModelConfig()
    if args.validation_size is not None:
        config = replace(config, validation_size=args.validation_size)
    rows: list[Row] = []
    skipped: list[str] = []
    if args.data.is_file():
        rows.append(
            evaluate(
                f"lesson CSV ({args.data.name})",
                load_csv(args.data),
                args.runs,
                config,
                noisy=False,
            )
        )
    elif args.require_data:
        print(f"lesson CSV not found: {args.data}", file=sys.stderr)
        return 2
    else:
        skipped.append(f"lesson CSV not found at {args.data}: skipped (use --data)")
    for seed in (int(s) for s in args.noisy_seeds.split(",") if s.strip()):
        ds = generated_dataset(args.n, noise=args.noise, seed=seed)
        rows.append(
            evaluate(
                f"generated n={args.n} noise={args.noise} seed={seed}",
                ds,
                args.runs,
                config,
                noisy=True,
            )
        )

    print(f"model config: {json.dumps(config.to_dict())}")
    print(f"{args.runs} seeds per dataset, lesson split (25% test, seed 42)\n")
    print(
        "| dataset | test acc per seed | mean | std | min | noise ceiling | target "
        "| margin (pt) | result |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        print(
            f"| {r.dataset} | {' '.join(f'{a:.3f}' for a in r.runs)} | {r.mean:.4f} | "
            f"{r.std:.4f} | {r.min:.4f} | {r.ceiling:.4f} | {r.target} | "
            f"{r.margin * 100:+.2f} | {'PASS' if r.passed else 'FAIL'} |"
        )
    noisy = [r for r in rows if r.noisy]
    if noisy:
        print(
            f"\nnoisy data: {sum(r.passed for r in noisy)}/{len(noisy)} seeds pass, mean margin "
            f"{sum(r.margin for r in noisy) / len(noisy) * 100:+.2f} pt, worst "
            f"{min(r.margin for r in noisy) * 100:+.2f} pt"
        )
    for line in skipped:
        print(f"\nSKIP: {line}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"config": config.to_dict(), "rows": [asdict(r) for r in rows]}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = [r.dataset for r in rows if not r.passed]
    print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'all quality targets met'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
