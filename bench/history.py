"""The cost of recording the training history (issue 19): training time with and without it,
and the size of ``history.json``; exits 1 on a missed target.

Targets: training with the history takes at most 10% longer than without (median of
interleaved pairs, wall clock and process CPU, both runs of a pair in this process on the same
data and seed), and ``history.json`` is at most 200 KB. The default network and training (16,16
+ dropout 0.2, 100 epochs) on the default generated data, one run per training; the pairs
alternate which goes first, so a machine getting busier or quieter favours neither.

    python -m bench.history [--pairs 3] [--epochs 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

MAX_RATIO = 1.10
MAX_BYTES = 200_000


def _timed(dataset: object, config: object, history: bool) -> tuple[float, float]:
    from training.train import train_runs

    wall, cpu = time.perf_counter(), time.process_time()
    train_runs(dataset, config, 1, history=history)  # type: ignore[arg-type]
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs (default 3)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per run (default 100)")
    args = parser.parse_args(argv)

    from training.data import generated_dataset
    from training.model import ModelConfig
    from training.train import train_and_publish
    from xor_dnn.modelstore import HISTORY_FILE

    dataset = generated_dataset()
    config = replace(ModelConfig(), epochs=args.epochs)
    _timed(dataset, replace(config, epochs=2), True)  # TensorFlow's first-call costs, once
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for pair in range(args.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for history in order:
            times[history].append(_timed(dataset, config, history))
            wall, cpu = times[history][-1]
            print(
                f"pair {pair + 1}: history {'on ' if history else 'off'}  "
                f"wall {wall:6.2f} s  cpu {cpu:6.2f} s",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as tmp:
        published = train_and_publish(Path(tmp) / "xor", data=dataset, runs=1, config=config)
        size = (Path(str(published.path)) / HISTORY_FILE).stat().st_size

    def median(history: bool, i: int) -> float:
        return statistics.median(t[i] for t in times[history])

    wall_ratio = median(True, 0) / median(False, 0)
    cpu_ratio = median(True, 1) / median(False, 1)
    print()
    print("| measure | without history | with history | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| training wall time, median of {args.pairs} | {median(False, 0):.2f} s | "
        f"{median(True, 0):.2f} s | {wall_ratio:.3f} | <= {MAX_RATIO} |"
    )
    print(
        f"| training CPU time, median of {args.pairs} | {median(False, 1):.2f} s | "
        f"{median(True, 1):.2f} s | {cpu_ratio:.3f} | <= {MAX_RATIO} |"
    )
    print(f"| history.json ({args.epochs} epochs) | | {size:,} bytes | | <= {MAX_BYTES:,} |")
    ok = wall_ratio <= MAX_RATIO and cpu_ratio <= MAX_RATIO and size <= MAX_BYTES
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
