"""The delivery lease follows its holder, and DELIVERY_MODE=edit through the whole workflow (real
Temporal, real Postgres, the real aiogram Bot against the Telegram simulator)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest_asyncio

from imagegen.i18n import t
from tests.support.stack import Stack


async def make_stack(temporal_env, pg_dsn, pool, **overrides) -> Stack:
    s = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue=f"tq-{uuid.uuid4().hex[:10]}",
              **overrides)
    await s.start()
    return s


@pytest_asyncio.fixture
async def edit_stack(temporal_env, pg_dsn, pool):
    s = await make_stack(temporal_env, pg_dsn, pool, delivery_mode="edit")
    try:
        yield s
    finally:
        await s.stop()


@pytest_asyncio.fixture
async def short_lease_stack(temporal_env, pg_dsn, pool):
    s = await make_stack(temporal_env, pg_dsn, pool, delivery_lease_seconds=6)
    try:
        yield s
    finally:
        await s.stop()


async def test_edit_mode_turns_the_status_into_the_picture_and_notifies_once(edit_stack):
    s = edit_stack
    handle, job_id, chat_id = await s.start_generation()
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.outcome == "done" and result.delivery_level == "url"
    msgs = s.tg.messages(chat_id)
    status = msgs[0]
    assert status["kind"] == "photo" and status["caption"].endswith(t("status.done", "ru"))
    assert [m["text"] for m in msgs[1:]] == [t("notice.done", "ru")]
    assert s.tg.calls_of("sendPhoto") == [] and [p.source for p in s.photos_for(chat_id)] == ["edit-url"]
    row = await s.repo.get(job_id)
    assert row["delivered_message_id"] == status["message_id"] and row["state"] == "delivered"


async def test_edit_mode_with_the_status_message_deleted_sends_the_photo(edit_stack):
    s = edit_stack
    s.kie.delay = 1.0
    handle, job_id, chat_id = await s.start_generation()
    await s.bot.delete_message(chat_id, s.tg.messages(chat_id)[0]["message_id"])
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.outcome == "done"
    assert [p.source for p in s.photos_for(chat_id)] == ["url"]
    assert t("notice.done", "ru") not in [m["text"] for m in s.tg.messages(chat_id)]


async def test_a_live_slow_holder_renews_its_lease_and_is_never_overtaken(short_lease_stack, caplog):
    """Telegram takes 10 s (> the 6 s lease) to accept the photo: the holder renews its lease with
    every heartbeat, an intruder asking for the lock meanwhile finds it busy, one photo arrives."""
    s = short_lease_stack
    caplog.set_level(logging.INFO)
    s.tg.delay_next("sendPhoto", 10.0)
    handle, job_id, chat_id = await s.start_generation()
    await s.tg.wait_for(lambda: s.tg.calls_of("sendPhoto"), timeout=30)
    await asyncio.sleep(7.5)  # past the lease the holder started with
    intruder = await s.repo.try_acquire_delivery_lock(job_id, "intruder", 6)
    assert intruder.outcome == "busy" and intruder.lease_left > 3, intruder
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.outcome == "done"
    assert len(s.photos_for(chat_id)) == 1 and len(s.tg.calls_of("sendPhoto")) == 1  # no second attempt ever sent
    assert "DELIVER_LEASE_LOST" not in caplog.text and "lease_renewals=" in caplog.text


async def test_a_holder_that_loses_its_lease_stops_sending(short_lease_stack, caplog):
    """The holder hangs in sendPhoto; its lock is taken over (as if it had been presumed dead): at
    its next renewal it finds out and stops; a later attempt delivers once the intruder's lease ends."""
    s = short_lease_stack
    caplog.set_level(logging.INFO)
    s.tg.fail_next("sendPhoto", 502, "Bad Gateway", hang=20.0)
    handle, job_id, chat_id = await s.start_generation()
    await s.tg.wait_for(lambda: s.tg.calls_of("sendPhoto"), timeout=30)
    await s.pool.execute("UPDATE generation_jobs SET delivering_at = now() - interval '1 minute' WHERE id = $1", job_id)
    assert (await s.repo.try_acquire_delivery_lock(job_id, "intruder", 6)).outcome == "won"
    t0 = time.monotonic()
    await s.tg.wait_for(lambda: "DELIVER_LEASE_LOST" in caplog.text, timeout=5)
    assert time.monotonic() - t0 < 4  # within a heartbeat or two, long before the 20 s hang ends
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.outcome == "done" and len(s.photos_for(chat_id)) == 1
    row = await s.repo.get(job_id)
    assert row["delivered_at"] is not None and row["delivery_owner"] is None
