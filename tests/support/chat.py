"""A scripted user's moves and looks in the Telegram simulator, shared by the conversation tests."""

from __future__ import annotations

import time


async def begin(stack, chat: int, model: str, lang: str | None = "ru") -> None:
    """A user whose client speaks `lang` (None: sends no language_code) starts the bot and picks `model`."""
    stack.tg.set_user_language(chat, lang)
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/start")
    await press(stack, chat, model)


def button(stack, chat: int, label: str):
    """(message_id, callback_data) of the newest button whose text contains `label`, else None."""
    try:
        return stack.tg.find_button(chat, label)
    except (LookupError, ValueError):
        return None


async def press(stack, chat: int, label: str, timeout: float = 10.0):
    message_id, data = await stack.tg.wait_for(lambda: button(stack, chat, label), timeout=timeout)
    stack.tg.user_press_button(chat, message_id, data)
    return message_id, data


def texts_in(stack, chat: int) -> list[str]:
    """The current text (or caption) of every bot message in the chat, oldest first."""
    return [m.get("text") or m.get("caption") or "" for m in stack.tg.messages(chat)]


async def wait_text(stack, chat: int, text: str, timeout: float = 10.0, exact: bool = False) -> str:
    """Wait until a bot message in the chat shows `text` (a substring unless `exact`)."""
    def found():
        return next((x for x in texts_in(stack, chat) if (x == text if exact else text in x)), None)
    return await stack.tg.wait_for(found, timeout=timeout)


def answers(stack) -> list[str | None]:
    """The texts of every callback answer (toasts) so far."""
    return [a["text"] for a in stack.tg.answered_callbacks]


def later(seconds: int = 5) -> int:
    """A message date `seconds` from now: outside the window in which a text continues a split one."""
    return int(time.time()) + seconds


def said(stack, chat: int) -> list[str]:
    """Every text the bot sent or edited into the chat (accepted by Telegram), in order."""
    return [c.params.get("text") or c.params.get("caption") or "" for c in stack.tg.calls
            if c.method in ("sendMessage", "editMessageText", "sendPhoto", "sendDocument") and c.status == 200
            and str(c.params.get("chat_id")) == str(chat)]


async def press_and_wait(stack, chat: int, label: str, shows: str, timeout: float = 10.0) -> int:
    """Press the newest button `label`, then wait until that message shows a text starting with `shows`."""
    message_id, _ = await press(stack, chat, label, timeout)

    def shown():
        rec = next((m for m in stack.tg.messages(chat) if m["message_id"] == message_id), None)
        return rec is not None and (rec.get("text") or "").startswith(shows)
    await stack.tg.wait_for(shown, timeout=timeout)
    return message_id


async def send_photo_to_edit(stack, chat: int, caption: str | None, *presses: str, image: bytes | None = None,
                             lang: str | None = "ru", timeout: float = 15.0) -> list[int]:
    """A user whose client speaks `lang` sends a photo (`image`, default a made-up PNG) with `caption`,
    then presses `presses` in turn (e.g. "Nano Banana Edit", "auto"); the bot must be running.
    Returns the message ids the pressed buttons were on (the last one becomes the status message)."""
    stack.tg.set_user_language(chat, lang)
    stack.tg.user_send_photo(chat, caption=caption, image=image)
    return await stack.tg.user_presses(chat, *presses, timeout=timeout)
