"""One row of the campaign: an attack or fault, what was sent, what came back, and whether it passes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    attack: str
    sent: str
    outcome: str
    passed: bool
    figures: dict[str, float] = field(default_factory=dict)  # the outcome's numbers, for the JSON


def table(rows: list[Row]) -> str:
    lines = ["| attack | sent | outcome | pass |", "|---|---|---|---|"]
    lines += [f"| {r.attack} | {r.sent} | {r.outcome} | {'yes' if r.passed else 'NO'} |" for r in rows]
    return "\n".join(lines)
