"""Run every benchmark (``python -m bench``) or the named ones (``python -m bench quality``).

Each benchmark is a module in this package with a ``main(argv) -> int``; each runs in its own
process so one benchmark's TensorFlow state or memory never skews another's figures.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)]) if not m.name.startswith("_")
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    available = discover()
    if args in (["-h"], ["--help"]):
        print(f"usage: python -m bench [NAME ...]\navailable: {', '.join(available)}")
        return 0
    names = args or available
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    results: list[tuple[str, int, float]] = []
    for name in names:
        print(f"\n=== bench.{name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=PACKAGE_DIR.parent)
        results.append((name, code, time.monotonic() - started))
    print("\nbenchmark            result  seconds")
    for name, code, seconds in results:
        print(f"{name:<20} {'PASS' if code == 0 else f'FAIL({code})':<7} {seconds:>7.0f}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
