"""The Kie account, watched (imagegen/kie_account.py): the credit endpoint, a 402 from createTask
that closes the bot to new generations (users told "temporarily unavailable", nobody charged with a
Kie task), and the scheduled check that opens it again once Kie has credits."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from imagegen.bot import generation as bot_generation
from imagegen.credits import Ledger
from imagegen.i18n import t
from imagegen.kie import KieClient, KieError
from imagegen.kie_account import (AccountCheckInput, AccountCheckResult, account, check_account, reconcile,
                                  schedule_for, set_account)
from tests.support.chat import press, wait_text
from tests.support.kie_sim import KieSimulator


@pytest.fixture
async def ledger(pool):
    await set_account(pool, out_of_credits=False, reason="test start")
    yield Ledger(pool)
    await set_account(pool, out_of_credits=False, reason="test over")  # never leave the bot closed
    bot_generation._kie_flag.invalidate()


async def test_the_simulator_spends_credits_and_answers_402_as_kie(ledger):
    async with KieSimulator(api_key="k") as kie:
        kie.credits = 2
        client = KieClient(kie.base_url, "k")
        try:
            assert await client.credit() == 2
            body = {"model": "z-image", "input": {"prompt": "p", "aspect_ratio": "1:1"}}
            await client.create_task(body)
            await client.create_task(body)
            with pytest.raises(KieError) as err:
                await client.create_task(body)
            assert err.value.code == 402 and not err.value.retryable
            assert await client.credit() == 0 and len(kie.tasks) == 2
        finally:
            await client.close()


async def test_the_check_records_the_balance_warns_when_low_and_settles_stale_reservations(ledger, pool, caplog):
    caplog.set_level(logging.INFO)
    async with KieSimulator(api_key="k") as kie:
        client = KieClient(kie.base_url, "k")
        try:
            kie.credits = 40
            result = await check_account(client, pool, warn_below=100)
            assert (result.credits, result.out_of_credits) == (40, False)
            assert any("KIE_CREDITS_LOW" in r.getMessage() for r in caplog.records)
            kie.credits = 0
            assert (await check_account(client, pool, warn_below=100)).out_of_credits
            assert (await account(pool))["out_of_credits"] is True
            kie.credits = 500
            assert not (await check_account(client, pool, warn_below=100)).out_of_credits
            assert (await account(pool))["credits"] == 500
        finally:
            await client.close()
    # a reservation nobody settled (its workflow was terminated) is given back once it is stale
    user, job = int(uuid.uuid4().int % 10**9) + 10**9, uuid.uuid4().hex[:16]
    await Ledger(pool, free_credits=3).reserve(job, user, 2)
    await pool.execute("UPDATE credit_entries SET created_at = now() - interval '3 hours' WHERE key = $1",
                       f"reserve:{job}")
    captured, released = await reconcile(pool, ledger, 2 * 3600)
    assert released >= 1 and await ledger.job_state(job) == "released" and await ledger.balance(user) == 3


async def test_the_bot_reads_the_flag_at_most_every_ttl_unless_invalidated(ledger, pool):
    flag = bot_generation.KieFlag(ttl=60)
    await set_account(pool, out_of_credits=True, reason="test")
    assert await flag.out_of_credits(pool) is True
    await set_account(pool, out_of_credits=False, reason="test")
    assert await flag.out_of_credits(pool) is True  # within the ttl: the row is not read again
    flag.invalidate()
    assert await flag.out_of_credits(pool) is False
    await set_account(pool, out_of_credits=True, reason="test")
    flag.invalidate()
    assert await flag.out_of_credits(pool) is True
    assert await bot_generation.KieFlag(ttl=60).out_of_credits(None) is False  # no database: not closed


def test_the_schedule_starts_the_check_every_n_minutes():
    s = schedule_for("q", 10, 100)
    assert s.action.workflow == "KieAccountWorkflow" and s.spec.intervals[0].every.total_seconds() == 600


@pytest.mark.e2e
async def test_kie_out_of_credits_closes_the_bot_until_a_check_sees_credits(stack, ledger):
    chat = int(uuid.uuid4().int % 10**8) + 900_000_000
    stack.kie.credits = 1
    await stack.start_bot()

    async def ask(prompt: str) -> None:
        stack.tg.user_send_command(chat, "/start")
        await press(stack, chat, "Z-Image")
        await wait_text(stack, chat, "Опишите")
        stack.tg.user_send_text(chat, prompt)
        await press(stack, chat, "1:1")

    await ask("a first fox")  # spends Kie's last credit
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 1, timeout=30)
    await ask("a second fox")  # createTask answers 402: this one fails, the user is told, the bot closes
    await wait_text(stack, chat, t("status.unavailable", "ru"), timeout=30, exact=True)
    assert (await account(stack.pool))["out_of_credits"] is True  # the createTask activity closed it
    bot_generation._kie_flag.invalidate()
    jobs_before = await stack.pool.fetchval("SELECT count(*) FROM generation_jobs WHERE user_id = $1", chat)
    tasks_before = stack.kie.create_calls
    await ask("a third fox")  # refused at once: no job, no workflow, no Kie call
    await stack.tg.wait_for(lambda: any(a.get("text") == t("status.unavailable", "ru")
                                        for a in stack.tg.answered_callbacks), timeout=10)
    assert await stack.pool.fetchval("SELECT count(*) FROM generation_jobs WHERE user_id = $1", chat) == jobs_before
    assert stack.kie.create_calls == tasks_before
    # Kie has credits again: the scheduled check (its workflow, as the schedule starts it) opens the bot
    stack.kie.credits = 10
    result = await stack.client.execute_workflow("KieAccountWorkflow", AccountCheckInput(warn_below=1),
                                                 id=f"kie-check-{uuid.uuid4().hex[:8]}", task_queue=stack.task_queue,
                                                 result_type=AccountCheckResult)
    assert result.credits == 10 and not result.out_of_credits
    bot_generation._kie_flag.invalidate()
    await ask("a fourth fox")
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 2, timeout=30)
