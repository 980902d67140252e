"""``python -m benchmarks [NAME ...|all]``: list the benchmarks, or run them one after another.

Each benchmark is also a module of its own (``python -m benchmarks.bench_index --help``) with
options for sizes; this runner uses their defaults.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if not argv:
        print("Benchmarks (results go to benchmarks/results/*.json):")
        for name in names:
            print(f"  {name.removeprefix('bench_'):10s} python -m benchmarks.{name} --help")
        print("Run: python -m benchmarks NAME [NAME ...] | all")
        return 0
    wanted = names if argv == ["all"] else [f"bench_{n.removeprefix('bench_')}" for n in argv]
    for name in wanted:
        if name not in names:
            print(f"No benchmark named {name!r}; choose from {', '.join(names)}.", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
