"""Credits and Telegram Stars: /buy (packs → an invoice in XTR), the pre-checkout answer, the
successful payment (credited once per telegram_payment_charge_id), /balance and /paysupport.

Only registered with CREDITS=on. The ledger is imagegen/credits.py; refunds are an operator's
command (python -m imagegen.refund, see the README's operator guide)."""

from __future__ import annotations

import logging
from itertools import product

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
)

from imagegen.credits import Ledger
from imagegen.i18n import t
from imagegen.logs import log_event
from imagegen.models import MODELS
from imagegen.prices import PACKS, Pack, price
from imagegen.redact import redact

CURRENCY = "XTR"  # Telegram Stars; digital goods take no provider token
PAYLOAD_PREFIX = "credits"


class BuyPack(CallbackData, prefix="buy"):
    key: str


def invoice_payload(pack: Pack, user_id: int) -> str:
    return f"{PAYLOAD_PREFIX}:{pack.key}:{user_id}"


def parse_payload(payload: str, user_id: int, currency: str, total: int) -> Pack | None:
    """The pack an invoice payload names, if it is one of ours, for this user, at its price."""
    parts = (payload or "").split(":")
    if len(parts) != 3 or parts[0] != PAYLOAD_PREFIX or parts[2] != str(user_id):
        return None
    pack = PACKS.get(parts[1])
    if pack is None or currency != CURRENCY or total != pack.stars:
        return None
    return pack


def packs_keyboard(lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=t("buy.pack", lang, credits=p.credits, stars=p.stars),
                              callback_data=BuyPack(key=p.key).pack())] for p in PACKS.values()])


def price_list(lang: str) -> str:
    """One line per model: its price, or the range over its options (Seedream: 2–3)."""
    lines = []
    for model in MODELS.values():
        names = [o.name for o in model.options]
        prices = [price(model.key, dict(zip(names, values))) for values in product(*(o.values for o in model.options))]
        low, high = min(prices), max(prices)
        lines.append(t("balance.price_line", lang, model=model.title(lang), price=low if low == high else f"{low}–{high}"))
    return "\n".join(lines)


async def on_buy(message: Message, lang: str = "ru") -> None:
    await message.answer(t("buy.choose", lang), reply_markup=packs_keyboard(lang))


async def on_pack(query: CallbackQuery, callback_data: BuyPack, bot: Bot, lang: str = "ru") -> None:
    pack = PACKS.get(callback_data.key)
    if pack is None or query.message is None:
        await query.answer(t("stale_button", lang))
        return
    await bot.send_invoice(
        chat_id=query.message.chat.id,
        title=t("buy.title", lang, credits=pack.credits),
        description=t("buy.description", lang, credits=pack.credits),
        payload=invoice_payload(pack, query.from_user.id),
        currency=CURRENCY,
        prices=[LabeledPrice(label=t("buy.title", lang, credits=pack.credits), amount=pack.stars)],
        provider_token="",
    )
    log_event(f"user-{query.from_user.id}", "INVOICE_SENT", pack=pack.key, stars=pack.stars)
    await query.answer()


async def on_pre_checkout(query: PreCheckoutQuery, lang: str = "ru") -> None:
    """Telegram waits at most 10 s for this answer: it only checks the payload (no database)."""
    pack = parse_payload(query.invoice_payload, query.from_user.id, query.currency, query.total_amount)
    if pack is None:
        log_event(f"user-{query.from_user.id}", "PRE_CHECKOUT_REFUSED", payload=redact(query.invoice_payload)[:80])
        await query.answer(ok=False, error_message=t("buy.invalid", lang))
        return
    await query.answer(ok=True)
    log_event(f"user-{query.from_user.id}", "PRE_CHECKOUT_OK", pack=pack.key)


async def on_paid(message: Message, ledger: Ledger | None = None, lang: str = "ru") -> None:
    sp = message.successful_payment
    user_id = message.from_user.id if message.from_user else message.chat.id
    pack = parse_payload(sp.invoice_payload, user_id, sp.currency, sp.total_amount)
    corr = f"user-{user_id}"
    if pack is None or ledger is None:
        # Telegram took the Stars for an invoice we cannot match: an operator refunds it (/paysupport).
        log_event(corr, "PAYMENT_UNMATCHED", severity=logging.ERROR, charge_id=sp.telegram_payment_charge_id,
                  payload=redact(sp.invoice_payload)[:80], amount=sp.total_amount)
        await message.answer(t("buy.unmatched", lang))
        return
    paid = await ledger.credit_payment(charge_id=sp.telegram_payment_charge_id, user_id=user_id, pack=pack.key,
                                       stars=sp.total_amount, credits=pack.credits)
    log_event(corr, "PAYMENT_CREDITED" if paid.outcome == "credited" else "PAYMENT_DUPLICATE",
              charge_id=sp.telegram_payment_charge_id, pack=pack.key, credits=pack.credits, balance=paid.balance)
    if paid.outcome == "credited":  # a second delivery of the same payment is answered by nothing
        await message.answer(t("buy.credited", lang, credits=pack.credits, balance=paid.balance))


async def on_balance(message: Message, ledger: Ledger | None = None, lang: str = "ru") -> None:
    if ledger is None or message.from_user is None:
        return
    balance = await ledger.balance(message.from_user.id)
    await message.answer(t("balance.text", lang, balance=balance, prices=price_list(lang)))


async def on_paysupport(message: Message, lang: str = "ru") -> None:
    await message.answer(t("paysupport", lang))


def build() -> Router:
    router = Router(name="payments")
    router.message.register(on_buy, Command("buy"))
    router.message.register(on_balance, Command("balance"))
    router.message.register(on_paysupport, Command("paysupport"))
    router.callback_query.register(on_pack, BuyPack.filter())
    router.pre_checkout_query.register(on_pre_checkout)
    router.message.register(on_paid, F.successful_payment)
    return router
