"""The call record stores, the same in SQLite (embedded) and Redis (distributed)."""

from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as redis

from agent.contracts import events as ev
from telephony.events.call_records import CallQuery, SqliteCallRecords
from telephony.events.redis_call_records import RedisCallRecords

pytestmark = pytest.mark.anyio
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def record(call_id: str, minutes_ago: float, line: str = "support", outcome: ev.Outcome = "caller_hung_up",
           tenant: str = "acme", reason: str = "the caller hung up") -> ev.CallEndedData:
    answered = NOW - timedelta(minutes=minutes_ago)
    return ev.CallEndedData(call_id=call_id, tenant=tenant, line=line, from_="+15555550999", to="+15555550100",
                            persona=None, answered_at=answered, ended_at=answered + timedelta(seconds=30),
                            duration_seconds=30, outcome=outcome, reason=reason,
                            transcript=ev.Transcript(items=[ev.Mark(at=0, event="answered")]), recording=None)


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path, redis_prefix):
    if request.param == "sqlite":
        records = SqliteCallRecords(tmp_path / "calls.sqlite3")
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        # A day: the records are made minutes before NOW, which was read when the module was collected.
        records = RedisCallRecords(client, prefix=redis_prefix, retention_seconds=86_400)
    yield records
    await records.close()


async def test_records_are_found_newest_first_with_filters(store):
    for r in (record("a", 50), record("b", 40, line="sales"), record("c", 30, outcome="failed"),
              record("d", 20), record("x", 10, tenant="globex")):
        await store.save(r)

    async def ids(**query) -> list[str]:
        return [r.call_id for r in await store.find("acme", CallQuery(**query))]

    assert await ids() == ["d", "c", "b", "a"]
    assert await ids(limit=2) == ["d", "c"]
    assert await ids(line="support") == ["d", "c", "a"]
    assert await ids(outcome="caller_hung_up", line="support") == ["d", "a"]
    assert await ids(since=NOW - timedelta(minutes=40), until=NOW - timedelta(minutes=20)) == ["c", "b"]
    assert await store.get("acme", "c") == record("c", 30, outcome="failed")
    assert await store.get("acme", "x") is None and await store.get("globex", "x") is not None


async def test_the_first_record_of_a_call_wins(store):
    await store.save(record("a", 5, reason="the caller hung up"))
    await store.save(record("a", 5, outcome="failed", reason="worker lost"))
    assert (await store.get("acme", "a")).reason == "the caller hung up"
    assert len(await store.find("acme", CallQuery())) == 1


async def test_records_past_their_retention_are_forgotten(store):
    await store.save(record("old", 50))
    await store.save(record("new", 5))
    await store.forget_before(NOW - timedelta(minutes=30))
    assert [r.call_id for r in await store.find("acme", CallQuery())] == ["new"]
