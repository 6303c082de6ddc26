"""Russian and English end to end: the language from Telegram's language_code, /lang remembered in
Postgres, the worker's texts in the same language, the translated command menu."""

import re

import pytest

from imagegen.i18n import t
from tests.support.chat import press, said, wait_text

pytestmark = pytest.mark.e2e

CYRILLIC = re.compile("[а-яё]", re.I)


async def generate(stack, chat, prompt="a lighthouse in a storm", ratio="16:9", model="Z-Image"):
    stack.tg.user_send_command(chat, "/start")
    await press(stack, chat, model)
    stack.tg.user_send_text(chat, prompt)
    status_id, _ = await press(stack, chat, ratio)
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    return status_id


def status_edits(stack, chat, status_id):
    return [c.params["text"] for c in stack.tg.calls_of("editMessageText")
            if int(c.params["chat_id"]) == chat and int(c.params["message_id"]) == status_id and c.status == 200]


async def test_english_user_gets_every_text_in_english(stack):
    chat = 710_001
    stack.tg.set_user_language(chat, "en-US")
    await stack.start_bot()
    status_id = await generate(stack, chat)
    await wait_text(stack, chat, t("status.done", "en"), exact=True)
    assert t("welcome", "en") in said(stack, chat)
    (photo,) = stack.photos_for(chat)
    assert photo.caption == "🖼 Z-Image · 16:9"
    assert [b for b, _ in stack.tg.inline_buttons(chat, photo.message_id)] == [
        "🔁 Again", "📝 New prompt", "📐 Other ratio", "📄 Original", "✏️ Edit this picture"]
    edits = status_edits(stack, chat, status_id)
    assert edits[0].startswith("⏳ Generation started: Z-Image, 16:9") and edits[-1] == "✅ Generation complete"
    # "generating" at most every 10 s: this one took seconds, so at most one such edit
    assert sum(e.startswith("🎨 Generating") for e in edits) <= 1
    assert not [x for x in said(stack, chat) if CYRILLIC.search(x)]
    # the request row keeps the conversation's language (the user never chose one with /lang), so
    # that a generation the sweep starts later speaks it too (imagegen/bot/sweep.py)
    assert await stack.pool.fetchval("SELECT lang FROM generation_jobs WHERE user_id = $1", chat) == "en"
    assert await stack.pool.fetchval("SELECT lang FROM bot_users WHERE user_id = $1", chat) is None


async def test_user_without_language_code_gets_russian(stack):
    chat = 710_002
    stack.tg.set_user_language(chat, None)
    await stack.start_bot()
    status_id = await generate(stack, chat, ratio="1:1")
    await wait_text(stack, chat, t("status.done", "ru"), exact=True)
    (photo,) = stack.photos_for(chat)
    assert [b for b, _ in stack.tg.inline_buttons(chat, photo.message_id)] == [
        "🔁 Ещё раз", "📝 Новый промпт", "📐 Другой формат", "📄 Оригинал", "✏️ Изменить эту картинку"]
    assert status_edits(stack, chat, status_id)[0].startswith("⏳ Генерация запущена")
    assert t("welcome", "ru") in said(stack, chat)


async def test_lang_switches_and_is_remembered_for_the_bot_and_the_worker(stack):
    chat = 710_003
    stack.tg.set_user_language(chat, "ru")
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/lang")
    await press(stack, chat, "English")
    await wait_text(stack, chat, t("lang.set", "en"), exact=True)
    assert await stack.pool.fetchval("SELECT lang FROM bot_users WHERE user_id = $1", chat) == "en"
    # this chat's command menu follows the choice, whatever the client's language
    await stack.tg.wait_for(lambda: stack.tg.command_sets.get((f"chat:{chat}", "")))
    assert stack.tg.commands_for(chat, chat)[0]["description"] == t("cmd.start", "en")
    await generate(stack, chat)
    await wait_text(stack, chat, t("status.done", "en"), exact=True)
    assert said(stack, chat).count(t("welcome", "en")) == 1
    stack.tg.user_send_command(chat, "/lang")
    await press(stack, chat, "Русский")
    await wait_text(stack, chat, t("lang.set", "ru"), exact=True)
    stack.tg.user_send_command(chat, "/help")
    await wait_text(stack, chat, "Я рисую картинки")


async def test_command_menu_is_set_in_both_languages(stack):
    await stack.start_bot()
    await stack.tg.wait_for(lambda: len(stack.tg.command_sets) >= 6)
    names = ["start", "help", "cancel", "history", "lang"]
    for code, lang in [("en", "en"), ("ru", "ru"), ("uk", "ru"), ("be", "ru"), ("kk", "ru"), ("de", "en")]:
        user = 710_100 + len(code) + ord(code[0])
        stack.tg.set_user_language(user, code)
        menu = stack.tg.commands_for(user)
        assert [c["command"] for c in menu] == names, code
        assert [c["description"] for c in menu] == [t(f"cmd.{n}", lang) for n in names], code
