import asyncio
import os
from pathlib import Path

import pytest

from personas.loader import load_persona
from personas.store import (
    STORE,
    InvalidLine,
    LineExists,
    TenantStore,
    UnknownLine,
    UnknownTenant,
)
from personas.tenant import Line

EXAMPLES = Path(__file__).parents[2] / "personas" / "examples"

TENANT = """\
name: {name}
addresses: [{addresses}]
limits: {{max_concurrent_calls: 3, max_call_seconds: 300}}
"""

LINE = """\
answers: [{answers}]
persona:
  role: You work for {name} and your name is Sam.
  voice: NATM1
max_call_seconds: {seconds}
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # Same-second rewrites of a file of the same size must still be seen: bump the mtime.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path / "acme" / "tenant.yaml", TENANT.format(name="Acme", addresses='"+15555550100", "+15555550101"'))
    write(tmp_path / "acme" / "support.yaml", LINE.format(answers='"+15555550100"', name="Acme", seconds=60))
    write(tmp_path / "acme" / "sales.yaml", LINE.format(answers='"+15555550101"', name="Acme Sales", seconds=600))
    write(tmp_path / "globex" / "tenant.yaml", TENANT.format(name="Globex", addresses="globex-desk"))
    write(tmp_path / "globex" / "desk.yaml", LINE.format(answers="globex-desk", name="Globex", seconds=60))
    return tmp_path


def test_the_example_tenant_answers_with_the_example_persona():
    catalog = TenantStore(EXAMPLES / "tenants").catalog

    route = catalog.route("+15555550100")

    assert catalog.problems == {}
    assert (route.tenant.id, route.line_id) == ("acme", "support")
    assert route.line.persona == load_persona(EXAMPLES / "acme-support.yaml")
    assert catalog.route("acme-support").line_id == "support"


def test_addresses_route_to_their_lines(root):
    catalog = TenantStore(root).catalog

    assert catalog.problems == {}
    assert sorted(catalog.tenants) == ["acme", "globex"]
    assert catalog.route("+15555550101").line_id == "sales"
    assert catalog.route("globex-desk").tenant.tenant.name == "Globex"
    assert catalog.route("+15555550199") is None


def test_the_call_duration_is_capped_by_the_tenant(root):
    catalog = TenantStore(root).catalog

    assert catalog.route("+15555550100").max_call_seconds == 60
    assert catalog.route("+15555550101").max_call_seconds == 300


def test_a_bad_tenant_file_takes_only_that_tenant_down(root):
    write(root / "acme" / "tenant.yaml", "name: Acme\nlimits: {max_concurrent_calls: 0}\n")

    catalog = TenantStore(root).catalog

    assert list(catalog.tenants) == ["globex"]
    assert catalog.route("globex-desk") is not None
    assert catalog.problems["acme"] == ("acme/tenant.yaml: limits.max_concurrent_calls: must be >= 1",)


def test_a_bad_line_file_takes_only_that_line_down(root):
    write(root / "acme" / "sales.yaml", "answers: ['+15555550101']\npersona: {role: Hi, voice: NOPE}\n")

    catalog = TenantStore(root).catalog

    assert sorted(catalog.tenants["acme"].lines) == ["support"]
    assert catalog.route("+15555550100") is not None
    [problem] = catalog.problems["acme"]
    assert problem.startswith("acme/sales.yaml: persona.voice: must be a released voice (NATF0")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("answers: [+15555550100\n", "line 2, column 1: invalid YAML"),
        ("- a list\n", "expected a mapping of line fields, got a list"),
        ("answers: ['+15555550100']\n", "persona: required"),
        ("answers: []\npersona: {role: Hi, voice: NATF0}\n", "answers: List should have at least 1 item"),
        ("answers: ['+1555']\npersona: {role: Hi, voice: NATF0}\ncolor: red\n", "color: unknown field"),
        ("answers: ['not a user!']\npersona: {role: Hi, voice: NATF0}\n",
         "answers.0: 'not a user!' is neither an E.164 number"),
        ("answers: ['+15555550100', '+15555550100']\npersona: {role: Hi, voice: NATF0}\n",
         "answers: +15555550100 is listed twice"),
        ("answers: ['+15555550100']\npersona: {role: Hi, voice: NATF0}\ngreeting: whenever\n",
         "greeting: Input should be 'agent_first' or 'caller_first'"),
    ],
)
def test_line_errors_name_the_file_the_field_and_the_reason(root, text, reason):
    write(root / "acme" / "support.yaml", text)

    [problem] = TenantStore(root).catalog.problems["acme"]

    assert "\n" not in problem
    assert problem.startswith(f"acme/support.yaml: {reason}")


def test_a_line_cannot_answer_another_tenants_address(root):
    write(root / "globex" / "desk.yaml", LINE.format(answers='globex-desk, "+15555550100"', name="G", seconds=60))

    catalog = TenantStore(root).catalog

    assert catalog.route("+15555550100").tenant.id == "acme"
    assert catalog.route("globex-desk").tenant.id == "globex"
    [problem] = catalog.problems["globex"]
    assert "+15555550100, which is not one of this tenant's addresses; ignored" in problem
    assert "acme" not in problem


def test_an_address_given_to_two_tenants_stays_with_the_first(root):
    write(root / "globex" / "tenant.yaml", TENANT.format(name="Globex", addresses='globex-desk, "+15555550100"'))

    catalog = TenantStore(root).catalog

    assert catalog.route("+15555550100").tenant.id == "acme"
    assert "+15555550100 is also assigned to tenant 'acme'" in catalog.problems[STORE][0]


def test_folders_and_files_that_are_not_tenants_or_lines_are_ignored(root):
    write(root / "Bad Name" / "tenant.yaml", TENANT.format(name="X", addresses="x"))
    write(root / "acme" / ".support.yaml.abc123.tmp", "half a file")
    write(root / "acme" / ".hidden.yaml", "half a file")
    write(root / "acme" / "notes.txt", "not yaml")
    (root / "empty").mkdir()

    catalog = TenantStore(root).catalog

    assert sorted(catalog.tenants) == ["acme", "globex"]
    assert sorted(catalog.tenants["acme"].lines) == ["sales", "support"]
    assert catalog.problems[STORE] == ("Bad Name/: not a valid tenant id, ignored",)
    assert catalog.problems["empty"] == ("empty/tenant.yaml: missing; the tenant is not served",)


def test_reload_sees_edits_new_tenants_and_removals(root):
    store = TenantStore(root)
    before = store.catalog.route("+15555550100")

    write(root / "acme" / "support.yaml", LINE.format(answers='"+15555550100"', name="Acme Two", seconds=90))
    (root / "acme" / "sales.yaml").unlink()
    write(root / "initech" / "tenant.yaml", TENANT.format(name="Initech", addresses="tps"))
    write(root / "initech" / "reports.yaml", LINE.format(answers="tps", name="Initech", seconds=60))
    store.reload()

    after = store.catalog.route("+15555550100")
    assert "Acme Two" in after.line.persona.role and after.max_call_seconds == 90
    assert "Acme and" in before.line.persona.role  # a call in progress keeps its persona
    assert store.catalog.route("+15555550101") is None
    assert store.catalog.route("tps").tenant.tenant.name == "Initech"


def test_a_bad_edit_keeps_the_last_valid_version_in_service(root):
    store = TenantStore(root)

    write(root / "acme" / "support.yaml", "answers: [oops\n")
    store.reload()

    assert store.catalog.route("+15555550100").line_id == "support"
    [problem] = store.catalog.problems["acme"]
    assert problem.endswith("the last valid version stays in service")

    write(root / "acme" / "support.yaml", LINE.format(answers='"+15555550100"', name="Fixed", seconds=60))
    store.reload()
    assert "Fixed" in store.catalog.route("+15555550100").line.persona.role
    assert store.catalog.problems == {}


def test_watch_reloads_within_its_interval(root):
    store = TenantStore(root)

    async def edit_and_wait() -> str:
        task = asyncio.create_task(store.watch(interval=0.05))
        try:
            write(root / "acme" / "support.yaml", LINE.format(answers='"+15555550100"', name="Hot", seconds=60))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if "Hot" in store.catalog.route("+15555550100").line.persona.role:
                    break
            return store.catalog.route("+15555550100").line.persona.role
        finally:
            task.cancel()

    assert "Hot" in asyncio.run(edit_and_wait())


def line(*answers: str, name: str = "Acme") -> Line:
    return Line.model_validate({"answers": list(answers),
                                "persona": {"role": f"You work for {name}.", "voice": "NATF0"}})


def test_saved_lines_are_served_and_read_back_equal(root):
    store = TenantStore(root)
    new = line("+15555550100", name="Saved")

    store.save_line("acme", "support", new, create=False)
    store.delete_line("acme", "sales")
    store.save_line("acme", "evening", line("+15555550101"), create=True)

    assert store.catalog.tenants["acme"].lines["support"] == new
    assert TenantStore(root).catalog.tenants["acme"].lines["support"] == new
    assert store.catalog.route("+15555550101").line_id == "evening"
    assert not (root / "acme" / "sales.yaml").exists()


def test_writes_refuse_what_the_tenant_may_not_do(root):
    store = TenantStore(root)

    with pytest.raises(InvalidLine) as error:
        store.save_line("acme", "new", line("+15555550100", "globex-desk", "+15555550199"), create=True)
    assert [(p.field, p.reason) for p in error.value.problems] == [
        (("answers", 0), "+15555550100 is already answered by line 'support'"),
        (("answers", 1), "globex-desk is not one of this tenant's addresses"),
        (("answers", 2), "+15555550199 is not one of this tenant's addresses"),
    ]
    with pytest.raises(LineExists):
        store.save_line("acme", "sales", line("+15555550101"), create=True)
    with pytest.raises(UnknownLine):
        store.save_line("acme", "nope", line("+15555550101"), create=False)
    with pytest.raises(UnknownLine):
        store.delete_line("acme", "nope")
    with pytest.raises(UnknownTenant):
        store.save_line("initech", "x", line("+15555550101"), create=True)
    assert not (root / "acme" / "new.yaml").exists()


def test_a_write_that_crashes_midway_leaves_the_old_file(root, monkeypatch):
    store = TenantStore(root)
    original = (root / "acme" / "support.yaml").read_bytes()

    def crash(src, dst):
        raise OSError("disk pulled out")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        store.save_line("acme", "support", line("+15555550100", name="Lost"), create=False)
    monkeypatch.undo()

    assert (root / "acme" / "support.yaml").read_bytes() == original
    assert sorted(p.name for p in (root / "acme").iterdir()) == ["sales.yaml", "support.yaml", "tenant.yaml"]
    assert TenantStore(root).catalog.problems == {}


@pytest.mark.parametrize(
    "text, reason",
    [
        ("name: Acme\nadmin_token_hash: hunter2\n", "admin_token_hash: must be scrypt$<n>$<r>$<p>$<salt>$<digest>"),
        ("name: Acme\nwebhook: {url: not-a-url}\n", "webhook.url: Input should be a valid URL"),
        ("name: Acme\naddresses: ['+1555', '+1555']\n", "addresses: +1555 is listed twice"),
        ("name: Acme\naddresses: [+15555550100]\n",
         'addresses.0: 15555550100 reads as a number in YAML: quote phone numbers, e.g. "+15555550100"'),
        ("addresses: []\n", "name: required"),
    ],
)
def test_tenant_errors_name_the_file_the_field_and_the_reason(root, text, reason):
    write(root / "acme" / "tenant.yaml", text)

    catalog = TenantStore(root).catalog

    assert "acme" not in catalog.tenants
    assert catalog.problems["acme"][0].startswith(f"acme/tenant.yaml: {reason}")


# -- hostile files: one tenant's file never breaks another's ---------------------------------


def test_a_line_nested_too_deep_takes_only_that_line_down(root):
    write(root / "globex" / "desk.yaml", "answers: " + "[" * 5000 + "]" * 5000 + "\n")  # RecursionError in PyYAML

    store = TenantStore(root)

    assert store.catalog.route("+15555550100").line_id == "support"
    [problem] = store.catalog.problems["globex"]
    assert problem.startswith("globex/desk.yaml: ") and "nested" in problem
    store.save_line("acme", "support", line("+15555550100", name="Still"), create=False)
    assert store.reload().route("+15555550100").line.persona.role.startswith("You work for Still")


def test_a_line_file_too_large_is_refused_unread(root):
    write(root / "globex" / "desk.yaml", "answers: [globex-desk]\n# " + "x" * 2_000_000 + "\n")

    catalog = TenantStore(root).catalog

    assert catalog.route("+15555550100") is not None and catalog.route("globex-desk") is None
    assert catalog.problems["globex"] == ("globex/desk.yaml: larger than 262144 bytes",)


def test_a_tenant_file_that_is_not_a_regular_file_is_refused(root):
    (root / "globex" / "desk.yaml").unlink()
    os.mkfifo(root / "globex" / "desk.yaml")  # reading it would wait for a writer forever

    catalog = TenantStore(root).catalog

    assert catalog.problems["globex"] == ("globex/desk.yaml: not a regular file",)


def test_a_slow_file_is_parsed_outside_the_lock_so_other_tenants_write_meanwhile(root):
    import threading
    import time

    store = TenantStore(root)
    # 60 kB of short flow items: seconds of pure-Python YAML parsing.
    write(root / "globex" / "desk.yaml", "answers: [" + "a," * 30_000 + "a]\npersona: {role: Hi, voice: NATM1}\n")
    reload = threading.Thread(target=store.reload)
    reload.start()
    time.sleep(0.2)
    started = time.monotonic()
    store.save_line("acme", "support", line("+15555550100", name="Quick"), create=False)
    saved_in = time.monotonic() - started
    still_parsing = reload.is_alive()
    reload.join()

    assert saved_in < 0.5
    assert still_parsing, "the parse was too quick to tell"
    assert store.catalog.route("+15555550100").line.persona.role.startswith("You work for Quick")
