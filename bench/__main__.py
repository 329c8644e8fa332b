"""`make bench`: every benchmark module under bench/ (``*_bench.py`` with a ``main()``), in turn, and the
ones named in ``EXTRA`` (the retrieval-quality report, the faults, the throughput sweep)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench

# Benchmarks whose module name does not end in _bench (a command of their own as well).
EXTRA = ("rag_quality", "faults", "throughput")


def main() -> int:
    wanted = set(sys.argv[1:])
    failed = []
    for module_info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not module_info.name.endswith("_bench") and module_info.name not in EXTRA:
            continue
        if wanted and module_info.name.removesuffix("_bench") not in wanted:
            continue
        print(f"== {module_info.name}", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"bench.{module_info.name}").main()
        except Exception as exc:  # one failed benchmark must not hide the others' results
            failed.append(module_info.name)
            print(f"{module_info.name} failed: {exc!r}", file=sys.stderr)
        print(f"== {module_info.name} took {time.perf_counter() - started:.0f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
