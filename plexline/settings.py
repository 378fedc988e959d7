"""The settings of every serving role, as flags and as `PLEXLINE_*` environment variables, and their table.

Each role reads a few pydantic-settings classes (`ROLES`). Every field is a flag of the same name
(`redis_url`: `--redis-url`) and an environment variable (`PLEXLINE_REDIS_URL`); a flag given on
the command line wins over the environment. Secrets are environment variables only: a flag would
show them to anyone who lists the processes. `python -m plexline.settings` writes the table of
every setting (docs/settings.md is that output).
"""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from agent.contracts.settings import ENV
from agent.worker_settings import EngineSettings, WorkerSettings
from telephony.control.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SECRET_TYPES = (SecretStr, SecretStr | None)


class ListenSettings(BaseSettings):
    """Where the role's HTTP server listens: every role."""

    model_config = ENV

    host: str = Field("127.0.0.1", description="address to listen on (HTTP; SIP and RTP too unless set): "
                                               "0.0.0.0 in a container")
    http_port: int | None = Field(None, ge=0, le=65535, description="HTTP port (default 8080; the worker's "
                                                                    "8081; 0: a free one, which the role "
                                                                    "announces and advertises)")
    http_max_body_bytes: int = Field(1_048_576, ge=1024, description="a larger request body gets 413, unread when "
                                                                     "its Content-Length says so")
    http_header_timeout: float = Field(10.0, gt=0, description="seconds a connection has to send a request's "
                                                               "headers (from its opening or its last answer)")
    ws_max_message_bytes: int = Field(65_536, ge=1024, description="a larger WebSocket message (a media stream's) "
                                                                   "closes the stream with 1009, unbuffered")
    http_max_connections: int = Field(1000, ge=1, description="HTTP connections open at once (one more is closed "
                                                              "at once); also the requests in flight before 503")
    http_max_connections_per_source: int = Field(100, ge=1, description="HTTP connections open at once from one "
                                                                        "address")


ROLES: dict[str, tuple[type[BaseSettings], ...]] = {
    "serve": (ListenSettings, EngineSettings, Settings),
    "control-plane": (ListenSettings, Settings),
    "worker": (ListenSettings, EngineSettings, WorkerSettings),
}

ALIASES = {"personas_dir": ("--personas",), "http_port": ("--port",)}  # the flags' older names


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(cls: type[BaseSettings], name: str) -> str:
    return f"{cls.model_config['env_prefix']}{name.upper()}"


def is_secret(cls: type[BaseSettings], name: str) -> bool:
    return cls.model_fields[name].annotation in SECRET_TYPES


def add_flags(parser: argparse.ArgumentParser, role: str) -> None:
    """A flag for every setting of `role` but its secrets; unset flags leave the environment's value."""
    for cls in ROLES[role]:
        group = parser.add_argument_group(f"{cls.__name__} (also PLEXLINE_* environment variables)")
        for name, info in cls.model_fields.items():
            if is_secret(cls, name):
                continue
            shown = default_text(cls, name)
            is_list = typing.get_origin(info.annotation) is list  # given as JSON, as in the environment
            group.add_argument(flag(name), *ALIASES.get(name, ()), dest=name, default=None,
                               type=json.loads if is_list else None,
                               help=f"{info.description} ({env_var(cls, name)}"
                                    f"{'; default ' + shown if shown else ''})")


def read(cls: type[BaseSettings], args: argparse.Namespace) -> BaseSettings:
    """`cls` from the environment, with the flags given on the command line on top."""
    return cls(**{name: value for name in cls.model_fields if (value := getattr(args, name, None)) is not None})


def default_text(cls: type[BaseSettings], name: str) -> str:
    info = cls.model_fields[name]
    if info.is_required():
        return "required"
    if info.default_factory is not None or info.default is None:
        return ""  # computed, or unset: the description says what then
    default = info.default
    if isinstance(default, Path) and default.is_absolute() and default.is_relative_to(ROOT):
        return str(default.relative_to(ROOT))
    return str(default)


def _roles_of(name: str) -> list[str]:
    return [role for role, classes in ROLES.items() if any(name in cls.model_fields for cls in classes)]


def table() -> str:
    """Every setting once: its variable, its flag, its default (per role where they differ), what it does."""
    owners: dict[str, list[type[BaseSettings]]] = {}
    for classes in ROLES.values():
        for cls in classes:
            for name in cls.model_fields:
                if cls not in owners.setdefault(name, []):
                    owners[name].append(cls)
    rows = ["| variable | flag | roles | default | what it sets |", "|---|---|---|---|---|"]
    for name, classes in owners.items():
        first = classes[0]
        defaults = [default_text(cls, name) for cls in classes]
        if len(set(defaults)) == 1:
            default = f"`{defaults[0]}`" if defaults[0] else ""
        else:
            default = "; ".join(f"{'/'.join(_roles_with(cls))}: {d or 'unset'}" for cls, d in zip(classes, defaults))
        option = "(environment only)" if is_secret(first, name) else ", ".join(
            f"`{f}`" for f in (flag(name), *ALIASES.get(name, ())))
        rows.append(f"| `{env_var(first, name)}` | {option} | {', '.join(_roles_of(name))} | "
                    f"{default} | {first.model_fields[name].description} |")
    return "\n".join(rows)


def _roles_with(cls: type[BaseSettings]) -> list[str]:
    return [role for role, classes in ROLES.items() if cls in classes]


def document() -> str:
    return f"""# Settings

Generated from the settings models by `python -m plexline.settings > docs/settings.md`; a test
checks that this file is up to date.

Every setting is an environment variable and a flag of the same name: `PLEXLINE_SIP_PORT=5070`
and `--sip-port 5070` are the same setting, and a flag given on the command line wins. Secrets
are environment variables only (in Kubernetes, from a Secret; with compose, from an env file),
because a flag would show them to anyone who lists the processes. A role ignores the variables
of other roles, so one environment can serve every role. Besides these, the model download reads
`HF_TOKEN` and `HF_HOME` (Hugging Face's own variables).

{table()}
"""


def main() -> None:
    print(document(), end="")


if __name__ == "__main__":
    main()
