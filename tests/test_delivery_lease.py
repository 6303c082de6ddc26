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


def _notices(s, chat_id) -> list:
    return [m for m in s.tg.messages(chat_id) if m.get("text") == t("notice.done", "ru")]


async def test_edit_mode_notice_whose_answer_is_lost_is_not_sent_again(edit_stack):
    """Issue 19.6: Telegram takes the "✅ ready" message but its answer never reaches the worker
    (the client times out first). The notice was claimed before sending: neither the delivery's
    fallback (`finish`) nor a retry sends a second one."""
    s = edit_stack
    s.kie.delay = 0.5
    handle, job_id, chat_id = await s.start_generation()
    s.tg.delay_next("sendMessage", 12.0)  # the notice: answered after the bot's 10 s timeout
    assert (await asyncio.wait_for(handle.result(), 60)).outcome == "done"
    await s.tg.wait_for(lambda: _notices(s, chat_id), timeout=15)  # it did arrive, late
    await asyncio.sleep(2.0)
    assert len(_notices(s, chat_id)) == 1, s.tg.dump()
    assert await s.pool.fetchval("SELECT notice_sent_at FROM generation_jobs WHERE id = $1", job_id) is not None


async def test_edit_mode_notice_is_not_repeated_by_an_attempt_that_finds_the_memo(edit_stack):
    """Issue 19.6: a delivery attempt that finds the accepted message id in the heartbeat memo (the
    previous attempt died after Telegram's accept) records it and shows the status: the notice the
    previous attempt already sent is not sent again."""
    import dataclasses
    from datetime import datetime, timedelta, timezone

    from temporalio.testing import ActivityEnvironment

    from imagegen.contracts import DeliverInput

    s = edit_stack
    handle, job_id, chat_id = await s.start_generation()
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    assert len(_notices(s, chat_id)) == 1
    row = await s.repo.get(job_id)
    memo = {"message_id": row["delivered_message_id"], "level": "url", "owner": "earlier-attempt"}
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=100), attempt=2,
                                   started_time=datetime.now(timezone.utc), heartbeat_details=[memo])
    beats = []
    env.on_heartbeat = lambda *details: beats.append(details)
    inp = DeliverInput(job_id=job_id, chat_id=chat_id, url=row["result_urls"][0], model="zimage", aspect_ratio="1:1",
                       lang="ru", show_done=True, status_message_id=row["status_message_id"])
    result = await env.run(s.activities.deliver, inp)
    assert result.message_id == memo["message_id"] and result.status_shown
    assert len(_notices(s, chat_id)) == 1, s.tg.dump()
    assert beats  # this path heartbeats too (no lease keeper runs on it)


async def _redeliver(s, job_id: str, chat_id: int):
    """Run the deliver activity once more on a job made undelivered again: (its result, the heartbeats)."""
    import dataclasses
    from datetime import datetime, timedelta, timezone

    from temporalio.testing import ActivityEnvironment

    from imagegen.contracts import DeliverInput

    await s.pool.execute("UPDATE generation_jobs SET delivered_at = NULL, delivering_at = NULL, delivery_owner = NULL, "
                         "delivered_message_id = NULL, state = 'success' WHERE id = $1", job_id)
    row = await s.repo.get(job_id)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=100), attempt=1,
                                   started_time=datetime.now(timezone.utc), heartbeat_details=[])
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details)
    inp = DeliverInput(job_id=job_id, chat_id=chat_id, url=row["result_urls"][0], model="zimage", aspect_ratio="1:1",
                       lang="ru", show_done=True, status_message_id=row["status_message_id"])
    return await env.run(s.activities.deliver, inp), beats


async def test_a_prompt_delivery_heartbeats_nothing_and_a_slow_record_heartbeats_the_memo(temporal_env, pg_dsn, pool,
                                                                                           monkeypatch):
    """Issue 18: a delivery done within the lease keeper's first interval sends the server no heartbeat
    (one write per generation less); when recording Telegram's accept is slow, the accepted message id
    is heartbeated after MEMO_AFTER_SECONDS, so a later attempt would only record it."""
    from activities import generation as acts

    s = await make_stack(temporal_env, pg_dsn, pool)
    try:
        handle, job_id, chat_id = await s.start_generation()
        assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"

        result, beats = await _redeliver(s, job_id, chat_id)
        assert result.outcome == "delivered" and beats == []
        assert (await s.repo.get(job_id))["delivered_message_id"] == result.message_id

        real = s.repo.mark_delivered

        async def slow_mark(*args, **kwargs):
            await asyncio.sleep(acts.MEMO_AFTER_SECONDS + 0.5)
            return await real(*args, **kwargs)

        monkeypatch.setattr(s.repo, "mark_delivered", slow_mark)
        result, beats = await _redeliver(s, job_id, chat_id)
        assert result.outcome == "delivered"
        assert [b[0]["message_id"] for b in beats] == [result.message_id], beats  # the memo, once
        assert (await s.repo.get(job_id))["delivered_message_id"] == result.message_id
    finally:
        await s.stop()


def _slow_first_record(s, monkeypatch) -> list[float]:
    """The job's first mark_delivered takes far longer than MEMO_AFTER_SECONDS (the local attempt hands
    over long before it ends); the later ones are real. Returns the list of the calls' times."""
    from activities import generation as acts

    real, calls = s.repo.mark_delivered, []

    async def slow_first(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.sleep(acts.MEMO_AFTER_SECONDS + 5)
        return await real(*args, **kwargs)

    monkeypatch.setattr(s.repo, "mark_delivered", slow_first)
    return calls


async def test_a_local_delivery_whose_record_is_slow_hands_the_accepted_picture_to_the_activity(
        temporal_env, pg_dsn, pool, monkeypatch, caplog):
    """LOCAL_DELIVERY_SHAPE: the local attempt has no heartbeat to keep Telegram's accept in. When
    recording it does not commit within MEMO_AFTER_SECONDS, the attempt stops the write and hands the
    memo back through the workflow; the delivery activity only records it: one picture, recorded with
    its message id, and the final status shown."""
    from tests.support.histories import activity_types

    caplog.set_level(logging.INFO, logger="imagegen")
    s = await make_stack(temporal_env, pg_dsn, pool)
    try:
        calls = _slow_first_record(s, monkeypatch)
        handle, job_id, chat_id = await s.start_generation()
        assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
        (photo,) = s.photos_for(chat_id)
        assert len(s.tg.calls_of("sendPhoto")) == 1
        row = await s.repo.get(job_id)
        assert row["delivered_message_id"] == photo.message_id and row["delivering_at"] is None
        assert len(calls) == 2 and calls[1] - calls[0] < 3  # the activity recorded it, not the slow write
        assert activity_types(await handle.fetch_history())[-2:] == ["deliver (local)", "deliver"]
        logged = [r.getMessage() for r in caplog.records if job_id in r.getMessage()]
        assert any("DELIVER_HANDED_OVER" in m for m in logged) and any("DELIVER_ALREADY_ACCEPTED" in m for m in logged)
        assert s.tg.messages(chat_id)[0]["text"] == t("status.done", "ru")
    finally:
        await s.stop()


async def test_a_cancel_after_the_hand_over_records_the_picture_and_ends_done(temporal_env, pg_dsn, pool,
                                                                             monkeypatch):
    """LOCAL_DELIVERY_SHAPE: the local attempt handed an accepted picture over (its record was slow),
    and the cancel comes before the delivery activity started (here: its queue has no worker), so
    nothing recorded it. The cancelled workflow records the memo it holds (delivery_outcome) and ends
    done with the one picture: never "cancelled" with a picture in the chat."""
    from temporalio.worker import Worker

    from imagegen import ratelimits
    from tests.support.histories import activity_types

    s = await make_stack(temporal_env, pg_dsn, pool)
    telegram_queue = ratelimits.queue_name(s.task_queue, ratelimits.TELEGRAM)
    (stopped,) = [w for w in s.workers if w.task_queue == telegram_queue]
    s.workers.remove(stopped)
    await stopped.shutdown()
    late = None
    try:
        _slow_first_record(s, monkeypatch)
        # No Telegram kind among the direct ones: the handed-over activity goes to the Telegram queue.
        handle, job_id, chat_id = await s.start_generation(direct_kinds=[])

        async def handed_over() -> bool:
            return "deliver" in activity_types(await handle.fetch_history(), local=False)

        deadline = time.monotonic() + 30
        while not await handed_over():
            assert time.monotonic() < deadline, "the local attempt never handed over"
            await asyncio.sleep(0.2)
        assert (await s.repo.get(job_id))["delivered_at"] is None  # nobody recorded it yet
        await handle.cancel()
        while "delivery_outcome" not in activity_types(await handle.fetch_history(), local=False):
            assert time.monotonic() < deadline + 30, "the cancelled workflow never asked Postgres"
            await asyncio.sleep(0.2)
        # The final status goes through the Telegram queue: a worker for it again.
        late = Worker(s.client, task_queue=telegram_queue, activities=s.activities.for_queue(ratelimits.TELEGRAM))
        running = asyncio.create_task(late.run())
        result = await asyncio.wait_for(handle.result(), 40)
        assert result.outcome == "done"
        (photo,) = s.photos_for(chat_id)
        assert len(s.tg.calls_of("sendPhoto")) == 1
        row = await s.repo.get(job_id)
        assert row["delivered_message_id"] == photo.message_id and row["delivering_at"] is None
        assert s.tg.messages(chat_id)[0]["text"] == t("status.done", "ru")
        assert (await handle.describe()).status.name == "COMPLETED"
    finally:
        if late is not None:
            await late.shutdown()
            await running
        await s.stop()
