"""The settings `plexline worker` reads from `PLEXLINE_*` environment variables (flags may override).

The Redis URL and the worker secret are required: a worker alone is of no use without a registry
to be found in, and its internal API never runs open.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/plexline (~/.local/share/plexline): the embedded outbox, call records, recordings."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "plexline"


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLEXLINE_", env_ignore_empty=True, extra="ignore")

    redis_url: str
    redis_prefix: str = "plexline:"
    worker_secret: SecretStr  # the control planes send it as a bearer token
    heartbeat_ttl: float = Field(3.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0)  # seconds calls may finish after SIGTERM
    media_host: str | None = None  # the address RTP of SIP calls comes to (default: --host)
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(29999, ge=1024, le=65535)
    # Where lines that record write their calls: a folder the control planes share (they serve them).
    recordings_dir: Path = Field(default_factory=lambda: default_data_dir() / "recordings")
    call_record_retention_days: float = Field(90.0, gt=0)  # call records are kept in Redis this long
