"""The control plane's settings, from `PLEXLINE_*` environment variables (or the command line).

With a Redis URL (distributed mode) the operator token and the worker secret are required: they
must be the same on every control plane, and the workers need the secret. Without one
(`plexline serve`, embedded) the command makes random ones for the run. Settings that the
workers read too (`agent.worker_settings`) have the same name, meaning and description there.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from agent.contracts.settings import ENV, MediaSettings, default_data_dir
from personas import EXAMPLE_TENANTS


class Settings(MediaSettings):
    model_config = ENV

    personas_dir: Path = Field(EXAMPLE_TENANTS, description="the tenant folder: TENANT/tenant.yaml and a YAML "
                                                            "file per line (reloaded while running)")
    redis_url: str | None = Field(None, description="the registry shared by control planes and workers, e.g. "
                                                   "redis://redis:6379/0; required by `control-plane` and `worker`")
    redis_prefix: str = Field("plexline:", description="prefix of every Redis key (several clusters may share "
                                                       "one Redis)")
    operator_token: SecretStr | None = Field(None, description="bearer token of the operator: sees and "
                                                               "administers every tenant, drains workers, reads "
                                                               "/metrics; required with a Redis URL")
    worker_secret: SecretStr | None = Field(None, description="bearer token of the workers' internal API, the same "
                                                             "on every control plane and worker; required with a "
                                                             "Redis URL")
    heartbeat_ttl: float = Field(3.0, gt=0, description="seconds: a worker silent this long is reaped and its "
                                                        "calls failed")
    reload_interval: float = Field(1.0, gt=0, description="seconds between scans of the persona folder")
    reap_interval: float = Field(1.0, gt=0, description="seconds between sweeps for lost workers")
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After told to callers refused for lack of a slot")
    auth_failure_burst: int = Field(10, ge=1, description="failed authentications one address may make at once "
                                                          "before it is refused (429) without a check")
    auth_failure_rate: float = Field(1.0, gt=0, description="failed authentications per second one address may "
                                                            "make after its burst")
    fair_share_reserve: int = Field(10, ge=0, le=100, description="percent of the cluster's slots (rounded up) "
                                                               "kept for tenants below their fair share (the "
                                                               "slots divided by the tenants): once no more are "
                                                               "free, a tenant holding its share is refused (503)")
    source_max_calls: int = Field(5, ge=1, description="calls in progress from one address on the entry points "
                                                       "open to strangers (WHIP, POST /calls with a tenant's "
                                                       "token); beyond it 429")
    source_calls_per_minute: int = Field(30, ge=1, description="call attempts one address may make on those "
                                                               "entry points in any 60 s (a sliding window); "
                                                               "beyond it 429 until its oldest of them is a "
                                                               "minute old")
    worker_timeout: float = Field(5.0, gt=0, description="seconds to wait for a worker to take a call")
    route_attempts: int = Field(3, ge=1, description="workers tried for one call before refusing it")
    shutdown_grace: float = Field(30.0, ge=0, description="seconds a stopping worker lets its calls finish before "
                                                          "ending them")
    sip_port: int = Field(5060, ge=0, le=65535, description="SIP port, UDP and TCP (0: any free port)")
    sip_host: str | None = Field(None, description="the address SIP listens on (default: --host)")
    sip_advertised_host: str | None = Field(None, description="the address put in Via and Contact when SIP "
                                                              "listens on a wildcard address")
    sip_realm: str = Field("plexline", description="the digest realm of SIP challenges")
    sip_tls_certificate: Path | None = Field(None, description="PEM certificate (with its chain) of SIP over TLS; "
                                                              "with sip_tls_key, TLS is served on sip_tls_port")
    sip_tls_key: Path | None = Field(None, description="PEM private key of sip_tls_certificate")
    sip_tls_port: int = Field(5061, ge=0, le=65535, description="SIP over TLS port (0: any free port)")
    sip_tls_client_ca: Path | None = Field(None, description="PEM CAs that trunks' TLS client certificates must "
                                                            "chain to (trunks that name tls_client_names)")
    sip_drain_timeout: float = Field(30.0, ge=0, description="seconds a stopping control plane (SIGTERM) keeps its "
                                                             "SIP calls, refusing new ones with 503, before it "
                                                             "hangs up those still in progress")
    rtp_timeout: float = Field(30.0, gt=0, description="seconds without the caller's RTP that end a call")
    rtp_jitter_packets: int = Field(1, ge=1, le=8, description="caller RTP packets held before playout starts: "
                                                               "each more absorbs 20 ms more network jitter and "
                                                               "adds 20 ms of delay")
    rtp_jitter_max_packets: int = Field(6, ge=1, le=16, description="the deepest the caller's playout grows "
                                                                    "(in 20 ms packets) when the network "
                                                                    "jitters; it starts at rtp_jitter_packets "
                                                                    "and comes back there when calm")
    # Call history: in Redis when distributed, else files in data_dir (the webhook outbox, call records).
    data_dir: Path = Field(default_factory=default_data_dir,
                           description="the embedded webhook outbox, call records and recordings (default: "
                                       "`plexline serve` makes a fresh folder for each run under the system's "
                                       "temporary folder and says which; set it to keep them across runs)")
    recordings_dir: Path | None = Field(None, description="where lines that record write their calls (default "
                                                          "DATA_DIR/recordings); distributed: a folder the workers "
                                                          "and control planes share")
    webhook_timeout: float = Field(15.0, gt=0, description="seconds for one webhook delivery attempt, the "
                                                           "answer included")
    webhook_max_response_bytes: int = Field(65_536, ge=0, description="no more of a webhook receiver's answer "
                                                                      "is read")
    webhook_concurrency: int = Field(64, ge=1, description="webhook attempts in flight at once per control plane")
    webhook_per_endpoint: int = Field(8, ge=1, description="of which at most this many to one receiver")
    webhook_retry_first: float = Field(5.0, gt=0, description="seconds before a webhook's first retry, then "
                                                              "doubling (jittered)")
    webhook_retry_cap: float = Field(3600.0, gt=0, description="the longest wait between two webhook attempts")
    webhook_max_age: float = Field(86_400.0, gt=0, description="seconds after which an undelivered webhook "
                                                               "event is dead-lettered")
    call_record_retention_days: float = Field(90.0, gt=0, description="days call records are kept")
    recording_retention_days: float = Field(30.0, gt=0, description="days recordings are kept")
    retention_sweep_interval: float = Field(3600.0, gt=0, description="seconds between deletions of what is too "
                                                                      "old")

    @property
    def recordings_folder(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def distributed(self) -> bool:
        return self.redis_url is not None

    @model_validator(mode="after")
    def _tls_certificate_and_key(self) -> Settings:
        if (self.sip_tls_certificate is None) != (self.sip_tls_key is None):
            raise ValueError("PLEXLINE_SIP_TLS_CERTIFICATE and PLEXLINE_SIP_TLS_KEY go together")
        if self.sip_tls_client_ca is not None and self.sip_tls_certificate is None:
            raise ValueError("PLEXLINE_SIP_TLS_CLIENT_CA needs PLEXLINE_SIP_TLS_CERTIFICATE and _KEY")
        return self

    @model_validator(mode="after")
    def _secrets_required_with_redis(self) -> Settings:
        if self.distributed:
            missing = [f"PLEXLINE_{name.upper()}" for name in ("operator_token", "worker_secret")
                       if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} must be set when a Redis URL is given")
        return self
