"""The sweep of admitted requests that never became a workflow, and ensure_started, on a real
Temporal dev server and real Postgres."""

from __future__ import annotations

import asyncio
import uuid

from imagegen.i18n import t
from imagegen.bot.sweep import input_for, sweep_once
from imagegen.contracts import GenerationResult, legacy_workflow_id, workflow_id_for
from imagegen.launch import ensure_started, workflow_exists


async def admitted(stack, *, age_seconds: float = 0.0, legacy: bool = False) -> tuple[str, int, int]:
    """What the ratio handler leaves behind when the bot dies right after the insert: a 'created'
    row and a "⏳" status message, no workflow (`legacy`: admitted by a bot from before issue 15,
    whose rows name the workflow `zimage-<job>`)."""
    chat_id = int(uuid.uuid4().int % 10**9) + 1000
    job_id = uuid.uuid4().hex[:16]
    status = await stack.bot.send_message(chat_id, "⏳ status")
    workflow_id = legacy_workflow_id(job_id) if legacy else workflow_id_for(job_id, "zimage")
    await stack.repo.create_job(job_id=job_id, workflow_id=workflow_id, user_id=chat_id,
                                chat_id=chat_id, model="zimage", prompt="a fox", aspect_ratio="1:1",
                                status_message_id=status.message_id)
    if age_seconds:
        await stack.pool.execute("UPDATE generation_jobs SET created_at = now() - make_interval(secs => $2)"
                                 " WHERE id = $1", job_id, float(age_seconds))
    return job_id, chat_id, status.message_id


async def test_sweep_starts_a_request_the_bot_never_started_and_closes_a_stale_one(stack):
    young, young_chat, _ = await admitted(stack, age_seconds=40)
    old, old_chat, old_status = await admitted(stack, age_seconds=3600)
    fresh, _, _ = await admitted(stack)  # inside the grace period: a handler may still be starting it
    counts = await sweep_once(stack.client, stack.repo, stack.bot, stack.config, grace_seconds=30)
    # (>=: the session's database may hold other tests' leftovers; the rows below are checked one by one)
    assert counts["started"] >= 1 and counts["closed"] >= 1, counts
    handle = stack.client.get_workflow_handle(workflow_id_for(young, "zimage"), result_type=GenerationResult)
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.outcome == "done" and len(stack.photos_for(young_chat)) == 1
    assert (await stack.repo.get(old))["state"] == "error"
    assert stack.tg.messages(old_chat)[0]["text"] == t("start_failed", "ru") and stack.photos_for(old_chat) == []
    assert (await stack.repo.get(fresh))["state"] == "created"
    await stack.repo.close_unstarted(fresh, "test over")  # never leave a request for another test's sweep
    rows = await stack.repo.unstarted_jobs(30)
    assert not {young, old} & {r["id"] for r in rows}  # nothing left: the started one moved on, the old one is closed


async def test_sweep_starts_a_legacy_row_under_the_id_it_recorded(stack):
    """A row admitted before workflow ids named their model: the sweep starts (or finds) the
    workflow under the row's own `zimage-<job>` id, never a second one under the new name."""
    job_id, chat_id, _ = await admitted(stack, age_seconds=40, legacy=True)
    await sweep_once(stack.client, stack.repo, stack.bot, stack.config, grace_seconds=30)
    handle = stack.client.get_workflow_handle(legacy_workflow_id(job_id), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    assert await workflow_exists(stack.client, workflow_id_for(job_id, "zimage")) is False
    assert len(stack.photos_for(chat_id)) == 1


async def test_ensure_started_is_safe_to_repeat(stack):
    job_id, chat_id, _ = await admitted(stack)
    inp = input_for(await stack.repo.get(job_id), stack.config)
    outcomes = await asyncio.gather(*(ensure_started(stack.client, inp, task_queue=stack.task_queue)
                                      for _ in range(3)))
    assert sorted(outcomes) == ["already", "already", "started"]
    handle = stack.client.get_workflow_handle(workflow_id_for(job_id, "zimage"), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    assert len(stack.photos_for(chat_id)) == 1
