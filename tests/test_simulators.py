"""The Kie.ai and Telegram simulators speak their protocols (checked with real aiohttp / aiogram clients)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
import time

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (TelegramBadRequest, TelegramConflictError, TelegramForbiddenError,
                                TelegramRetryAfter, TelegramUnauthorizedError)
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto
from aiohttp import web

from tests.support.images import image_size, make_png
from tests.support.kie_sim import KieSimulator
from tests.support.telegram_sim import TelegramSimulator

KEY = "test-kie-key"
CHAT = 555001


@pytest.fixture
async def kie():
    async with KieSimulator(api_key=KEY) as sim:
        sim.delay = 0.05
        yield sim


@pytest.fixture
async def tg():
    async with TelegramSimulator() as sim:
        yield sim


def make_bot(sim: TelegramSimulator, token: str | None = None) -> Bot:
    return Bot(token or sim.token, session=AiohttpSession(api=TelegramAPIServer.from_base(sim.base_url)))


@pytest.fixture
async def bot(tg):
    b = make_bot(tg)
    yield b
    await b.session.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


class Receiver:
    """A tiny callback endpoint recording what Kie POSTs to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.json_response({"ok": True}, status=self.status)


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/cb", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/cb"
    yield rec
    await runner.cleanup()


async def create(http, kie, prompt="a cat", ratio="1:1", callback=None, key=KEY, **extra):
    body = {"model": "z-image", "input": {"prompt": prompt, "aspect_ratio": ratio}, **extra}
    if callback:
        body["callBackUrl"] = callback
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.post(f"{kie.base_url}/api/v1/jobs/createTask", json=body, headers=headers) as r:
        return r.status, await r.json()


async def record_info(http, kie, task_id):
    async with http.get(f"{kie.base_url}/api/v1/jobs/recordInfo", params={"taskId": task_id},
                        headers={"Authorization": f"Bearer {KEY}"}) as r:
        return r.status, await r.json()


async def finished_task(http, kie, prompt="a cat") -> str:
    _, body = await create(http, kie, prompt)
    task_id = body["data"]["taskId"]
    await kie.wait_done(task_id)
    return task_id


# ---------------------------------------------------------------------------------------------- images
def test_make_png_is_valid_and_seeded():
    png = make_png(20, 10, seed=1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and image_size(png) == (20, 10)
    assert png != make_png(20, 10, seed=2)


# ---------------------------------------------------------------------------------------------- Kie
async def test_kie_auth(http, kie):
    for key in (None, "wrong"):
        status, body = await create(http, kie, key=key)
        assert status == 401 and body["code"] == 401 and body["msg"] == "You do not have access permissions"
    assert kie.tasks == {}


@pytest.mark.parametrize("prompt,ratio,model", [("x", "2:1", "z-image"), ("", "1:1", "z-image"),
                                                ("x" * 1001, "1:1", "z-image"), ("x", "1:1", "flux")])
async def test_kie_validation(http, kie, prompt, ratio, model):
    async with http.post(f"{kie.base_url}/api/v1/jobs/createTask", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": model, "input": {"prompt": prompt, "aspect_ratio": ratio}}) as r:
        assert (await r.json())["code"] == 422
    assert kie.tasks == {}


async def test_kie_full_life_cycle(http, kie, receiver):
    kie.delay = 0.2
    status, body = await create(http, kie, "a cafe in Paris", "16:9", receiver.url)
    assert status == 200 and body["code"] == 200
    task_id = body["data"]["taskId"]
    assert task_id.startswith("task_z-image_")
    assert kie.tasks[task_id].prompt == "a cafe in Paris" and kie.tasks[task_id].aspect_ratio == "16:9"
    states = []
    while not states or states[-1] not in ("success", "fail"):
        _, info = await record_info(http, kie, task_id)
        states.append(info["data"]["state"])
        await asyncio.sleep(0.02)
    assert states[0] == "waiting" and states[-1] == "success"
    assert {"queuing", "generating"} <= set(states)
    data = info["data"]
    assert json.loads(data["param"])["input"]["prompt"] == "a cafe in Paris"
    assert isinstance(data["resultJson"], str)
    url = json.loads(data["resultJson"])["resultUrls"][0]
    assert data["completeTime"] >= data["createTime"] and data["failCode"] == ""
    assert kie.record_info_calls[task_id] == len(states)

    await kie.wait_for_callbacks(1)
    await asyncio.sleep(0.05)
    assert len(receiver.bodies) == 1 and kie.callbacks[0].status == 200
    cb = receiver.bodies[0]
    assert cb["code"] == 200 and cb["data"]["task_id"] == task_id and cb["data"]["state"] == "success"
    assert cb["data"]["callbackType"] == "task_completed" and cb["data"]["resultJson"] == data["resultJson"]

    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "image/png"
        assert await r.read() == kie.image_bytes(task_id)
    assert kie.downloads[task_id] == 1


async def test_kie_duplicate_and_lost_callbacks(http, kie, receiver):
    kie.duplicate_callbacks, kie.duplicate_spacing = 3, 0.01
    await create(http, kie, callback=receiver.url)
    await kie.wait_for_callbacks(3)
    kie.duplicate_callbacks, kie.duplicates_concurrent = 2, True
    await create(http, kie, callback=receiver.url)
    await kie.wait_for_callbacks(5)
    kie.duplicate_callbacks, kie.lose_callback = 1, True
    _, body = await create(http, kie, callback=receiver.url)
    _, body2 = await create(http, kie, "x [nocallback]", callback=receiver.url)
    kie.lose_callback = False
    for b in (body, body2):
        await kie.wait_done(b["data"]["taskId"])
    await asyncio.sleep(0.1)
    assert len(receiver.bodies) == 5 and len(kie.callbacks) == 5


async def test_kie_record_info_faults_and_unknown(http, kie):
    task_id = await finished_task(http, kie)
    kie.record_info_errors = [429, (503, {"code": 500, "msg": "gateway"})]
    assert (await record_info(http, kie, task_id))[0] == 429
    status, body = await record_info(http, kie, task_id)
    assert status == 503 and body["code"] == 500
    status, body = await record_info(http, kie, task_id)
    assert status == 200 and body["data"]["state"] == "success"
    status, body = await record_info(http, kie, "task_z-image_nope")
    assert body == {"code": 422, "msg": "recordInfo is null", "data": None}
    kie.create_errors = [455]
    status, body = await create(http, kie)
    assert status == 200 and body["code"] == 455


async def test_kie_fail_prompt(http, kie, receiver):
    _, body = await create(http, kie, "bad [fail]", callback=receiver.url)
    task_id = body["data"]["taskId"]
    await kie.wait_for_callbacks(1)
    _, info = await record_info(http, kie, task_id)
    assert info["data"]["state"] == "fail" and info["data"]["resultJson"] == ""
    assert info["data"]["failCode"] == "422" and "prohibited" in info["data"]["failMsg"]
    await asyncio.sleep(0.05)
    assert receiver.bodies[0]["code"] == 501 and receiver.bodies[0]["data"]["state"] == "fail"


async def test_kie_callback_before_create_response_and_record_info_shape(http, kie, receiver):
    kie.callback_before_create_response, kie.callback_shape = True, "record_info"
    _, body = await create(http, kie, callback=receiver.url)
    assert len(receiver.bodies) == 1  # already delivered when the create response arrives
    assert receiver.bodies[0]["data"]["taskId"] == body["data"]["taskId"]
    assert receiver.bodies[0]["data"]["state"] == "success"


async def test_kie_callback_target_down_is_retried(http, kie, receiver):
    kie.callback_retries, kie.callback_retry_delay = 2, 0.01
    receiver.status = 500
    await create(http, kie, callback=receiver.url)
    await kie.wait_for_callbacks(3)
    assert [c.status for c in kie.callbacks] == [500, 500, 500] and [c.attempt for c in kie.callbacks] == [0, 1, 2]
    kie.callback_retries = 0
    await create(http, kie, callback="http://127.0.0.1:1/cb")
    await kie.wait_for_callbacks(4)
    assert kie.callbacks[-1].status is None and kie.callbacks[-1].error


async def test_kie_file_modes(http, kie):
    task_id = await finished_task(http, kie)
    url = f"{kie.base_url}/files/{task_id}.png"
    kie.file_mode = "404"
    async with http.get(url) as r:
        assert r.status == 404
    kie.file_mode = "html"
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "text/html"
    assert kie.downloads[task_id] == 2


# ---------------------------------------------------------------------------------------------- Telegram
async def test_tg_get_me_and_auth(tg, bot):
    me = await bot.get_me()
    assert me.is_bot and me.username == "zimage_test_bot"
    bad = make_bot(tg, "999:WRONG")
    with pytest.raises(TelegramUnauthorizedError):
        await bad.get_me()
    await bad.session.close()
    async with aiohttp.ClientSession() as s, s.post(f"{tg.base_url}/bot{tg.token}/noSuchMethod") as r:
        assert r.status == 404 and (await r.json())["description"] == "Not Found: method not found"
    async with aiohttp.ClientSession() as s, s.post(f"{tg.base_url}/bot{tg.token}/GETME", json={}) as r:
        assert (await r.json())["result"]["username"] == "zimage_test_bot"
    assert [c.method for c in tg.calls] == ["getMe", "getMe", "noSuchMethod", "getMe"]


async def test_tg_send_and_edit_message(tg, bot):
    kb = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Square 1:1", callback_data="ar:1:1")]])
    msg = await bot.send_message(CHAT, "hello", reply_markup=kb)
    assert msg.chat.id == CHAT and msg.text == "hello" and msg.reply_markup.model_dump() == kb.model_dump()
    assert tg.calls_of("sendMessage")[0].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "ar:1:1"
    assert tg.find_button(CHAT, "square") == (msg.message_id, "ar:1:1")
    edited = await bot.edit_message_text("hello 2", chat_id=CHAT, message_id=msg.message_id, reply_markup=kb)
    assert edited.text == "hello 2"
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("hello 2", chat_id=CHAT, message_id=msg.message_id, reply_markup=kb)
    await bot.edit_message_reply_markup(chat_id=CHAT, message_id=msg.message_id, reply_markup=None)
    assert tg.last_message(CHAT)["text"] == "hello 2" and tg.inline_buttons(CHAT, msg.message_id) == []
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=CHAT, message_id=999)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(CHAT, "x" * 4097)
    assert await bot.delete_message(CHAT, msg.message_id) and tg.messages(CHAT) == []


async def test_tg_send_photo_by_url_and_upload(http, kie, tg, bot):
    task_id = await finished_task(http, kie)
    _, info = await record_info(http, kie, task_id)
    url = json.loads(info["data"]["resultJson"])["resultUrls"][0]
    msg = await bot.send_photo(CHAT, url, caption="done")
    assert msg.photo[-1].width == 64 and msg.caption == "done"
    png = make_png(30, 20, seed=9)
    msg2 = await bot.send_photo(CHAT, BufferedInputFile(png, "img.png"))
    assert (msg2.photo[-1].width, msg2.photo[-1].height) == (30, 20)
    assert [(p.source, p.url, p.sha256) for p in tg.photos] == [
        ("url", url, hashlib.sha256(kie.image_bytes(task_id)).hexdigest()),
        ("upload", None, hashlib.sha256(png).hexdigest())]
    assert tg.calls_of("sendPhoto")[1].files["photo"] == png
    assert kie.downloads[task_id] == 1
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(CHAT, BufferedInputFile(b"not an image", "x.png"))
    kie.file_mode = "404"
    with pytest.raises(TelegramBadRequest, match="failed to get HTTP URL content"):
        await bot.send_photo(CHAT, url)
    kie.file_mode = "html"
    with pytest.raises(TelegramBadRequest, match="wrong type of the web page content"):
        await bot.send_photo(CHAT, url)
    assert len(tg.photos) == 2 and [m["kind"] for m in tg.messages(CHAT)] == ["photo", "photo"]


async def test_tg_send_document_by_url_upload_and_file_id(http, kie, tg, bot):
    async with http.post(f"{kie.base_url}/api/v1/jobs/createTask", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "z-image", "input": {"prompt": "p", "aspect_ratio": "1:1"}}) as resp:
        task_id = (await resp.json())["data"]["taskId"]
    await kie.wait_done(task_id)
    url = f"{kie.base_url}/files/{task_id}.png"
    by_url = await bot.send_document(CHAT, document=url, caption="orig")
    assert by_url.document is not None and by_url.caption == "orig"
    assert tg.documents[0].sha256 == hashlib.sha256(kie.image_bytes(task_id)).hexdigest()
    await bot.send_document(CHAT, document=BufferedInputFile(b"any bytes", filename="a.bin"))
    await bot.send_document(CHAT, document=by_url.document.file_id)
    assert [d.source for d in tg.documents] == ["url", "upload", "file_id"]
    kie.file_mode = "404"
    with pytest.raises(TelegramBadRequest, match="failed to get HTTP URL content"):
        await bot.send_document(CHAT, document=url)


async def test_tg_commands_per_scope_and_language(tg, bot):
    from aiogram.types import BotCommand, BotCommandScopeChat
    await bot.set_my_commands([BotCommand(command="start", description="New")])
    await bot.set_my_commands([BotCommand(command="start", description="Новая")], language_code="ru")
    await bot.set_my_commands([BotCommand(command="start", description="Chat")], scope=BotCommandScopeChat(chat_id=CHAT))
    assert [c.description for c in await bot.get_my_commands(language_code="ru")] == ["Новая"]
    tg.set_user_language(CHAT + 1, "ru")
    tg.set_user_language(CHAT + 2, "de")
    tg.set_user_language(CHAT + 3, None)
    assert tg.commands_for(CHAT + 1)[0]["description"] == "Новая"
    assert tg.commands_for(CHAT + 2)[0]["description"] == "New"
    assert tg.commands_for(CHAT + 3)[0]["description"] == "New"
    assert tg.commands_for(CHAT, CHAT)[0]["description"] == "Chat"
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Start!", description="x")])
    with pytest.raises(TelegramBadRequest, match="invalid language code"):
        await bot.set_my_commands([BotCommand(command="start", description="x")], language_code="rus")
    assert "language_code" not in tg._user(CHAT + 3)


async def test_tg_edit_message_media(http, kie, tg, bot):
    """editMessageMedia turns the text status message into the photo (URL, attach:// upload), answers
    "message is not modified" for the same edit, refuses deleted messages and (as an older server)
    media on a text message; editMessageCaption refuses a text message."""
    task_id = await finished_task(http, kie)
    _, info = await record_info(http, kie, task_id)
    url = json.loads(info["data"]["resultJson"])["resultUrls"][0]
    status = await bot.send_message(CHAT, "⏳ working")
    with pytest.raises(TelegramBadRequest, match="there is no caption in the message to edit"):
        await bot.edit_message_caption(chat_id=CHAT, message_id=status.message_id, caption="x")
    edited = await bot.edit_message_media(InputMediaPhoto(media=url, caption="✅ done"), chat_id=CHAT,
                                          message_id=status.message_id)
    assert edited.message_id == status.message_id and edited.photo and edited.caption == "✅ done"
    assert edited.text is None and edited.edit_date
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_media(InputMediaPhoto(media=url, caption="✅ done"), chat_id=CHAT,
                                     message_id=status.message_id)
    png = make_png(30, 20, seed=4)
    again = await bot.edit_message_media(InputMediaPhoto(media=BufferedInputFile(png, "i.png"), caption="✅ done"),
                                         chat_id=CHAT, message_id=status.message_id)
    assert (again.photo[-1].width, again.photo[-1].height) == (30, 20)
    call = tg.calls_of("editMessageMedia")[-1]
    assert call.params["media"]["media"].startswith("attach://") and png in call.files.values()
    assert [(p.source, p.message_id) for p in tg.photos] == [("edit-url", status.message_id),
                                                            ("edit-upload", status.message_id)]
    assert [m["kind"] for m in tg.messages(CHAT)] == ["photo"]  # one message, edited twice
    assert (await bot.edit_message_caption(chat_id=CHAT, message_id=status.message_id, caption="✅ link")).caption
    with pytest.raises(TelegramBadRequest, match="there is no text in the message to edit"):
        await bot.edit_message_text("x", chat_id=CHAT, message_id=status.message_id)
    kie.file_mode = "404"
    other = await bot.send_message(CHAT, "⏳ second")
    with pytest.raises(TelegramBadRequest, match="failed to get HTTP URL content"):
        await bot.edit_message_media(InputMediaPhoto(media=url), chat_id=CHAT, message_id=other.message_id)
    tg.media_on_text = False
    with pytest.raises(TelegramBadRequest, match="there is no media in the message to edit"):
        await bot.edit_message_media(InputMediaPhoto(media=BufferedInputFile(png, "i.png")), chat_id=CHAT,
                                     message_id=other.message_id)
    await bot.delete_message(CHAT, other.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_media(InputMediaPhoto(media=BufferedInputFile(png, "i.png")), chat_id=CHAT,
                                     message_id=other.message_id)


async def test_tg_fault_injection(tg, bot):
    tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(CHAT, "hi")
    assert exc.value.retry_after == 3
    await bot.send_message(CHAT, "hi")  # only the next call failed
    tg.block_user(CHAT)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(CHAT, "hi")
    tg.delay_next("sendChatAction", 0.2)
    t0 = time.monotonic()
    assert await bot.send_chat_action(CHAT + 1, "upload_photo")
    assert time.monotonic() - t0 >= 0.2
    assert [c.status for c in tg.calls] == [429, 200, 403, 200]


async def test_tg_long_poll_and_callback_query(tg, bot):
    poll = asyncio.create_task(bot.get_updates(offset=0, timeout=1))
    await asyncio.sleep(0.1)
    update_id = tg.user_send_text(CHAT, "/start")
    updates = await asyncio.wait_for(poll, 0.5)  # answered as soon as the update arrives
    assert [u.update_id for u in updates] == [update_id]
    m = updates[0].message
    assert m.text == "/start" and m.from_user.first_name == "Test" and m.from_user.language_code == "ru"
    assert m.chat.id == CHAT and m.chat.type == "private"

    kb = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Go", callback_data="go")]])
    sent = await bot.send_message(CHAT, "pick", reply_markup=kb)
    qid = tg.user_press_button(CHAT, *tg.find_button(CHAT, "Go"))
    updates = await bot.get_updates(offset=update_id + 1, timeout=1)
    q = updates[0].callback_query
    assert q.id == qid and q.data == "go" and q.message.message_id == sent.message_id and q.message.reply_markup.model_dump() == kb.model_dump()
    assert await bot.answer_callback_query(qid, text="ok")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(qid)
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == []


async def test_tg_get_updates_conflicts(tg, bot):
    other = make_bot(tg)
    results = await asyncio.gather(bot.get_updates(timeout=1), other.get_updates(timeout=1), return_exceptions=True)
    await other.session.close()
    assert sum(isinstance(r, TelegramConflictError) for r in results) == 1
    assert tg.get_updates_calls == 2 and tg.get_updates_conflicts == 1
    await bot.set_webhook("https://example.com/hook")
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates(timeout=0)
    await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == []


async def test_tg_user_photo_is_served_by_get_file_and_the_file_url(tg, bot):
    """What a scripted user sends is what aiogram's getFile + download fetch: the largest size is the
    picture itself (a thumbnail comes first, as Telegram's updates list sizes smallest first)."""
    picture = make_png(40, 30, seed=11)
    tg.user_send_photo(CHAT, caption="сделай закат", image=picture)
    (update,) = await bot.get_updates(timeout=0)
    message = update.message
    assert message.caption == "сделай закат" and len(message.photo) == 2
    thumb, full = message.photo
    assert (full.width, full.height, full.file_size) == (40, 30, len(picture)) and thumb.width < full.width
    file = await bot.get_file(full.file_id)
    assert file.file_path.endswith(".png") and file.file_size == len(picture)
    assert (await bot.download_file(file.file_path)).read() == picture
    assert tg.user_files[full.file_id] == picture and tg.file_downloads == [file.file_path]
    with pytest.raises(TelegramBadRequest, match="invalid file_id"):
        await bot.get_file("nope")


async def test_tg_album_documents_stickers_and_size_claims(tg, bot):
    ids = tg.user_send_album(CHAT, 3, caption="merge them", caption_index=1)
    tg.user_send_document(CHAT, b"%PDF-1.4", "report.pdf", "application/pdf")
    tg.user_send_document(CHAT, make_png(8, 8), "big.png", "image/png", file_size=25 * 1024 * 1024)
    tg.user_send_sticker(CHAT)
    tg.user_send_animation(CHAT)
    tg.user_send_photo(CHAT, image=make_png(8, 8, seed=3), file_size=11 * 1024 * 1024)
    updates = await bot.get_updates(timeout=0)
    album = [u.message for u in updates if u.update_id in ids]
    assert len(album) == 3 and len({m.media_group_id for m in album}) == 1 and album[0].media_group_id
    assert [m.caption for m in album] == [None, "merge them", None]
    assert len({m.photo[-1].file_id for m in album}) == 3
    pdf, big, sticker, animation, claimed = [u.message for u in updates[3:]]
    assert pdf.document.mime_type == "application/pdf" and pdf.document.file_name == "report.pdf"
    assert big.document.file_size == 25 * 1024 * 1024  # the claim; getFile tells the truth
    assert (await bot.get_file(big.document.file_id)).file_size == len(make_png(8, 8))
    assert sticker.sticker.is_animated and animation.animation.mime_type == "video/mp4"
    assert claimed.photo[-1].file_size == 11 * 1024 * 1024
    tg.getfile_max_bytes = 10
    with pytest.raises(TelegramBadRequest, match="file is too big"):
        await bot.get_file(album[0].photo[-1].file_id)


async def test_tg_scripted_user_presses_buttons_in_turn(tg, bot):
    first = await bot.send_message(CHAT, "pick", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text="Nano Banana Edit", callback_data="model:nanobanana_edit")]]))
    pressing = asyncio.create_task(tg.user_presses(CHAT, "Nano Banana", "auto", timeout=5))
    await tg.wait_for(lambda: len(tg.updates) == 1)
    second = await bot.send_message(CHAT, "ratio", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text="auto", callback_data="ratio:auto")]]))
    assert await pressing == [first.message_id, second.message_id]
    assert [u["callback_query"]["data"] for u in tg.updates] == ["model:nanobanana_edit", "ratio:auto"]


async def test_tg_wait_for_times_out_with_dump(tg, bot):
    await bot.send_message(CHAT, "state")
    with pytest.raises(TimeoutError, match="state"):
        await tg.wait_for(lambda: tg.photos, timeout=0.1)


@pytest.mark.parametrize("module,flag", [("tests.support.kie_sim", "--api-key"), ("tests.support.telegram_sim", "--token")])
async def test_standalone(module, flag):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, "--port", "0", flag, "x",
                                                stdout=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
    assert line.startswith("listening on http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 5) == 0
