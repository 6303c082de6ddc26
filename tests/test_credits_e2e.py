"""Credits through the whole stack (CREDITS=on): every ending of a generation leaves the balance
right (docs/reliability.md, "Credits"), Telegram Stars payments credited once, refunds, /balance."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio

from imagegen.bot import generation as bot_generation
from imagegen.credits import Ledger
from imagegen.i18n import t
from imagegen.refund import refund
from tests.support.chat import answers, press, wait_text
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
FREE = 3


@pytest_asyncio.fixture
async def cstack(temporal_env, pg_dsn, pool):
    s = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue=f"credits-{uuid.uuid4().hex[:10]}",
              credits=True, free_credits=FREE)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def new_chat() -> int:
    return int(uuid.uuid4().int % 10**8) + 800_000_000


async def ending(s, handle, timeout=60):
    return (await asyncio.wait_for(handle.result(), timeout)).outcome


async def test_every_ending_leaves_the_balance_right(cstack):
    s = cstack
    ledger = Ledger(s.pool, free_credits=FREE)
    results = {}

    async def run(name, price=1, after=None, **kwargs):
        chat = new_chat()
        handle, job_id, _ = await s.start_generation(chat_id=chat, price=price, **kwargs)
        if after:
            after(chat)
        return name, chat, job_id, handle

    # no result within the poll schedule (12 s) → timeout → released: started first, it runs out
    # while the other endings happen
    s.kie.delay = 120
    timed_out = await run("timeout")
    await s.tg.wait_for(lambda: len(s.kie.tasks) == 1, timeout=10)
    # delivered → captured; Kie fails / refuses the prompt → released; the user blocked the bot →
    # released; the user or an operator cancels → released
    s.kie.delay = 0.3
    delivered = await run("delivered")
    assert await ending(s, delivered[3]) == "done"
    s.kie.fail = True
    failed = await run("kie fail")
    assert await ending(s, failed[3]) == "failed"
    s.kie.fail = False
    s.kie.fail_msg = "Invalid prompt: prompt contains prohibited content"
    refused = await run("refusal", prompt="a fox [fail]")
    assert await ending(s, refused[3]) == "failed"
    s.kie.delay = 1.0
    undeliverable = await run("undeliverable", after=s.tg.block_user)  # blocked the bot while Kie draws
    assert await ending(s, undeliverable[3]) == "undeliverable"
    s.kie.delay = 30
    cancelled = await run("cancel")
    await asyncio.sleep(1.5)
    await cancelled[3].cancel()
    with pytest.raises(Exception):
        await asyncio.wait_for(cancelled[3].result(), 30)
    assert await ending(s, timed_out[3]) == "timeout"
    for name, chat, job_id, handle in (delivered, failed, refused, undeliverable, cancelled, timed_out):
        results[name] = (await ledger.job_state(job_id), await ledger.balance(chat))
        status = await handle.query("status")
        assert status["credits"] == results[name][0] and status["price"] == 1, (name, status)
    assert results == {
        "delivered": ("captured", FREE - 1), "kie fail": ("released", FREE), "refusal": ("released", FREE),
        "undeliverable": ("released", FREE), "cancel": ("released", FREE), "timeout": ("released", FREE),
    }
    # too little balance: the workflow's reservation refuses (no Kie task), the user is told
    poor = new_chat()
    tasks = len(s.kie.tasks)
    handle, job_id, _ = await s.start_generation(chat_id=poor, price=FREE + 1)
    assert await ending(s, handle) == "failed"
    assert len(s.kie.tasks) == tasks and await ledger.balance(poor) == FREE
    assert s.tg.messages(poor)[0]["text"] == t("status.credits_low", "ru")


async def test_a_user_buys_a_pack_generates_and_a_failure_is_refunded(cstack):
    s = cstack
    chat = new_chat()
    ledger = Ledger(s.pool, free_credits=FREE)
    await s.start_bot()
    s.tg.user_send_command(chat, "/buy")
    await press(s, chat, "50 ⭐")  # the 10-credit pack
    (invoice,) = await s.tg.wait_for(lambda: [i for i in s.tg.invoices if i["chat_id"] == chat], timeout=10)
    assert invoice["currency"] == "XTR" and invoice["total_amount"] == 50
    ok, charge, took = await s.tg.user_pay(chat, invoice, deliveries=2)  # Telegram sends it twice
    assert ok and took < 10
    await wait_text(s, chat, t("buy.credited", "ru", credits=10, balance=FREE + 10), timeout=10)
    await asyncio.sleep(1.0)
    credited = [m for m in s.tg.messages(chat) if (m.get("text") or "").startswith("✅ Начислено")]
    assert len(credited) == 1 and await ledger.balance(chat) == FREE + 10

    async def generate(prompt):
        s.tg.user_send_command(chat, "/start")
        await press(s, chat, "Z-Image")
        await wait_text(s, chat, "Опишите")
        s.tg.user_send_text(chat, prompt)
        await press(s, chat, "1:1")

    await generate("a fox")
    await s.tg.wait_for(lambda: len(s.photos_for(chat)) == 1, timeout=30)
    await wait_text(s, chat, t("status.done", "ru"), timeout=10, exact=True)
    s.kie.fail = True
    await generate("a second fox")
    await wait_text(s, chat, "❌", timeout=30)
    s.kie.fail = False
    await asyncio.sleep(1.0)
    assert await ledger.balance(chat) == FREE + 10 - 1  # the failure was given back
    s.tg.user_send_command(chat, "/balance")
    await wait_text(s, chat, f"💳 Ваш баланс: {FREE + 9} кредитов.", timeout=10)
    # an operator refunds the payment: Telegram returns the Stars, the credits are taken back (once)
    said = []
    assert await refund(charge, s.config, out=said.append) == 0
    assert s.tg.star_payments[charge]["refunded"] and await ledger.balance(chat) == FREE - 1
    assert await refund(charge, s.config, out=said.append) == 0 and await ledger.balance(chat) == FREE - 1
    assert await refund("stxNOSUCH", s.config, out=said.append) == 1


async def test_the_bot_tells_the_price_and_starts_nothing_when_the_balance_is_too_low(cstack):
    """The ratio tap asks the dispatcher's ledger (dp["ledger"]) before anything starts."""
    s = cstack
    chat = new_chat()
    await Ledger(s.pool, free_credits=FREE).grant(chat, -FREE, key=f"test-empty-{chat}")
    await s.start_bot()
    s.tg.user_send_command(chat, "/start")
    await press(s, chat, "Z-Image")
    await wait_text(s, chat, "Опишите")
    s.tg.user_send_text(chat, "a fox with no credits")
    await press(s, chat, "1:1")
    need = t("credits.need", "ru", price=1, balance=0)
    await s.tg.wait_for(lambda: need in answers(s), timeout=10)
    assert await s.pool.fetchval("SELECT count(*) FROM generation_jobs WHERE user_id = $1", chat) == 0
    assert not s.kie.tasks


async def test_the_command_menu_offers_buy_balance_and_paysupport(cstack):
    """CREDITS=on: the menus published at start (every language) and a chat's after /lang end with
    the payment commands (with credits off they are absent: tests/test_bot_languages.py)."""
    s = cstack
    await s.start_bot()
    await s.tg.wait_for(lambda: len(s.tg.command_sets) >= 6)
    names = ["start", "help", "cancel", "history", "lang", "buy", "balance", "paysupport"]
    for (where, code), menu in s.tg.command_sets.items():
        lang = "ru" if code in ("ru", "uk", "be", "kk") else "en"
        assert [c["command"] for c in menu] == names, (where, code)
        assert [c["description"] for c in menu] == [t(f"cmd.{n}", lang) for n in names], (where, code)
    chat = new_chat()
    s.tg.user_send_command(chat, "/lang")
    await press(s, chat, "English")
    menu = await s.tg.wait_for(lambda: s.tg.command_sets.get((f"chat:{chat}", "")), timeout=10)
    assert [c["command"] for c in menu] == names and menu[-1]["description"] == "Help with a payment"


async def test_pre_checkout_is_answered_in_time_under_load_and_a_forged_invoice_is_refused(cstack):
    s = cstack
    await s.start_bot()
    chats = [new_chat() for _ in range(20)]
    for chat in chats:
        s.tg.user_send_command(chat, "/buy")
    for chat in chats:
        await press(s, chat, "50 ⭐")
    invoices = await s.tg.wait_for(lambda: len([i for i in s.tg.invoices if i["chat_id"] in chats]) == 20 and
                                   [i for i in s.tg.invoices if i["chat_id"] in chats], timeout=20)
    answers = await asyncio.gather(*(s.tg.user_pay(i["chat_id"], i) for i in invoices))
    assert all(ok for ok, _, _ in answers) and max(took for _, _, took in answers) < 10
    forged = dict(invoices[0], total_amount=1)  # a payload for another price
    ok, charge, _ = await s.tg.user_pay(forged["chat_id"], forged)
    assert not ok and charge is None


async def test_kie_out_of_credits_mid_burst_charges_nobody_for_a_failure_and_refuses_new_requests(cstack):
    """Issue 17: eight users at once while Kie's account holds credits for four. The four that Kie
    created are delivered and charged; the others get 402, are told "unavailable" and given their
    price back; a request after that is refused politely before anything starts."""
    s = cstack
    ledger = Ledger(s.pool, free_credits=FREE)
    s.kie.credits = 4
    await s.start_bot()
    chats = [new_chat() for _ in range(8)]

    async def ask(chat: int, prompt: str) -> None:
        s.tg.user_send_command(chat, "/start")
        await press(s, chat, "Z-Image")
        await wait_text(s, chat, "Опишите")
        s.tg.user_send_text(chat, prompt)
        await press(s, chat, "1:1")

    await asyncio.gather(*(ask(chat, f"a fox number {i}") for i, chat in enumerate(chats)))
    done, unavailable = t("status.done", "ru"), t("status.unavailable", "ru")

    def endings():
        texts = {chat: [m.get("text") for m in s.tg.messages(chat)] for chat in chats}
        return {chat: "done" if done in x else "unavailable" if unavailable in x else None for chat, x in texts.items()}

    await s.tg.wait_for(lambda: None not in endings().values(), timeout=60)
    await asyncio.sleep(1.0)  # nothing more arrives: one picture each at most
    ended = endings()
    delivered = [chat for chat, e in ended.items() if e == "done"]
    assert len(delivered) == 4 and all(len(s.photos_for(chat)) == 1 for chat in delivered)
    assert all(not s.photos_for(chat) for chat in chats if chat not in delivered)
    balances = {chat: await ledger.balance(chat) for chat in chats}
    assert all(balances[chat] == FREE - 1 for chat in delivered)  # charged once for the picture
    assert all(balances[chat] == FREE for chat in chats if chat not in delivered)  # the failure given back
    kinds = await s.pool.fetch("SELECT kind, count(*) AS n FROM credit_entries WHERE user_id = ANY($1::bigint[]) "
                               "AND job_id IS NOT NULL GROUP BY kind", chats)
    assert {r["kind"]: r["n"] for r in kinds} == {"reserve": 8, "capture": 4, "release": 4}
    # The bot is closed now: a new request is told "unavailable" at once, and nothing starts.
    bot_generation._kie_flag.invalidate()
    late = new_chat()
    calls = s.kie.create_calls
    await ask(late, "one more fox")
    await s.tg.wait_for(lambda: any(a.get("text") == unavailable for a in s.tg.answered_callbacks), timeout=10)
    assert await s.pool.fetchval("SELECT count(*) FROM generation_jobs WHERE user_id = $1", late) == 0
    assert s.kie.create_calls == calls and await ledger.balance(late) == FREE
