"""One row of the campaign: an attack or fault, what was sent, what came back, and whether it passes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    attack: str
    sent: str
    outcome: str
    passed: bool


def table(rows: list[Row]) -> str:
    lines = ["| attack | sent | outcome | pass |", "|---|---|---|---|"]
    lines += [f"| {r.attack} | {r.sent} | {r.outcome} | {'yes' if r.passed else 'NO'} |" for r in rows]
    return "\n".join(lines)
