"""After the picture: Again, New prompt, Other ratio, Original; /history with its resend (and an
expired Kie URL told plainly); /cancel of a running generation through Temporal."""

import asyncio

import pytest
from temporalio.client import WorkflowExecutionStatus

from imagegen.i18n import t
from tests.support.chat import begin, button, later, press, said, wait_text

pytestmark = pytest.mark.e2e


async def first_picture(stack, chat, prompt="a lighthouse", ratio="16:9", lang="ru"):
    await begin(stack, chat, "Z-Image", lang)
    stack.tg.user_send_text(chat, prompt)
    await press(stack, chat, ratio)
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    await wait_text(stack, chat, t("status.done", lang), exact=True)
    return stack.photos_for(chat)[0]


def inputs(stack):
    return [task.body["input"] for task in sorted(stack.kie.tasks.values(), key=lambda x: x.created)]


async def test_again_is_a_new_generation_of_the_same_request(stack):
    chat = 730_001
    await first_picture(stack, chat)
    await press(stack, chat, "Ещё раз")
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 2, timeout=20)
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("status.done", "ru")) == 2)
    assert inputs(stack) == [{"prompt": "a lighthouse", "aspect_ratio": "16:9"}] * 2
    rows = await stack.pool.fetch("SELECT id, state FROM generation_jobs WHERE user_id = $1", chat)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"delivered"}


async def test_again_respects_the_per_user_limit(stack):
    chat = 730_002
    await first_picture(stack, chat)
    await stack.pool.execute(  # four more generations in the last minute: the fifth slot is the limit
        "INSERT INTO generation_jobs (id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio, state)"
        " SELECT 'lim' || g, 'zimage-lim' || g, $1, $1, 'zimage', 'p', '1:1', 'delivered'"
        " FROM generate_series(1, 4) g", chat)
    await press(stack, chat, "Ещё раз")
    await wait_text(stack, chat, "Слишком много запросов")
    assert len(stack.kie.tasks) == 1


async def test_new_prompt_keeps_the_model_and_other_ratio_keeps_the_prompt(stack):
    chat = 730_003
    await first_picture(stack, chat, lang="en")
    await press(stack, chat, "New prompt")
    await wait_text(stack, chat, "Model: Z-Image. Describe the picture")
    stack.tg.user_send_text(chat, "a windmill", date=later())
    await press(stack, chat, "3:4")
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 2, timeout=20)
    await press(stack, chat, "Other ratio")
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("ask_ratio", "en")) == 2)
    await press(stack, chat, "9:16")
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 3, timeout=20)
    assert inputs(stack) == [{"prompt": "a lighthouse", "aspect_ratio": "16:9"},
                             {"prompt": "a windmill", "aspect_ratio": "3:4"},
                             {"prompt": "a windmill", "aspect_ratio": "9:16"}]


async def test_original_sends_the_same_result_as_a_document(stack):
    chat = 730_004
    photo = await first_picture(stack, chat)
    await press(stack, chat, "Оригинал")
    await stack.tg.wait_for(lambda: stack.tg.documents, timeout=10)
    (doc,) = stack.tg.documents
    (task,) = stack.kie.tasks.values()
    assert doc.chat_id == chat and doc.sha256 == photo.sha256 and doc.url == photo.url
    assert doc.caption == "🖼 Z-Image · 16:9"
    assert len(stack.photos_for(chat)) == 1


async def test_history_lists_and_resends_and_says_plainly_when_the_url_expired(stack):
    chat = 730_005
    photo = await first_picture(stack, chat, prompt="a very long description of a quiet harbour at night " * 3)
    stack.tg.user_send_command(chat, "/history")
    text = await wait_text(stack, chat, t("history.title", "ru"))
    assert "1. " in text and "Z-Image · 16:9 · ✅ готово" in text and "«a very long description of a quiet" in text
    assert "…»" in text and len(text) < 4096
    await press(stack, chat, "📥 1")
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 2)
    assert stack.photos_for(chat)[1].sha256 == photo.sha256
    stack.kie.file_mode = "404"  # Kie's URL has expired
    await press(stack, chat, "📥 1")
    await wait_text(stack, chat, t("resend.expired", "ru"), exact=True)
    assert len(stack.photos_for(chat)) == 2
    await press(stack, chat, "Оригинал")  # the same for the document
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("resend.expired", "ru")) == 2)
    assert stack.tg.documents == []


async def test_history_of_a_new_user_and_of_ten_generations(stack):
    chat = 730_006
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/history")
    await wait_text(stack, chat, t("history.empty", "ru"), exact=True)
    await stack.pool.execute(
        "INSERT INTO generation_jobs (id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio, state,"
        " created_at) SELECT 'h' || g, 'zimage-h' || g, $1, $1, 'zimage', 'prompt ' || g, '1:1',"
        " CASE WHEN g % 2 = 0 THEN 'fail' ELSE 'timeout' END, now() - make_interval(mins => g)"
        " FROM generate_series(1, 12) g", chat)
    stack.tg.user_send_command(chat, "/history")
    text = await wait_text(stack, chat, t("history.title", "ru"))
    assert "«prompt 1»" in text and "«prompt 10»" in text and "«prompt 11»" not in text
    assert "❌ не получилось" in text and "⌛ не успела" in text
    assert button(stack, chat, "📥") is None  # nothing to resend


async def test_cancel_stops_the_running_generation_through_temporal(stack):
    chat = 730_007
    stack.kie.delay = 30  # still generating when the user cancels
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/start")
    await press(stack, chat, "Z-Image")
    stack.tg.user_send_text(chat, "a slow one")
    status_id, _ = await press(stack, chat, "1:1")
    await stack.tg.wait_for(lambda: stack.kie.tasks, timeout=10)
    stack.tg.user_send_command(chat, "/cancel")
    await wait_text(stack, chat, t("cancel.generation", "ru"), exact=True)
    await wait_text(stack, chat, t("status.cancelled", "ru"), exact=True, timeout=15)
    job = await stack.pool.fetchrow("SELECT workflow_id, state FROM generation_jobs WHERE user_id = $1", chat)
    handle = stack.client.get_workflow_handle(job["workflow_id"])
    desc = await handle.describe()
    for _ in range(50):
        if desc.status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
        desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.CANCELED
    assert (await stack.pool.fetchval("SELECT state FROM generation_jobs WHERE user_id = $1", chat)) == "cancelled"
    cancelled = [x for x in said(stack, chat) if x.startswith("🚫")]
    assert cancelled == [t("status.cancelled", "ru")]  # told once
    status = next(m for m in stack.tg.messages(chat) if m["message_id"] == status_id)
    assert status["text"] == t("status.cancelled", "ru")
    assert stack.photos_for(chat) == []
    # a /cancel with nothing running only resets the dialog
    stack.tg.user_send_command(chat, "/cancel")
    await wait_text(stack, chat, t("cancel.dialog", "ru"), exact=True)
