"""`python -m bench.campaign`: run the campaign's groups, print the table, write the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from bench.campaign import faults, hostile, live, load, network, soak
from bench.campaign.row import Row, table

GROUPS = {"hostile": hostile, "load": load, "soak": soak, "network": network, "live": live, "faults": faults}


async def campaign(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for name in args.groups:
        rows += await GROUPS[name].run(args)
    return rows


def groups(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown groups {unknown}; known: {sorted(GROUPS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description="issue 19's campaign")
    parser.add_argument("--groups", type=groups, default=list(GROUPS), help=f"comma-separated, of {sorted(GROUPS)}")
    parser.add_argument("--json", type=Path, default=None)
    for module in GROUPS.values():
        module.arguments(parser)
    args = parser.parse_args()
    rows = asyncio.run(campaign(args))
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    raise SystemExit(0 if all(r.passed for r in rows) else 1)


if __name__ == "__main__":
    main()
