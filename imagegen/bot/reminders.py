"""Pictures sent for an edit and then left without a description get one reminder.

Nothing is dropped: the pictures stay in the conversation state (Postgres, ``bot_fsm_state``) and a
description sent later still starts the edit. Every bot process runs the loop; the reminder is taken
by one conditional UPDATE (``reminded`` set only if it was not), so it is sent once whatever the
number of processes.
"""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
from aiogram import Bot

from imagegen.bot.states import Flow
from imagegen.i18n import normalize, t
from imagegen.logs import log_event
from imagegen.redact import redact

log = logging.getLogger("imagegen.bot")
REMIND_AFTER_SECONDS = 120.0  # pictures waiting this long for their description get the reminder
EVERY_SECONDS = 30.0


async def remind_once(pool: asyncpg.Pool, bot: Bot, *, older_than: float = REMIND_AFTER_SECONDS,
                      limit: int = 50) -> int:
    """Remind every conversation that holds pictures without a description for longer than
    `older_than` seconds and was not reminded yet; returns how many were reminded."""
    rows = await pool.fetch(
        """
        UPDATE bot_fsm_state SET data = data || '{"reminded": true}'::jsonb
         WHERE key IN (SELECT key FROM bot_fsm_state
                        WHERE state = $1 AND updated_at < now() - make_interval(secs => $2)
                          AND NOT (data ? 'reminded') AND jsonb_array_length(coalesce(data->'images', '[]')) > 0
                        ORDER BY updated_at LIMIT $3)
           AND NOT (data ? 'reminded')
        RETURNING key, data::text AS data
        """,
        Flow.collecting_images.state, float(older_than), limit,
    )
    for row in rows:
        data = json.loads(row["data"])
        chat_id = int(row["key"].split(":")[1])  # bot:chat:user:… (imagegen/bot/fsm_storage.py)
        try:
            await bot.send_message(chat_id, t("edit.reminder", normalize(data.get("lang")),
                                              count=len(data.get("images") or [])))
            log_event(f"chat{chat_id}", "EDIT_REMINDED", pictures=len(data.get("images") or []))
        except Exception as exc:  # blocked, deleted chat: the pictures stay, the reminder is best effort
            log_event(f"chat{chat_id}", "EDIT_REMIND_FAILED", error=redact(f"{type(exc).__name__}: {exc}")[:200])
    return len(rows)


async def run_reminders(pool: asyncpg.Pool, bot: Bot, *, every: float = EVERY_SECONDS, **kwargs) -> None:
    """Forever (until cancelled); a failed pass (database away) waits for the next."""
    while True:
        try:
            await remind_once(pool, bot, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("EDIT_REMINDERS_FAILED %s", redact(f"{type(exc).__name__}: {exc}")[:200])
        await asyncio.sleep(every)
