"""What a call tells the tenant's webhook: versioned JSON events, with a JSON schema.

Every event is an envelope (Standard Webhooks' recommended shape) around the call's data:

    {"id": "msg_...", "type": "call.ended", "version": 1, "timestamp": "2026-...Z", "data": {...}}

    call.started              the call was answered: who called which line, and the persona
    call.transcript.partial   (lines that ask for it) transcript items settled since the last one
    call.ended                how and why it ended, its duration, the whole transcript, the recording;
                              also for a call that was refused (outcome `refused`: no free slot, the
                              tenant's limit), which was never answered and has no call.started

`id` is also the `webhook-id` header: derived from the call and the event, so every attempt and
every producer (the worker, or a control plane failing a lost worker's call) gives one event the
same id, and receivers deduplicate on it. Times inside a transcript are seconds since the call
was answered. Version 1: new optional fields may appear without a new version (ignore fields you
do not know); a field that changes meaning or goes away comes with version 2. The schema is in
docs/webhook-events.schema.json (`python -m agent.contracts.events` prints it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

# How a call ended: the caller hung up; our side did (the line's maximum duration, an admin, the
# control plane); it was transferred; it failed (media failure, a lost worker, a shutdown); or it was
# refused before it was answered (no free slot, the tenant's limit: `answered_at` is then the moment
# of the refusal, the duration 0 and the transcript empty).
Outcome = Literal["caller_hung_up", "agent_hung_up", "transferred", "failed", "refused"]
Moment = Literal["answered", "caller_hung_up", "agent_hung_up", "transferred", "failed"]
EventType = Literal["call.started", "call.transcript.partial", "call.ended"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class Word(_Model):
    text: str
    start: float = Field(description="seconds since the call was answered")
    end: float


class Speech(_Model):
    """One speaker's turn: words with no pause of a second or more and nothing else between them."""

    kind: Literal["speech"] = "speech"
    speaker: Literal["agent", "caller"]
    start: float
    end: float
    text: str
    words: list[Word]
    end_of_turn: float | None = Field(None, description="caller turns, from a recogniser with a semantic "
                                      "VAD: its highest probability that the caller had finished, in the "
                                      "second after the turn's last word (above 0.6: a finished turn)")


class Dtmf(_Model):
    kind: Literal["dtmf"] = "dtmf"
    at: float
    digit: str = Field(pattern=r"^[0-9*#A-D]$")


class Mark(_Model):
    """Something that happened to the call: answered, hung up (by whom), transferred, failed."""

    kind: Literal["event"] = "event"
    at: float
    event: Moment
    detail: str = ""


TranscriptItem = Annotated[Speech | Dtmf | Mark, Field(discriminator="kind")]


class Transcript(_Model):
    items: list[TranscriptItem] = Field(default_factory=list, description="in time order")


class Persona(_Model):
    voice: str
    role: str


class Recording(_Model):
    url: str = Field(description="path on the control plane's admin API (bearer token of the tenant)")
    format: Literal["wav"] = "wav"
    sample_rate: int = 24_000
    channels: list[Literal["caller", "agent"]] = Field(default=["caller", "agent"], description="left, right")


class CallInfo(_Model):
    call_id: str
    tenant: str
    line: str
    from_: str = Field(alias="from", description="the caller, as the transport gave it")
    to: str = Field(description="the address called")
    persona: Persona | None
    answered_at: datetime


class CallStartedData(CallInfo):
    pass


class CallEndedData(CallInfo):
    ended_at: datetime
    duration_seconds: float
    outcome: Outcome = Field(description="how it ended; refused: never answered (no free slot, the tenant's "
                                         "limit), so no call.started came before, answered_at and ended_at "
                                         "are the moment of the refusal and the transcript is empty")
    reason: str = Field(description="why it ended, in words")
    transcript: Transcript
    recording: Recording | None = Field(description="null unless the line records its calls (and null when "
                                                     "nothing of the call could be recorded)")
    recording_incomplete: str | None = Field(None, description="on a line that records: why the recording stops "
                                             "before the call's end, in words (a write failed: No space left on "
                                             "device); the file holds what was recorded until then, and "
                                             "`recording` is null when that is nothing. Null: the whole call")


class TranscriptPartialData(_Model):
    call_id: str
    tenant: str
    line: str
    seq: int = Field(ge=1, description="1, 2, ... in the order sent")
    items: list[TranscriptItem] = Field(description="items settled since the previous partial, each sent once")
    pending: str = Field(description="the agent's words not settled yet (they may still change)")


class _Envelope(_Model):
    type: EventType
    id: str = Field(description="the webhook-id: stable across retries, deduplicate on it")
    version: Literal[1] = SCHEMA_VERSION
    timestamp: datetime = Field(description="when the event happened (not when it was sent)")


class CallStarted(_Envelope):
    type: Literal["call.started"] = "call.started"
    data: CallStartedData


class TranscriptPartial(_Envelope):
    type: Literal["call.transcript.partial"] = "call.transcript.partial"
    data: TranscriptPartialData


class CallEnded(_Envelope):
    type: Literal["call.ended"] = "call.ended"
    data: CallEndedData


CallEvent = Annotated[CallStarted | TranscriptPartial | CallEnded, Field(discriminator="type")]
CALL_EVENT: TypeAdapter[CallEvent] = TypeAdapter(CallEvent)


def event_id(tenant: str, call_id: str, type: EventType, seq: int = 0) -> str:
    """The same for one event however often, and by whoever, it is made; never contains a '.'."""
    digest = hashlib.sha256(f"{tenant}\n{call_id}\n{type}\n{seq}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def event_body(event: CallStarted | TranscriptPartial | CallEnded) -> bytes:
    """The JSON sent and signed (compact, by alias: `from`, not `from_`)."""
    return event.model_dump_json(by_alias=True).encode()


def event_schema() -> dict:
    schema = CALL_EVENT.json_schema(by_alias=True, mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "plexline call event",
            "description": f"version {SCHEMA_VERSION}", **schema}


if __name__ == "__main__":
    print(json.dumps(event_schema(), indent=2))
