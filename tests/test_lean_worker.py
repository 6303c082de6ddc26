"""The lean worker (issue 9): worker.py imports aiogram without building every Telegram type's
validator, stays small, and still talks to Telegram through the real aiogram Bot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import asyncio, json, sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
import worker  # exactly what worker.py imports, in a fresh interpreter
from aiogram.types import Message, PhotoSize
out = {"rss_after_imports": rss_mb(), "message_built_at_import": Message.__pydantic_complete__}
from aiogram.types import BufferedInputFile
from imagegen.delivery import create_bot
from tests.support.images import make_png
from tests.support.telegram_sim import TelegramSimulator

async def main():
    async with TelegramSimulator(token="1:LEAN") as tg:
        bot = create_bot(tg.token, tg.base_url)
        sent = await bot.send_message(7, "⏳")
        edited = await bot.edit_message_text(text="✅", chat_id=7, message_id=sent.message_id)
        photo = await bot.send_photo(7, BufferedInputFile(make_png(8, 8, seed=3), "p.png"), caption="c")
        await bot.session.close()
        out.update(edited=edited.text, photo=isinstance(photo.photo[-1], PhotoSize), photos=len(tg.photos),
                   rss_after_sends=rss_mb())
asyncio.run(main())
print(json.dumps(out))
"""


def test_worker_imports_aiogram_lean_and_still_delivers_through_it():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["message_built_at_import"] is False  # built on first use
    assert out["edited"] == "✅" and out["photo"] and out["photos"] == 1
    # Eagerly, `import aiogram` alone is ~160 MB here; the whole worker's imports stay far below.
    assert out["rss_after_imports"] < 110, out
    assert out["rss_after_sends"] < 120, out


KEEP_SCRIPT = r"""
import asyncio, gc, json, weakref
import worker  # exactly what worker.py imports, in a fresh interpreter
from aiogram.methods.base import Response
from imagegen.delivery import create_bot
from tests.support.telegram_sim import TelegramSimulator

built = []
eager = Response.model_rebuild.__func__
Response.model_rebuild = classmethod(lambda cls, *a, **k: built.append(cls.__name__) or eager(cls, *a, **k))

async def main():
    async with TelegramSimulator(token="1:KEEP") as tg:
        bot = create_bot(tg.token, tg.base_url)
        for _ in range(5):
            sent = await bot.send_message(7, "⏳")
            await bot.edit_message_text(text="✅", chat_id=7, message_id=sent.message_id)
            gc.collect()  # as a busy worker's garbage collector does, now and then
        await bot.session.close()
    # The control: a generic pydantic model's parametrization, nothing holding it, is gone after a collection.
    from typing import Generic, TypeVar
    from pydantic import BaseModel
    T = TypeVar("T")
    class Box(BaseModel, Generic[T]):
        item: T
    control = weakref.ref(Box[int])
    gc.collect()
    return {"built": built, "control_collected": control() is None}
print(json.dumps(asyncio.run(main())))
"""


def test_the_answers_response_models_are_built_once_not_after_every_garbage_collection():
    """pydantic caches a parametrized generic only weakly: without keep_response_types, each full
    collection dropped aiogram's Response[Message] and the next answer built it again (13 % of the
    worker's event loop in a burst). Five sends and edits with a collection after each: built once."""
    proc = subprocess.run([sys.executable, "-c", KEEP_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["control_collected"] is True  # the weak cache this guards against
    answers = sorted(name for name in out["built"] if "[" in name)  # (the bare generic is rebuilt with each)
    assert answers == ["Response[Message]", "Response[Union[Message, bool]]"], out
