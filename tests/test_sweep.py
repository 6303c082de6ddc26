"""The sweep of admitted requests that never became a workflow, and ensure_started, on a real
Temporal dev server and real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from imagegen.i18n import t
from imagegen.bot.sweep import input_for, sweep_once
from imagegen.contracts import GenerationResult, workflow_id_for
from imagegen.launch import ensure_started
from imagegen.uploads import input_records
from tests.support.images import make_png
from tests.support.stack import user_pictures


async def admitted(stack, *, age_seconds: float = 0.0) -> tuple[str, int, int]:
    """What the ratio handler leaves behind when the bot dies right after the insert: a 'created'
    row and a "⏳" status message, no workflow."""
    chat_id = int(uuid.uuid4().int % 10**9) + 1000
    job_id = uuid.uuid4().hex[:16]
    status = await stack.bot.send_message(chat_id, "⏳ status")
    await stack.repo.create_job(job_id=job_id, workflow_id=workflow_id_for(job_id), user_id=chat_id,
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
    handle = stack.client.get_workflow_handle(workflow_id_for(young), result_type=GenerationResult)
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.outcome == "done" and len(stack.photos_for(young_chat)) == 1
    assert (await stack.repo.get(old))["state"] == "error"
    assert stack.tg.messages(old_chat)[0]["text"] == t("start_failed", "ru") and stack.photos_for(old_chat) == []
    assert (await stack.repo.get(fresh))["state"] == "created"
    await stack.repo.close_unstarted(fresh, "test over")  # never leave a request for another test's sweep
    rows = await stack.repo.unstarted_jobs(30)
    assert not {young, old} & {r["id"] for r in rows}  # nothing left: the started one moved on, the old one is closed


async def test_ensure_started_is_safe_to_repeat(stack):
    job_id, chat_id, _ = await admitted(stack)
    inp = input_for(await stack.repo.get(job_id), stack.config)
    outcomes = await asyncio.gather(*(ensure_started(stack.client, inp, task_queue=stack.task_queue)
                                      for _ in range(3)))
    assert sorted(outcomes) == ["already", "already", "started"]
    handle = stack.client.get_workflow_handle(workflow_id_for(job_id), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    assert len(stack.photos_for(chat_id)) == 1


async def test_the_sweep_starts_an_edit_with_its_pictures(stack):
    """An edit admitted but never started: the sweep's input carries its pictures (the job row's
    input_files), so the edit is made from them."""
    chat_id = int(uuid.uuid4().int % 10**9) + 1000
    picture = make_png(20, 20, seed=81)
    images = user_pictures(stack.tg, chat_id, [picture])
    job_id = uuid.uuid4().hex[:16]
    status = await stack.bot.send_message(chat_id, "⏳ status")
    await stack.repo.create_job(job_id=job_id, workflow_id=workflow_id_for(job_id), user_id=chat_id, chat_id=chat_id,
                                model="nanobanana_edit", prompt="add snow", aspect_ratio="auto",
                                status_message_id=status.message_id, input_files=input_records(images))
    inp = input_for(await stack.repo.get(job_id), stack.config)
    assert [i.file_id for i in inp.images] == [images[0].file_id] and inp.images[0].uploaded_url == ""
    assert await ensure_started(stack.client, inp, task_queue=stack.task_queue) == "started"
    handle = stack.client.get_workflow_handle(workflow_id_for(job_id), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    (task,) = stack.kie.tasks.values()
    assert task.input_sha256 == [hashlib.sha256(picture).hexdigest()] and len(stack.photos_for(chat_id)) == 1
