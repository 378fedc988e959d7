import pytest
from pydantic import ValidationError

from plexline.cli import main
from telephony.control.settings import EXAMPLE_TENANTS, Settings


def test_embedded_mode_needs_no_secrets(monkeypatch):
    for name in ("REDIS_URL", "OPERATOR_TOKEN", "WORKER_SECRET"):
        monkeypatch.delenv(f"PLEXLINE_{name}", raising=False)

    settings = Settings()

    assert (settings.distributed, settings.personas_dir, settings.sip_port) == (False, EXAMPLE_TENANTS, 5060)


def test_distributed_mode_requires_the_secrets(monkeypatch):
    monkeypatch.setenv("PLEXLINE_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("PLEXLINE_OPERATOR_TOKEN", "op")
    monkeypatch.delenv("PLEXLINE_WORKER_SECRET", raising=False)

    with pytest.raises(ValidationError, match="PLEXLINE_WORKER_SECRET must be set when a Redis URL is given"):
        Settings()
    monkeypatch.setenv("PLEXLINE_WORKER_SECRET", "ws")
    assert Settings(heartbeat_ttl=1.5).heartbeat_ttl == 1.5


def test_the_commands_refuse_missing_settings_in_one_line(monkeypatch, capsys):
    for name in ("REDIS_URL", "OPERATOR_TOKEN", "WORKER_SECRET"):
        monkeypatch.delenv(f"PLEXLINE_{name}", raising=False)

    assert main(["control-plane"]) == 1
    assert "needs a Redis URL" in capsys.readouterr().err
    assert main(["worker", "--model", "echo"]) == 1
    assert capsys.readouterr().err.startswith("plexline: error: invalid settings: redis_url: Field required; "
                                              "worker_secret: Field required")
