"""The OpenAPI document is true: schemathesis sends generated requests to every operation (a bounded
number each, so this runs in seconds) and checks that each answer is one the document lists, in the
shape it gives.

It runs in an interpreter of its own: schemathesis imports about 150 modules as it starts, and CPython
3.11 has failed to compile one of them ("AST constructor recursion depth mismatch") late in a whole
test session, after other tests had driven parsers into deep recursion."""

import os
import subprocess
import sys
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from telephony.control.app import create_app
from tests.telephony.control.test_admin_api import OPERATOR, bearer, make_control_plane, personas_dir  # noqa: F401

EXAMPLES = 10  # per operation
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
ROOT = Path(__file__).resolve().parents[3]
ISOLATED = "PLEXLINE_OPENAPI_FUZZ_ISOLATED"  # set in the interpreter that runs the checks


def test_every_answer_is_one_the_openapi_documents(personas_dir):  # noqa: F811
    if not os.environ.get(ISOLATED):
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"{Path(__file__).relative_to(ROOT)}::test_every_answer_is_one_the_openapi_documents"],
                             cwd=ROOT, env=os.environ | {ISOLATED: "1"}, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        return
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_control_plane(personas_dir)))
    failures = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers=bearer(OPERATOR), checks=CHECKS)

        try:
            check()
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            failures[operation.label] = [line.strip() for line in str(error).splitlines() if line.strip().startswith(("- ST", "Received", "Documented"))][:6]
    assert not failures, "\n".join(f"{label}: {found}" for label, found in failures.items())
