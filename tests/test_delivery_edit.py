"""DELIVERY_MODE=edit against the Telegram simulator with the real aiogram Bot: the status message
becomes the picture, with the 3-level fallback; repeating the edit never adds a second picture."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp import web

from imagegen.delivery import PermanentDeliveryError, RetryableDeliveryError, create_bot
from imagegen.delivery_edit import deliver_result
from tests.support.images import make_png
from tests.support.services import free_port
from tests.support.telegram_sim import TelegramSimulator

CHAT = 777001
PNG = make_png(48, 32, seed=11)


class ImageServer:
    """Serves one PNG at /img.png; `mode`: ok | 404 | html."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/img.png"

    async def handle(self, request: web.Request) -> web.Response:
        if self.mode == "404":
            return web.Response(status=404)
        if self.mode == "html":
            return web.Response(text="<html></html>", content_type="text/html")
        return web.Response(body=PNG, content_type="image/png")

    async def __aenter__(self) -> "ImageServer":
        app = web.Application()
        app.router.add_get("/img.png", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def env():
    async with TelegramSimulator() as tg, ImageServer() as img:
        bot = create_bot(tg.token, tg.base_url, timeout=5)
        try:
            yield tg, img, bot
        finally:
            await bot.session.close()


async def deliver(bot, img, status_id, mode="edit"):
    return await deliver_result(bot, mode, CHAT, status_id, img.url, caption="🖼 cap", edit_caption="🖼 cap\n✅ done",
                                link_text=f"🖼 link: {img.url}", corr_id="job1", max_bytes=1 << 20,
                                download_timeout=5, allow_private=True)


def chat(tg):
    return [(m["kind"], m["text"] or m["caption"]) for m in tg.messages(CHAT)]


async def test_status_message_becomes_the_photo_and_a_repeat_changes_nothing(env):
    tg, img, bot = env
    status = await bot.send_message(CHAT, "⏳ working")
    first = await deliver(bot, img, status.message_id)
    assert (first.level, first.message_id, first.edited) == ("url", status.message_id, True)
    assert chat(tg) == [("photo", "🖼 cap\n✅ done")]
    again = await deliver(bot, img, status.message_id)  # a retry after a crash: same edit again
    assert (again.level, again.message_id) == ("url", status.message_id)
    assert "message is not modified" in tg.calls_of("editMessageMedia")[-1].response["description"]
    assert chat(tg) == [("photo", "🖼 cap\n✅ done")] and len(tg.calls_of("sendPhoto")) == 0
    assert tg.photos[0].sha256 == hashlib.sha256(PNG).hexdigest()


async def test_url_refused_then_bytes_uploaded_by_attach(env):
    tg, img, bot = env
    status = await bot.send_message(CHAT, "⏳ working")
    tg.fail_next("editMessageMedia", 400, "Bad Request: wrong file identifier/HTTP URL specified")
    res = await deliver(bot, img, status.message_id)
    assert (res.level, res.message_id) == ("bytes", status.message_id)
    call = tg.calls_of("editMessageMedia")[-1]
    assert call.params["media"]["media"].startswith("attach://") and PNG in call.files.values()
    assert [p.source for p in tg.photos] == ["edit-upload"] and chat(tg) == [("photo", "🖼 cap\n✅ done")]


async def test_nothing_fetchable_becomes_the_link_text(env):
    tg, img, bot = env
    img.mode = "html"
    status = await bot.send_message(CHAT, "⏳ working")
    res = await deliver(bot, img, status.message_id)
    assert (res.level, res.message_id) == ("text", status.message_id)
    assert chat(tg) == [("text", f"🖼 link: {img.url}")] and tg.photos == []
    assert (await deliver(bot, img, status.message_id)).level == "text"  # not modified: still one message
    assert len(tg.messages(CHAT)) == 1


async def test_deleted_status_message_falls_back_to_send_photo(env):
    tg, img, bot = env
    status = await bot.send_message(CHAT, "⏳ working")
    await bot.delete_message(CHAT, status.message_id)
    res = await deliver(bot, img, status.message_id)
    assert res.edited is False and res.level == "url" and res.message_id != status.message_id
    assert chat(tg) == [("photo", "🖼 cap")] and [p.source for p in tg.photos] == ["url"]


async def test_server_refusing_media_on_text_falls_back_to_send_photo(env):
    tg, img, bot = env
    tg.media_on_text = False
    status = await bot.send_message(CHAT, "⏳ working")
    res = await deliver(bot, img, status.message_id)
    assert res.edited is False and [p.source for p in tg.photos] == ["url"]


async def test_transient_and_permanent_errors_are_not_degraded(env):
    tg, img, bot = env
    status = await bot.send_message(CHAT, "⏳ working")
    tg.fail_next("editMessageMedia", 429, "Too Many Requests: retry after 4", retry_after=4)
    with pytest.raises(RetryableDeliveryError) as err:
        await deliver(bot, img, status.message_id)
    assert err.value.retry_after == 4
    tg.fail_next("editMessageMedia", 502, "Bad Gateway")
    with pytest.raises(RetryableDeliveryError):
        await deliver(bot, img, status.message_id)
    tg.block_user(CHAT)
    with pytest.raises(PermanentDeliveryError):
        await deliver(bot, img, status.message_id)
    assert tg.photos == [] and chat(tg) == [("text", "⏳ working")]


async def test_send_mode_is_unchanged(env):
    tg, img, bot = env
    status = await bot.send_message(CHAT, "⏳ working")
    res = await deliver(bot, img, status.message_id, mode="send")
    assert res.edited is False and chat(tg) == [("text", "⏳ working"), ("photo", "🖼 cap")]
