"""An operator's grant of credits: ``python -m imagegen.grant <user_id> <amount> [--reason TEXT] [--key KEY]``.

Adds `amount` credits to the user's balance through the ledger (imagegen/credits.py, entry
``grant:<key>``), once per key: running it again with the same key changes nothing and says so. The
key defaults to ``<user_id>:<amount>:<reason>``, so an accidental second run is harmless; give
``--key`` (e.g. a ticket number) to grant the same amount again. Run it with the bot's environment
(DATABASE_URL, FREE_CREDITS: a user new to the bot starts with the free allowance first).
Exit status: 0 granted (now or before), 1 the database is not ready (no credit tables, unreachable),
2 bad arguments."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from imagegen.credits import Ledger
from imagegen.jobs import create_pool
from imagegen.settings import Settings, SettingsError

MAX_GRANT = 1_000_000  # a typo guard: far above any pack


def _user_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a Telegram user id (an integer): {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a Telegram user id is positive: {value}")
    return value


def _amount(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of credits: {text!r}") from None
    if not 0 < value <= MAX_GRANT:
        raise argparse.ArgumentTypeError(f"the amount must be between 1 and {MAX_GRANT}: {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m imagegen.grant", description="Grant credits to a user, once per key.")
    p.add_argument("user_id", type=_user_id, help="the Telegram user id")
    p.add_argument("amount", type=_amount, help="credits to add (a positive integer)")
    p.add_argument("--reason", default="", help="why (kept in the ledger entry's note)")
    p.add_argument("--key", default="", help="idempotency key (default: <user_id>:<amount>:<reason>)")
    return p


async def grant(user_id: int, amount: int, settings: Settings, *, reason: str = "", key: str = "") -> int:
    key = key or f"{user_id}:{amount}:{reason}"
    try:
        pool = await create_pool(settings.require_database_url(), max_size=2)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"grant: cannot reach Postgres: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        result = await Ledger(pool, free_credits=settings.free_credits).grant(user_id, amount, key, reason)
    except asyncpg.UndefinedTableError as exc:
        print(f"grant: the credit tables are missing ({exc}): apply the migrations first "
              "(python -m imagegen.migrate, or start the bot or the worker)", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    if result.outcome == "already":
        print(f"grant: already granted with key {key!r}, nothing changed; balance of user {user_id}: {result.balance}")
    else:
        print(f"grant: +{result.delta} credits to user {user_id} (key {key!r}); balance now {result.balance}")
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)  # bad arguments: a message and exit status 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"grant: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(grant(args.user_id, args.amount, settings, reason=args.reason, key=args.key))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
