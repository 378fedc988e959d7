"""One settings model for every role: each setting a flag and a PLEXLINE_ variable of one name, documented once."""

from pathlib import Path

import pytest

from agent.worker_settings import EngineSettings, WorkerSettings
from plexline.cli import build_parser
from plexline.settings import ROLES, ListenSettings, document, read
from telephony.control.settings import Settings

ROOT = Path(__file__).parents[2]


def test_docs_settings_is_the_generated_table():
    written = (ROOT / "docs" / "settings.md").read_text()

    assert written == document(), "docs/settings.md is stale: run `python -m plexline.settings > docs/settings.md`"


def test_every_setting_says_what_it_sets():
    classes = {cls for classes in ROLES.values() for cls in classes}

    undocumented = [f"{cls.__name__}.{name}" for cls in classes for name, info in cls.model_fields.items()
                    if not info.description]

    assert undocumented == []


def test_a_setting_that_two_roles_read_means_the_same_in_both():
    control_plane, worker = Settings.model_fields, WorkerSettings.model_fields
    shared = sorted(set(control_plane) & set(worker))

    assert "redis_url" in shared and "rtp_port_min" in shared and "media_advertised_host" in shared
    for name in shared:
        assert control_plane[name].description == worker[name].description, name
        assert control_plane[name].metadata == worker[name].metadata, name  # the same bounds


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_flag_has_one_meaning_in_a_role(role):
    names = [name for cls in ROLES[role] for name in cls.model_fields]

    assert len(names) == len(set(names))


def test_the_environment_and_the_flags_set_the_same_settings_and_a_flag_wins(monkeypatch):
    monkeypatch.setenv("PLEXLINE_REDIS_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("PLEXLINE_WORKER_SECRET", "s3cret")
    monkeypatch.setenv("PLEXLINE_RTP_PORT_MAX", "30999")
    monkeypatch.setenv("PLEXLINE_SLOTS", "auto")
    monkeypatch.setenv("PLEXLINE_HOST", "0.0.0.0")
    args = build_parser().parse_args(["worker", "--rtp-port-min", "30000", "--redis-url", "redis://from-flag:6379/0",
                                      "--model", "echo", "--port", "9001"])

    worker, engine, listen = read(WorkerSettings, args), read(EngineSettings, args), read(ListenSettings, args)

    assert (worker.rtp_port_min, worker.rtp_port_max, worker.redis_url) == (30000, 30999, "redis://from-flag:6379/0")
    assert worker.worker_secret.get_secret_value() == "s3cret"
    assert (engine.model, engine.slots) == ("echo", None)
    assert (listen.host, listen.http_port) == ("0.0.0.0", 9001)


def test_flags_keep_their_older_names():
    args = build_parser().parse_args(["control-plane", "--personas", "/srv/tenants", "--http-port", "8090"])

    assert (args.personas_dir, args.http_port) == ("/srv/tenants", "8090")


@pytest.mark.parametrize("secret", ["--operator-token", "--worker-secret"])
def test_secrets_are_not_flags(secret, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["control-plane", secret, "x"])

    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_bad_value_from_either_place_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("PLEXLINE_SIP_PORT", "70000")
    args = build_parser().parse_args(["serve", "--slots", "0"])

    with pytest.raises(ValueError, match="sip_port"):
        read(Settings, args)
    with pytest.raises(ValueError, match="slots"):
        read(EngineSettings, args)
