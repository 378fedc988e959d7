"""One persona, as a tenant writes it in YAML: the role the agent plays, its voice, its sampling."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voices.released import RELEASED_VOICES

TEXT_CARD = 32_000  # text vocabulary of PersonaPlex
AUDIO_CARD = 2_048  # entries of each Mimi codebook
VOICE_FILE_SUFFIXES = (".wav", ".pt")
# keep_persona's default: "window", upstream's behaviour, from what was measured. Pinning keeps the
# prompt at the distances the model saw in training, but an engine that can pin scores every call with
# the pinned slots' scores: at 80 calls on an H200 the frame took 50.5 ms against 49.0, 3.1% (bench/pinned-h200.json),
# so workers pin only with pin_personas set.
# Whether pinning keeps the role and the voice better was measured on dummy weights alone, where it
# means nothing: `plexline eval long-call --model hf` on the real weights decides that.
KEEP_PERSONA_DEFAULT = "window"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextSampling(_Strict):
    temperature: float = Field(0.7, ge=0.0, le=2.0)  # 0: greedy
    top_k: int = Field(25, ge=1, le=TEXT_CARD)


class AudioSampling(_Strict):
    temperature: float = Field(0.8, ge=0.0, le=2.0)  # 0: greedy
    top_k: int = Field(250, ge=1, le=AUDIO_CARD)


class Sampling(_Strict):
    text: TextSampling = TextSampling()
    audio: AudioSampling = AudioSampling()
    seed: int | None = Field(None, ge=0, lt=2**63)


class Persona(_Strict):
    # e.g. "You work for ... and your name is ... Information: ...". At most about 1500 tokens, so the
    # prompt leaves most of the model's 3000-frame context to the conversation.
    role: str = Field(min_length=1, max_length=6000)
    voice: str = Field(  # a released voice name (NATF2), or a .wav/.pt path inside the voices folder
        description="a released voice, or a .wav or .pt file inside the tenant's voices folder (a relative "
                    "path, no '..', no control characters; the file must exist when the line is saved)",
        json_schema_extra={"anyOf": [{"enum": sorted(RELEASED_VOICES)},
                                     {"pattern": r"^(?!/)(?!(.*/)?\.\.(/|$))[^\\\x00-\x1f\x7f]*\.(wav|pt)$"}]})
    sampling: Sampling = Sampling()
    # What a call longer than the model's 3000-frame context (240 s) does with this prompt:
    # "pinned" keeps it in the KV ring at the head of the window, "window" lets it slide out
    # as upstream's ring does (the agent then forgets its role and voice). See KEEP_PERSONA_DEFAULT.
    keep_persona: Literal["pinned", "window"] = KEEP_PERSONA_DEFAULT

    @field_validator("role")
    @classmethod
    def _role_has_text(cls, role: str) -> str:
        if not role.strip():
            raise ValueError("must not be blank")
        return role.strip()

    @field_validator("voice")
    @classmethod
    def _voice_is_known_or_inside(cls, voice: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in voice):
            raise ValueError("must not contain control characters (a NUL byte, a line break)")
        if voice in RELEASED_VOICES:
            return voice
        path = PurePosixPath(voice)
        if not voice.endswith(VOICE_FILE_SUFFIXES):
            names = ", ".join(sorted(RELEASED_VOICES))
            raise ValueError(f"must be a released voice ({names}) or a .wav or .pt file")
        if "\\" in voice or path.is_absolute() or ".." in path.parts:
            raise ValueError("a voice file must be a relative path inside the voices folder")
        return voice
