"""The control plane's settings, from `PLEXLINE_*` environment variables (or the command line).

With a Redis URL (distributed mode) the operator token and the worker secret are required: they
must be the same on every control plane, and the workers need the secret. Without one
(`plexline serve`, embedded) the command makes random ones for the run.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.worker_settings import default_data_dir
from personas import EXAMPLE_TENANTS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLEXLINE_", env_ignore_empty=True, extra="ignore")

    personas_dir: Path = EXAMPLE_TENANTS
    redis_url: str | None = None
    redis_prefix: str = "plexline:"
    operator_token: SecretStr | None = None  # sees and administers every tenant, drains workers
    worker_secret: SecretStr | None = None  # shared with the workers' internal API
    heartbeat_ttl: float = Field(3.0, gt=0)  # a worker silent this long is reaped
    reload_interval: float = Field(1.0, gt=0)  # seconds between scans of the persona folder
    reap_interval: float = Field(1.0, gt=0)  # seconds between sweeps for lost workers
    retry_after_seconds: int = Field(5, ge=1)  # told to callers refused for lack of a slot
    worker_timeout: float = Field(5.0, gt=0)  # seconds to wait for a worker to take a call
    route_attempts: int = Field(3, ge=1)  # workers tried for one call before refusing it
    shutdown_grace: float = Field(30.0, ge=0)  # seconds the calls of `plexline serve`'s worker may finish
    sip_port: int = Field(5060, ge=0, le=65535)  # SIP over UDP and TCP (0: any free port)
    sip_host: str | None = None  # the address SIP listens on (default: the HTTP host)
    sip_advertised_host: str | None = None  # put in Via and Contact when listening on a wildcard address
    sip_realm: str = "plexline"  # the digest realm of SIP challenges
    media_host: str | None = None  # where `plexline serve`'s worker takes RTP (default: the SIP host)
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(29999, ge=1024, le=65535)
    rtp_timeout: float = Field(30.0, gt=0)  # seconds without the caller's RTP that end a call
    # Call history: in Redis when distributed, else files in data_dir (the webhook outbox, call records).
    data_dir: Path = Field(default_factory=default_data_dir)
    recordings_dir: Path | None = None  # default data_dir/recordings; distributed: a folder workers share
    webhook_timeout: float = Field(15.0, gt=0)  # seconds for one delivery attempt, the answer included
    webhook_max_response_bytes: int = Field(65_536, ge=0)  # no more of a receiver's answer is read
    webhook_concurrency: int = Field(64, ge=1)  # attempts in flight at once per control plane
    webhook_per_endpoint: int = Field(8, ge=1)  # of which at most this many to one receiver
    webhook_retry_first: float = Field(5.0, gt=0)  # seconds before the first retry, then doubling (jittered)
    webhook_retry_cap: float = Field(3600.0, gt=0)  # the longest wait between two attempts
    webhook_max_age: float = Field(86_400.0, gt=0)  # an event still undelivered this long after is dead-lettered
    call_record_retention_days: float = Field(90.0, gt=0)
    recording_retention_days: float = Field(30.0, gt=0)
    retention_sweep_interval: float = Field(3600.0, gt=0)  # seconds between deletions of what is too old

    @property
    def recordings_folder(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def distributed(self) -> bool:
        return self.redis_url is not None

    @model_validator(mode="after")
    def _secrets_required_with_redis(self) -> Settings:
        if self.distributed:
            missing = [f"PLEXLINE_{name.upper()}" for name in ("operator_token", "worker_secret")
                       if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} must be set when a Redis URL is given")
        return self
