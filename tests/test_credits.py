"""The credit ledger (imagegen/credits.py) on a real Postgres: every step once, whatever is repeated
or raced; balances never negative; prices and packs as data."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imagegen.credits import Ledger
from imagegen.models import MODELS
from imagegen.prices import PACKS, PRICES, price

ROOT = Path(__file__).resolve().parent.parent


def user() -> int:
    return int(uuid.uuid4().int % 10**9) + 10**9


def job() -> str:
    return uuid.uuid4().hex[:16]


def test_every_model_has_a_price_and_options_change_it():
    assert set(MODELS) <= set(PRICES), set(MODELS) - set(PRICES)
    assert price("zimage") == 1
    assert price("seedream45", {"quality": "basic"}) == 2 and price("seedream45", {"quality": "high"}) == 3
    assert all(p.credits > 0 and p.stars > 0 for p in PACKS.values())


async def test_new_user_gets_the_free_allowance_once(pool):
    ledger, u = Ledger(pool, free_credits=3), user()
    assert await asyncio.gather(*(ledger.balance(u) for _ in range(5))) == [3] * 5
    assert [e["kind"] for e in await ledger.entries(u)] == ["free"]


async def test_reserve_then_capture_or_release_exactly_once_each(pool):
    ledger, u = Ledger(pool, free_credits=5), user()
    delivered, failed = job(), job()
    assert (await ledger.reserve(delivered, u, 2)).outcome == "reserved"
    assert (await ledger.reserve(delivered, u, 2)).outcome == "already"  # a retried activity
    assert (await ledger.reserve(failed, u, 2)).balance == 1
    # settles raced and repeated: one capture, one release, nothing else
    outcomes = await asyncio.gather(*(ledger.capture(delivered) for _ in range(4)),
                                    *(ledger.release(failed) for _ in range(4)))
    assert sorted(outcomes) == ["already"] * 6 + ["captured", "released"]
    assert await ledger.release(delivered) == "captured"  # delivered: nothing to give back
    assert await ledger.capture(failed) == "released"
    assert await ledger.balance(u) == 3  # 5 - 2 (delivered) ; the failed one's 2 came back
    assert (await ledger.job_state(delivered), await ledger.job_state(failed)) == ("captured", "released")
    assert (await ledger.reserve(failed, u, 2)).outcome == "settled"  # a replay after the end takes nothing
    assert await ledger.balance(u) == 3
    assert await ledger.release(job()) == "none"


async def test_too_little_balance_takes_nothing_and_concurrent_reserves_never_go_negative(pool):
    ledger, u = Ledger(pool, free_credits=3), user()
    results = await asyncio.gather(*(ledger.reserve(job(), u, 1) for _ in range(10)))
    assert sorted(r.outcome for r in results) == ["insufficient"] * 7 + ["reserved"] * 3
    assert await ledger.balance(u) == 0
    refused = await ledger.reserve(job(), u, 2)
    assert (refused.outcome, refused.balance, refused.price, refused.ok) == ("insufficient", 0, 2, False)


async def test_a_payment_delivered_twice_credits_once_and_a_refund_takes_back_what_is_left(pool):
    ledger, u = Ledger(pool, free_credits=0), user()
    charge = f"charge-{uuid.uuid4().hex}"
    pays = await asyncio.gather(*(ledger.credit_payment(charge_id=charge, user_id=u, pack="s", stars=50, credits=10)
                                  for _ in range(3)))
    assert sorted(p.outcome for p in pays) == ["already", "already", "credited"]
    assert await ledger.balance(u) == 10
    g = job()
    await ledger.reserve(g, u, 4)
    await ledger.capture(g)  # 6 left
    refund = await ledger.refund_payment(charge)
    assert (refund.outcome, refund.taken, refund.balance) == ("refunded", 6, 0)
    assert (await ledger.refund_payment(charge)).outcome == "already"
    assert (await ledger.refund_payment("no-such-charge")).outcome == "unknown"
    kinds = [e["kind"] for e in await ledger.entries(u)]
    assert kinds == ["refund", "capture", "reserve", "payment", "free"]
    # the ledger's entries add up to the balance
    assert sum(e["delta"] for e in await ledger.entries(u, 100)) == await ledger.balance(u)


async def test_the_balance_has_a_floor_at_zero_in_the_database_too(pool):
    import asyncpg

    u = user()
    await Ledger(pool, free_credits=1).balance(u)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE credit_accounts SET balance = -1 WHERE user_id = $1", u)


def run_grant(dsn: str, cwd, *args: str) -> subprocess.CompletedProcess:
    """`python -m imagegen.grant …` as an operator runs it, with the bot's environment only (cwd: no .env)."""
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": dsn, "FREE_CREDITS": "3", "TELEGRAM_BOT_TOKEN": "1:x",
           "KIE_API_KEY": "k", "PUBLIC_BASE_URL": "https://bot.example.com", "CALLBACK_SECRET": "c"}
    return subprocess.run([sys.executable, "-m", "imagegen.grant", *args], cwd=cwd,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)


async def test_the_grant_command_adds_credits_once_per_key_and_refuses_bad_input(pool, pg_dsn, tmp_path):
    ledger, u = Ledger(pool, free_credits=3), user()
    assert await ledger.balance(u) == 3
    key = f"ticket-{uuid.uuid4().hex[:8]}"
    first = await asyncio.to_thread(run_grant, pg_dsn, tmp_path, str(u), "7", "--reason", "outage", "--key", key)
    again = await asyncio.to_thread(run_grant, pg_dsn, tmp_path, str(u), "7", "--reason", "outage", "--key", key)
    assert (first.returncode, again.returncode) == (0, 0), (first.stderr, again.stderr)
    assert "+7" in first.stdout and "already granted" in again.stdout
    assert await ledger.balance(u) == 10
    (entry,) = [e for e in await ledger.entries(u) if e["kind"] == "grant"]
    assert (entry["delta"], entry["note"]) == (7, "outage")
    for bad, says in ((["abc", "5"], "not a Telegram user id"), ([str(u), "0"], "between 1 and"),
                      ([str(u), "-3"], "between 1 and"), ([str(u), "2.5"], "not a whole number")):
        done = await asyncio.to_thread(run_grant, pg_dsn, tmp_path, *bad)
        assert done.returncode == 2 and says in done.stderr, (bad, done.stderr)
    assert await ledger.balance(u) == 10
    # a database without the credit tables (migrations not applied): said so, nothing else
    empty = f"grant_empty_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE DATABASE {empty}")
    try:
        done = await asyncio.to_thread(run_grant, pg_dsn.rsplit("/", 1)[0] + f"/{empty}", tmp_path, str(u), "5")
        assert done.returncode == 1 and "credit tables are missing" in done.stderr, done.stderr
    finally:
        await pool.execute(f"DROP DATABASE {empty}")
