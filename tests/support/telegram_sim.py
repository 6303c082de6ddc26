"""In-process Telegram Bot API server for tests: the real aiogram Bot talks to it.

    async with TelegramSimulator(token="123456:TEST") as tg:
        bot = Bot(tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))

Serves {base}/bot{token}/{method} (GET/POST; multipart, urlencoded or JSON; method names case-insensitive)
and {base}/file/bot{token}/{path}. Methods: getMe, getUpdates (long poll; a newer concurrent getUpdates
makes the pending one answer 409), setWebhook/deleteWebhook/getWebhookInfo, setMyCommands, sendChatAction,
sendMessage, sendPhoto and sendDocument (URL fetched like Telegram does, upload, or file_id),
editMessageText, editMessageCaption, editMessageMedia (photo by URL, attach:// upload or file_id; also turns
a text message into a photo, as the current Bot API does — ``media_on_text = False`` makes it refuse that like
an older server), editMessageReplyMarkup, deleteMessage, answerCallbackQuery, getFile,
setMyCommands/getMyCommands/deleteMyCommands (one list per scope and language_code).

Edits answer "message is not modified" when nothing would change (for media: the same image bytes, caption
and markup).

State: calls (list[Call]), photos (delivered photos, sent or edited in: source "edit-url"/"edit-upload"/…), documents (delivered documents), updates (all scripted updates), answered_callbacks,
chat_actions, deleted_messages, webhook_url, commands (the default list), command_sets ((scope, language_code)
-> list), get_updates_calls, get_updates_conflicts, url_fetches.
Faults: fail_next(method, code, description, retry_after=, times=, hang=), delay_next(method, seconds, times=),
block_user(chat_id). Users: set_user_language(user_id, code or None: a client that sends none).
Group chats have negative ids (user_send_text(-100…, text, user_id=…)). Scripted user: user_send_text,
user_send_command, user_send_photo (a photo with a caption, its bytes given or made up; the update carries a
thumbnail and the full size, as Telegram's does), user_send_album (one media_group_id, the caption on one
item), user_send_document, user_send_sticker, user_send_animation, user_press_button, and
``await user_presses(chat, "label", …)`` (waits for each button in turn and presses it). What the user sent
is in user_files (bytes by file_id); getFile answers 400 "file is too big" over 20 MB (``getfile_max_bytes``),
and {base}/file/bot{token}/{file_path} serves the bytes (file_downloads lists the paths fetched).
Queries: calls_of, messages, last_message, inline_buttons, find_button, wait_for, dump.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from .images import image_size, image_type, is_image, make_png

BOT_USERNAME = "zimage_test_bot"
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
BAD_QUERY = "Bad Request: query is too old and response timeout expired or query ID is invalid"
URL_FAILED = "Bad Request: failed to get HTTP URL content"
NO_MEDIA_TO_EDIT = "Bad Request: there is no media in the message to edit"


class TgError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after

    def body(self) -> dict[str, Any]:
        b: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            b["parameters"] = {"retry_after": self.retry_after}
        return b


def _bad(description: str) -> TgError:
    return TgError(400, f"Bad Request: {description}")


@dataclass
class Call:
    method: str                   # canonical name, e.g. "sendPhoto" (as sent if unknown)
    params: dict[str, Any]        # form values are strings; JSON objects/arrays are decoded
    files: dict[str, bytes]       # field -> bytes (attach://name resolved to the field that referenced it)
    time: float
    status: int | None = None
    response: dict[str, Any] | None = None


@dataclass
class DeliveredPhoto:
    chat_id: int
    source: str                   # "url" | "upload" | "file_id"
    url: str | None
    sha256: str
    size: int
    caption: str | None
    message_id: int
    file_id: str
    time: float = field(default_factory=time.time)


class TelegramSimulator:
    def __init__(self, token: str = "123456:TEST", host: str = "127.0.0.1", port: int = 0) -> None:
        self.token, self.host, self.port = token, host, port
        self.url_fetch_timeout = 10.0
        self.max_url_bytes = 5 * 1024 * 1024
        self.max_upload_bytes = 10 * 1024 * 1024
        self.media_on_text = True  # False: editMessageMedia refuses a text message (an older Bot API server)
        self.calls: list[Call] = []
        self.photos: list[DeliveredPhoto] = []
        self.documents: list[DeliveredPhoto] = []
        self.command_sets: dict[tuple[str, str], list[Any]] = {}
        self.updates: list[dict[str, Any]] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        self.chat_actions: list[dict[str, Any]] = []
        self.url_fetches: list[tuple[str, Any]] = []  # (url, HTTP status or error string)
        self.deleted_messages: list[tuple[int, int]] = []
        self.webhook_url = ""
        self.commands: list[Any] = []
        self.get_updates_calls = 0
        self.get_updates_conflicts = 0  # 409s answered to a live client: two bot instances polling
        self.abandoned_polls = 0  # long polls whose client went away before they were answered
        self._request: web.Request | None = None
        self.blocked: set[int] = set()
        self.users: dict[int, dict[str, Any]] = {}
        self._queue: list[dict[str, Any]] = []
        self._update_id = 100000
        self._poller: dict[str, Any] | None = None
        self._closing = False
        self._allowed: list[str] = []
        self._faults: dict[str, list[dict[str, Any]]] = {}
        self._chats: dict[int, dict[int, dict[str, Any]]] = {}
        self._last_mid: dict[int, int] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self.getfile_max_bytes = 20 * 1024 * 1024  # the Bot API's download limit
        self.user_files: dict[str, bytes] = {}  # file_id -> bytes of what a scripted user sent
        self.file_downloads: list[str] = []  # file paths fetched through /file/bot<token>/…
        self._queries: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        names = ["getMe", "getUpdates", "setWebhook", "deleteWebhook", "getWebhookInfo", "setMyCommands",
                 "sendChatAction", "sendMessage", "sendPhoto", "sendDocument", "getMyCommands", "deleteMyCommands",
                 "editMessageText", "editMessageCaption", "editMessageMedia",
                 "editMessageReplyMarkup", "deleteMessage", "answerCallbackQuery", "getFile",
                 "sendInvoice", "answerPreCheckoutQuery", "refundStarPayment"]
        # Telegram Stars: the invoices the bot sent, the pre-checkout answers (id → dict) and the
        # payments made (charge id → dict, with "refunded"); see user_pay.
        self.invoices: list[dict[str, Any]] = []
        self.pre_checkout_answers: dict[str, dict[str, Any]] = {}
        self.star_payments: dict[str, dict[str, Any]] = {}
        self._methods = {n.lower(): (n, getattr(self, "_m_" + n)) for n in names}
        self.bot_user = {"id": int(token.split(":")[0]) if token.split(":")[0].isdigit() else 123456,
                         "is_bot": True, "first_name": "Z-Image Test Bot", "username": BOT_USERNAME,
                         "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False}

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        self._session = ClientSession()

    async def stop(self) -> None:
        self._closing = True
        if self._poller:
            self._poller["event"].set()
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> TelegramSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ fault injection
    def fail_next(self, method: str, error_code: int = 400, description: str = "Bad Request: injected error", *,
                  retry_after: int | None = None, times: int = 1, hang: float | None = None) -> None:
        """Next `times` calls of `method` ("*" = any) answer this error (after sleeping `hang` s if given)."""
        for _ in range(times):
            self._faults.setdefault(method.lower(), []).append(
                {"error": TgError(error_code, description, retry_after), "hang": hang})

    def delay_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Next `times` calls of `method` sleep `seconds`, then are processed normally (the action happens)."""
        for _ in range(times):
            self._faults.setdefault(method.lower(), []).append({"error": None, "hang": seconds})

    def block_user(self, chat_id: int) -> None:
        self.blocked.add(int(chat_id))

    def unblock_user(self, chat_id: int) -> None:
        self.blocked.discard(int(chat_id))

    # ------------------------------------------------------------------ request plumbing
    async def _parse(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        if request.content_type == "application/json" and request.can_read_body:
            body = await request.json()
            raw.update(body if isinstance(body, dict) else {})
        elif request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            for k, v in (await request.post()).items():
                if isinstance(v, web.FileField):
                    files[k] = v.file.read()
                else:
                    raw[k] = v
        params = {}
        for k, v in raw.items():
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            params[k] = v
        for k, v in params.items():
            if isinstance(v, str) and v.startswith("attach://") and v[9:] in files:
                files[k] = files.pop(v[9:])
        return params, files

    async def _handle(self, request: web.Request) -> web.Response:
        params, files = await self._parse(request)
        entry = self._methods.get(request.match_info["method"].lower())
        call = Call(entry[0] if entry else request.match_info["method"], params, files, time.time())
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                raise TgError(401, "Unauthorized")
            if entry is None:
                raise TgError(404, "Not Found: method not found")
            queue = self._faults.get(entry[0].lower()) or self._faults.get("*")
            if queue:
                fault = queue.pop(0)
                if fault["hang"]:
                    await asyncio.sleep(fault["hang"])
                if fault["error"]:
                    raise fault["error"]
            if "chat_id" in params and self._chat_id(params) in self.blocked:
                raise TgError(403, "Forbidden: bot was blocked by the user")
            self._request = request  # read synchronously by the method (getUpdates: who is polling)
            status, body = 200, {"ok": True, "result": await entry[1](params, files)}
        except TgError as e:
            status, body = e.code, e.body()
        call.status, call.response = status, body
        return web.json_response(body, status=status)

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(TgError(401, "Unauthorized").body(), status=401)
        for f in self._files.values():
            if f["file_path"] == request.match_info["path"]:
                self.file_downloads.append(f["file_path"])
                return web.Response(body=f["data"], content_type="application/octet-stream")
        return web.json_response(TgError(404, "Not Found").body(), status=404)

    # ------------------------------------------------------------------ object builders
    @staticmethod
    def _chat_id(p: dict[str, Any]) -> int:
        try:
            return int(p["chat_id"])
        except (KeyError, TypeError, ValueError):
            raise _bad("chat not found") from None

    def _user(self, user_id: int) -> dict[str, Any]:
        return self.users.setdefault(user_id, {"id": user_id, "is_bot": False, "first_name": "Test",
                                               "username": f"user{user_id}", "language_code": "ru"})

    def set_user_language(self, user_id: int, language_code: str | None) -> None:
        """The user's client language; None: the client sends no language_code (the field is absent)."""
        user = self._user(user_id)
        if language_code is None:
            user.pop("language_code", None)
        else:
            user["language_code"] = language_code

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            u = self._user(chat_id)
            return {"id": chat_id, "type": "private", "first_name": u["first_name"], "username": u["username"]}
        return {"id": chat_id, "type": "supergroup" if str(chat_id).startswith("-100") else "group",
                "title": "Test group"}

    def _new_message(self, chat_id: int, from_id: int | None, **fields: Any) -> dict[str, Any]:
        """Store a message; from_id None means the bot sent it."""
        chat = self._chats.setdefault(chat_id, {})
        mid = self._last_mid[chat_id] = self._last_mid.get(chat_id, 0) + 1  # never reused, even after a delete
        rec = {"message_id": mid, "chat_id": chat_id, "from_id": from_id, "date": int(time.time()),
               "edit_date": None, "kind": "text", "text": None, "caption": None, "reply_markup": None,
               "photo": None, "entities": None, "document": None, "sha256": None, "media_group_id": None,
               "sticker": None, "animation": None} | fields
        chat[mid] = rec
        return rec

    def _message_json(self, rec: dict[str, Any]) -> dict[str, Any]:
        m = {"message_id": rec["message_id"], "date": rec["date"], "chat": self._chat(rec["chat_id"]),
             "from": self.bot_user if rec["from_id"] is None else self._user(rec["from_id"])}
        for k in ("edit_date", "text", "caption", "photo", "entities", "document", "media_group_id", "sticker",
                  "animation"):
            if rec[k] is not None:
                m[k] = rec[k]
        if isinstance(rec["reply_markup"], dict) and "inline_keyboard" in rec["reply_markup"]:
            m["reply_markup"] = rec["reply_markup"]
        return m

    def _store_file(self, data: bytes, folder: str = "photos", ext: str | None = None) -> list[dict[str, Any]]:
        file_id, uid = "AgAC" + secrets.token_urlsafe(24), "AQAD" + secrets.token_hex(6)
        ext = ext or {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(image_type(data) or "", "bin")
        self._files[file_id] = {"data": data, "unique": uid, "file_path": f"{folder}/file_{len(self._files)}.{ext}"}
        w, h = image_size(data) or (1, 1)
        return [{"file_id": file_id, "file_unique_id": uid, "width": w, "height": h, "file_size": len(data)}]

    def _user_file(self, data: bytes, folder: str = "photos", ext: str | None = None) -> dict[str, Any]:
        """Store a file a scripted user sends; returns its (largest) size entry."""
        entry = self._store_file(data, folder, ext)[0]
        self.user_files[entry["file_id"]] = data
        return entry

    @staticmethod
    def _markup(p: dict[str, Any]) -> Any:
        markup = p.get("reply_markup")
        for row in (markup or {}).get("inline_keyboard", []) if isinstance(markup, dict) else []:
            for b in row:
                if not b.get("text"):
                    raise _bad("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
                if len(str(b.get("callback_data", "")).encode()) > 64:
                    raise _bad("BUTTON_DATA_INVALID")
        return markup

    def _bot_message(self, p: dict[str, Any], what: str = "edit") -> dict[str, Any]:
        if "inline_message_id" in p:
            raise _bad("inline messages are not supported by the simulator")
        chat_id = self._chat_id(p)
        try:
            rec = self._chats.get(chat_id, {})[int(p.get("message_id", 0))]
        except (KeyError, ValueError):
            raise _bad(f"message to {what} not found") from None
        if rec["from_id"] is not None and what == "edit":
            raise _bad("message can't be edited")
        return rec

    # ------------------------------------------------------------------ Bot API methods
    async def _m_getMe(self, p: dict, f: dict) -> Any:
        return self.bot_user

    async def _m_setWebhook(self, p: dict, f: dict) -> Any:
        self.webhook_url = p.get("url", "")
        return True

    async def _m_deleteWebhook(self, p: dict, f: dict) -> Any:
        self.webhook_url = ""
        if str(p.get("drop_pending_updates", "")).lower() == "true":
            self._queue.clear()
        return True

    async def _m_getWebhookInfo(self, p: dict, f: dict) -> Any:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": len(self._queue)}

    @staticmethod
    def _commands_key(p: dict) -> tuple[str, str]:
        scope = p.get("scope") or {"type": "default"}
        if not isinstance(scope, dict) or "type" not in scope:
            raise _bad("can't parse BotCommandScope")
        where = scope["type"] + (f":{scope['chat_id']}" if "chat_id" in scope else "")
        lang = str(p.get("language_code") or "")
        if lang and (len(lang) != 2 or not lang.isalpha()):
            raise _bad("invalid language code specified")
        return where, lang

    async def _m_setMyCommands(self, p: dict, f: dict) -> Any:
        commands = p.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("can't parse commands")
        for c in commands:
            name, desc = str(c.get("command", "")), str(c.get("description", ""))
            if not (1 <= len(name) <= 32 and name.replace("_", "a").isalnum() and name.islower()):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(desc) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(p)
        self.command_sets[key] = commands
        if key == ("default", ""):
            self.commands = commands
        return True

    async def _m_getMyCommands(self, p: dict, f: dict) -> Any:
        return self.command_sets.get(self._commands_key(p), [])

    async def _m_deleteMyCommands(self, p: dict, f: dict) -> Any:
        self.command_sets.pop(self._commands_key(p), None)
        return True

    def commands_for(self, user_id: int, chat_id: int | None = None) -> list[Any]:
        """The command menu Telegram would show this user: chat scope, then default scope, each with
        the user's language first, then without a language."""
        lang = str(self._user(user_id).get("language_code") or "")[:2]
        for where in ([f"chat:{chat_id}"] if chat_id is not None else []) + ["default"]:
            for code in ([lang] if lang else []) + [""]:
                if (where, code) in self.command_sets:
                    return self.command_sets[(where, code)]
        return []

    async def _m_sendChatAction(self, p: dict, f: dict) -> Any:
        self.chat_actions.append({"chat_id": self._chat_id(p), "action": p.get("action"), "time": time.time()})
        return True

    async def _m_getUpdates(self, p: dict, f: dict) -> Any:
        self.get_updates_calls += 1
        if self.webhook_url:
            self.get_updates_conflicts += 1
            raise TgError(409, "Conflict: can't use getUpdates method while webhook is active; "
                               "use deleteWebhook to delete the webhook first")
        offset, limit = int(p.get("offset") or 0), min(max(int(p.get("limit") or 100), 1), 100)
        timeout = float(p.get("timeout") or 0)
        if isinstance(p.get("allowed_updates"), list):
            self._allowed = p["allowed_updates"]
        if offset > 0:
            self._queue = [u for u in self._queue if u["update_id"] >= offset]
        elif offset < 0:
            self._queue = self._queue[offset:]
        transport = self._request.transport
        if self._poller:  # real Telegram terminates the older request
            old = self._poller["transport"]
            if old is None or old.is_closing():
                self.abandoned_polls += 1  # its client is gone (a stopped bot): nobody gets the 409
                self._poller["abandoned"] = True
            self._poller["conflict"] = True
            self._poller["event"].set()
        me = self._poller = {"event": asyncio.Event(), "conflict": False, "abandoned": False, "transport": transport}
        deadline = time.monotonic() + timeout
        try:
            while True:
                ready = [u for u in self._queue if not self._allowed or any(k in self._allowed for k in u)]
                remaining = deadline - time.monotonic()
                if me["conflict"] or ready or remaining <= 0 or self._closing:
                    break
                me["event"].clear()
                try:
                    await asyncio.wait_for(me["event"].wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            if self._poller is me:
                self._poller = None
        if me["conflict"]:
            if not me["abandoned"]:
                self.get_updates_conflicts += 1
            raise TgError(409, "Conflict: terminated by other getUpdates request; "
                               "make sure that only one bot instance is running")
        return ready[:limit]

    async def _m_sendMessage(self, p: dict, f: dict) -> Any:
        chat_id, text = self._chat_id(p), p.get("text") or ""
        if not text.strip():
            raise _bad("message text is empty")
        if len(text) > 4096:
            raise _bad("message is too long")
        return self._message_json(self._new_message(chat_id, None, text=text, reply_markup=self._markup(p)))

    async def _fetch(self, url: str, any_type: bool = False) -> bytes:
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=ClientTimeout(total=self.url_fetch_timeout)) as resp:
                self.url_fetches.append((url, resp.status))
                if resp.status != 200:
                    raise TgError(400, URL_FAILED)
                if not any_type and not resp.content_type.startswith("image/"):
                    raise _bad("wrong type of the web page content")
                data = b""
                limit = 20 * 1024 * 1024 if any_type else self.max_url_bytes  # documents by URL: 20 MB
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        raise TgError(400, URL_FAILED)
                return data
        except (ClientError, asyncio.TimeoutError) as e:
            self.url_fetches.append((url, f"{type(e).__name__}: {e}"))
            raise TgError(400, URL_FAILED) from None

    async def _media(self, p: dict, f: dict, field_name: str, max_upload: int) -> tuple[bytes, str, str | None]:
        """The file of sendPhoto/sendDocument: uploaded, by URL (fetched like Telegram does) or by file_id.
        Returns (bytes, source, url)."""
        value = p.get(field_name)
        if field_name in f:
            if len(f[field_name]) > max_upload:
                raise _bad("file is too big")
            return f[field_name], "upload", None
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return await self._fetch(value, any_type=field_name == "document"), "url", value
        if isinstance(value, str) and value in self._files:
            return self._files[value]["data"], "file_id", None
        if value:
            raise _bad("wrong file identifier/HTTP URL specified")
        raise _bad(f"there is no {field_name} in the request")

    async def _m_sendPhoto(self, p: dict, f: dict) -> Any:
        chat_id, caption = self._chat_id(p), p.get("caption")
        if caption and len(caption) > 1024:
            raise _bad("message caption is too long")
        markup = self._markup(p)
        data, source, url = await self._media(p, f, "photo", self.max_upload_bytes)
        if not is_image(data):
            raise _bad("IMAGE_PROCESS_FAILED")
        rec = self._new_message(chat_id, None, kind="photo", caption=caption, reply_markup=markup)
        self._record_photo(rec, data, source, url)
        return self._message_json(rec)

    def _record_photo(self, rec: dict[str, Any], data: bytes, source: str, url: str | None) -> None:
        sizes = self._store_file(data)
        rec.update(kind="photo", photo=sizes, sha256=hashlib.sha256(data).hexdigest())
        self.photos.append(DeliveredPhoto(rec["chat_id"], source, url, rec["sha256"], len(data), rec["caption"],
                                          rec["message_id"], sizes[-1]["file_id"]))

    async def _m_editMessageMedia(self, p: dict, f: dict) -> Any:
        rec = self._bot_message(p)
        media = p.get("media")
        if not isinstance(media, dict) or "media" not in media:
            raise _bad("can't parse InputMedia: media not found")
        if media.get("type") != "photo":
            raise _bad("the simulator edits photos only")
        if rec["kind"] == "text" and not self.media_on_text:
            raise TgError(400, NO_MEDIA_TO_EDIT)
        caption = media.get("caption")
        if caption and len(caption) > 1024:
            raise _bad("message caption is too long")
        ref, upload = media["media"], {}
        if isinstance(ref, str) and ref.startswith("attach://"):
            if ref[9:] not in f:
                raise _bad("can't find attached file")
            upload = {"photo": f[ref[9:]]}
        data, source, url = await self._media({"photo": ref}, upload, "photo", self.max_upload_bytes)
        if not is_image(data):
            raise _bad("IMAGE_PROCESS_FAILED")
        markup = self._markup(p) or None
        norm = lambda m: m if m and m.get("inline_keyboard") else None  # noqa: E731
        if rec["kind"] == "photo" and rec["sha256"] == hashlib.sha256(data).hexdigest() \
                and rec["caption"] == caption and norm(rec["reply_markup"]) == norm(markup):
            raise _bad(NOT_MODIFIED.removeprefix("Bad Request: "))
        rec.update(text=None, entities=None, caption=caption, reply_markup=markup, edit_date=int(time.time()))
        self._record_photo(rec, data, "edit-" + source, url)
        return self._message_json(rec)

    async def _m_sendDocument(self, p: dict, f: dict) -> Any:
        chat_id, caption = self._chat_id(p), p.get("caption")
        if caption and len(caption) > 1024:
            raise _bad("message caption is too long")
        markup = self._markup(p)
        data, source, url = await self._media(p, f, "document", 50 * 1024 * 1024)
        file_id = self._store_file(data)[0]["file_id"]
        document = {"file_id": file_id, "file_unique_id": self._files[file_id]["unique"],
                    "file_name": (url or "file").rsplit("/", 1)[-1] or "file", "file_size": len(data)}
        rec = self._new_message(chat_id, None, kind="document", caption=caption, reply_markup=markup,
                                document=document)
        self.documents.append(DeliveredPhoto(chat_id, source, url, hashlib.sha256(data).hexdigest(), len(data),
                                             caption, rec["message_id"], file_id))
        return self._message_json(rec)

    async def _edit(self, p: dict, field_name: str | None) -> Any:
        rec = self._bot_message(p)
        new = dict(rec)
        if field_name == "text":
            if rec["kind"] != "text":
                raise _bad("there is no text in the message to edit")
            new["text"] = p.get("text") or ""
            if not new["text"].strip():
                raise _bad("message text is empty")
            if len(new["text"]) > 4096:
                raise _bad("MESSAGE_TOO_LONG")
        elif field_name == "caption":
            if rec["kind"] == "text":
                raise _bad("there is no caption in the message to edit")
            new["caption"] = p.get("caption")
        new["reply_markup"] = self._markup(p) or None
        norm = lambda m: m if m and m.get("inline_keyboard") else None  # noqa: E731
        if (new["text"], new["caption"], norm(new["reply_markup"])) == \
                (rec["text"], rec["caption"], norm(rec["reply_markup"])):
            raise _bad(NOT_MODIFIED.removeprefix("Bad Request: "))
        rec.update(new, edit_date=int(time.time()))
        return self._message_json(rec)

    async def _m_editMessageText(self, p: dict, f: dict) -> Any:
        return await self._edit(p, "text")

    async def _m_editMessageCaption(self, p: dict, f: dict) -> Any:
        return await self._edit(p, "caption")

    async def _m_editMessageReplyMarkup(self, p: dict, f: dict) -> Any:
        return await self._edit(p, None)

    async def _m_deleteMessage(self, p: dict, f: dict) -> Any:
        rec = self._bot_message(p, "delete")
        del self._chats[rec["chat_id"]][rec["message_id"]]
        self.deleted_messages.append((rec["chat_id"], rec["message_id"]))
        return True

    async def _m_answerCallbackQuery(self, p: dict, f: dict) -> Any:
        q = self._queries.pop(str(p.get("callback_query_id", "")), None)
        if q is None:
            raise TgError(400, BAD_QUERY)
        self.answered_callbacks.append({"id": q["id"], "data": q.get("data"), "text": p.get("text"),
                                        "show_alert": str(p.get("show_alert", "")).lower() == "true",
                                        "time": time.time()})
        return True

    async def _m_sendInvoice(self, p: dict, f: dict) -> Any:
        prices = p.get("prices")
        if p.get("currency") != "XTR" or (p.get("provider_token") or "") != "":
            raise TgError(400, "Bad Request: Stars invoices need currency XTR and an empty provider token")
        if not isinstance(prices, list) or len(prices) != 1 or int(prices[0].get("amount", 0)) <= 0:
            raise TgError(400, "Bad Request: Stars invoices take exactly one price")
        for name in ("title", "description", "payload"):
            if not p.get(name):
                raise TgError(400, f"Bad Request: {name} is empty")
        chat_id = self._chat_id(p)
        rec = self._new_message(chat_id, None, kind="invoice", text=None)
        invoice = {"chat_id": chat_id, "message_id": rec["message_id"], "title": p["title"], "payload": p["payload"],
                   "currency": "XTR", "total_amount": int(prices[0]["amount"]), "time": time.time()}
        self.invoices.append(invoice)
        rec["invoice"] = invoice
        return self._message_json(rec) | {"invoice": {"title": p["title"], "description": p["description"],
                                                      "start_parameter": "", "currency": "XTR",
                                                      "total_amount": invoice["total_amount"]}}

    async def _m_answerPreCheckoutQuery(self, p: dict, f: dict) -> Any:
        qid = str(p.get("pre_checkout_query_id", ""))
        if qid not in self.pre_checkout_answers or self.pre_checkout_answers[qid].get("answered"):
            raise TgError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        ok = str(p.get("ok", "")).lower() == "true"
        if not ok and not p.get("error_message"):
            raise TgError(400, "Bad Request: error_message is required when ok is false")
        self.pre_checkout_answers[qid].update(answered=True, ok=ok, error_message=p.get("error_message"),
                                              answered_at=time.time())
        return True

    async def _m_refundStarPayment(self, p: dict, f: dict) -> Any:
        charge = self.star_payments.get(str(p.get("telegram_payment_charge_id", "")))
        if charge is None or str(charge["user_id"]) != str(p.get("user_id")):
            raise TgError(400, "Bad Request: CHARGE_NOT_FOUND")
        if charge["refunded"]:
            raise TgError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        charge["refunded"] = True
        return True

    async def user_pay(self, chat_id: int, invoice: dict[str, Any], *, deliveries: int = 1,
                       timeout: float = 10.0, user_id: int | None = None) -> tuple[bool, str | None, float]:
        """The user pays `invoice` (one of ``invoices``) with Stars, as Telegram runs it: a
        pre_checkout_query the bot must answer within `timeout` (Telegram: 10 s), then, if it said ok,
        the successful_payment message, delivered `deliveries` times (Telegram may send it twice).
        Returns (ok, telegram_payment_charge_id, seconds the answer took)."""
        uid = user_id or chat_id
        qid = str(secrets.randbits(63))
        self.pre_checkout_answers[qid] = {"asked_at": time.time()}
        self._push("pre_checkout_query", {"id": qid, "from": self._user(uid), "currency": invoice["currency"],
                                          "total_amount": invoice["total_amount"],
                                          "invoice_payload": invoice["payload"]})
        answer = self.pre_checkout_answers[qid]
        await self.wait_for(lambda: answer.get("answered"), timeout=timeout)
        took = answer["answered_at"] - answer["asked_at"]
        if not answer["ok"]:
            return False, None, took
        charge = f"stxCHARGE{secrets.token_hex(8)}"
        self.star_payments[charge] = {"user_id": uid, "amount": invoice["total_amount"], "refunded": False}
        payment = {"currency": "XTR", "total_amount": invoice["total_amount"], "invoice_payload": invoice["payload"],
                   "telegram_payment_charge_id": charge, "provider_payment_charge_id": ""}
        for _ in range(deliveries):
            rec = self._new_message(chat_id, uid, kind="payment")
            self._push("message", self._message_json(rec) | {"successful_payment": payment})
        return True, charge, took

    async def _m_getFile(self, p: dict, f: dict) -> Any:
        file_id = str(p.get("file_id", ""))
        if file_id not in self._files:
            raise _bad("invalid file_id")
        e = self._files[file_id]
        if len(e["data"]) > self.getfile_max_bytes:
            raise _bad("file is too big")
        return {"file_id": file_id, "file_unique_id": e["unique"], "file_size": len(e["data"]),
                "file_path": e["file_path"]}

    # ------------------------------------------------------------------ scripted user
    def _push(self, kind: str, obj: dict[str, Any]) -> int:
        self._update_id += 1
        upd = {"update_id": self._update_id, kind: obj}
        self.updates.append(upd)
        self._queue.append(upd)
        if self._poller:
            self._poller["event"].set()
        return self._update_id

    def user_send_text(self, chat_id: int, text: str, user_id: int | None = None, date: int | None = None) -> int:
        """Queue a message update from the user (sent at `date`, Unix seconds, default now); returns its update_id."""
        entities = None
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        rec = self._new_message(chat_id, user_id or chat_id, text=text, entities=entities,
                                date=int(time.time()) if date is None else date)
        return self._push("message", self._message_json(rec))

    def user_send_command(self, chat_id: int, command: str = "/start", user_id: int | None = None) -> int:
        return self.user_send_text(chat_id, command if command.startswith("/") else "/" + command, user_id)

    def user_send_photo(self, chat_id: int, caption: str | None = None, user_id: int | None = None, *,
                        image: bytes | None = None, media_group_id: str | None = None, date: int | None = None,
                        file_size: int | None = None) -> int:
        """Queue a photo message (with `caption`, if any) from the user; returns its update_id. The update
        lists a small thumbnail, then the full picture (`image`, default a made-up PNG), as Telegram does;
        `file_size` overrides the size the update announces for it (a client that lies)."""
        data = image if image is not None else make_png(32, 32, seed=len(self._files) + 1)
        thumb = self._store_file(make_png(4, 4, seed=len(self._files) + 101))[0]
        full = self._user_file(data)
        if file_size is not None:
            full = {**full, "file_size": file_size}
        rec = self._new_message(chat_id, user_id or chat_id, kind="photo", caption=caption, photo=[thumb, full],
                                media_group_id=media_group_id, date=int(time.time()) if date is None else date)
        return self._push("message", self._message_json(rec))

    def user_send_album(self, chat_id: int, images: list[bytes] | int, caption: str | None = None, *,
                        caption_index: int = 0, user_id: int | None = None) -> list[int]:
        """Queue an album: one photo message per picture, all with one media_group_id, the caption on the
        item `caption_index` (Telegram sends them as separate updates, back to back)."""
        pictures = [make_png(24, 24, seed=len(self._files) + i + 1) for i in range(images)] \
            if isinstance(images, int) else list(images)
        group = str(secrets.randbits(60))
        return [self.user_send_photo(chat_id, caption if i == caption_index else None, user_id, image=data,
                                     media_group_id=group) for i, data in enumerate(pictures)]

    def user_send_document(self, chat_id: int, data: bytes, file_name: str = "file.bin",
                           mime_type: str | None = "application/octet-stream", caption: str | None = None, *,
                           user_id: int | None = None, file_size: int | None = None) -> int:
        """Queue a document (a file sent "as a file": an uncompressed picture, a PDF…)."""
        entry = self._user_file(data, "documents", file_name.rsplit(".", 1)[-1] if "." in file_name else "bin")
        document = {"file_id": entry["file_id"], "file_unique_id": entry["file_unique_id"], "file_name": file_name,
                    "file_size": len(data) if file_size is None else file_size}
        if mime_type:
            document["mime_type"] = mime_type
        rec = self._new_message(chat_id, user_id or chat_id, kind="document", caption=caption, document=document)
        return self._push("message", self._message_json(rec))

    def user_send_sticker(self, chat_id: int, *, animated: bool = True, video: bool = False,
                          user_id: int | None = None) -> int:
        """Queue a sticker (animated .tgs by default; `video` for .webm; neither: a static .webp)."""
        ext = "tgs" if animated else "webm" if video else "webp"
        entry = self._user_file(b"\x1f\x8b sticker" if animated else b"\x1aE\xdf\xa3 webm" if video else
                                b"RIFF\x10\x00\x00\x00WEBPVP8 ", "stickers", ext)
        sticker = {"file_id": entry["file_id"], "file_unique_id": entry["file_unique_id"], "type": "regular",
                   "width": 512, "height": 512, "is_animated": animated, "is_video": video, "emoji": "😀"}
        rec = self._new_message(chat_id, user_id or chat_id, kind="sticker", sticker=sticker)
        return self._push("message", self._message_json(rec))

    def user_send_animation(self, chat_id: int, caption: str | None = None, *, user_id: int | None = None) -> int:
        """Queue an animation (a GIF, which Telegram sends as an MP4 animation, with a document twin)."""
        entry = self._user_file(b"\x00\x00\x00\x18ftypmp42 gif", "animations", "mp4")
        animation = {"file_id": entry["file_id"], "file_unique_id": entry["file_unique_id"], "width": 64,
                     "height": 64, "duration": 1, "mime_type": "video/mp4", "file_name": "a.gif.mp4"}
        rec = self._new_message(chat_id, user_id or chat_id, kind="animation", caption=caption, animation=animation,
                                document=dict(animation))
        return self._push("message", self._message_json(rec))

    async def user_presses(self, chat_id: int, *labels: str, timeout: float = 15.0,
                           user_id: int | None = None) -> list[int]:
        """The scripted user waits for each button (`label`: part of its text, newest message first) and
        presses it, in turn; returns the message ids the buttons were on."""
        pressed = []
        for label in labels:
            def found():
                try:
                    return self.find_button(chat_id, label)
                except LookupError:
                    return None
            message_id, data = await self.wait_for(found, timeout=timeout)
            self.user_press_button(chat_id, message_id, data, user_id)
            pressed.append(message_id)
        return pressed

    def user_press_button(self, chat_id: int, message_id: int, data: str, user_id: int | None = None) -> str:
        """Queue a callback_query for the bot message; returns the callback_query_id."""
        rec = self._chats.get(chat_id, {}).get(message_id)
        if rec is None:
            raise LookupError(f"no message {message_id} in chat {chat_id}\n{self.dump()}")
        qid = str(secrets.randbits(63))
        q = {"id": qid, "from": self._user(user_id or chat_id), "message": self._message_json(rec),
             "chat_instance": str(abs(chat_id) * 7 + 1), "data": data}
        self._queries[qid] = q
        self._push("callback_query", q)
        return qid

    # ------------------------------------------------------------------ queries
    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        """Current state of the bot's (non-deleted) messages in the chat, oldest first."""
        return [dict(r) for _, r in sorted(self._chats.get(chat_id, {}).items()) if r["from_id"] is None]

    def last_message(self, chat_id: int) -> dict[str, Any] | None:
        msgs = self.messages(chat_id)
        return msgs[-1] if msgs else None

    def inline_buttons(self, chat_id: int, message_id: int) -> list[tuple[str, str | None]]:
        rec = self._chats.get(chat_id, {}).get(message_id) or {}
        markup = rec.get("reply_markup") or {}
        return [(b.get("text"), b.get("callback_data")) for row in markup.get("inline_keyboard", []) for b in row]

    def find_button(self, chat_id: int, text_substring: str) -> tuple[int, str | None]:
        """(message_id, callback_data) of the first matching button, searching the newest bot messages first."""
        for m in reversed(self.messages(chat_id)):
            for text, data in self.inline_buttons(chat_id, m["message_id"]):
                if text_substring.casefold() in (text or "").casefold():
                    return m["message_id"], data
        raise LookupError(f"no button containing {text_substring!r} in chat {chat_id}\n{self.dump()}")

    def dump(self, last: int = 20) -> str:
        lines = ["--- last calls:"]
        lines += [f"  {c.method} {c.params} files={list(c.files)} -> {c.status} "
                  f"{(c.response or {}).get('description', '')}" for c in self.calls[-last:]]
        for chat_id in self._chats:
            lines.append(f"--- bot messages in chat {chat_id}:")
            lines += [f"  #{m['message_id']} {m['kind']} {m['text'] or m['caption']!r} markup={m['reply_markup']}"
                      for m in self.messages(chat_id)]
        lines.append(f"--- photos: {self.photos}")
        return "\n".join(lines)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll predicate() until truthy; return its value or raise TimeoutError with a state dump."""
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s\n{self.dump()}")
            await asyncio.sleep(interval)
        return result


async def _main() -> None:
    ap = argparse.ArgumentParser(description="Telegram Bot API simulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default="123456:TEST")
    args = ap.parse_args()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with TelegramSimulator(token=args.token, host=args.host, port=args.port) as sim:
        print(f"listening on {sim.base_url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_main())
