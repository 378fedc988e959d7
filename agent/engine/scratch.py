"""The one row cold personas are prefilled in: full context, made once, its chunks replayed as CUDA graphs.

A prefill chunk is a temporal forward of T prompt steps on one row. Run eagerly on a GPU it is some
1500 kernel launches, and the engine launches it while the device still runs a step: the launches
fill CUDA's launch queue behind the step, and the host waits there until the step is done (on an
H200, a 512-step forward behind 200 ms of device work returned after 210 ms), so the running calls'
next tick is late by the whole step. Replayed as a CUDA graph, a chunk is one launch.

So the engine owns one scratch row at the model's full context (a prompt takes at most that), and
records a graph per chunk length (`graphed_lengths`), for prompt steps given as tokens and as a stored
voice's embeddings, all in one memory pool (they never replay at once, and their work is written into
the row). A chunk's inputs are copied into the graph's static buffers, then the graph replays: the
state is the same as the eager forward's (`chunk_frames` picks lengths that have a graph). One
persona is prefilled at a time: `claim` resets the row for a new owner, and a prefill that finds the
row claimed by another starts again (`agent.engine.prefix.PersonaPrefill`).
"""

from __future__ import annotations

import weakref
from functools import partial

import torch

from agent.engine.graphs import capture
from agent.model.stream import StreamingLM

MAX_CHUNK = 1024  # prompt steps of the longest graphed chunk (the pacer's calibration runs up to it)
SMALL_CHUNK = 16  # every length up to this one has a graph...
CHUNK_STEP = 32  # ...and every multiple of this one


def graphed_lengths(max_chunk: int = MAX_CHUNK) -> list[int]:
    """The chunk lengths that get a graph, shortest first.

    Every chunk pays the forward's fixed cost (every weight read once: 7.6 ms of a tick on an H200
    in bf16, against 26 us a step), so a piece of a prompt should take as few chunks as its budgets
    allow. With powers of two, a piece's last steps split into up to ten chunks (a tail of 700 steps:
    512 + 128 + 32 + 16 + 8 + 4); with these lengths, into at most three (672 + 16 + 12). 48 graphs of
    each kind, one pool, recorded in a few seconds.
    """
    return sorted(set(range(1, min(SMALL_CHUNK, max_chunk) + 1)) | set(range(CHUNK_STEP, max_chunk + 1, CHUNK_STEP)))


class PrefillScratch:
    def __init__(self, stream: StreamingLM):
        self.stream = stream
        self.state = stream.init_state(1)
        self._owner: weakref.ref | None = None  # weak: an owner holds the scratch, and a cycle would
        # keep this row's memory until a garbage collection
        self._graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}  # (steps, embeddings given)
        self._frames: dict[int, torch.Tensor] = {}  # static inputs of the graphs, by steps [1, K, T]
        self._embeddings: torch.Tensor | None = None  # [1, longest, dim]: a graph of T steps reads [:, :T]
        self.lengths: list[int] = []  # the chunk lengths that have a graph, longest first

    def claim(self, owner: object | None) -> None:
        """Give the row to `owner`, fresh (offset 1)."""
        self._owner = None if owner is None else weakref.ref(owner)
        self.state.reset(torch.ones(1, dtype=torch.bool, device=self.state.offsets.device))

    def owned_by(self, owner: object) -> bool:
        return self._owner is not None and self._owner() is owner

    def chunk_frames(self, frames: int) -> int:
        """The steps of the next chunk, at most `frames`: the longest graphed length that fits, or
        `frames` itself without graphs."""
        return next((steps for steps in self.lengths if steps <= frames), frames)

    def forward(self, frames: torch.Tensor, embeddings: torch.Tensor | None = None) -> None:
        """`StreamingLM.prefill` of frames [1, K, T] (embeddings [1, T, dim]) on the row: replayed
        where a graph of T steps was recorded, else run."""
        steps = frames.shape[2]
        graph = self._graphs.get((steps, embeddings is not None))
        if graph is None:
            self.stream.prefill(self.state, frames, embeddings=embeddings)
            return
        self._frames[steps].copy_(frames)
        if embeddings is not None:
            self._embeddings[:, :steps].copy_(embeddings)
        graph.replay()

    def record(self, max_chunk: int = MAX_CHUNK) -> None:
        """Record the graphs (CUDA), longest first so the shorter ones reuse its pool. The row is
        stepped by it: claim it before use."""
        cfg = self.stream.lm.config
        device, dtype = self.state.offsets.device, self.stream.lm.text_linear.weight.dtype
        pool = torch.cuda.graph_pool_handle()
        lengths = graphed_lengths(max_chunk)
        self._embeddings = torch.zeros(1, lengths[-1], cfg.dim, dtype=dtype, device=device)
        for steps in reversed(lengths):
            frames = self._frames[steps] = torch.zeros(1, cfg.num_streams, steps, dtype=torch.long, device=device)
            for given in (None, self._embeddings[:, :steps]):
                self.claim(None)  # the warm-up's steps stay inside the ring
                graph, _ = capture(partial(self.stream.prefill, self.state, frames, embeddings=given),
                                   warmup_steps=1, pool=pool)
                self._graphs[(steps, given is not None)] = graph
        self.lengths = lengths[::-1]
        self.claim(None)
