"""A call as the control plane hands it to a worker, how it can finish, and the errors of a worker's sessions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from personas.schema import Persona
from personas.tenant import Greeting

CallOutcome = Literal["ended", "failed"]

CALL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SessionError(Exception):
    pass


class WorkerFull(SessionError):
    pass


class WorkerDraining(SessionError):
    pass


class SessionExists(SessionError):
    pass


class UnknownSession(SessionError):
    pass


class CallSetupFailed(SessionError):
    """The call's prompt could not be made (a voice file missing or unreadable, a prompt too long)."""


class CallDetails(BaseModel):
    """Everything a worker needs to start a call; the persona is fixed for the call's life."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: str = Field(pattern=CALL_ID_PATTERN)
    tenant: str
    line: str
    caller: str = ""
    callee: str = ""
    persona: Persona
    greeting: Greeting = "agent_first"
    recording: bool = False
    caller_transcript: bool = True  # the caller's words in the timeline, where the worker has a recogniser
    # What the caller may say to be transferred (as the transfer digit does) or to end the call.
    transfer_phrases: tuple[str, ...] = ()
    hang_up_phrases: tuple[str, ...] = ()
    max_call_seconds: float = Field(gt=0)
    partial_transcript_seconds: float | None = None  # call.transcript.partial this often, if set
