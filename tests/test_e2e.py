"""A scripted Telegram user through the whole conversation: real aiogram dispatcher and Bot, the
Telegram simulator, the Kie simulator, the real Temporal dev server and Postgres."""

import time

import pytest

from imagegen.i18n import t
from tests.support.chat import button as _button, press, texts_in

pytestmark = pytest.mark.e2e

CHAT = 700_001


async def converse_until_ratio(stack, chat, prompt):
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/start")
    await press(stack, chat, "Z-Image")
    await stack.tg.wait_for(lambda: any("Опишите" in t for t in texts_in(stack, chat)))
    stack.tg.user_send_text(chat, prompt)


async def test_user_conversation_yields_one_photo_and_final_status(stack):
    chat = CHAT
    await converse_until_ratio(stack, chat, "a lighthouse in a storm")
    status_id, _ = await press(stack, chat, "16:9")
    await stack.tg.wait_for(lambda: stack.photos_for(chat))
    await stack.tg.wait_for(lambda: any(m["message_id"] == status_id and m.get("text") == t("status.done", "ru")
                                        for m in stack.tg.messages(chat)))
    assert len(stack.tg.calls_of("sendPhoto")) == 1
    (task,) = stack.kie.tasks.values()
    assert task.prompt == "a lighthouse in a storm" and task.aspect_ratio == "16:9"
    edits = [c for c in stack.tg.calls_of("editMessageText") if int(c.params["message_id"]) == status_id]
    assert edits[0].params["text"].startswith("⏳") and edits[-1].params["text"] == t("status.done", "ru")


async def test_pressing_the_ratio_twice_is_one_generation(stack):
    chat = CHAT + 1
    await converse_until_ratio(stack, chat, "two presses")
    message_id, data = await press(stack, chat, "1:1")
    stack.tg.user_press_button(chat, message_id, data)
    await stack.tg.wait_for(lambda: stack.photos_for(chat))
    await stack.tg.wait_for(lambda: t("status.done", "ru") in texts_in(stack, chat))
    assert len(stack.kie.tasks) == 1 and len(stack.photos_for(chat)) == 1
    answers = [c.params.get("text") for c in stack.tg.calls_of("answerCallbackQuery")]
    assert any(a in (t("stale_button", "ru"), t("already_started", "ru")) for a in answers)


@pytest.mark.parametrize("chat,prompt,expected", [
    (CHAT + 10, "   ", t("prompt.empty", "ru")),
    (CHAT + 11, "x" * 1001, "Слишком длинный запрос"),
    (CHAT + 12, "bad\x07bell", t("prompt.bad_chars", "ru")),
])
async def test_bad_prompts_get_a_friendly_message_and_no_kie_call(stack, chat, prompt, expected):
    await converse_until_ratio(stack, chat, prompt)
    await stack.tg.wait_for(lambda: any(expected in t for t in texts_in(stack, chat)))
    assert stack.kie.create_calls == 0
    # the conversation goes on: a good prompt afterwards works (sent later than a split message's tail)
    stack.tg.user_send_text(chat, "a fine prompt", date=int(time.time()) + 5)
    await press(stack, chat, "3:4")
    await stack.tg.wait_for(lambda: stack.photos_for(chat))


async def test_non_text_where_a_prompt_is_expected_gets_a_hint(stack):
    chat = CHAT + 3
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/start")
    await press(stack, chat, "Z-Image")
    await stack.tg.wait_for(lambda: any("Опишите" in t for t in texts_in(stack, chat)))
    stack.tg.user_send_sticker(chat)  # (a photo here starts an edit: tests/test_bot_edits.py)
    await stack.tg.wait_for(lambda: t("prompt.need_text", "ru") in texts_in(stack, chat))


async def test_stale_button_gets_a_polite_answer(stack):
    chat = CHAT + 4
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/start")
    message_id, _ = await stack.tg.wait_for(lambda: _button(stack, chat, "Z-Image"))
    stack.tg.user_press_button(chat, message_id, "ratio:16x9")  # a ratio button from an old menu
    stack.tg.user_press_button(chat, message_id, "garbage")
    await stack.tg.wait_for(lambda: len(stack.tg.calls_of("answerCallbackQuery")) >= 2)
    answers = [c.params.get("text") for c in stack.tg.calls_of("answerCallbackQuery")]
    assert answers == [t("stale_button", "ru"), t("stale_button", "ru")]
    assert stack.kie.create_calls == 0


async def test_generation_starts_even_if_the_first_status_edit_fails(stack):
    chat = CHAT + 20
    await converse_until_ratio(stack, chat, "status edit refused")
    await stack.tg.wait_for(lambda: _button(stack, chat, "1:1"))
    stack.tg.fail_next("editMessageText", 429, "Too Many Requests: retry after 1", retry_after=1)
    await press(stack, chat, "1:1")
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    await stack.tg.wait_for(lambda: t("status.done", "ru") in texts_in(stack, chat), timeout=20)
    assert len(stack.kie.tasks) == 1
