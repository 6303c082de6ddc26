"""An edit through GenerationWorkflow (real Temporal, Postgres, aiogram; simulated Kie and Telegram):
the user's pictures are fetched from Telegram, uploaded to Kie's file host (upload_inputs, behind the
edit-inputs-1 patch), and createTask gets their URLs; the upload is safe to repeat (a lost answer, a
failed attempt: no lost or doubled picture); a picture that cannot be used ends with a clear reason;
an earlier job's uploads are reused while Kie still has them."""

import asyncio
import hashlib
import json
import time

from temporalio.api.enums.v1 import EventType

from imagegen.contracts import InputImage
from imagegen.i18n import t
from imagegen.jobs import job_input_files, job_uploads
from imagegen.uploads import images_from_job
from tests.support.images import make_jpeg_like, make_png, png_text
from tests.support.histories import activity_types
from workflows.generation import EDIT_INPUTS_PATCH


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def status_of(stack, chat_id) -> str | None:
    texts = [m["text"] for m in stack.tg.messages(chat_id) if m.get("text") is not None]
    return texts[0] if texts else None


async def test_a_photo_and_a_caption_make_one_picture_from_the_uploaded_photo(stack):
    picture = make_png(40, 40, seed=21)
    handle, job_id, chat_id = await stack.start_edit([picture], "сделай закат")
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "done"
    (task,) = stack.kie.tasks.values()
    assert task.body["model"] == "google/nano-banana-edit"
    assert task.body["input"]["prompt"] == "сделай закат" and task.body["input"]["image_size"] == "auto"
    (upload,) = stack.kie.uploads.values()
    assert task.input_urls == [upload.url] and task.input_sha256 == [sha(picture)] and upload.data == picture
    assert upload.file_path == f"imagegen/inputs/{job_id}-0.png"
    (photo,) = stack.photos_for(chat_id)  # exactly one picture, made from the uploaded photo
    assert photo.sha256 == sha(stack.kie.image_bytes(task.task_id))
    assert png_text(stack.kie.image_bytes(task.task_id)) == f"inputs={sha(picture)}"
    row = await stack.repo.get(job_id)
    assert row["state"] == "delivered" and len(job_input_files(row)) == 1
    recorded = job_uploads(row)
    assert list(recorded) == [0] and recorded[0]["url"] == upload.url and recorded[0]["sha256"] == sha(picture)
    assert recorded[0]["file_name"] == f"{job_id}-0.png" and recorded[0]["reused"] is False
    history = await handle.fetch_history()
    assert activity_types(history) == ["upload_inputs", "create_task (local)", "poll_task (local)", "deliver (local)"]
    markers = [str(e.marker_recorded_event_attributes) for e in history.events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert not any(EDIT_INPUTS_PATCH in m for m in markers)  # implied by the lean shape (issue 18): no marker
    summaries = [json.loads(e.user_metadata.summary.data) for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert summaries[0] == "upload 1 picture → Kie files"
    desc = await handle.describe()
    assert "**Input pictures** 1" in (await desc.static_details() or "")


async def test_an_album_of_three_is_one_request_with_three_inputs_in_order(stack):
    pictures = [make_png(20, 20, seed=s) for s in (31, 32, 33)]
    handle, job_id, chat_id = await stack.start_edit(pictures, "merge into one scene", model="seedream45_edit",
                                                     ratio="16:9", options={"quality": "high"})
    assert (await asyncio.wait_for(handle.result(), 30)).outcome == "done"
    (task,) = stack.kie.tasks.values()
    assert task.body["model"] == "seedream/4.5-edit" and task.body["input"]["quality"] == "high"
    assert task.input_sha256 == [sha(p) for p in pictures] and len(set(task.input_urls)) == 3
    assert sorted(stack.kie.uploads) == [f"imagegen/inputs/{job_id}-{i}.png" for i in range(3)]
    assert len(stack.photos_for(chat_id)) == 1
    assert len(stack.tg.file_downloads) == 3  # each picture fetched from Telegram once


async def test_an_upload_whose_answer_was_lost_is_repeated_under_its_name_without_a_double(stack):
    """Attempt 1 uploads picture 0 (recorded), then picture 1 is stored by Kie but the answer is lost;
    attempt 2 reuses picture 0 from the job row, uploads picture 1 again under the same name (Kie
    replaces it) and picture 2: three inputs, in order, none lost or doubled."""
    pictures = [make_png(20, 20, seed=s) for s in (41, 42, 43)]
    stack.kie.upload_errors = [None, "lost_answer"]
    handle, job_id, chat_id = await stack.start_edit(pictures, "three into one", model="seedream45_edit",
                                                     ratio="1:1")
    assert (await asyncio.wait_for(handle.result(), 40)).outcome == "done"
    names = [f"imagegen/inputs/{job_id}-{i}.png" for i in range(3)]
    assert stack.kie.upload_writes() == {names[0]: 1, names[1]: 2, names[2]: 1}
    assert [c.file_path for c in stack.kie.upload_calls] == [names[0], names[1], names[1], names[2]]
    (task,) = stack.kie.tasks.values()
    assert task.input_urls == [stack.kie.uploads[n].url for n in names]
    assert task.input_sha256 == [sha(p) for p in pictures]
    assert len(stack.photos_for(chat_id)) == 1
    history = await handle.fetch_history()
    started = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert started[0].activity_task_started_event_attributes.attempt == 2  # one activity, retried once
    row = await stack.repo.get(job_id)
    assert [job_uploads(row)[i]["url"] for i in range(3)] == task.input_urls
    assert [job_uploads(row)[i]["reused"] for i in range(3)] == [False] * 3  # all this job's own uploads


async def test_a_picture_that_is_too_big_after_the_download_ends_with_a_clear_reason(stack):
    """Telegram announced a small file; the bytes are over Kie's 10 MB: refused after the download,
    nothing uploaded, no Kie task; the user is told in their language."""
    chat_id = 990_101
    stack.tg.user_send_document(chat_id, make_jpeg_like(10 * 1024 * 1024 + 1), "big.jpg", "image/jpeg",
                                file_size=2000)
    doc = stack.tg.updates[-1]["message"]["document"]
    image = InputImage(file_id=doc["file_id"], file_unique_id=doc["file_unique_id"], size=doc["file_size"],
                       mime="image/jpeg")
    handle, job_id, _ = await stack.start_edit(images=[image], chat_id=chat_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "failed" and "too_big" in result.detail
    assert stack.kie.upload_calls == [] and stack.kie.tasks == {}
    assert status_of(stack, chat_id) == t("status.input_too_big", "ru")
    assert (await stack.repo.get(job_id))["state"] == "fail"


async def test_a_file_that_is_not_a_picture_and_a_file_telegram_lost_end_with_their_reasons(stack):
    chat_id = 990_102
    stack.tg.user_send_document(chat_id, b"%PDF-1.4 not a picture", "x.png", "image/png")
    doc = stack.tg.updates[-1]["message"]["document"]
    image = InputImage(file_id=doc["file_id"], file_unique_id=doc["file_unique_id"], mime="image/png")
    handle, _, _ = await stack.start_edit(images=[image], chat_id=chat_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "failed" and "bad_type" in result.detail
    assert status_of(stack, chat_id) == t("status.input_bad_type", "ru")
    chat_id = 990_103
    handle, _, _ = await stack.start_edit(images=[InputImage(file_id="gone", file_unique_id="g")], chat_id=chat_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "failed" and "gone" in result.detail
    assert status_of(stack, chat_id) == t("status.input_gone", "ru")
    assert stack.kie.upload_calls == [] and stack.kie.tasks == {}


async def test_kie_refusing_the_content_of_an_edit_is_explained_like_any_refusal(stack):
    handle, _, chat_id = await stack.start_edit([make_png(seed=5)], "something forbidden [fail]")
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "failed" and stack.photos_for(chat_id) == []
    assert status_of(stack, chat_id) == t("status.content_refused", "ru")


async def test_again_reuses_the_uploads_while_kie_has_them_and_uploads_again_after(stack):
    pictures = [make_png(20, 20, seed=s) for s in (51, 52)]
    handle, first_id, chat_id = await stack.start_edit(pictures, "a first edit", model="seedream45_edit",
                                                       ratio="1:1")
    assert (await asyncio.wait_for(handle.result(), 30)).outcome == "done"
    first = await stack.repo.get(first_id)
    images = images_from_job(first)
    assert [i.uploaded_url for i in images] == [job_uploads(first)[i]["url"] for i in range(2)]
    calls, downloads = len(stack.kie.upload_calls), len(stack.tg.file_downloads)

    # Again, while Kie keeps them: the same URLs, nothing fetched or uploaded.
    handle, again_id, _ = await stack.start_edit(images=images, prompt="a first edit", model="seedream45_edit",
                                                 ratio="1:1", chat_id=chat_id)
    assert (await asyncio.wait_for(handle.result(), 30)).outcome == "done"
    again_task = max(stack.kie.tasks.values(), key=lambda x: x.created)
    assert again_task.input_urls == [i.uploaded_url for i in images]
    assert len(stack.kie.upload_calls) == calls and len(stack.tg.file_downloads) == downloads
    assert all(u["reused"] for u in job_uploads(await stack.repo.get(again_id)).values())

    # Kie no longer has them (its page says 24 h as well as 3 days): fetched and uploaded again.
    stack.kie.expire_uploads()
    handle, later_id, _ = await stack.start_edit(images=images, prompt="a first edit", model="seedream45_edit",
                                                 ratio="1:1", chat_id=chat_id)
    assert (await asyncio.wait_for(handle.result(), 30)).outcome == "done"
    later_task = max(stack.kie.tasks.values(), key=lambda x: x.created)
    assert later_task.input_sha256 == [sha(p) for p in pictures]
    assert [u.split("/")[-1] for u in later_task.input_urls] == [f"{later_id}-{i}.png" for i in range(2)]
    assert len(stack.kie.upload_calls) == calls + 2

    # Older than KIE_UPLOAD_REUSE_HOURS by our clock: uploaded again without asking Kie.
    stale = [InputImage(file_id=i.file_id, file_unique_id=i.file_unique_id, uploaded_url=i.uploaded_url,
                        uploaded_at=time.time() - 61 * 3600) for i in images_from_job(await stack.repo.get(later_id))]
    handle, _, _ = await stack.start_edit(images=stale, prompt="x", model="seedream45_edit", ratio="1:1",
                                          chat_id=chat_id)
    assert (await asyncio.wait_for(handle.result(), 30)).outcome == "done"
    assert len(stack.kie.upload_calls) == calls + 4
    assert len(stack.photos_for(chat_id)) == 4
