"""What a running call sees while a WAV voice is made: the intervals between its steps (default: tiny dummy, CPU).

Three phases on one engine clock with one call stepping: nothing else, a voice made as it was
before (`side_thread_voice`, on a thread of its own beside the engine's), and a voice made by the
engine between steps (`EngineClock.make_voice`). Prints figures only; nothing is asserted.

    python -m bench.voice_stall [--seconds 10] [--model dummy:tiny] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.clock import EngineClock
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.engine.voice import VoiceEncoding
from agent.model.loading import load_models
from agent.model.persona_prompt import prompt_frames
from agent.model.stream import StreamingLM

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)


def side_thread_voice(mimi, lm, pcm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stored voice (embeddings, token ring) as the worker made it before, on a thread of its own:
    Mimi's whole encode, then the voice's frames prefilled in one pass on a full-context state."""
    codes = mimi.encode(pcm.to(next(mimi.parameters()).device))[0]
    stream = StreamingLM(lm)
    state = stream.init_state(1)
    frames = prompt_frames(codes, (), lm.config.text_padding_id, silence_frames=0)[:, 1:]
    inputs = stream.prefill(state, frames[None].to(state.tokens.device))
    return inputs[0, :, None, None].float(), state.tokens


async def phase(name: str, steps: list[float], make=None, idle_seconds: float = 2.0) -> None:
    """The call's step intervals while `make` runs on a thread (or for `idle_seconds` without one)."""
    steps.clear()
    started = time.monotonic()
    if make is None:
        await asyncio.sleep(idle_seconds)
    else:
        await asyncio.to_thread(make)
    took = time.monotonic() - started
    gaps = [1000 * (b - a) for a, b in zip(steps, steps[1:])]
    if not gaps:
        print(f"{name:>12}: {took:6.2f} s, fewer than two steps")
        return
    print(f"{name:>12}: {took:6.2f} s, {len(gaps) + 1:4d} steps, interval median {statistics.median(gaps):6.1f} ms, "
          f"max {max(gaps):6.1f} ms, over 100 ms: {sum(g > 100 for g in gaps)}")


async def main(model: str, seconds: float, device: str) -> None:
    torch.set_num_threads(1)
    models = load_models(model, device)
    mimi, lm = models.mimi, models.lm
    backend = ModelBackend(mimi, lm, num_slots=2)
    backend.warm_up()  # on a GPU: the step's graph and the prefill pacer, as a worker has them
    clock = EngineClock(backend)
    clock.start()
    steps: list[float] = []
    try:
        slot = await clock.join(CallSetup(PersonaPrompt(voice=None, text_tokens=(5, 6, 7)), GREEDY))
        slot.listener = lambda caller, agent: steps.append(time.monotonic())
        pcm = 0.1 * torch.randn(1, 1, round(seconds * 12.5) * mimi.config.frame_size,
                                generator=torch.Generator().manual_seed(0))
        print(f"{models.name}, a {seconds:g} s voice, one call stepping every {1000 * clock.period:.0f} ms:")
        await phase("no voice", steps)
        await phase("side thread", steps, lambda: side_thread_voice(mimi, lm, pcm))
        await phase("engine", steps, lambda: clock.make_voice(VoiceEncoding(mimi, StreamingLM(lm), pcm, "bench")))
        await phase("no voice", steps)
    finally:
        await clock.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dummy:tiny")
    parser.add_argument("--seconds", type=float, default=10.0, help="the voice recording's length")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    asyncio.run(main(args.model, args.seconds, args.device))
