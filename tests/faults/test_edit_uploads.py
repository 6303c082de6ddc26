"""Fault matrix, an edit's upload: worker.py SIGKILLed in the middle of uploading an album's pictures to
Kie's file host. Another worker retries the upload activity after its heartbeat timeout: the picture
recorded before the kill is reused, the one in flight is uploaded again under its own name (Kie
replaces it), the rest are uploaded once; createTask gets exactly the three pictures, in order, and
the user exactly one result."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from temporalio.api.enums.v1 import EventType

from imagegen.jobs import JobRepository, job_uploads
from tests.support.images import make_png
from tests.support.stack import start_edit_workflow, user_pictures

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.mark.parametrize("mode", ["send"])  # about uploads, not delivery: one mode is enough
async def test_worker_killed_mid_upload_loses_and_doubles_no_picture(procstack):
    ps = await procstack("edit-upload-kill")
    ps.kie.upload_delays = [0.0, 8.0]  # picture 1's upload is still in flight when the worker dies
    w1 = await ps.start_worker()
    chat = ps.new_chat_id()
    pictures = [make_png(24, 24, seed=70 + i) for i in range(3)]
    images = user_pictures(ps.tg, chat, pictures)
    handle, job_id, _ = await start_edit_workflow(
        ps.client, ps.bot, JobRepository(ps.pool), ps.task_queue, ps.poll_schedule, images=images,
        prompt="one scene from three", model="seedream45_edit", ratio="1:1", chat_id=chat)
    await ps.tg.wait_for(lambda: len(ps.kie.upload_calls) == 2, timeout=30)
    await asyncio.sleep(0.5)
    w1.kill()
    t_kill = time.monotonic()
    await ps.start_worker()
    result = await asyncio.wait_for(handle.result(), 90)
    recovered = time.monotonic() - t_kill

    names = [f"imagegen/inputs/{job_id}-{i}.png" for i in range(3)]
    writes = ps.kie.upload_writes()
    assert result.outcome == "done", ps.logs()
    assert sorted(writes) == names  # three files on Kie, no stray name
    assert writes[names[0]] == 1  # recorded before the kill: reused, not uploaded again
    assert 1 <= writes[names[1]] <= 2 and writes[names[2]] == 1  # the one in flight: replaced, not added
    (task,) = ps.kie.tasks.values()
    assert task.input_urls == [ps.kie.uploads[n].url for n in names]
    assert task.input_sha256 == [hashlib.sha256(p).hexdigest() for p in pictures]
    assert len(ps.photos_for(chat)) == 1
    row = await JobRepository(ps.pool).get(job_id)
    assert [job_uploads(row)[i]["url"] for i in range(3)] == task.input_urls
    history = await handle.fetch_history()
    attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert attempts[0] == 2  # upload_inputs: the killed attempt, then the retry
    assert recovered < 60, recovered


@pytest.mark.parametrize("mode", ["edit"])  # the status message becomes the edited picture
async def test_real_processes_a_photo_with_a_russian_caption_gives_one_picture_from_it(procstack):
    """What `make demo` should show for an edit: bot.py and worker.py as processes configured by their
    environment only (KIE_UPLOAD_BASE included); a scripted user sends a photo with a Russian caption
    and gets exactly one picture, made from the uploaded photo."""
    ps = await procstack("edit-real-processes")
    await asyncio.gather(ps.start_worker(), ps.start_bot())
    chat = ps.new_chat_id()
    picture = make_png(36, 28, seed=77)
    ps.tg.user_send_photo(chat, caption="сделай закат над морем", image=picture)
    await ps.tg.user_presses(chat, "Nano Banana Edit", "auto", timeout=60)
    gen = await ps.generation_for_chat(chat)
    result = await asyncio.wait_for(gen.handle.result(), 90)
    assert result.outcome == "done", ps.logs()
    (task,) = ps.kie.tasks.values()
    (upload,) = ps.kie.uploads.values()
    assert task.input_urls == [upload.url] and upload.data == picture
    assert task.input_sha256 == [hashlib.sha256(picture).hexdigest()]
    (photo,) = ps.photos_for(chat)
    assert photo.sha256 == hashlib.sha256(ps.kie.image_bytes(task.task_id)).hexdigest()
