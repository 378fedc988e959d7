"""The scratch row cold personas are prefilled in: its chunk is one CUDA graph's replay on a GPU.

A graph records device work only: an op that reads a tensor on the host (a sync) cannot be recorded,
and a shape that follows a tensor's value would be frozen at the recorded one. The CPU tests check
that a chunk's forward has neither; tests/agent/engine/test_prefill_graphs.py replays it on a GPU.
"""

import gc
import weakref

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrefill, PersonaPrompt
from agent.engine.scratch import MAX_CHUNK, graphed_lengths
from voices.prompt import load_voice_prompt

pytestmark = pytest.mark.reference

HOST_READS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "item"}  # ops that wait for the device


class OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kv_dtype", ["bf16", "fp8"])
def test_a_chunk_reads_nothing_on_the_host(models, reference_dir, reference_call, kv_dtype):
    scratch = ModelBackend(*models, num_slots=1, kv_dtype=kv_dtype).scratch
    for voice in (reference_call.prompt.voice, load_voice_prompt(reference_dir / "voice.pt")):  # tokens, embeddings
        prefill = PersonaPrefill(scratch, PersonaPrompt(voice=voice, text_tokens=reference_call.prompt.text_tokens))
        prefill.advance(1)  # claims the row: the chunk below continues it
        with OpNames() as ops:
            prefill.advance(4)
        assert ops.names and not ops.names & HOST_READS, sorted(ops.names & HOST_READS)


def test_without_graphs_a_chunk_takes_the_steps_it_is_given(models):
    scratch = ModelBackend(*models, num_slots=1).scratch
    assert scratch.lengths == [] and scratch.chunk_frames(37) == 37


def test_a_dropped_engine_frees_its_scratch_row_without_a_garbage_collection(models, reference_call):
    """A benchmark builds engine after engine in one process: a reference cycle would keep each one's
    scratch row (a full-context state, 1.5 GB at full size) until Python's collector ran."""
    backend = ModelBackend(*models, num_slots=1)
    PersonaPrefill(backend.scratch, reference_call.prompt).advance(4)  # the prefill claims the row
    row = weakref.ref(backend.scratch.state)
    gc.disable()
    try:
        del backend
        assert row() is None
    finally:
        gc.enable()


def test_any_piece_takes_at_most_three_graphed_chunks_beyond_its_budget(models):
    """Each chunk pays the forward's fixed cost: a piece's tail must not split into many small ones."""
    scratch = ModelBackend(*models, num_slots=1).scratch
    scratch.lengths = graphed_lengths()[::-1]  # as `record` leaves them on a GPU
    assert scratch.lengths[0] == MAX_CHUNK and scratch.lengths[-1] == 1
    for steps in range(1, MAX_CHUNK + 1):
        chunks, left = 0, steps
        while left:
            left -= scratch.chunk_frames(left)
            chunks += 1
        assert chunks <= 3, steps
