"""Settings read by the control plane and the workers alike: one `PLEXLINE_` environment, one data folder,
where RTP legs live, and the STUN and TURN servers of the workers' WebRTC peers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV = SettingsConfigDict(env_prefix="PLEXLINE_", env_ignore_empty=True, extra="ignore")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/plexline (~/.local/share/plexline): the embedded outbox, call records, recordings."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "plexline"


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server of a WebRTC peer, as RTCIceServer takes it."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


class MediaSettings(BaseSettings):
    """Where media legs live: read by the worker, and by the control plane of `plexline serve`."""

    model_config = ENV

    media_host: str | None = Field(None, description="the address callers send RTP to: the worker binds its RTP "
                                                     "ports there and puts it in SDP answers (default: the SIP "
                                                     "host in `serve`, --host in `worker`)")
    media_advertised_host: str | None = Field(None, description="the address SDP answers name for RTP when "
                                                                "callers reach the worker through a NAT or "
                                                                "published container ports (default: media_host)")
    first_media_timeout: float = Field(10.0, gt=0, description="seconds from a call's admission to the caller's "
                                                               "first audio: a call without it is ended as failed "
                                                               "and its slot freed (ICE or RTP that never comes)")
    rtp_port_min: int = Field(20000, ge=1024, le=65535, description="lowest UDP port of RTP legs (SIP calls)")
    rtp_port_max: int = Field(29999, ge=1024, le=65535, description="highest UDP port of RTP legs; each call "
                                                                     "takes two (RTP and RTCP)")
    webrtc_stun_urls: list[str] = Field([], description="STUN servers of the worker's WebRTC peer (JSON list, e.g. "
                                                        "[\"stun:stun.example.com:3478\"]): its public address "
                                                        "becomes a candidate for callers behind NATs")
    webrtc_turn_urls: list[str] = Field([], description="TURN servers relaying the worker's WebRTC media where no "
                                                        "direct path works (JSON list of turn: and turns: URLs, e.g. "
                                                        "\"turn:turn.example.com:3478?transport=udp\")")
    webrtc_turn_username: str | None = Field(None, description="the TURN servers' username")
    webrtc_turn_credential: SecretStr | None = Field(None, description="the TURN servers' password")

    @model_validator(mode="after")
    def _ice_server_urls(self) -> MediaSettings:
        for name, schemes in (("webrtc_stun_urls", ("stun:", "stuns:")), ("webrtc_turn_urls", ("turn:", "turns:"))):
            for url in getattr(self, name):
                if not url.startswith(schemes):
                    raise ValueError(f"{name}: {url[:60]!r} does not start with {' or '.join(schemes)}")
        if self.webrtc_turn_urls and (self.webrtc_turn_username is None or self.webrtc_turn_credential is None):
            raise ValueError("webrtc_turn_urls need webrtc_turn_username and webrtc_turn_credential")
        return self

    def ice_servers(self) -> list[IceServer]:
        servers = [IceServer(tuple(self.webrtc_stun_urls))] if self.webrtc_stun_urls else []
        if self.webrtc_turn_urls:
            servers.append(IceServer(tuple(self.webrtc_turn_urls), self.webrtc_turn_username,
                                     self.webrtc_turn_credential.get_secret_value()))
        return servers
