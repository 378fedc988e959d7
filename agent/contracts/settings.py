"""Settings read by the control plane and the workers alike: one `PLEXLINE_` environment, one data folder,
and where RTP legs live."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV = SettingsConfigDict(env_prefix="PLEXLINE_", env_ignore_empty=True, extra="ignore")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/plexline (~/.local/share/plexline): the embedded outbox, call records, recordings."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "plexline"


class MediaSettings(BaseSettings):
    """Where RTP legs live: read by the worker, and by the control plane of `plexline serve`."""

    model_config = ENV

    media_host: str | None = Field(None, description="the address callers send RTP to: the worker binds its RTP "
                                                     "ports there and puts it in SDP answers (default: the SIP "
                                                     "host in `serve`, --host in `worker`)")
    media_advertised_host: str | None = Field(None, description="the address SDP answers name for RTP when "
                                                                "callers reach the worker through a NAT or "
                                                                "published container ports (default: media_host)")
    rtp_port_min: int = Field(20000, ge=1024, le=65535, description="lowest UDP port of RTP legs (SIP calls)")
    rtp_port_max: int = Field(29999, ge=1024, le=65535, description="highest UDP port of RTP legs; each call "
                                                                     "takes two (RTP and RTCP)")
