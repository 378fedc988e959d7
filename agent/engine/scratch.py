"""The one row cold personas are prefilled in: full context, made once, its chunks replayed as CUDA graphs.

A prefill chunk is a temporal forward of T prompt steps on one row. Run eagerly on a GPU it is some
1500 kernel launches, and the engine launches it while the device still runs a step: the launches
fill CUDA's launch queue behind the step, and the host waits there until the step is done (on an
H200, a 512-step forward behind 200 ms of device work returned after 210 ms), so the running calls'
next tick is late by the whole step. Replayed as a CUDA graph, a chunk is one launch.

So the engine owns one scratch row at the model's full context (a prompt takes at most that), and
records a graph per chunk length, the powers of two up to `MAX_CHUNK`, for prompt steps given as
tokens and as a stored voice's embeddings, all in one memory pool (they never replay at once, and
their work is written into the row). A chunk's inputs are copied into the graph's static buffers,
then the graph replays: the state is the same as the eager forward's (`chunk_frames` picks lengths
that have a graph). One persona is prefilled at a time: `claim` resets the row for a new owner, and
a prefill that finds the row claimed by another starts again (`agent.engine.prefix.PersonaPrefill`).
"""

from __future__ import annotations

import weakref
from functools import partial

import torch

from agent.engine.graphs import capture
from agent.model.stream import StreamingLM

MAX_CHUNK = 1024  # prompt steps of the longest graphed chunk (the pacer's calibration runs up to it)


class PrefillScratch:
    def __init__(self, stream: StreamingLM):
        self.stream = stream
        self.state = stream.init_state(1)
        self._owner: weakref.ref | None = None  # weak: an owner holds the scratch, and a cycle would
        # keep this row's memory until a garbage collection
        self._graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}  # (steps, embeddings given)
        self._frames: dict[int, torch.Tensor] = {}  # static inputs of the graphs, by steps [1, K, T]
        self._embeddings: dict[int, torch.Tensor] = {}  # [1, T, dim]

    @property
    def lengths(self) -> list[int]:
        """The chunk lengths that have a graph, longest first."""
        return sorted({steps for steps, _ in self._graphs}, reverse=True)

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
            self._embeddings[steps].copy_(embeddings)
        graph.replay()

    def record(self, max_chunk: int = MAX_CHUNK) -> None:
        """Record the graphs (CUDA), longest first so the shorter ones reuse its pool. The row is
        stepped by it: claim it before use."""
        cfg = self.stream.lm.config
        device, dtype = self.state.offsets.device, self.stream.lm.text_linear.weight.dtype
        pool = torch.cuda.graph_pool_handle()
        lengths = [1 << n for n in range(max_chunk.bit_length()) if 1 << n <= max_chunk]
        for steps in reversed(lengths):
            frames = torch.zeros(1, cfg.num_streams, steps, dtype=torch.long, device=device)
            embeddings = torch.zeros(1, steps, cfg.dim, dtype=dtype, device=device)
            self._frames[steps], self._embeddings[steps] = frames, embeddings
            for given in (None, embeddings):
                self.claim(None)  # the warm-up's steps stay inside the ring
                graph, _ = capture(partial(self.stream.prefill, self.state, frames, embeddings=given),
                                   warmup_steps=2, pool=pool)
                self._graphs[(steps, given is not None)] = graph
        self.claim(None)
