"""Fault matrix, the polling bot while Postgres is away: the leader keeps polling Telegram, every user
gets a clear "try again in a minute" instead of silence, and when the database is back polling goes
on by itself and the conversations that were interrupted finish (their state lives in Postgres)."""

from __future__ import annotations

import asyncio
import time

import pytest

from imagegen.i18n import t
from tests.support.chat import button
from tests.faults.matrix import N, assert_exactly_one, own_postgres, status_texts, stop_postgres, tally

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
DOWN_SECONDS = 10.0
DB_AWAY, WELCOME = t("db_away", "ru"), t("welcome", "ru")  # the simulated users speak Russian


async def test_postgres_outage_under_the_polling_bot(procstack):
    async with own_postgres("bot-db-outage") as pg:
        ps = await procstack("bot-db-outage", dsn=pg.dsn)
        ps.kie.delay = 0.5
        await ps.start_worker()
        leader = await ps.start_bot("bot-a")
        await ps.wait_bot_ready(leader, role="leader")
        passive = await ps.start_bot("bot-b")
        await ps.wait_bot_ready(passive, role="passive")
        half = N // 2
        menus = {}
        for chat in [ps.new_chat_id() for _ in range(half)]:  # mid-conversation when the database goes
            menus[chat] = await ps.user_up_to_ratio(chat, "a harbour at night")
        t0 = time.monotonic()
        await asyncio.to_thread(stop_postgres, pg)
        t_down = time.monotonic()
        await asyncio.sleep(1.0)
        newcomers = [ps.new_chat_id() for _ in range(N - half)]
        for chat in newcomers:
            ps.tg.user_send_command(chat, "/start")
        pressed = {}
        for chat, (mid, data) in menus.items():
            pressed[chat] = ps.tg.user_press_button(chat, mid, data)
        answered = lambda: ([c for c in newcomers if any(m.get("text") == DB_AWAY for m in ps.tg.messages(c))],
                            [q for q in pressed.values()
                             if any(a["id"] == q and a["text"] == DB_AWAY for a in ps.tg.answered_callbacks)])
        await ps.tg.wait_for(lambda: all(len(x) == len(y) for x, y in zip(answered(), (newcomers, pressed))),
                             timeout=DOWN_SECONDS)
        t_all_answered = time.monotonic() - t_down
        roles_down = [(await ps.bot_health(b) or {}).get("role") for b in (leader, passive)]
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - t_down)))
        await asyncio.to_thread(pg.start)
        outage = time.monotonic() - t_down
        t_up = time.monotonic()
        # Polling goes on by itself: the newcomers start again, the interrupted ones press again.
        for chat in newcomers:
            ps.tg.user_send_command(chat, "/start")
        await ps.tg.wait_for(lambda: all(button(ps, c, "Z-Image") and
                                         sum(m.get("text") == WELCOME for m in ps.tg.messages(c)) >= 1
                                         for c in newcomers), timeout=60)
        recovery = time.monotonic() - t_up
        for chat, (mid, data) in menus.items():
            ps.tg.user_press_button(chat, mid, data)
        await ps.tg.wait_for(lambda: "LOCK_REACQUIRED" in leader.log() or "LOCK_LOST" in leader.log(), timeout=30)
        lock_back = time.monotonic() - t_up
        gens = [await ps.generation_for_chat(chat) for chat in menus]
        rec = await tally("Postgres outage under the polling bot", f"{DOWN_SECONDS:g} s down, leader + passive bot",
                          gens, ps.tg, ps.dsn, started=t0, timeout=120,
                          extra=lambda: {"outage_s": round(outage, 1), "users_during_outage": len(newcomers) + len(pressed),
                                         "answered_try_again": sum(map(len, answered())),
                                         "all_answered_after_s": round(t_all_answered, 1),
                                         "roles_during_outage": ",".join(map(str, roles_down)),
                                         "welcome_again_after_s": round(recovery, 1),
                                         "lock_back_after_s": round(lock_back, 1),
                                         "getUpdates_409": ps.tg.get_updates_conflicts,
                                         "bot-a.LOCK_DB_AWAY": leader.count("LOCK_DB_AWAY"),
                                         "bot-a.LOCK_REACQUIRED": leader.count("LOCK_REACQUIRED"),
                                         "bot-b.LOCK_ACQUIRED": passive.count("LOCK_ACQUIRED")})
        e = rec["extra"]
        assert e["answered_try_again"] == N, e
        assert roles_down[0] == "leader", f"the leader must keep polling while the database is away: {e}"
        assert e["bot-a.LOCK_DB_AWAY"] >= 1 and e["bot-a.LOCK_REACQUIRED"] == 1, e
        assert e["bot-b.LOCK_ACQUIRED"] == 0 and e["getUpdates_409"] == 0, f"never two pollers: {e}"
        assert_exactly_one(rec)
        assert status_texts(ps.tg, gens) == {"done": len(gens)}
