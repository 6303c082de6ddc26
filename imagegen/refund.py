"""An operator's refund of a Telegram Stars payment: ``python -m imagegen.refund <telegram_payment_charge_id>``.

Asks Telegram to return the Stars (``refundStarPayment``), then takes the payment's credits back
from the user's balance (what is left of them; imagegen/credits.py), once. Safe to repeat: a charge
Telegram already refunded (``CHARGE_ALREADY_REFUNDED``) still gets its credits taken back, and the
ledger's refund entry is written once. Exit status: 0 refunded (now or before), 1 unknown charge,
2 Telegram refused."""

from __future__ import annotations

import asyncio
import sys

from aiogram.exceptions import TelegramBadRequest

from imagegen.credits import Ledger
from imagegen.delivery import create_bot
from imagegen.jobs import create_pool
from imagegen.settings import Settings


async def refund(charge_id: str, settings: Settings, out=print) -> int:
    pool = await create_pool(settings.require_database_url(), max_size=2)
    bot = create_bot(settings.telegram_bot_token.get_secret_value(), settings.telegram_api_base)
    try:
        ledger = Ledger(pool, free_credits=settings.free_credits)
        payment = await ledger.payment(charge_id)
        if payment is None:
            out(f"refund: no payment with charge id {charge_id}")
            return 1
        try:
            await bot.refund_star_payment(user_id=payment["user_id"], telegram_payment_charge_id=charge_id)
        except TelegramBadRequest as exc:
            if "ALREADY_REFUNDED" not in exc.message.upper():
                out(f"refund: Telegram refused: {exc.message}")
                return 2
        result = await ledger.refund_payment(charge_id)
        out(f"refund: {payment['stars']} XTR to user {payment['user_id']} — credits taken back: {result.taken} "
            f"({result.outcome}); balance now {result.balance}")
        return 0
    finally:
        await bot.session.close()
        await pool.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 64
    return asyncio.run(refund(argv[0], Settings.from_env()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
