"""Delivery under Telegram trouble: the 3-level fallback and the retry/permanent split."""

import asyncio
import hashlib

from imagegen.i18n import t


async def run(stack, **kw):
    handle, job_id, chat_id = await stack.start_generation(**kw)
    result = await asyncio.wait_for(handle.result(), 40)
    return result, job_id, chat_id


async def test_url_rejected_falls_back_to_uploaded_bytes(stack):
    stack.tg.fail_next("sendPhoto", 400, "Bad Request: wrong file identifier/HTTP URL specified")
    result, job_id, chat_id = await run(stack)
    assert result.outcome == "done" and result.delivery_level == "bytes"
    photos = stack.photos_for(chat_id)
    assert len(photos) == 1 and photos[0].source == "upload"
    task_id = (await stack.repo.get(job_id))["external_task_id"]
    assert photos[0].sha256 == hashlib.sha256(stack.kie.image_bytes(task_id)).hexdigest()
    assert (await stack.repo.get(job_id))["delivery_level"] == "bytes"


async def test_bytes_fail_falls_back_to_a_text_link(stack):
    stack.kie.file_mode = "404"  # Telegram cannot fetch it, and neither can we
    result, job_id, chat_id = await run(stack)
    assert result.outcome == "done" and result.delivery_level == "text"
    assert stack.photos_for(chat_id) == []
    links = [m for m in stack.tg.messages(chat_id) if m.get("text") and "/files/" in m["text"]]
    assert len(links) == 1
    row = await stack.repo.get(job_id)
    assert row["delivered_at"] is not None and row["delivered_message_id"] == links[0]["message_id"]
    assert stack.tg.messages(chat_id)[0]["text"] == t("status.done", "ru")


async def test_html_instead_of_image_falls_back_to_text(stack):
    stack.kie.file_mode = "html"
    result, job_id, chat_id = await run(stack)
    assert result.delivery_level == "text" and stack.photos_for(chat_id) == []


async def test_429_is_retried_after_retry_after_not_degraded(stack):
    stack.tg.fail_next("sendPhoto", 429, "Too Many Requests: retry after 2", retry_after=2)
    result, job_id, chat_id = await run(stack)
    assert result.outcome == "done" and result.delivery_level == "url"
    calls = [c for c in stack.tg.calls_of("sendPhoto")]
    assert [c.status for c in calls] == [429, 200]  # no hammering: exactly one retry…
    assert calls[1].time - calls[0].time >= 1.9  # …after retry_after
    assert len(stack.photos_for(chat_id)) == 1


async def test_5xx_is_retried_then_delivered(stack):
    stack.tg.fail_next("sendPhoto", 502, "Bad Gateway", times=2)
    result, job_id, chat_id = await run(stack)
    assert result.outcome == "done" and result.delivery_level == "url"
    assert [c.status for c in stack.tg.calls_of("sendPhoto")] == [502, 502, 200]
    assert len(stack.photos_for(chat_id)) == 1


async def test_blocked_user_is_recorded_undeliverable_without_retries(stack):
    handle, job_id, chat_id = await stack.start_generation()
    stack.tg.block_user(chat_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "undeliverable"
    assert len(stack.tg.calls_of("sendPhoto")) == 1
    row = await stack.repo.get(job_id)
    assert row["state"] == "undeliverable" and "403" in row["error"] and row["delivering_at"] is None
