"""The sweep of admitted requests that never became a workflow, and ensure_started, on a real
Temporal dev server and real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from imagegen.i18n import t
from imagegen.bot.sweep import input_for, sweep_once
from imagegen.contracts import GenerationResult, legacy_workflow_id, workflow_id_for
from imagegen.launch import ensure_started, start_generation, workflow_exists
from imagegen.uploads import input_records
from tests.support.images import make_png
from tests.support.stack import user_pictures


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


async def test_sweep_speaks_the_language_of_the_conversation_that_admitted_the_request(stack):
    """Issue 19.3: an English Telegram user who never used /lang: the bot admitted the request (row
    with the conversation's language) and died before starting it. The generation the sweep starts,
    and the notice for one too old to start, are in English."""
    young_chat, old_chat = [int(uuid.uuid4().int % 10**9) + 1000 for _ in range(2)]
    ids = {}
    for chat_id, age in ((young_chat, 40), (old_chat, 3600)):
        status = await stack.bot.send_message(chat_id, "⏳ status")
        job_id = uuid.uuid4().hex[:16]
        admission = await stack.repo.admit_job(
            job_id=job_id, workflow_id=workflow_id_for(job_id, "zimage"), user_id=chat_id, chat_id=chat_id,
            model="zimage", prompt="a fox", aspect_ratio="1:1", status_message_id=status.message_id,
            max_active=5, max_per_minute=5, lang="en")
        assert admission.admitted
        await stack.pool.execute("UPDATE generation_jobs SET created_at = now() - make_interval(secs => $2)"
                                 " WHERE id = $1", job_id, float(age))
        ids[chat_id] = job_id
    await sweep_once(stack.client, stack.repo, stack.bot, stack.config, grace_seconds=30)
    handle = stack.client.get_workflow_handle(workflow_id_for(ids[young_chat], "zimage"), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    (photo,) = stack.photos_for(young_chat)
    assert stack.tg.messages(young_chat)[0]["text"] == t("status.done", "en")
    assert stack.tg.messages(old_chat)[0]["text"] == t("start_failed", "en")


async def test_ensure_started_is_safe_to_repeat(stack):
    job_id, chat_id, _ = await admitted(stack)
    inp = input_for(await stack.repo.get(job_id), stack.config)
    outcomes = await asyncio.gather(*(ensure_started(stack.client, inp, task_queue=stack.task_queue)
                                      for _ in range(3)))
    assert sorted(outcomes) == ["already", "already", "started"]
    handle = stack.client.get_workflow_handle(workflow_id_for(job_id, "zimage"), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    assert len(stack.photos_for(chat_id)) == 1


async def _row(stack, *, age_seconds: float, workflow_id: str | None = None, model: str = "zimage") -> tuple[str, int, int]:
    chat_id = int(uuid.uuid4().int % 10**9) + 1000
    job_id = uuid.uuid4().hex[:16]
    status = await stack.bot.send_message(chat_id, "⏳ status")
    await stack.repo.create_job(job_id=job_id, workflow_id=workflow_id or workflow_id_for(job_id, model), user_id=chat_id,
                                chat_id=chat_id, model=model, prompt="a fox", aspect_ratio="1:1",
                                status_message_id=status.message_id)
    await stack.pool.execute("UPDATE generation_jobs SET created_at = now() - make_interval(secs => $2)"
                             " WHERE id = $1", job_id, float(age_seconds))
    return job_id, chat_id, status.message_id


async def test_sweep_closes_a_row_whose_workflow_ended_without_it(stack):
    """Issue 19.4: the workflow was started and has ended (here: terminated before its createTask
    ran, as an operator might), its row still says 'created' and the user still sees "⏳". The sweep
    records the ending and tells the user, instead of seeing "a workflow exists" forever."""
    job_id, chat_id, status_id = await _row(stack, age_seconds=40)
    inp = input_for(await stack.repo.get(job_id), stack.config)
    handle = await start_generation(stack.client, inp, task_queue=f"nobody-{uuid.uuid4().hex[:8]}")
    await handle.terminate("operator")
    counts = await sweep_once(stack.client, stack.repo, stack.bot, stack.config, grace_seconds=30)
    assert counts["closed"] >= 1, counts
    row = await stack.repo.get(job_id)
    assert row["state"] == "error" and row["error"] == "workflow terminated"
    assert stack.tg.messages(chat_id)[0]["text"] == t("status.unavailable", "ru")
    assert job_id not in {r["id"] for r in await stack.repo.unstarted_jobs(30)}


async def test_sweep_sees_every_row_and_one_failing_job_does_not_stop_the_pass(stack):
    """Issue 19.4: 60 older rows whose workflow runs (waiting in a queue) no longer hide a newer
    request that was never started, and a job whose start raises (an unknown model) is skipped."""
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"  # a queue no worker polls: these workflows stay running
    running = [(await _row(stack, age_seconds=400 - i))[0] for i in range(60)]
    inputs = [input_for(await stack.repo.get(job_id), stack.config) for job_id in running]
    parked = await asyncio.gather(*(start_generation(stack.client, inp, task_queue=nobody) for inp in inputs))
    broken, _, _ = await _row(stack, age_seconds=100, model="no-such-model")
    fresh, fresh_chat, _ = await _row(stack, age_seconds=40)
    try:
        counts = await sweep_once(stack.client, stack.repo, stack.bot, stack.config, grace_seconds=30)
        assert counts["running"] >= 60 and counts["failed"] >= 1 and counts["started"] >= 1, counts
        handle = stack.client.get_workflow_handle(workflow_id_for(fresh, "zimage"), result_type=GenerationResult)
        assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
        assert len(stack.photos_for(fresh_chat)) == 1
    finally:
        await asyncio.gather(*(h.terminate("test over") for h in parked))
        for job_id in running + [broken]:
            await stack.repo.close_unstarted(job_id, "test over")


async def test_the_sweep_starts_an_edit_with_its_pictures(stack):
    """An edit admitted but never started: the sweep's input carries its pictures (the job row's
    input_files), so the edit is made from them."""
    chat_id = int(uuid.uuid4().int % 10**9) + 1000
    picture = make_png(20, 20, seed=81)
    images = user_pictures(stack.tg, chat_id, [picture])
    job_id = uuid.uuid4().hex[:16]
    status = await stack.bot.send_message(chat_id, "⏳ status")
    await stack.repo.create_job(job_id=job_id, workflow_id=workflow_id_for(job_id, "nanobanana_edit"), user_id=chat_id, chat_id=chat_id,
                                model="nanobanana_edit", prompt="add snow", aspect_ratio="auto",
                                status_message_id=status.message_id, input_files=input_records(images))
    inp = input_for(await stack.repo.get(job_id), stack.config)
    assert [i.file_id for i in inp.images] == [images[0].file_id] and inp.images[0].uploaded_url == ""
    assert await ensure_started(stack.client, inp, task_queue=stack.task_queue) == "started"
    handle = stack.client.get_workflow_handle(workflow_id_for(job_id, "nanobanana_edit"), result_type=GenerationResult)
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    (task,) = stack.kie.tasks.values()
    assert task.input_sha256 == [hashlib.sha256(picture).hexdigest()] and len(stack.photos_for(chat_id)) == 1
