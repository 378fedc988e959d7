"""Wrong tokens: each costs a scrypt check, so a source that keeps sending them is refused unchecked."""

import time

import yaml
from fastapi.testclient import TestClient

from personas.tokens import hash_token
from telephony.control.app import create_app
from tests.telephony.control.test_admin_api import ACME, GLOBEX, bearer, make_control_plane, personas_dir  # noqa: F401


def test_a_source_that_keeps_failing_is_refused_without_a_check_and_others_are_not(personas_dir):  # noqa: F811
    tenant = personas_dir / "globex" / "tenant.yaml"
    raw = yaml.safe_load(tenant.read_text())
    tenant.write_text(yaml.safe_dump(raw | {"admin_token_hash": hash_token(GLOBEX)}))  # the real cost: ~50 ms
    app = create_app(make_control_plane(personas_dir))
    with TestClient(app, client=("192.0.2.66", 4000)) as attacker, \
            TestClient(app, client=("192.0.2.10", 4000)) as admin:
        assert admin.get("/tenants/acme", headers=bearer(ACME)).status_code == 200  # checked once, remembered
        answers = [attacker.get("/tenants/globex", headers=bearer(f"guess-{n}")).status_code for n in range(40)]
        started = time.monotonic()
        refused = attacker.get("/tenants/globex", headers=bearer("guess-again"))
        refused_in = time.monotonic() - started

        assert answers[0] == 401 and answers[-1] == 429
        assert answers.count(401) <= 20  # the burst of 10, and what refilled while the checks ran
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused_in < 0.03  # no scrypt was run for it
        assert admin.get("/tenants/globex", headers=bearer(GLOBEX)).status_code == 200
        assert attacker.get("/tenants/acme", headers=bearer(ACME)).status_code == 200  # one that passed still does


def test_the_failures_of_placing_calls_count_too(personas_dir):  # noqa: F811
    with TestClient(create_app(make_control_plane(personas_dir)), client=("192.0.2.66", 4000)) as attacker:
        answers = [attacker.post("/calls", json={"to": "+15555550100", "from": "x"}, headers=bearer("nope")).status_code
                   for _ in range(40)]
    assert answers[0] == 404 and answers[-1] == 429
