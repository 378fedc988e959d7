"""Tests against real peers (browsers, SIP phones, aiortc clients) run where loopback is the only network.

Real peers do not stay on loopback on their own (aiortc offers every interface address as an ICE
candidate, baresip takes its address from an interface), so every test of this folder runs inside a
network namespace of its own, made with `unshare -rn`, where `lo` is up with 127.0.0.1 and 127.0.0.2
(aioice skips 127.0.0.1 when it gathers candidates) and nothing else can be reached.

A plain `pytest` (or scripts/test.sh) is outside it: there, each module of this folder is run by a
pytest of its own inside the namespace, and each of its tests is reported here with its outcome,
as if it had run here. If the namespace cannot be made, every test of this folder fails and says
why; none is skipped. Servers and browsers that a test starts inherit the namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.reports import TestReport
from sip_service import service  # noqa: F401  (the SIP tests' fixture: a control plane and a worker)

from bench.loopback import INSIDE, inside, namespace_command, namespace_problem

HERE = Path(__file__).parent
MODULE_TIMEOUT = 900  # seconds for one module's tests inside the namespace


@dataclass(frozen=True)
class Outcome:
    outcome: str  # passed, failed or skipped
    message: str
    seconds: float


class NamespaceRunner:
    """Runs the selected tests of each module once, inside the namespace, and keeps their outcomes."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self._problem: str | None | bool = False  # False: not probed yet
        self._outcomes: dict[str, Outcome] = {}
        self._modules_run: set[Path] = set()

    def outcome(self, item: pytest.Item) -> Outcome:
        if self._problem is False:
            self._problem = namespace_problem()
        if self._problem is not None:
            return Outcome("failed", f"no loopback-only network namespace: {self._problem}", 0.0)
        module = item.path
        if module not in self._modules_run:
            self._modules_run.add(module)
            siblings = [i for i in item.session.items if i.path == module]
            self._outcomes.update(self._run(siblings))
        return self._outcomes.get(item.nodeid, Outcome("failed", "the test did not report inside the namespace", 0.0))

    def _run(self, items: list[pytest.Item]) -> dict[str, Outcome]:
        with tempfile.TemporaryDirectory(prefix="plexline-netns-") as folder:
            junit = Path(folder) / "junit.xml"
            command = namespace_command(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
                                        f"--junitxml={junit}", "-o", "junit_family=xunit1",
                                        *[i.nodeid for i in items])
            try:
                run = subprocess.run(command, cwd=self.config.rootpath, env=os.environ | {INSIDE: "1"},
                                     capture_output=True, text=True, timeout=MODULE_TIMEOUT)
                output = run.stdout + run.stderr
            except subprocess.TimeoutExpired as error:
                output = f"timed out after {MODULE_TIMEOUT} s\n{error.stdout or ''}"
            outcomes = parse_junit(junit, items) if junit.exists() else {}
        tail = output[-6000:]
        return {nodeid: Outcome(o.outcome, f"{o.message}\n\n--- pytest inside the namespace ---\n{tail}"
                                if o.outcome == "failed" else o.message, o.seconds)
                for nodeid, o in outcomes.items()} or {
            i.nodeid: Outcome("failed", f"pytest inside the namespace reported nothing:\n{tail}", 0.0) for i in items}


def parse_junit(path: Path, items: list[pytest.Item]) -> dict[str, Outcome]:
    by_name = {(i.nodeid.split("::", 1)[1]): i.nodeid for i in items}
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(path).iter("testcase"):
        name = case.get("name", "")
        nodeid = by_name.get(name) or next((n for key, n in by_name.items() if key.endswith("::" + name)), None)
        if nodeid is None:
            continue
        seconds = float(case.get("time", "0"))
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            outcomes[nodeid] = Outcome("failed", f"{bad.get('message', '')}\n{bad.text or ''}", seconds)
        elif skipped is not None and nodeid not in outcomes:
            outcomes[nodeid] = Outcome("skipped", skipped.get("message", "skipped"), seconds)
        elif nodeid not in outcomes:
            outcomes[nodeid] = Outcome("passed", "", seconds)
    return outcomes


def pytest_configure(config: pytest.Config) -> None:
    if not inside():
        config.stash[RUNNER] = NamespaceRunner(config)


RUNNER = pytest.StashKey[NamespaceRunner]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if inside() or HERE not in item.path.parents:
        return None
    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    result = item.config.stash[RUNNER].outcome(item)
    keywords = {k: 1 for k in item.keywords}
    for when in ("setup", "call", "teardown"):
        outcome, longrepr = ("passed", None) if when != "call" else (result.outcome, result.message or None)
        if outcome == "skipped":
            longrepr = (str(item.path), item.location[1] or 0, result.message)
        report = TestReport(item.nodeid, item.location, keywords, outcome, longrepr, when,
                            duration=result.seconds if when == "call" else 0.0)
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    """Inside the namespace: make sure of it (a test run here by hand outside would reach the network)."""
    if not inside():
        pytest.fail(f"interop tests run only inside the loopback-only namespace ({INSIDE}=1)")
