"""deploy/compose.yaml: valid by the Compose Specification's JSON schema, and the single GPU box it describes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from plexline.settings import ROLES, env_var

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
SCHEMA = jsonschema.Draft7Validator(json.loads((Path(__file__).parent / "schemas" / "compose-spec.json").read_text()))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_file_follows_the_compose_specification(compose):
    SCHEMA.validate(compose)


def test_the_schema_refuses_what_compose_would(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["device"] = []
    with pytest.raises(jsonschema.ValidationError, match="device"):
        SCHEMA.validate(broken)


def test_redis_keeps_an_append_only_file_on_a_volume(compose):
    redis = compose["services"]["redis"]

    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]


def test_the_worker_reserves_a_gpu_and_publishes_its_whole_rtp_range(compose):
    worker = compose["services"]["worker"]
    env = worker["environment"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    [rtp] = worker["ports"]
    low, high = map(int, re.fullmatch(r"(\d+)-(\d+):\1-\2/udp", rtp).groups())

    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert (low, high) == (int(env["PLEXLINE_RTP_PORT_MIN"]), int(env["PLEXLINE_RTP_PORT_MAX"]))
    assert env["PLEXLINE_MEDIA_HOST"] == "0.0.0.0" and "PLEXLINE_PUBLIC_IP" in env["PLEXLINE_MEDIA_ADVERTISED_HOST"]
    assert worker["secrets"] == ["hf_token"] and "models:/var/cache/plexline" in worker["volumes"]


def test_the_control_plane_publishes_http_and_sip_over_udp_and_tcp(compose):
    plane = compose["services"]["control-plane"]

    assert set(plane["ports"]) == {"8080:8080", "5060:5060/udp", "5060:5060/tcp"}
    assert plane["environment"]["PLEXLINE_SIP_PORT"] == "5060"
    assert plane["depends_on"]["redis"]["condition"] == "service_healthy"


def test_only_settings_plexline_knows_are_set(compose):
    known = {env_var(cls, name) for classes in ROLES.values() for cls in classes for name in cls.model_fields}
    example = (ROOT / "deploy" / "plexline.env.example").read_text()
    names = {n for s in compose["services"].values() for n in s.get("environment", {})}
    names |= set(re.findall(r"^(PLEXLINE_\w+)=", example, re.M))

    assert {n for n in names if n.startswith("PLEXLINE_")} - known == set()
