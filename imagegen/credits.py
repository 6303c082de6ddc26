"""Per-user credits: an append-only ledger in Postgres (migrations/007_credits.sql).

Every change of a balance is one `credit_entries` row with a unique idempotency key, written in the
same transaction as the balance (`credit_accounts`, locked FOR UPDATE), so each step can be repeated
— a retried activity, a replayed workflow, Telegram delivering one payment twice — and changes the
balance once. A balance never goes negative (a CHECK, and every debit checks first).

A generation's price is *reserved* before its Kie task is created, *captured* when the picture is
delivered and *released* (given back) on every other ending; capture and release exclude each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

RESERVE, CAPTURE, RELEASE = "reserve", "capture", "release"


@dataclass(frozen=True)
class Reservation:
    """outcome: "reserved" (taken now), "already" (taken before: a repeated step), "insufficient"
    (nothing taken), "settled" (this job's credits were already captured or released)."""

    outcome: str
    balance: int
    price: int

    @property
    def ok(self) -> bool:
        return self.outcome in ("reserved", "already")


@dataclass(frozen=True)
class Payment:
    """outcome: "credited" (now), "already" (this charge was credited before)."""

    outcome: str
    balance: int
    credits: int


@dataclass(frozen=True)
class Refund:
    """outcome: "refunded" (taken back now), "already", "unknown" (no such payment). `taken`: the
    credits taken back (at most what the user still has)."""

    outcome: str
    taken: int
    balance: int


@dataclass(frozen=True)
class Grant:
    """outcome: "granted" (now), "already" (this key was granted before: nothing changed)."""

    outcome: str
    delta: int
    balance: int


class Ledger:
    def __init__(self, pool: asyncpg.Pool, *, free_credits: int = 0) -> None:
        self.pool = pool
        self.free_credits = free_credits

    # -- accounts ---------------------------------------------------------------------------------

    async def _account(self, conn: asyncpg.Connection, user_id: int) -> int:
        """The user's balance, locked for this transaction; a new user's account starts with the free
        allowance (entry free:<user>)."""
        balance = await conn.fetchval("SELECT balance FROM credit_accounts WHERE user_id = $1 FOR UPDATE", user_id)
        if balance is not None:
            return balance
        await conn.execute("INSERT INTO credit_accounts (user_id, balance) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           user_id, self.free_credits)
        await conn.execute(
            "INSERT INTO credit_entries (key, user_id, kind, delta, balance, note) VALUES ($1, $2, 'free', $3, $3,"
            " 'free allowance') ON CONFLICT (key) DO NOTHING", f"free:{user_id}", user_id, self.free_credits)
        return await conn.fetchval("SELECT balance FROM credit_accounts WHERE user_id = $1 FOR UPDATE", user_id)

    async def _change(self, conn: asyncpg.Connection, *, key: str, user_id: int, kind: str, delta: int,
                      balance: int, job_id: str | None = None, charge_id: str | None = None,
                      note: str | None = None) -> int | None:
        """Append the entry `key` and apply `delta`; None (nothing changed) when the key exists."""
        new = balance + delta
        inserted = await conn.fetchval(
            "INSERT INTO credit_entries (key, user_id, kind, delta, balance, job_id, charge_id, note)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING RETURNING id",
            key, user_id, kind, delta, new, job_id, charge_id, note)
        if inserted is None:
            return None
        if delta:
            await conn.execute("UPDATE credit_accounts SET balance = $2, updated_at = now() WHERE user_id = $1",
                               user_id, new)
        return new

    async def balance(self, user_id: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._account(conn, user_id)

    async def grant(self, user_id: int, credits: int, key: str, note: str = "") -> Grant:
        """An operator's grant (positive) or correction (negative, never below zero), once per `key`."""
        async with self.pool.acquire() as conn, conn.transaction():
            balance = await self._account(conn, user_id)
            delta = max(credits, -balance)
            new = await self._change(conn, key=f"grant:{key}", user_id=user_id, kind="grant", delta=delta,
                                     balance=balance, note=note or None)
            return Grant("already", 0, balance) if new is None else Grant("granted", delta, new)

    async def entries(self, user_id: int, limit: int = 10) -> list[dict]:
        rows = await self.pool.fetch(
            "SELECT kind, delta, balance, job_id, charge_id, note, created_at FROM credit_entries"
            " WHERE user_id = $1 ORDER BY id DESC LIMIT $2", user_id, limit)
        return [dict(r) for r in rows]

    # -- a generation -----------------------------------------------------------------------------

    async def reserve(self, job_id: str, user_id: int, price: int) -> Reservation:
        async with self.pool.acquire() as conn, conn.transaction():
            balance = await self._account(conn, user_id)
            kinds = await self._job_kinds(conn, job_id)
            if CAPTURE in kinds or RELEASE in kinds:
                return Reservation("settled", balance, price)
            if RESERVE in kinds:
                return Reservation("already", balance, price)
            if balance < price:
                return Reservation("insufficient", balance, price)
            new = await self._change(conn, key=f"reserve:{job_id}", user_id=user_id, kind=RESERVE, delta=-price,
                                     balance=balance, job_id=job_id)
            return Reservation("reserved", balance if new is None else new, price)

    async def capture(self, job_id: str) -> str:
        """The picture was delivered: the reservation is spent. "captured", "already", "released"
        (given back before: nothing to take), "none" (nothing was reserved)."""
        return await self._settle(job_id, CAPTURE)

    async def release(self, job_id: str, note: str = "") -> str:
        """Any other ending: the reservation goes back. "released", "already", "captured" (the picture
        was delivered: nothing to give back), "none"."""
        return await self._settle(job_id, RELEASE, note)

    async def _settle(self, job_id: str, kind: str, note: str = "") -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            reserved = await conn.fetchrow(
                "SELECT user_id, delta FROM credit_entries WHERE key = $1", f"{RESERVE}:{job_id}")
            if reserved is None:
                return "none"
            balance = await self._account(conn, reserved["user_id"])  # locks the account: settles are serial
            kinds = await self._job_kinds(conn, job_id)
            if kind in kinds:
                return "already"
            other = RELEASE if kind == CAPTURE else CAPTURE
            if other in kinds:
                return "released" if other == RELEASE else "captured"
            delta = 0 if kind == CAPTURE else -reserved["delta"]
            await self._change(conn, key=f"{kind}:{job_id}", user_id=reserved["user_id"], kind=kind, delta=delta,
                               balance=balance, job_id=job_id, note=note or None)
            return "captured" if kind == CAPTURE else "released"

    @staticmethod
    async def _job_kinds(conn: asyncpg.Connection, job_id: str) -> set[str]:
        rows = await conn.fetch("SELECT kind FROM credit_entries WHERE job_id = $1", job_id)
        return {r["kind"] for r in rows}

    async def job_state(self, job_id: str) -> str:
        """The ledger state of one generation: "none", "reserved", "captured" or "released"."""
        async with self.pool.acquire() as conn:
            kinds = await self._job_kinds(conn, job_id)
        for kind, state in ((CAPTURE, "captured"), (RELEASE, "released"), (RESERVE, "reserved")):
            if kind in kinds:
                return state
        return "none"

    # -- Telegram Stars ---------------------------------------------------------------------------

    async def credit_payment(self, *, charge_id: str, user_id: int, pack: str, stars: int, credits: int) -> Payment:
        async with self.pool.acquire() as conn, conn.transaction():
            new_payment = await conn.fetchval(
                "INSERT INTO star_payments (charge_id, user_id, pack, stars, credits) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (charge_id) DO NOTHING RETURNING 1", charge_id, user_id, pack, stars, credits)
            balance = await self._account(conn, user_id)
            if new_payment is None:
                return Payment("already", balance, credits)
            new = await self._change(conn, key=f"pay:{charge_id}", user_id=user_id, kind="payment", delta=credits,
                                     balance=balance, charge_id=charge_id, note=f"pack {pack}, {stars} XTR")
            return Payment("credited", balance if new is None else new, credits)

    async def payment(self, charge_id: str) -> dict | None:
        row = await self.pool.fetchrow("SELECT * FROM star_payments WHERE charge_id = $1", charge_id)
        return dict(row) if row else None

    async def refund_payment(self, charge_id: str) -> Refund:
        """Take a refunded payment's credits back (what is left of them), once."""
        async with self.pool.acquire() as conn, conn.transaction():
            pay = await conn.fetchrow("SELECT * FROM star_payments WHERE charge_id = $1 FOR UPDATE", charge_id)
            if pay is None:
                return Refund("unknown", 0, 0)
            balance = await self._account(conn, pay["user_id"])
            if pay["refunded_at"] is not None:
                return Refund("already", 0, balance)
            taken = min(pay["credits"], balance)
            new = await self._change(conn, key=f"refund:{charge_id}", user_id=pay["user_id"], kind="refund",
                                     delta=-taken, balance=balance, charge_id=charge_id,
                                     note=f"{pay['stars']} XTR refunded")
            await conn.execute("UPDATE star_payments SET refunded_at = now() WHERE charge_id = $1", charge_id)
            return Refund("refunded", taken, balance if new is None else new)
