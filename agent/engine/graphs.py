"""A step recorded once as a CUDA graph and replayed every tick: one launch instead of thousands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

Outputs = TypeVar("Outputs")


def capture(step: Callable[[], Outputs], warmup_steps: int = 3,
            pool: tuple[int, int] | None = None) -> tuple[torch.cuda.CUDAGraph, Outputs]:
    """Run `step` a few times on a side stream (so its allocations settle), then record it.

    Returns the graph and the tensors its replays write into. Warm-up and capture advance whatever
    state `step` advances, like real steps: call it before any call joins, then reset the rows.
    `pool` (`torch.cuda.graph_pool_handle()`) shares one memory pool between graphs that never
    replay at once and whose outputs nothing reads after another's replay.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        outputs = step()
    return graph, outputs
