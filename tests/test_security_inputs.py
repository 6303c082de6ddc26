"""Bad input from Telegram users and careless operators: prompts, non-text messages, stale and
inaccessible buttons, the webhook's secret token, and secrets in error texts."""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from datetime import datetime, timezone

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramNetworkError, TelegramServerError
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import Update
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegen.i18n import t
from imagegen.bot.app import WEBHOOK_PATH, run_bot
from imagegen.bot.handlers import build_router
from imagegen.bot.prompts import prompt_problem
from imagegen.delivery import classify_telegram_error
from imagegen.redact import REDACTED, RedactingFilter, redact, register
from tests.support.services import free_port

LIMIT = 1000


# --------------------------------------------------------------------------- prompts

@pytest.mark.parametrize("prompt,expected", [
    ("", t("prompt.empty", "ru")), ("   \n\t ", t("prompt.empty", "ru")), ("\u3000\u00a0", t("prompt.empty", "ru")),
    ("\u200b\u200b\u2060", t("prompt.empty", "ru")), ("\u200d", t("prompt.empty", "ru")),
    ("a\x00b", t("prompt.bad_chars", "ru")), ("bell\x07", t("prompt.bad_chars", "ru")), ("esc \x1b[31mred", t("prompt.bad_chars", "ru")),
    ("del\x7f", t("prompt.bad_chars", "ru")), ("c1\x85", t("prompt.bad_chars", "ru")), ("cr\r\nlf", t("prompt.bad_chars", "ru")),
    ("x" * (LIMIT + 1), "Слишком длинный запрос: 1001 символов, максимум 1000"),
    ("  " + "x" * LIMIT + "  ", None), ("line one\nline two\twith tab", None), ("👩‍💻 at work, 🇫🇷", None),
    ("кот в сапогах", None), ("x" * LIMIT, None),
])
def test_prompt_rules(prompt, expected):
    problem = prompt_problem(prompt, LIMIT)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1100) | st.text(alphabet=st.characters(max_codepoint=0x2070), max_size=20))
def test_prompt_check_never_raises_and_what_passes_is_sendable(prompt):
    problem = prompt_problem(prompt, LIMIT)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        stripped = prompt.strip()
        assert 0 < len(stripped) <= LIMIT
        assert not any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in prompt)
        assert any(not c.isspace() and unicodedata.category(c) not in ("Cf", "Zs") for c in prompt)


# --------------------------------------------------------------------------- the conversation, offline

class RecordingBot(Bot):
    """A Bot whose API calls are recorded and answered locally (no network)."""

    def __init__(self) -> None:
        super().__init__("424242:" + "A" * 35)
        self.sent: list = []

    async def __call__(self, method, request_timeout=None):  # type: ignore[override]
        self.sent.append(method)
        return True


def dispatcher() -> Dispatcher:
    dp = Dispatcher(storage=MemoryStorage())
    dp["temporal"] = None  # a start would fail loudly; none of these tests may reach it
    dp["settings"] = None
    dp["jobs"] = None
    dp.include_router(build_router())
    return dp


USER = {"id": 5150, "is_bot": False, "first_name": "U"}
CHAT = {"id": 5150, "type": "private"}
_ids = iter(range(1, 10**6))


def msg(**fields) -> dict:
    return {"message_id": next(_ids), "date": int(datetime.now(timezone.utc).timestamp()), "chat": CHAT,
            "from": USER, **fields}


def message_update(**fields) -> Update:
    return Update(update_id=next(_ids), message=msg(**fields))


def button_update(data: str, message: dict | None = None) -> Update:
    return Update(update_id=next(_ids), callback_query={
        "id": str(next(_ids)), "from": USER, "chat_instance": "ci", "data": data,
        "message": message if message is not None else msg(text="menu")})


def inaccessible() -> dict:
    return {"chat": CHAT, "message_id": 7, "date": 0}  # Telegram's InaccessibleMessage (old/deleted)


def answered(bot: RecordingBot) -> list[str | None]:
    return [m.text for m in bot.sent if isinstance(m, AnswerCallbackQuery)]


def said(bot: RecordingBot) -> list[str]:
    return [m.text for m in bot.sent if isinstance(m, (SendMessage, EditMessageText))]


@pytest.mark.parametrize("data", ["model:zimage", "model:nope", "ratio:1x1", "ratio:7x7", "ratio:", "garbage",
                                  "model:zimage:extra", "", "x" * 64])
async def test_buttons_on_inaccessible_or_unknown_menus_get_a_polite_answer(data):
    dp, bot = dispatcher(), RecordingBot()
    for message in (inaccessible(), msg(text="an old menu")):
        await dp.feed_update(bot, button_update(data, message))  # raises if a handler crashes
    answers = answered(bot)
    assert len(answers) == 2 and answers[0] == t("stale_button", "ru")  # the inaccessible menu: always stale
    # an accessible old menu: choosing the model again is fine, anything else is stale
    assert answers[1] == (None if data == "model:zimage" else t("stale_button", "ru"))
    assert not [m for m in bot.sent if isinstance(m, EditMessageText) and m.text.startswith("⏳")]


async def test_ratio_of_an_unsupported_size_in_the_right_state_is_stale_not_a_generation():
    dp, bot = dispatcher(), RecordingBot()
    await dp.feed_update(bot, message_update(text="/start", entities=[{"type": "bot_command", "offset": 0, "length": 6}]))
    await dp.feed_update(bot, button_update("model:zimage"))
    await dp.feed_update(bot, message_update(text="a cat"))
    assert said(bot)[-1] == t("ask_ratio", "ru")
    await dp.feed_update(bot, button_update("ratio:7x7"))
    assert answered(bot)[-1] == t("stale_button", "ru")  # and temporal (None) was never touched


@pytest.mark.parametrize("kind", ["sticker", "photo", "voice", "document", "location", "contact"])
async def test_non_text_where_a_prompt_is_expected_gets_a_hint(kind):
    payload = {
        "sticker": {"sticker": {"file_id": "s", "file_unique_id": "su", "type": "regular", "width": 1, "height": 1,
                                "is_animated": False, "is_video": False}},
        "photo": {"photo": [{"file_id": "p", "file_unique_id": "pu", "width": 1, "height": 1}], "caption": "a cat"},
        "voice": {"voice": {"file_id": "v", "file_unique_id": "vu", "duration": 1}},
        "document": {"document": {"file_id": "d", "file_unique_id": "du"}},
        "location": {"location": {"latitude": 1.0, "longitude": 2.0}},
        "contact": {"contact": {"phone_number": "+1", "first_name": "x"}},
    }[kind]
    dp, bot = dispatcher(), RecordingBot()
    await dp.feed_update(bot, message_update(text="/start", entities=[{"type": "bot_command", "offset": 0, "length": 6}]))
    await dp.feed_update(bot, button_update("model:zimage"))
    await dp.feed_update(bot, message_update(**payload))
    if kind == "photo":  # a photo is a picture to edit (issue 16): the edit models, for its caption
        assert said(bot)[-1].startswith(t("edit.choose_model", "ru", count=1, prompt="a cat"))
    else:
        assert said(bot)[-1] == t("prompt.need_text", "ru")
    await dp.feed_update(bot, message_update(text="a\x00"))
    assert said(bot)[-1] == t("prompt.bad_chars", "ru")
    await dp.feed_update(bot, message_update(text="a fine cat"))
    # the conversation goes on (an edit: the new description replaces the caption)
    assert said(bot)[-1] == (t("edit.choose_model", "ru", count=1, prompt="a fine cat") if kind == "photo"
                             else t("ask_ratio", "ru"))


async def test_pressing_the_model_button_twice_is_not_an_error(stack):
    """The second edit would be 'message is not modified' (400): answered, not crashed."""
    await stack.start_bot()
    chat = 882_001
    stack.tg.user_send_command(chat, "/start")
    mid, data = await stack.tg.wait_for(lambda: _button(stack, chat, "Z-Image"))
    stack.tg.user_press_button(chat, mid, data)
    await stack.tg.wait_for(lambda: len(stack.tg.answered_callbacks) == 1)
    stack.tg.user_press_button(chat, mid, data)
    await stack.tg.wait_for(lambda: len(stack.tg.answered_callbacks) == 2)


def _button(stack, chat, label):
    try:
        return stack.tg.find_button(chat, label)
    except (LookupError, ValueError):
        return None


# --------------------------------------------------------------------------- webhook mode

async def test_webhook_mode_requires_the_secret_token(stack):
    secret = "wh_Secret-token-123"
    port = free_port()
    cfg = stack.settings(bot_mode="webhook", telegram_webhook_secret=secret, http_port=port,
                         public_base_url=f"http://127.0.0.1:{port}")
    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(cfg, stack.client, stop=stop))
    try:
        await stack.tg.wait_for(lambda: stack.tg.calls_of("setWebhook"), timeout=15)
        (set_call,) = stack.tg.calls_of("setWebhook")
        assert set_call.params.get("secret_token") == secret
        chat = 882_100

        def start(n: int) -> dict:
            return {"update_id": 9_000 + n, "message": {
                "message_id": n, "date": 1_765_000_000, "chat": {"id": chat, "type": "private"},
                "from": {"id": chat, "is_bot": False, "first_name": "W"}, "text": "/start",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}

        url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        async with aiohttp.ClientSession() as s:
            for n, headers in enumerate([{}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                                         {"X-Telegram-Bot-Api-Secret-Token": secret + "x"},
                                         {"X-Telegram-Bot-Api-Secret-Token": secret.lower()}]):
                async with s.post(url, json=start(n), headers=headers) as resp:
                    assert resp.status == 401, headers
            await asyncio.sleep(0.3)
            assert stack.tg.messages(chat) == []  # none of them was processed
            async with s.post(url, json=start(99), headers={"X-Telegram-Bot-Api-Secret-Token": secret}) as resp:
                assert resp.status == 200
        await stack.tg.wait_for(lambda: any(m.get("text") == t("welcome", "ru") for m in stack.tg.messages(chat)))
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_run_bot_verifies_signatures_when_the_key_is_set(stack):
    """KIE_WEBHOOK_HMAC_KEY reaches the running bot's callback endpoint: unsigned → 401, signed → 200."""
    from imagegen.callbacks import callback_url

    port = free_port()
    cfg = stack.settings(http_port=port, public_base_url=f"http://127.0.0.1:{port}",
                         kie_webhook_hmac_key="kie-hmac-key-for-run-bot")
    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(cfg, stack.client, stop=stop, leader_retry_seconds=0.3))
    stack.kie.webhook_hmac_key = "kie-hmac-key-for-run-bot"
    try:
        handle, job_id, _ = await stack.start_generation()
        await stack.tg.wait_for(lambda: stack.kie.tasks)
        task_id = next(iter(stack.kie.tasks))
        body = stack.kie.make_callback_body(task_id)
        url = callback_url(cfg.public_base_url, cfg.callback_secret.get_secret_value(), job_id)
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(f"http://127.0.0.1:{port}/healthz"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            async with s.post(url, json=body) as resp:
                assert resp.status == 401
            async with s.post(url, json=body, headers=stack.kie.sign(task_id)) as resp:
                assert resp.status == 200
        await asyncio.wait_for(handle.result(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


# --------------------------------------------------------------------------- secrets in texts

def test_redact_known_and_secret_shaped_values():
    register("my-very-secret-value")
    token = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    line = (f"POST https://api.telegram.org/bot{token}/sendPhoto failed; key my-very-secret-value; "
            f"Authorization: Bearer sk-live-abcdef123456; https://bot/kie/callback?job=1&token=0123abcd; bare {token}")
    out = redact(line)
    for secret in (token, "my-very-secret-value", "sk-live-abcdef123456", "0123abcd", token.split(":")[1]):
        assert secret not in out
    assert out.count(REDACTED) >= 5 and "api.telegram.org" in out and "sendPhoto" in out
    assert redact("an ordinary line, nothing to hide: job=1 user=2") == "an ordinary line, nothing to hide: job=1 user=2"


def test_log_filter_redacts_messages_args_and_tracebacks():
    register("filter-secret-123")
    record = logging.LogRecord("imagegen", logging.ERROR, __file__, 1, "failed with %s", ("filter-secret-123",), None)
    try:
        raise RuntimeError("boom filter-secret-123")
    except RuntimeError:
        import sys
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record) is True
    assert "filter-secret-123" not in record.getMessage() and "filter-secret-123" not in record.exc_text


def test_imagegen_log_lines_are_redacted(caplog):
    from imagegen.logs import log_event

    register("log-event-secret-999")
    caplog.set_level(logging.INFO)
    log_event("job1", "SOMETHING", error="upstream said log-event-secret-999", url="https://x/bot1234567:" + "B" * 35 + "/m")
    text = caplog.records[-1].getMessage()
    assert "log-event-secret-999" not in text and "B" * 35 not in text and REDACTED in text


def test_telegram_errors_quoting_the_bot_url_are_redacted():
    token = "5550001112:AAE" + "x" * 32
    exc = TelegramNetworkError(method=None, message=f"ClientConnectorError: https://api.telegram.org/bot{token}/getMe")
    mapped = classify_telegram_error(exc)
    assert token not in str(mapped) and REDACTED in str(mapped)
    exc = TelegramServerError(method=None, message=f"Bad Gateway bot{token}")
    assert token not in str(classify_telegram_error(exc))


async def test_kie_error_text_echoing_the_api_key_is_redacted_from_the_activity_failure(stack):
    """A Kie error body that quotes the key must not reach the workflow history via ApplicationError
    (its message and its cause chain are what Temporal records)."""
    import uuid

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from imagegen.contracts import CreateTaskInput

    key = stack.config.kie_api_key.get_secret_value()
    register(key)
    stack.kie.create_errors.append((500, {"code": 500, "msg": f"Authorization header {key!r} rejected"}))
    job_id = uuid.uuid4().hex[:16]
    inp = CreateTaskInput(job_id=job_id, workflow_id=f"zimage-{job_id}", user_id=1, chat_id=1, model="zimage",
                          prompt="p", aspect_ratio="1:1", status_message_id=None)
    import dataclasses
    from datetime import datetime, timedelta, timezone

    env = ActivityEnvironment()  # an attempt that has just started (the call's budget comes from it)
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=60),
                                   started_time=datetime.now(timezone.utc), heartbeat_details=[])
    with pytest.raises(ApplicationError) as err:
        await env.run(stack.activities.create_task, inp)
    chain, exc = [], err.value
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    text = "\n".join(chain)
    assert "rejected" in text  # the failure is reported…
    assert key not in text  # …without the key
