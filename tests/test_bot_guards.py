"""What must not happen: a command taken as a prompt, the tail of a split long text becoming a
generation, the bot talking in groups, a stale button doing anything, raw API text in the chat."""

import re

import pytest

from imagegen.i18n import t
from imagegen.outcomes import reason_key
from tests.support.chat import begin, answers, button, later, press, said, wait_text

pytestmark = pytest.mark.e2e


async def at_prompt_step(stack, chat, model="Z-Image", lang="ru"):
    await begin(stack, chat, model, lang)
    await wait_text(stack, chat, t("ask_prompt", lang, model=model, limit=1000 if model == "Z-Image" else 4096))


async def test_commands_work_in_every_state_and_are_never_a_prompt(stack):
    chat = 740_001
    await at_prompt_step(stack, chat)
    for command, reply in [("/help", "Я рисую картинки"), ("/history", t("history.empty", "ru")),
                           ("/lang", t("lang.choose", "ru")), ("/foo bar", "Команда /foo мне незнакома")]:
        stack.tg.user_send_command(chat, command)
        await wait_text(stack, chat, reply)
    # still at the prompt step: a prompt works
    stack.tg.user_send_text(chat, "a quiet lake")
    await press(stack, chat, "1:1")
    # during a generation and after it, too
    stack.tg.user_send_command(chat, "/help")
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("help", "ru", models="Z-Image, Seedream 4.5, Nano Banana",
                                                                edit_models="Nano Banana Edit (≤ 10), "
                                                                            "Seedream 4.5 Edit (≤ 14)",
                                                                active=2, per_minute=5)) == 2)
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    assert [task.prompt for task in stack.kie.tasks.values()] == ["a quiet lake"]
    stack.tg.user_send_command(chat, "/start")
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("welcome", "ru")) == 2)
    stack.tg.user_send_command(chat, "/cancel")
    await wait_text(stack, chat, t("cancel.dialog", "ru"), exact=True)
    stack.tg.user_send_text(chat, "not a prompt now")
    await wait_text(stack, chat, t("start_first", "ru"), exact=True)
    assert len(stack.kie.tasks) == 1


async def test_a_split_long_text_never_becomes_a_generation(stack):
    """Z-Image (≤ 1000): the first part is refused as too long, the tail as its continuation."""
    chat = 740_002
    await at_prompt_step(stack, chat)
    head, tail = "x " * 2048, "the rest of it"
    stack.tg.user_send_text(chat, head)
    stack.tg.user_send_text(chat, tail)
    await wait_text(stack, chat, "Слишком длинный запрос: 4095 символов, максимум 1000")
    await wait_text(stack, chat, t("prompt.continuation", "ru", limit=1000), exact=True)
    assert button(stack, chat, "1:1") is None and stack.kie.create_calls == 0
    stack.tg.user_send_text(chat, "a short one", date=later())  # a new message, later: a prompt again
    await press(stack, chat, "1:1")
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    assert [task.prompt for task in stack.kie.tasks.values()] == ["a short one"]


async def test_a_split_text_that_fits_the_limit_is_refused_with_its_tail(stack):
    """Nano Banana (≤ 4096): the first part alone would fit; its tail within 2 s reveals the split."""
    chat = 740_003
    await at_prompt_step(stack, chat, model="Nano Banana", lang="en")
    stack.tg.user_send_text(chat, "y" * 4096)
    stack.tg.user_send_text(chat, "and the end of the description")
    await wait_text(stack, chat, t("prompt.split", "en", limit=4096), exact=True)
    await press(stack, chat, "16:9")  # the ratio menu shown for the first part is stale now
    await stack.tg.wait_for(lambda: t("stale_button", "en") in answers(stack))
    assert stack.kie.create_calls == 0


async def test_groups_get_one_notice_and_then_silence(stack):
    group, member = -100_740_004, 740_004
    await stack.start_bot()
    stack.tg.user_send_command(group, "/start", user_id=member)
    stack.tg.user_send_text(group, "draw a cat", user_id=member)
    stack.tg.user_send_command(group, "/help", user_id=member + 1)
    await wait_text(stack, group, t("group_only", "ru", bot="zimage_test_bot"), exact=True)
    await stack.tg.wait_for(lambda: len(stack.tg.updates) == 3 and stack.tg.get_updates_calls > 3)
    assert said(stack, group) == [t("group_only", "ru", bot="zimage_test_bot")]
    message_id = stack.tg.messages(group)[0]["message_id"]
    stack.tg.user_press_button(group, message_id, "model:zimage", user_id=member)
    await stack.tg.wait_for(lambda: answers(stack))
    assert answers(stack) == [t("group_only", "ru", bot="zimage_test_bot")]
    assert stack.kie.create_calls == 0 and len(said(stack, group)) == 1


async def test_stale_buttons_get_a_polite_toast(stack):
    chat = 740_005
    await at_prompt_step(stack, chat)
    stack.tg.user_send_text(chat, "a forest")
    ratio_menu, _ = await press(stack, chat, "1:1")
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    for data in ["ratio:4x3", "back:options", "back:prompt", "opt:quality:high", "res:again:0000000000000000",
                 "hist:0000000000000000", "garbage"]:
        stack.tg.user_press_button(chat, ratio_menu, data)
    await stack.tg.wait_for(lambda: len(answers(stack)) >= 9)
    assert answers(stack)[2:] == [t("stale_button", "ru")] * 5 + [t("resend.missing", "ru"), t("stale_button", "ru")]
    assert len(stack.kie.tasks) == 1


async def test_refusals_are_told_in_human_words_in_the_users_language(stack):
    chat = 740_006
    await at_prompt_step(stack, chat, lang="en")
    stack.tg.user_send_text(chat, "something [fail]")
    await press(stack, chat, "1:1")
    await wait_text(stack, chat, t("status.content_refused", "en"), exact=True, timeout=20)
    assert not [x for x in said(stack, chat) if re.search("prohibited|failCode|Kie.ai error", x)]
    assert stack.photos_for(chat) == []


@pytest.mark.parametrize("outcome,detail,key", [
    ("failed", "Invalid prompt: prompt contains prohibited content (failCode 422)", "status.content_refused"),
    ("failed", "NSFW content detected", "status.content_refused"),
    ("failed", "Kie.ai error 422 validation error: input.prompt exceeds the maximum length", "status.prompt_invalid"),
    ("failed", "internal error (failCode 500)", "status.failed"),
    ("error", "Kie.ai error 429 rate limited: too many requests", "status.busy"),
    ("error", "Kie.ai error 455 service maintenance", "status.busy"),
    ("error", "Kie.ai error 402 insufficient credits: Credits insufficient", "status.unavailable"),
    ("timeout", "no result after 900 s", "status.timeout"),
    ("cancelled", "cancelled", "status.cancelled"),
    ("done", "", "status.done"),
    ("undeliverable", "Telegram 403", None),
])
def test_reason_for_every_outcome(outcome, detail, key):
    assert reason_key(outcome, detail) == key


async def test_buttons_never_act_on_another_users_generation(stack):
    owner, other = 740_007, 740_008
    await at_prompt_step(stack, owner)
    stack.tg.user_send_text(owner, "mine")
    await press(stack, owner, "1:1")
    await stack.tg.wait_for(lambda: stack.photos_for(owner), timeout=20)
    job_id = await stack.pool.fetchval("SELECT id FROM generation_jobs WHERE user_id = $1", owner)
    stack.tg.user_send_command(other, "/help")
    await wait_text(stack, other, "Я рисую картинки")
    menu = stack.tg.messages(other)[-1]["message_id"]
    before = len(answers(stack))
    for action in ("again", "prompt", "ratio", "orig"):
        stack.tg.user_press_button(other, menu, f"res:{action}:{job_id}")
    stack.tg.user_press_button(other, menu, f"hist:{job_id}")
    await stack.tg.wait_for(lambda: len(answers(stack)) == before + 5)
    assert answers(stack)[before:] == [t("stale_button", "ru")] * 4 + [t("resend.missing", "ru")]
    assert len(stack.kie.tasks) == 1 and stack.tg.documents == [] and len(stack.tg.photos) == 1


def test_only_a_database_outage_gets_the_try_again_answer():
    """The bot's error handler answers "try again in a minute" for Postgres being away, not for
    Telegram's own network trouble (aiogram raises it from an OSError as well)."""
    import asyncpg
    from aiogram.exceptions import TelegramNetworkError
    from aiogram.methods import SendMessage

    from imagegen.bot.db_outage import database_away

    assert database_away(ConnectionRefusedError(111, "Connection refused"))
    assert database_away(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")  # aiohttp's ClientConnectorError is an OSError
        except OSError as cause:
            raise TelegramNetworkError(method=SendMessage(chat_id=1, text="x"), message="connection refused") from cause
    except TelegramNetworkError as exc:
        assert not database_away(exc)
    assert not database_away(ValueError("a bug"))
