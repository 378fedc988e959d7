"""Interop tests run against real SIP peers (sipp, baresip) in a network namespace of their own.

Nothing these tests send may leave the machine, and real peers do not stay on loopback by
themselves (baresip takes its address from an interface; SIP messages name other hosts). So the
tests of this folder run in `unshare -rn` (a new user and network namespace whose only interface is
loopback, with 127.0.0.2 added; see shared/TESTING.md): a plain `pytest` run re-executes them
there, once, in a child pytest, and reports each test's outcome as its own. Where a namespace
cannot be made, every test here fails and says why; none is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sip_service import service  # noqa: F401  (the fixture)

IN_NAMESPACE = os.environ.get("PLEXLINE_LOOPBACK_NETNS") == "1"
REPORTS_ENV = "PLEXLINE_NETNS_REPORTS"
HERE = Path(__file__).parent
NAMESPACE_TIMEOUT = 900  # seconds for the whole child run
SETUP = "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec \"$@\""


def _ours(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).is_relative_to(HERE)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if IN_NAMESPACE or not _ours(item):
        return None
    reports = _namespace_run(item.session)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    config = item.config
    mine = reports.get(item.nodeid)
    if mine:
        for data in mine:
            item.ihook.pytest_runtest_logreport(report=config.hook.pytest_report_from_serializable(config=config, data=data))
    else:
        item.ihook.pytest_runtest_logreport(report=_failed(item, reports.get("", ["the test did not run"])[0]))
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the child run: every report goes to the file the parent reads."""
    path = os.environ.get(REPORTS_ENV)
    if IN_NAMESPACE and path:
        config = _config
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(data) + "\n")


_config: pytest.Config
_cache: dict[str, list] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def _namespace_run(session: pytest.Session) -> dict[str, list]:
    """Run every test of this folder in one child pytest in a loopback-only namespace; their reports by node id."""
    global _cache
    if _cache is not None:
        return _cache
    nodeids = [item.nodeid for item in session.items if _ours(item)]
    rootdir = str(session.config.rootpath)
    with tempfile.TemporaryDirectory(prefix="plexline-netns-") as tmp:
        reports_path = Path(tmp) / "reports.jsonl"
        env = dict(os.environ, PLEXLINE_LOOPBACK_NETNS="1", **{REPORTS_ENV: str(reports_path)})
        command = ["unshare", "-rn", "sh", "-c", SETUP, "sh", sys.executable, "-m", "pytest", "-q",
                   "-p", "no:cacheprovider", f"--basetemp={tmp}/basetemp", *nodeids]
        try:
            child = subprocess.run(command, cwd=rootdir, env=env, capture_output=True, text=True,
                                   timeout=NAMESPACE_TIMEOUT)
            output = child.stdout[-4000:] + child.stderr[-4000:]
        except FileNotFoundError:
            output = "`unshare` is not installed (Debian package util-linux)"
        except subprocess.TimeoutExpired as error:
            output = f"the namespace run took more than {NAMESPACE_TIMEOUT} s: {str(error.stdout)[-4000:]}"
        reports: dict[str, list] = {}
        if reports_path.exists():
            for line in reports_path.read_text().splitlines():
                data = json.loads(line)
                reports.setdefault(data["nodeid"], []).append(data)
    if not reports:
        reports[""] = [f"the interop tests must run in a loopback-only network namespace (`unshare -rn`), "
                       f"and it could not be made or the child run failed:\n{output}"]
    elif any(nodeid not in reports for nodeid in nodeids):
        reports[""] = [f"the child run in the namespace stopped early:\n{output}"]
    _cache = reports
    return reports


def _failed(item: pytest.Item, message: str) -> pytest.TestReport:
    return pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed", message, "call")

