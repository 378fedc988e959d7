"""/docs and /redoc load only files the package installs (no CDN), and the wheel carries those files."""

import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.telephony.control import test_admin_api as admin

personas_dir = admin.personas_dir
ROOT = Path(__file__).parents[3]


@pytest.fixture
def client(personas_dir: Path):
    with TestClient(admin.create_app(admin.make_control_plane(personas_dir))) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_files_of_the_package(client, page):
    html = client.get(page).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: '([^']+)'", html)

    assert not re.search(r"https?://", html), "a page of the docs reaches outside the server"
    assert len(assets) >= 2
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 100, asset


def test_every_static_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["telephony"]
    package = ROOT / "telephony"
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {p for p in (package / "control").rglob("*") if p.is_file() and p.suffix != ".py"
             and "__pycache__" not in p.parts}

    assert files - shipped == set()
