"""The outbox's behaviour, the same for the journal file (embedded) and Redis (distributed)."""

import asyncio
import json
import time

import pytest
import redis.asyncio as redis

from telephony.events.file_outbox import JOURNAL, FileOutbox
from telephony.events.outbox import DELIVERED_LISTED, OutboxEvent, RetryPolicy
from telephony.events.redis_outbox import GROUP, RedisOutbox

pytestmark = pytest.mark.anyio
LEASE = 0.3


def event(n: int, key: str = "call-1", tenant: str = "acme") -> OutboxEvent:
    return OutboxEvent(f"msg_{n}", tenant, key, "call.ended", json.dumps({"n": n, "text": "é"}).encode())


@pytest.fixture(params=["file", "redis"])
async def opener(request, tmp_path, redis_prefix):
    """Opens the outbox again on the same storage, as a restarted control plane would."""
    opened = []

    def open_outbox(**kwargs):
        if request.param == "file":
            outbox = FileOutbox(tmp_path / "outbox", lease=LEASE, **kwargs)
        else:
            client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
            outbox = RedisOutbox(client, prefix=redis_prefix, lease=LEASE, **kwargs)
        opened.append(outbox)
        return outbox

    yield open_outbox
    for outbox in opened:
        await outbox.close()


async def ids(claims) -> list[str]:
    return [c.event.id for c in claims]


async def test_events_of_one_key_go_in_order_and_other_keys_do_not_wait(opener):
    outbox = opener()
    assert await outbox.append([event(1), event(2), event(3, key="call-2")]) == 3

    first = await outbox.claim(10, wait=0)
    assert sorted(await ids(first)) == ["msg_1", "msg_3"]  # msg_2 waits for msg_1
    assert await outbox.claim(10, wait=0) == []
    await outbox.delivered(next(c for c in first if c.event.id == "msg_1"))
    second = await outbox.claim(10, wait=0.5)
    assert await ids(second) == ["msg_2"]
    assert second[0].event.body == event(2).body and second[0].attempts == 0
    assert await outbox.pending() == 2


async def test_an_id_is_appended_once_even_after_delivery(opener):
    outbox = opener()
    assert await outbox.append([event(1)]) == 1
    assert await outbox.append([event(1)]) == 0
    await outbox.delivered((await outbox.claim(1, wait=0))[0])
    assert await outbox.append([event(1)]) == 0
    assert await outbox.pending() == 0


async def test_a_failed_attempt_comes_back_when_due_with_its_count(opener):
    outbox = opener()
    await outbox.append([event(1), event(2)])
    claim = (await outbox.claim(10, wait=0))[0]
    await outbox.retry_later(claim, due=time.time() + 0.3, error="HTTP 500")

    assert await outbox.claim(10, wait=0) == []  # msg_2 still waits behind msg_1
    again = await outbox.claim(10, wait=2)
    assert await ids(again) == ["msg_1"] and again[0].attempts == 1


async def test_a_claim_whose_holder_vanished_is_claimed_again_after_its_lease(opener):
    outbox = opener()
    await outbox.append([event(1)])
    assert await ids(await outbox.claim(1, wait=0)) == ["msg_1"]
    assert await outbox.claim(1, wait=0) == []
    start = time.monotonic()
    assert await ids(await outbox.claim(1, wait=2)) == ["msg_1"]
    assert time.monotonic() - start >= LEASE * 0.5


async def test_dead_letters_free_their_key_and_can_be_replayed(opener):
    outbox = opener()
    await outbox.append([event(1), event(2), event(3, tenant="globex", key="call-9")])
    claims = await outbox.claim(10, wait=0)
    await outbox.retry_later(claims[0], due=time.time(), error="timeout")
    failing = next(c for c in await outbox.claim(10, wait=1) if c.event.id == "msg_1")
    await outbox.dead_letter(failing, "HTTP 500 for 24 h")

    assert await ids(await outbox.claim(10, wait=1)) == ["msg_2"]
    dead = await outbox.dead_letters("acme")
    assert [(d.event.id, d.attempts, d.error) for d in dead] == [("msg_1", 2, "HTTP 500 for 24 h")]
    assert await outbox.dead_letters("globex") == []
    assert not await outbox.replay("globex", "msg_1")  # another tenant's letter is not found
    assert await outbox.replay("acme", "msg_1")
    assert await outbox.dead_letters("acme") == []
    # msg_2 (claimed, not finished) is ahead of the replayed msg_1 in the key's order now.
    assert await outbox.claim(10, wait=0) == []


async def test_a_replayed_letter_is_delivered_afresh(opener):
    outbox = opener()
    await outbox.append([event(1)])
    await outbox.dead_letter((await outbox.claim(1, wait=0))[0], "gone")
    await outbox.replay("acme", "msg_1")
    again = await outbox.claim(1, wait=1)
    assert await ids(again) == ["msg_1"] and again[0].attempts == 0
    assert time.time() - again[0].created_at < 5


async def test_a_waiting_claim_wakes_for_a_new_event(opener):
    outbox = opener()
    await outbox.claim(1, wait=0)  # the Redis consumer group exists from here on
    waiting = asyncio.ensure_future(outbox.claim(1, wait=5))
    await asyncio.sleep(0.1)
    start = time.monotonic()
    await outbox.append([event(7)])
    assert await ids(await waiting) == ["msg_7"]
    assert time.monotonic() - start < 1


async def test_everything_survives_a_reopen(opener):
    outbox = opener()
    await outbox.append([event(1), event(2), event(3, key="call-2"), event(4, key="call-3")])
    claims = {c.event.id: c for c in await outbox.claim(10, wait=0)}
    await outbox.delivered(claims["msg_1"])
    await outbox.retry_later(claims["msg_3"], due=time.time() + 60, error="HTTP 503")
    await outbox.dead_letter(claims["msg_4"], "HTTP 410")
    await outbox.close()

    reopened = opener()
    assert await reopened.pending() == 2
    assert [d.event.id for d in await reopened.dead_letters("acme")] == ["msg_4"]
    assert await ids(await reopened.claim(10, wait=1)) == ["msg_2"]  # msg_3 is not due for a minute
    assert await reopened.append([event(1)]) == 0


async def test_redis_an_entry_read_by_a_lost_consumer_is_reclaimed(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    outbox = RedisOutbox(client, prefix=redis_prefix, reclaim_idle=0.2)
    try:
        await outbox.claim(1, wait=0)
        await outbox.append([event(1)])
        # A control plane read the entry, then died before taking the event.
        read = await client.xreadgroup(GROUP, "lost-plane", {f"{redis_prefix}outbox:stream": ">"}, count=1)
        assert read
        assert await outbox.claim(1, wait=0.05) == []
        await asyncio.sleep(0.3)
        assert await ids(await outbox.claim(1, wait=0)) == ["msg_1"]
    finally:
        await outbox.close()


async def test_redis_a_claim_may_wait_longer_than_the_clients_timeout(redis_url, redis_prefix):
    """XREADGROUP BLOCK is timed as any reply is: the outbox never asks Redis to block that long."""
    outbox = RedisOutbox(redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=1.0),
                         prefix=redis_prefix)
    try:
        await outbox.claim(1, wait=0)
        waiting = asyncio.ensure_future(outbox.claim(1, wait=4))
        await asyncio.sleep(2)
        await outbox.append([event(1)])
        assert await ids(await waiting) == ["msg_1"]
        assert await outbox.claim(1, wait=2) == []
    finally:
        await outbox.close()


async def test_file_a_torn_last_line_is_cut_off(tmp_path):
    outbox = FileOutbox(tmp_path)
    await outbox.append([event(1)])
    await outbox.close()
    with (tmp_path / JOURNAL).open("ab") as journal:
        journal.write(b'{"op":"add","id":"msg_2","ten')  # the crash came mid-line

    reopened = FileOutbox(tmp_path)
    assert await reopened.pending() == 1
    await reopened.append([event(3, key="other")])
    await reopened.close()
    assert await FileOutbox(tmp_path).pending() == 2


async def test_file_compaction_keeps_live_events_and_dead_letters(tmp_path):
    outbox = FileOutbox(tmp_path, compact_min_lines=20)
    await outbox.append([event(0, key="stays"), event(1, key="dies")])
    claims = {c.event.id: c for c in await outbox.claim(10, wait=0)}
    await outbox.retry_later(claims["msg_0"], due=time.time() + 60, error="HTTP 502")
    await outbox.dead_letter(claims["msg_1"], "HTTP 410")
    for n in range(2, 40):
        await outbox.append([event(n, key=f"k{n}")])
        await outbox.delivered((await outbox.claim(1, wait=0))[0])
    lines = len((tmp_path / JOURNAL).read_bytes().splitlines())
    await outbox.close()

    assert lines < 20
    reopened = FileOutbox(tmp_path)
    assert await reopened.pending() == 1
    assert [d.event.id for d in await reopened.dead_letters("acme")] == ["msg_1"]
    await reopened.close()


async def test_file_compaction_keeps_the_listed_deliveries(tmp_path):
    outbox = FileOutbox(tmp_path, compact_min_lines=20)
    for n in range(3 * DELIVERED_LISTED):
        await outbox.append([event(n, key=f"k{n}")])
        await outbox.delivered((await outbox.claim(1, wait=0))[0], 200)
    lines = len((tmp_path / JOURNAL).read_bytes().splitlines())
    await outbox.close()

    assert lines < 4 * DELIVERED_LISTED  # compacted at least once
    reopened = FileOutbox(tmp_path)
    assert [d.event_id for d in await reopened.recently_delivered("acme")] == [
        f"msg_{n}" for n in reversed(range(2 * DELIVERED_LISTED, 3 * DELIVERED_LISTED))]
    await reopened.close()


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after():
    policy = RetryPolicy(first=5, cap=3600, max_age=86_400)
    for attempts, ceiling in ((1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (30, 3600)):
        delays = [policy.delay(attempts) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jitter spreads the retries
    assert policy.delay(1, retry_after=120) == 120
    assert policy.delay(1, retry_after=10**6) == 3600


async def test_undelivered_events_of_a_tenant_show_their_attempts_and_next_try(opener):
    outbox = opener()
    await outbox.append([event(1), event(2), event(3, key="call-2"), event(4, key="call-3", tenant="globex"),
                         event(5, key="call-4")])
    claims = {c.event.id: c for c in await outbox.claim(10, wait=0)}
    due = time.time() + 30
    await outbox.retry_later(claims["msg_1"], due=due, error="HTTP 500")
    await outbox.delivered(claims["msg_3"])
    await outbox.dead_letter(claims["msg_5"], "HTTP 410")

    shown = await outbox.undelivered("acme", limit=10)

    assert [(u.event.id, u.attempts, u.error) for u in shown] == [("msg_1", 1, "HTTP 500"), ("msg_2", 0, "")]
    assert shown[0].retry_at == pytest.approx(due) and shown[1].retry_at is None
    assert [u.event.id for u in await outbox.undelivered("globex", limit=10)] == ["msg_4"]
    assert [u.event.id for u in await outbox.undelivered("acme", limit=1)] == ["msg_1"]


async def test_deliveries_are_listed_newest_first_with_their_attempts_and_status_and_survive_a_reopen(opener):
    outbox = opener()
    await outbox.append([event(1), event(2, key="call-2"), event(3, key="call-3", tenant="globex"),
                         event(4, key="call-4")])
    claims = {c.event.id: c for c in await outbox.claim(10, wait=0)}
    await outbox.retry_later(claims["msg_1"], due=time.time(), error="HTTP 503")
    again = (await outbox.claim(1, wait=1))[0]
    start = time.time()
    await outbox.delivered(again, 200)
    await outbox.delivered(claims["msg_2"], 204)
    await outbox.delivered(claims["msg_3"], 200)
    await outbox.delivered(claims["msg_4"])  # no receiver: dropped, not listed

    async def listed(listing) -> None:
        shown = await listing.recently_delivered("acme")
        assert [(d.event_id, d.type, d.key, d.attempts, d.status) for d in shown] == [
            ("msg_2", "call.ended", "call-2", 1, 204), ("msg_1", "call.ended", "call-1", 2, 200)]
        assert all(start - 1 < d.delivered_at < time.time() + 1 for d in shown)
        assert [d.event_id for d in await listing.recently_delivered("globex")] == ["msg_3"]

    await listed(outbox)
    await outbox.close()
    await listed(opener())


async def test_only_the_last_deliveries_are_listed(opener):
    outbox = opener()
    await outbox.append([event(n, key=f"call-{n}") for n in range(DELIVERED_LISTED + 5)])
    claims = await outbox.claim(DELIVERED_LISTED + 5, wait=0)
    for claim in claims:
        await outbox.delivered(claim, 200)

    shown = await outbox.recently_delivered("acme")

    assert [d.event_id for d in shown] == [c.event.id for c in reversed(claims[5:])]
