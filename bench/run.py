"""`make bench`: every figure is printed as a ratio against a baseline measured in the same run."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench.contract import bench_contract


def _print(title: str, figures: dict[str, float]) -> None:
    print(f"\n== {title}")
    for key, value in figures.items():
        if "ratio" in key:
            shown = f"{value:,.3f}"
        elif key.endswith("_s") and not key.endswith("_per_s"):  # seconds
            shown = f"{value:,.2f}"
        else:
            shown = f"{value:,.0f}"
        print(f"  {key:<40} {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument(
        "--only", choices=["contract", "allocator", "projector", "oplog"], default=None
    )
    args = parser.parse_args()
    if args.only in (None, "contract"):
        _print(
            "contract: pydantic and the fast decoder; parse+validate / orjson.loads (100 k inputs)",
            bench_contract(),
        )
    if args.only in (None, "allocator"):
        from bench.allocator import bench_allocator

        for title, figures in asyncio.run(bench_allocator()):
            _print(title, figures)
    if args.only in (None, "projector"):
        from bench.projector import bench_projector

        for title, figures in asyncio.run(bench_projector()):
            _print(title, figures)
    if args.only in (None, "oplog"):  # BENCH_LOG_EVENTS=0 skips it
        from bench.oplog import bench_oplog

        for title, figures in asyncio.run(bench_oplog()):
            _print(title, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
