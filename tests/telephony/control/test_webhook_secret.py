"""Rotating a tenant's webhook secret: a new one in tenant.yaml (its comments kept), used at once."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.telephony.control import test_admin_api as admin
from tests.telephony.control.test_admin_api import ACME, GLOBEX, bearer

personas_dir = admin.personas_dir
OLD_SECRET = "whsec_" + "QUFB" * 8


@pytest.fixture
def client(personas_dir: Path):
    tenant = personas_dir / "acme" / "tenant.yaml"
    tenant.write_text("# Acme's own notes\n" + tenant.read_text()
                      + f"webhook:\n  url: https://hooks.acme.example/plexline  # the receiver\n  secret: {OLD_SECRET}\n")
    plane = admin.make_control_plane(personas_dir)
    with TestClient(admin.create_app(plane)) as client:
        client.plane = plane
        yield client


def test_a_rotated_secret_is_written_kept_commented_and_used(client, personas_dir):
    answer = client.post("/tenants/acme/webhooks/secret", headers=bearer(ACME))

    secret = answer.json()["secret"]
    text = (personas_dir / "acme" / "tenant.yaml").read_text()
    assert answer.status_code == 200 and secret.startswith("whsec_") and secret != OLD_SECRET
    assert f"secret: {secret}" in text and OLD_SECRET not in text
    assert text.startswith("# Acme's own notes\n") and "# the receiver" in text
    assert client.plane.webhook_of("acme").secret == secret


def test_a_tenant_without_a_webhook_has_no_secret_to_rotate(client, personas_dir):
    before = (personas_dir / "globex" / "tenant.yaml").read_bytes()

    answer = client.post("/tenants/globex/webhooks/secret", headers=bearer(GLOBEX))

    assert answer.status_code == 409 and answer.json()["detail"] == "tenant 'globex' has no webhook"
    assert (personas_dir / "globex" / "tenant.yaml").read_bytes() == before
    assert client.post("/tenants/acme/webhooks/secret", headers=bearer(GLOBEX)).status_code == 401
