import json

import pytest
import torch
from safetensors.torch import load_file

from agent.model.checkpoint import dummy_lm, load_lm
from agent.model.lm import LMConfig
from agent.model.mimi import Mimi, MimiConfig
from agent.model.persona_prompt import prefill_persona, prompt_frames
from agent.model.sampling import Sampling
from agent.model.stream import StreamingLM, StreamState
from voices.prompt import load_voice_prompt

CONVERSATION_STEPS = 30


@pytest.fixture(scope="module")
def golden(reference_dir):
    return load_file(reference_dir / "lm_golden.safetensors")


@pytest.fixture(scope="module")
def text_prompt(reference_dir):
    return json.loads((reference_dir / "scenario.json").read_text())["text_prompt_tokens"]


@pytest.fixture(scope="module")
def silence(reference_dir):
    """The reference prompt's silence steps after the voice and after the role (upstream's server uses 6)."""
    return json.loads((reference_dir / "scenario.json").read_text())["silence_frames"]


@pytest.fixture(scope="module")
def config(reference_dir):
    return LMConfig.from_json(reference_dir / "config.json")


@pytest.fixture(scope="module")
def lm16(reference_dir, config):
    return load_lm(reference_dir / "lm16.safetensors", config, dtype=torch.float32)


def converse(stream: StreamingLM, state: StreamState, user_codes: torch.Tensor):
    """Step the conversation: user_codes [B, 8, T] -> tokens [B, 17, T], text logits [B, 1, T, V]."""
    outputs = [stream.step(state, user_codes[:, :, i], return_text_logits=True) for i in range(user_codes.shape[2])]
    tokens = torch.stack([out.tokens for out in outputs], dim=2)
    text_logits = torch.stack([out.text_logits for out in outputs], dim=1)[:, None]
    return tokens, text_logits


def step_frames(stream: StreamingLM, state: StreamState, frames: torch.Tensor) -> None:
    """Teacher-force frames [B, 17, T] one step at a time."""
    for t in range(frames.shape[2]):
        stream.step(state, user=frames[:, 9:, t], agent=frames[:, 1:9, t], text=frames[:, 0, t])


def assert_same_state(a: StreamState, b: StreamState) -> None:
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.provided, b.provided)
    assert torch.equal(a.offsets, b.offsets)
    assert torch.equal(a.transformer.positions, b.transformer.positions)
    assert torch.equal(a.transformer.key_positions, b.transformer.key_positions)
    for cache_a, cache_b in zip(a.transformer.caches, b.transformer.caches):
        torch.testing.assert_close(cache_a.k, cache_b.k, rtol=0, atol=1e-5)
        torch.testing.assert_close(cache_a.v, cache_b.v, rtol=0, atol=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize("weights", ["lm16", "lm8"])
@pytest.mark.parametrize("depformer_steps", [16, 8])
def test_session_reproduces_reference(reference_dir, config, golden, text_prompt, silence, weights, depformer_steps):
    lm = load_lm(reference_dir / f"{weights}.safetensors", config, dtype=torch.float32)
    stream = StreamingLM(lm, depformer_steps)
    state = stream.init_state(1)
    prefill_persona(stream, state, golden["voice_codes"][0], text_prompt, silence)
    tokens, text_logits = converse(stream, state, golden["user_codes"])
    assert torch.equal(tokens, golden[f"{weights}_tokens"])
    torch.testing.assert_close(text_logits, golden[f"{weights}_text_logits"], rtol=0, atol=1e-4)


@pytest.mark.reference
def test_stored_voice_session_reproduces_reference(reference_dir, lm16, golden, text_prompt, silence):
    stream = StreamingLM(lm16)
    state = stream.init_state(1)
    prefill_persona(stream, state, load_voice_prompt(reference_dir / "voice.pt"), text_prompt, silence)
    tokens, _ = converse(stream, state, golden["user_codes"])
    assert torch.equal(tokens, golden["voicept_tokens"])


@pytest.mark.reference
def test_voice_audio_through_mimi_gives_the_stored_voice_session(reference_dir, lm16, golden, text_prompt, silence,
                                                                 reference_rounding):
    mimi_config = MimiConfig.from_upstream(json.loads((reference_dir / "config.json").read_text())["mimi"])
    mimi = Mimi.from_safetensors(reference_dir / "mimi.safetensors", mimi_config)
    audio = golden["voice_audio"][:, None]  # [1, 1, samples]; upstream pads the last frame with zeros
    audio = torch.nn.functional.pad(audio, (0, -audio.shape[-1] % mimi_config.frame_size))
    with torch.no_grad():
        voice_codes = mimi.encode(audio)[0]  # [8, F]
    stream = StreamingLM(lm16)
    state = stream.init_state(1)
    prefill_persona(stream, state, voice_codes, text_prompt, silence)
    assert torch.equal(converse(stream, state, golden["user_codes"])[0], golden["voicept_tokens"])


@pytest.mark.reference
def test_prompt_stepped_frame_by_frame_equals_prefill(lm16, golden, text_prompt, silence):
    stream = StreamingLM(lm16)
    frames = prompt_frames(golden["voice_codes"][0], text_prompt, lm16.config.text_padding_id, silence)
    stepped = stream.init_state(1)
    step_frames(stream, stepped, frames[None, :, 1:])  # the first frame is the one reset consumes
    prefilled = stream.init_state(1)
    prefill_persona(stream, prefilled, golden["voice_codes"][0], text_prompt, silence)
    assert_same_state(stepped, prefilled)
    assert torch.equal(converse(stream, stepped, golden["user_codes"])[0], golden["lm16_tokens"])


def test_prefill_equals_stepping_for_rows_at_different_offsets(config):
    lm = dummy_lm(config, dtype=torch.float32, seed=3)
    stream = StreamingLM(lm)
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, config.card, (2, 17, 12), generator=generator)
    frames[:, 0] = torch.randint(0, config.text_card, (2, 12), generator=generator)

    def run(prefill: bool) -> StreamState:
        state = stream.init_state(2)
        step_frames(stream, state, frames[:, :, :3])  # row 1 is then reset: offsets 4 and 1
        state.reset(torch.tensor([False, True]))
        if prefill:
            stream.prefill(state, frames[:, :, 3:])
        else:
            step_frames(stream, state, frames[:, :, 3:])
        return state

    assert_same_state(run(prefill=True), run(prefill=False))


@pytest.mark.reference
def test_rows_are_independent(lm16, golden, text_prompt, silence):
    """Three rows at different points of their sessions give the reference session each."""
    stream = StreamingLM(lm16, depformer_steps=8)
    frames = prompt_frames(golden["voice_codes"][0], text_prompt, lm16.config.text_padding_id, silence)[None, :, 1:]
    prompt_steps, user = frames.shape[2], golden["user_codes"]
    starts = [0, 4, 11]  # the step at which each row's session begins
    state = stream.init_state(3)
    tokens = torch.full((3, 17, CONVERSATION_STEPS), -7)
    for t in range(starts[-1] + prompt_steps + CONVERSATION_STEPS):
        state.reset(torch.tensor([t == start for start in starts]))
        local = [t - start for start in starts]
        in_prompt = torch.tensor([0 <= i < prompt_steps for i in local])
        frame = torch.stack([frames[0, :, min(max(i, 0), prompt_steps - 1)] for i in local])
        conversation = [min(max(i - prompt_steps, 0), CONVERSATION_STEPS - 1) for i in local]
        user_frame = torch.where(in_prompt[:, None], frame[:, 9:], user[0, :, conversation].T)
        out = stream.step(state, user_frame, agent=frame[:, 1:9], agent_forced=in_prompt,
                          text=frame[:, 0], text_forced=in_prompt)
        for row, i in enumerate(local):
            if 0 <= i - prompt_steps < CONVERSATION_STEPS:
                tokens[row, :, i - prompt_steps] = out.tokens[row]
    assert torch.equal(tokens, golden["lm16_tokens"].expand(3, -1, -1))


def test_outputs_are_valid_after_max_delay_steps(config):
    stream = StreamingLM(dummy_lm(config, dtype=torch.float32))
    state = stream.init_state(2)
    user = torch.zeros(2, 8, dtype=torch.long)
    stream.step(state, user)
    state.reset(torch.tensor([False, True]))
    out = stream.step(state, user)  # a fresh row's first step (upstream's second) has no output
    assert out.valid.tolist() == [True, False]
    assert out.tokens[1].eq(-1).all() and out.tokens[0].ge(0).all()
    assert stream.step(state, user).valid.all()


def test_sampling_with_top_k_one_is_greedy(config):
    lm = dummy_lm(config, dtype=torch.float32, seed=5)
    user = torch.randint(0, config.card, (2, 8, 6), generator=torch.Generator().manual_seed(1))
    greedy_stream, sampled_stream = StreamingLM(lm), StreamingLM(lm)
    greedy, sampled = greedy_stream.init_state(2), sampled_stream.init_state(2)
    sampling = Sampling.default(2)
    sampling.text_top_k.fill_(1)
    sampling.audio_top_k.fill_(1)
    for t in range(6):
        expected = greedy_stream.step(greedy, user[:, :, t]).tokens
        assert torch.equal(sampled_stream.step(sampled, user[:, :, t], sampling=sampling).tokens, expected)


def test_sampling_is_reproducible_from_the_noise(config):
    lm = dummy_lm(config, dtype=torch.float32, seed=5)
    stream = StreamingLM(lm)
    user = torch.randint(0, config.card, (2, 8, 6), generator=torch.Generator().manual_seed(1))

    def run(seed: int) -> torch.Tensor:
        generator, state = torch.Generator().manual_seed(seed), stream.init_state(2)
        outputs = []
        for t in range(6):
            text_noise = torch.rand(2, config.text_card, generator=generator)
            audio_noise = torch.rand(2, 16, config.card, generator=generator)
            outputs.append(stream.step(state, user[:, :, t], sampling=Sampling.default(2),
                                       text_noise=text_noise, audio_noise=audio_noise).tokens)
        return torch.stack(outputs, dim=2)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_depformer_steps_must_cover_the_agent(config):
    lm = dummy_lm(config, dtype=torch.float32)
    with pytest.raises(ValueError, match="depformer_steps"):
        StreamingLM(lm, depformer_steps=7)
