"""The settings `plexline worker` reads from `PLEXLINE_*` environment variables (flags may override).

The Redis URL and the worker secret are required: a worker alone is of no use without a registry
to be found in, and its internal API never runs open. `EngineSettings` are the engine's and the
worker's identity, read by `plexline worker` and `plexline serve` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from agent.contracts.settings import ENV, MediaSettings, default_data_dir
from personas import EXAMPLE_TENANTS


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "plexline"


class WorkerSettings(MediaSettings):

    redis_url: str = Field(description="the registry shared by control planes and workers, e.g. "
                                       "redis://redis:6379/0; required by `control-plane` and `worker`")
    redis_prefix: str = Field("plexline:", description="prefix of every Redis key (several clusters may share "
                                                       "one Redis)")
    worker_secret: SecretStr = Field(description="bearer token of the workers' internal API, the same on every "
                                                 "control plane and worker; required with a Redis URL")
    heartbeat_ttl: float = Field(3.0, gt=0, description="seconds: a worker silent this long is reaped and its "
                                                        "calls failed")
    shutdown_grace: float = Field(30.0, ge=0, description="seconds a stopping worker lets its calls finish before "
                                                          "ending them")
    recordings_dir: Path = Field(default_factory=lambda: default_data_dir() / "recordings",
                                 description="where lines that record write their calls (default "
                                             "DATA_DIR/recordings); distributed: a folder the workers and "
                                             "control planes share")
    voices_dir: Path = Field(EXAMPLE_TENANTS, description="voice files of the tenants' personas, looked up in "
                                                          "VOICES_DIR/<tenant>/voices/ (the persona folder)")
    call_record_retention_days: float = Field(90.0, gt=0, description="days call records are kept")


class EngineSettings(BaseSettings):
    """The engine a worker runs and how it is known: `plexline worker` and `plexline serve`."""

    model_config = ENV

    model: str = Field("dummy", description="dummy (random weights: tiny on CPU, full size on CUDA), dummy:tiny, "
                                            "dummy:full, local:DIR (a folder with the released files), "
                                            "hf[:REPO] (needs HF_TOKEN) or echo (no model: callers hear "
                                            "themselves)")
    stt: str | None = Field(None, description="the caller's recogniser beside the agent, on the same GPU and "
                                              "codec frames: hf (kyutai/stt-1b-en_fr, public), "
                                              "hf:kyutai/stt-2.6b-en, local:DIR, dummy, dummy:tiny or "
                                              "dummy:full (default: none; lines may turn it off)")
    device: str | None = Field(None, description="cuda, cuda:N or cpu (default: cuda when available)")
    weights: Literal["bf16", "fp8"] = Field("bf16", description="the LM's linear layers: bf16 as loaded (float32 "
                                                                "on the CPU), or fp8: quantised at load, a "
                                                                "scale per output channel (Hopper GPUs)")
    kv_dtype: Literal["bf16", "fp8"] = Field("bf16", description="the LM's KV ring: the LM's dtype, or fp8 (e4m3 "
                                                                 "with a scale per key and head: half the "
                                                                 "memory, so about twice the slots)")
    pin_personas: bool = Field(False, description="a KV ring that can keep a persona past the context, for "
                                                  "lines with keep_persona: pinned (else they keep the "
                                                  "window); every step then scores the pinned slots with the "
                                                  "query turned, in the same softmax: 3% slower at 80 "
                                                  "calls on an H200 (bench/pinned-h200.json)")
    slots: int | None = Field(None, ge=1, description="concurrent calls on the engine: a number, or auto: as "
                                                     "many as GPU memory holds at full context on CUDA (beside "
                                                     "the persona cache and one prefill), at most what "
                                                     "capacity_file rates, 4 on the CPU")
    capacity_file: Path | None = Field(None, description="a churn benchmark's result (`plexline bench churn "
                                                         "--json`, e.g. bench/churn-h200.json): with slots auto, "
                                                         "the worker offers no more calls than it held in real "
                                                         "time on this GPU and precision")
    cache_dir: Path = Field(default_factory=default_cache_dir,
                            description="where voice prompts made from WAV files are kept (default "
                                        "~/.cache/plexline)")
    worker_id: str | None = Field(None, description="the worker's id in the registry (default HOSTNAME-PORT)")
    advertise_url: str | None = Field(None, description="the URL control planes reach the worker at (default "
                                                        "http://HOST:PORT)")

    @field_validator("slots", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        return None if value == "auto" else value
