"""Batched streaming generation with the LM: one frame per step for every row, rows independent.

Tokens live in a ring of `max_delay + 3` positions per row (upstream `LMGen`'s cache). A step at
offset t writes the given tokens of its frame at positions t + delay (the acoustic delays), feeds
the tokens at position t - 1 to the model and predicts position t: the text token from the
temporal transformer, then the audio codebooks from the depformer. A given token at position t
replaces the prediction (teacher forcing), both in the ring and as the input of the next depformer
step. The output of a step is the frame `max_delay` steps back, read at each stream's delay; a
session's first `max_delay + 1` steps (counting the one `reset` stands for) have none.

Upstream's first step of a session (offset 0) runs no model: it only fills the ring with initial
tokens, and the tokens given to it are overwritten before they are read. Here `reset` does that
work, so a fresh row starts at offset 1 and every step runs the model for every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agent.model.kv_cache import KVDtype
from agent.model.lm import AGENT_CODEBOOKS, LM, NO_TOKEN
from agent.model.sampling import Sampling, sample
from agent.model.transformer import TransformerState

UNGENERATED = -2  # a ring slot not yet written (upstream `ungenerated_token_id`)


@dataclass
class StreamState:
    transformer: TransformerState
    depformer: TransformerState  # scratch for the depformer steps of one frame
    tokens: torch.Tensor  # [B, K, ring] long: the token at position p of each stream is in slot p % ring
    provided: torch.Tensor  # [B, K, ring] bool: the slot holds a given (teacher-forced) token
    offsets: torch.Tensor  # [B] long: position of each row's next step
    fresh_tokens: torch.Tensor  # [K, ring]: the ring of a new row
    fresh_provided: torch.Tensor  # [K, ring]

    def reset(self, rows: torch.Tensor) -> None:
        """Make the rows selected by the bool mask `rows` [B] new sessions, at offset 1."""
        self.transformer.reset(rows)
        self.tokens.copy_(torch.where(rows[:, None, None], self.fresh_tokens, self.tokens))
        self.provided.copy_(torch.where(rows[:, None, None], self.fresh_provided, self.provided))
        self.offsets.masked_fill_(rows, 1)


@dataclass
class StepOutput:
    tokens: torch.Tensor  # [B, K]: text, agent audio, user audio of the frame max_delay steps back; -1 if not valid
    valid: torch.Tensor  # [B] bool: False while the row's offset is <= max_delay
    text_logits: torch.Tensor | None  # [B, text_card] float32, when asked for


class StreamingLM:
    """Steps an `LM` over batched, independent rows.

    `depformer_steps` is the number of audio codebooks the depformer predicts each step: all of
    them (dep_q) reproduce upstream; 8 (the agent's) suffice when, as in every step here, the
    user's codebooks are given, since their predictions are replaced by the given tokens.
    `kv_dtype` is the temporal transformer's KV ring (`agent.model.kv_cache`); the depformer's
    scratch ring of one frame stays in the model's dtype.
    """

    def __init__(self, lm: LM, depformer_steps: int | None = None, kv_dtype: KVDtype = "bf16"):
        cfg = lm.config
        self.lm = lm
        self.kv_dtype = kv_dtype
        self.depformer_steps = cfg.dep_q if depformer_steps is None else depformer_steps
        if not AGENT_CODEBOOKS <= self.depformer_steps <= cfg.dep_q:
            raise ValueError(f"depformer_steps must be in {AGENT_CODEBOOKS}..{cfg.dep_q}, got {depformer_steps}")
        self.max_delay = cfg.max_delay
        self.ring = cfg.max_delay + 3
        self.delays = torch.tensor(cfg.delays, device=lm.text_linear.weight.device)
        # A new row: position 0 holds the initial tokens, and so do positions 1..delay of each delayed
        # stream, marked given (no frame is ever written there: the first step writes at 1 + delay).
        # Made once: a tensor from the host waits for the device, and rows are made while it runs a step.
        positions = torch.arange(self.ring, device=self.delays.device)
        before_first_frame = positions[None, :] <= self.delays[:, None]  # [K, ring]
        self.fresh_tokens = torch.where(before_first_frame, lm.initial_tokens[:, None], UNGENERATED)
        self.fresh_provided = before_first_frame & (positions[None, :] > 0)

    def init_state(self, batch_size: int, capacity: int | None = None, pinnable: bool = False) -> StreamState:
        """Fresh rows; `capacity` bounds the KV ring below the context; a `pinnable` ring's rows may keep
        their prompt for good (see `Transformer.init_state`)."""
        lm, K, device = self.lm, self.lm.config.num_streams, self.delays.device
        fresh_tokens, fresh_provided = self.fresh_tokens, self.fresh_provided
        return StreamState(
            transformer=lm.transformer.init_state(batch_size, capacity=capacity, kv_dtype=self.kv_dtype,
                                                  pinnable=pinnable),
            depformer=lm.depformer.init_state(batch_size),
            tokens=fresh_tokens.expand(batch_size, K, self.ring).clone(),
            provided=fresh_provided.expand(batch_size, K, self.ring).clone(),
            offsets=torch.ones(batch_size, dtype=torch.long, device=device),
            fresh_tokens=fresh_tokens,
            fresh_provided=fresh_provided,
        )

    @torch.no_grad()
    def step(self, state: StreamState, user: torch.Tensor, agent: torch.Tensor | None = None,
             agent_forced: torch.Tensor | None = None, text: torch.Tensor | None = None,
             text_forced: torch.Tensor | None = None, sampling: Sampling | None = None,
             text_noise: torch.Tensor | None = None, audio_noise: torch.Tensor | None = None,
             return_text_logits: bool = False) -> StepOutput:
        """One frame for every row.

        user [B, 8]: the user's codes. agent [B, 8] and text [B] force the agent's codes and the text
        token on the rows where agent_forced [B] / text_forced [B] (default: all rows) are True.
        sampling None is greedy, as the reference; otherwise text_noise [B, text_card] and
        audio_noise [B, depformer_steps, card] are uniform noise in [0, 1) (drawn here when None).
        """
        B, K = user.shape[0], self.lm.config.num_streams
        given, forced = self._given(user, agent, agent_forced, text, text_forced)
        write_slots = (state.offsets[:, None] + self.delays) % self.ring  # [B, K]
        self._write(state.tokens, write_slots, given, forced)
        self._write(state.provided, write_slots, forced, forced)

        input_slot, target_slot = (state.offsets - 1) % self.ring, state.offsets % self.ring
        inputs = self._read(state.tokens, input_slot)  # [B, K]
        target = self._read(state.tokens, target_slot)
        target_given = self._read(state.provided, target_slot)

        hidden, text_logits = self.lm.temporal(self.lm.embed(inputs[:, :, None]), state.transformer)
        text_logits = text_logits[:, 0].float()  # [B, text_card]
        if sampling is None:
            text_sampled = text_logits.argmax(dim=-1)
        else:
            noise = torch.rand_like(text_logits) if text_noise is None else text_noise
            text_sampled = sample(text_logits, sampling.text_temperature, sampling.text_top_k, noise)
        text_token = torch.where(target_given[:, 0], target[:, 0], text_sampled)
        audio_sampled = self._depformer(state, hidden[:, 0], text_token, target[:, 1:], target_given[:, 1:],
                                        sampling, audio_noise)
        sampled = torch.cat([text_sampled[:, None], audio_sampled], dim=1)  # [B, K]

        self._write(state.tokens, target_slot[:, None].expand(B, K), sampled, ~target_given)
        state.provided.scatter_(2, input_slot[:, None, None].expand(B, K, 1), False)

        valid = state.offsets > self.max_delay
        out_slots = (state.offsets[:, None] - self.max_delay + self.delays) % self.ring
        tokens = torch.where(valid[:, None], state.tokens.gather(2, out_slots[:, :, None])[:, :, 0], NO_TOKEN)
        state.offsets.add_(1)
        return StepOutput(tokens, valid, text_logits if return_text_logits else None)

    @torch.no_grad()
    def prefill(self, state: StreamState, frames: torch.Tensor,
                embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-force T whole frames [B, K, T] on every row in one temporal forward.

        The state becomes exactly what T steps given every token would make it. It holds when each
        row's previous step (if any) was also given every token: true of a fresh row and of a prompt.
        `embeddings` [B, T, dim] replace the model's input for these steps (a stored voice prompt).
        Returns the model's input [B, T, dim] (what a stored voice keeps).
        """
        x = self.teacher_force(state, frames, embeddings)
        self.lm.temporal(x, state.transformer)
        return x

    @torch.no_grad()
    def teacher_force(self, state: StreamState, frames: torch.Tensor,
                      embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """`prefill` without the temporal forward: the token ring and offsets advance, the KV ring does not.

        The model's inputs [B, T, dim] depend on the given tokens alone, never on the transformer, so
        what a stored voice keeps (those inputs and the token ring) needs no keys and values.
        """
        B, K, T = frames.shape
        ring, delays, offsets = self.ring, self.delays, state.offsets
        # Step t (offset o+t) reads position o-1+t. A stream's frame i lands at position o+i+delay,
        # so the stream's input at step t is frame t-1-delay, or what the ring holds when that is < 0.
        t = torch.arange(T, device=frames.device)
        frame_index = t[None, :] - 1 - delays[:, None]  # [K, T]
        input_slots = ((offsets[:, None] - 1 + t) % ring)[:, None, :].expand(B, K, T)
        inputs = torch.where(frame_index >= 0, frames.gather(2, frame_index.clamp(min=0).expand(B, K, T)),
                             state.tokens.gather(2, input_slots))  # [B, K, T]
        x = self.lm.embed(inputs) if embeddings is None else embeddings.to(self.lm.text_linear.weight)

        kept = t[-ring:]  # the frames still in the ring afterwards, each stream's at distinct slots
        slots = (offsets[:, None, None] + delays[None, :, None] + kept) % ring  # [B, K, len(kept)]
        state.tokens.scatter_(2, slots, frames[:, :, kept])
        # Given and not yet read: positions o+T-1 .. o+T-1+delay of each stream.
        ahead = (torch.arange(ring, device=frames.device) - (offsets[:, None] + T - 1)) % ring  # [B, ring]
        state.provided.copy_(ahead[:, None, :] <= delays[None, :, None])
        offsets.add_(T)
        return x

    @staticmethod
    def _given(user, agent, agent_forced, text, text_forced) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens [B, K] a step is given, and which of them are forced [B, K]."""
        B = user.shape[0]
        yes = torch.ones(B, dtype=torch.bool, device=user.device)
        if agent is None:
            agent, agent_forced = torch.zeros_like(user), ~yes
        if text is None:
            text, text_forced = user.new_zeros(B), ~yes
        agent_forced = yes if agent_forced is None else agent_forced
        text_forced = yes if text_forced is None else text_forced
        tokens = torch.cat([text[:, None], agent, user], dim=1)
        forced = torch.cat([text_forced[:, None], agent_forced[:, None].expand_as(agent),
                            yes[:, None].expand_as(user)], dim=1)
        return tokens, forced

    @staticmethod
    def _read(ring: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """ring [B, K, R] at one slot per row, slot [B] -> [B, K]."""
        B, K, _ = ring.shape
        return ring.gather(2, slot[:, None, None].expand(B, K, 1))[:, :, 0]

    @staticmethod
    def _write(ring: torch.Tensor, slots: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Set ring [B, K, R] to values [B, K] at slots [B, K] where mask [B, K]."""
        index = slots[:, :, None]
        current = ring.gather(2, index)[:, :, 0]
        ring.scatter_(2, index, torch.where(mask, values, current)[:, :, None])

    def _depformer(self, state: StreamState, hidden: torch.Tensor, text: torch.Tensor, target: torch.Tensor,
                   given: torch.Tensor, sampling: Sampling | None, noise: torch.Tensor | None) -> torch.Tensor:
        """Audio tokens [B, n_q] of one frame; codebooks past depformer_steps keep `target` (given)."""
        state.depformer.reset(torch.ones_like(given[:, 0]))
        tokens, previous = target.clone(), text
        for k in range(self.depformer_steps):
            logits = self.lm.depformer_step(k, hidden, previous, state.depformer).float()  # [B, card]
            if sampling is None:
                token = logits.argmax(dim=-1)
            else:
                uniform = torch.rand_like(logits) if noise is None else noise[:, k]
                token = sample(logits, sampling.audio_temperature, sampling.audio_top_k, uniform)
            tokens[:, k] = token
            previous = torch.where(given[:, k], target[:, k], token)
        return tokens
