"""Job repository over an asyncpg pool, including the atomic delivery lock.

The lock: one UPDATE takes it (``delivering_at = now(), delivery_owner = <token>``) only while the
job is undelivered and nobody holds a live lease. ``delivered_at`` is set only after Telegram has
accepted the photo, in the same statement that records the Telegram message id. The holder renews
its lease with every heartbeat (``extend_delivery_lease``), so the lease can be short: a live holder
is never overtaken, a dead one is replaced about one lease after its last renewal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

_COLUMNS = (
    "id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio, external_task_id, state, "
    "result_urls, error, status_message_id, delivering_at, delivery_owner, delivered_at, "
    "delivered_message_id, delivery_level, created_at, updated_at, options::text AS options, "
    "input_files::text AS input_files, uploads::text AS uploads"
)

_SELECT_JOB = f"SELECT {_COLUMNS} FROM generation_jobs WHERE id = $1"
# Idempotent: a job id inserted before returns no row (the caller reads it with _SELECT_JOB).
_INSERT_JOB = f"""
    INSERT INTO generation_jobs (id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio, status_message_id,
                                 options, input_files, lang)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11)
    ON CONFLICT (id) DO NOTHING
    RETURNING {_COLUMNS}
"""
# The same insert, or the row inserted before, in one round trip (create_job: the bot has nearly always
# inserted the row already). A row inserted by a transaction that committed after this statement began
# is in conflict but not in its snapshot: then no row, and the caller reads it with _SELECT_JOB.
_INSERT_OR_SELECT_JOB = f"""
    WITH inserted AS ({_INSERT_JOB})
    SELECT * FROM inserted
    UNION ALL
    SELECT {_COLUMNS} FROM generation_jobs WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM inserted)
"""


@dataclass(frozen=True)
class LockResult:
    """Outcome of try_acquire_delivery_lock.

    outcome: "won" (job is the locked row), "delivered" (someone delivered it already),
    "busy" (another owner holds a live lease), "missing" (no such job).
    """

    outcome: str
    job: dict[str, Any] | None = None
    lease_left: float = 0.0  # "busy": seconds until the holder's lease runs out unless it renews it


@dataclass(frozen=True)
class Admission:
    """Outcome of admit_job.

    outcome: "created" (the job row was inserted), "exists" (this job id was admitted before: a
    repeated request, not counted again), "too_many_active" or "too_many_recent" (a per-user limit;
    nothing inserted). retry_after: seconds until the per-minute limit lets a request through
    (0 when unknown, e.g. for the active limit, which frees up when a generation ends).
    """

    outcome: str
    job: dict[str, Any] | None = None  # the job row as JSON (migration 010): created or found
    active: int = 0
    recent: int = 0
    retry_after: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.outcome in ("created", "exists")


# States in which a job still occupies one of its user's concurrent slots (see the migration).
ACTIVE_STATES = ("created", "submitted", "success")
# Advisory-lock class (two-int form) that serialises admissions of one user.
_USER_LIMIT_LOCK = 0x11A6E


class JobRepository:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def create_job(
        self,
        *,
        job_id: str,
        workflow_id: str,
        user_id: int,
        chat_id: int,
        model: str,
        prompt: str,
        aspect_ratio: str,
        status_message_id: int | None,
        options: dict[str, str] | None = None,
        input_files: list[dict[str, Any]] | None = None,
        lang: str | None = None,
    ) -> dict[str, Any]:
        """Insert the job, or return the existing row when it was inserted before (idempotent)."""
        row = await self.pool.fetchrow(
            _INSERT_OR_SELECT_JOB, job_id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio, status_message_id,
            json.dumps(options or {}), json.dumps(input_files or []), lang,
        )
        if row is None:
            row = await self.pool.fetchrow(_SELECT_JOB, job_id)
        return dict(row)

    async def admit_job(
        self,
        *,
        job_id: str,
        workflow_id: str,
        user_id: int,
        chat_id: int,
        model: str,
        prompt: str,
        aspect_ratio: str,
        status_message_id: int | None,
        max_active: int,
        max_per_minute: int,
        active_window_seconds: float = 3600.0,
        options: dict[str, str] | None = None,
        input_files: list[dict[str, Any]] | None = None,
        lang: str | None = None,
    ) -> Admission:
        """Insert the job only if its user is under both limits, atomically per user.

        Active: jobs in ACTIVE_STATES, not delivered, created within `active_window_seconds` (a job
        stuck longer than any workflow can run does not block its user forever). Recent: jobs
        created in the last 60 s. A job id that already exists is returned as "exists" without
        checking limits (a double press is one request). Same row as create_job would insert.
        """
        # One round trip (migration 010, the function admit_job): the user's advisory lock, the
        # existing job, the user's counts and the insert, in this order, in one transaction.
        row = await self.pool.fetchrow(
            "SELECT outcome, active, waits, job FROM admit_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            " $13, $14, $15::jsonb, $16::jsonb, $17)",
            _USER_LIMIT_LOCK, str(user_id), user_id, list(ACTIVE_STATES), float(active_window_seconds), max_active,
            max_per_minute, job_id, workflow_id, chat_id, model, prompt, aspect_ratio, status_message_id,
            json.dumps(options or {}), json.dumps(input_files or []), lang,
        )
        outcome, job = row["outcome"], json.loads(row["job"]) if row["job"] is not None else None
        if outcome == "exists":
            return Admission("exists", job)
        active, waits = int(row["active"]), [float(w) for w in row["waits"]]
        if outcome == "too_many_recent":
            # The request fits once enough of the oldest ones have left the 60 s window.
            wait = waits[len(waits) - max_per_minute] if max_per_minute > 0 else 60.0
            return Admission("too_many_recent", active=active, recent=len(waits), retry_after=max(wait, 0.0))
        if outcome == "too_many_active":
            return Admission("too_many_active", active=active, recent=len(waits))
        return Admission("created", job, active=active + 1, recent=len(waits) + 1)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(_SELECT_JOB, job_id)
        return dict(row) if row else None

    async def get_for_user(self, job_id: str, user_id: int) -> dict[str, Any] | None:
        """The job when it belongs to this user (a button can only act on its own user's jobs)."""
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM generation_jobs WHERE id = $1 AND user_id = $2",
                                       job_id, user_id)
        return dict(row) if row else None

    async def recent_for_user(self, user_id: int, limit: int = 10) -> list[dict[str, Any]]:
        """The user's last `limit` jobs, newest first."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM generation_jobs WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2",
            user_id, limit,
        )
        return [dict(r) for r in rows]

    async def running_for_user(self, user_id: int, window_seconds: float = 3600.0) -> list[dict[str, Any]]:
        """The user's jobs that may still be running (what /cancel stops)."""
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM generation_jobs
                 WHERE user_id = $1 AND state = ANY($2::text[]) AND delivered_at IS NULL
                   AND created_at > now() - make_interval(secs => $3)
                 ORDER BY created_at""",
            user_id, list(ACTIVE_STATES), float(window_seconds),
        )
        return [dict(r) for r in rows]

    async def claim_create(self, job_id: str, seconds: float) -> tuple[bool, str | None, float]:
        """Claim the job's createTask call for `seconds` (migration 009: one Kie call at a time per
        job, whichever worker or attempt makes it). (claimed, the stored task id, seconds the other
        claim still holds): a task id stored meanwhile is returned instead of a claim."""
        claimed = await self.pool.fetchval(
            "UPDATE generation_jobs SET create_claimed_until = now() + make_interval(secs => $2)"
            " WHERE id = $1 AND external_task_id IS NULL"
            " AND (create_claimed_until IS NULL OR create_claimed_until <= now()) RETURNING true",
            job_id, float(seconds))
        if claimed:
            return True, None, 0.0
        row = await self.pool.fetchrow(
            "SELECT external_task_id, greatest(extract(epoch FROM create_claimed_until - now()), 0)::float8 AS held"
            " FROM generation_jobs WHERE id = $1", job_id)
        if row is None:
            return False, None, 0.0
        return False, row["external_task_id"], float(row["held"] or 0.0)

    async def release_create(self, job_id: str) -> None:
        """The claimed call did not create a task (Kie refused or failed): the next attempt may call."""
        await self.pool.execute("UPDATE generation_jobs SET create_claimed_until = NULL WHERE id = $1", job_id)

    async def set_task_id(self, job_id: str, task_id: str) -> None:
        await self.pool.execute(
            # The task id is always kept (an operator looks for it); the state moves on only from
            # 'created' (a cancel that came first stays 'cancelled').
            "UPDATE generation_jobs SET external_task_id = $2,"
            " state = CASE WHEN state = 'created' THEN 'submitted' ELSE state END, updated_at = now()"
            " WHERE id = $1",
            job_id, task_id,
        )

    async def set_state(
        self, job_id: str, state: str, *, error: str | None = None, result_urls: list[str] | None = None
    ) -> None:
        """Record a generation outcome. Never moves a delivered or cancelled job elsewhere (a poll
        still in flight when the generation was cancelled must not overwrite 'cancelled')."""
        await self.pool.execute(
            """
            UPDATE generation_jobs
               SET state = $2, error = COALESCE($3, error),
                   result_urls = COALESCE($4, result_urls), updated_at = now()
             WHERE id = $1 AND delivered_at IS NULL AND state <> 'cancelled'
            """,
            job_id, state, error, result_urls,
        )

    async def record_upload(self, job_id: str, index: int, upload: dict[str, Any]) -> bool:
        """Record that input picture `index` of the job is on Kie's file host (replacing an earlier
        record of that index). False when there is no such job."""
        result = await self.pool.execute(
            "UPDATE generation_jobs SET uploads = uploads || jsonb_build_object($2::text, $3::jsonb),"
            " updated_at = now() WHERE id = $1",
            job_id, str(index), json.dumps(upload),
        )
        return result.endswith(" 1")

    # -- requests that never became a workflow (the bot's sweep) --------------------------------

    async def unstarted_jobs(self, older_than_seconds: float, limit: int = 50,
                             after: tuple[Any, str] | None = None) -> list[dict[str, Any]]:
        """Jobs still in 'created' (admitted by the bot; the create_task activity never ran) for
        longer than `older_than_seconds`, oldest first, each with its age in seconds (`age_s`) and
        the language to speak (`lang`: the conversation's, stored with the request; for rows from
        before that, the user's /lang choice; None when neither is known). `after`: (created_at, id)
        of the last row of the previous page (keyset paging: a pass sees every such job)."""
        rows = await self.pool.fetch(
            f"""
            SELECT {_COLUMNS}, EXTRACT(EPOCH FROM now() - created_at)::float8 AS age_s,
                   COALESCE(generation_jobs.lang,
                            (SELECT lang FROM bot_users u WHERE u.user_id = generation_jobs.user_id)) AS lang
              FROM generation_jobs
             WHERE state = 'created' AND created_at < now() - make_interval(secs => $1)
               AND ($3::timestamptz IS NULL OR (created_at, id) > ($3::timestamptz, $4::text))
             ORDER BY created_at, id LIMIT $2
            """,
            float(older_than_seconds), limit, after[0] if after else None, after[1] if after else None,
        )
        return [dict(r) for r in rows]

    async def close_unstarted(self, job_id: str, error: str, state: str = "error") -> bool:
        """Give up on a job still in 'created' (frees the user's slot): it never started, or its
        workflow ended without recording it (`state`: that ending). False if it moved on meanwhile."""
        result = await self.pool.execute(
            "UPDATE generation_jobs SET state = $3, error = $2, updated_at = now()"
            " WHERE id = $1 AND state = 'created'",
            job_id, error, state,
        )
        return result.endswith(" 1")

    # -- the one final message of a generation --------------------------------------------------

    async def claim_notice(self, job_id: str) -> bool:
        """Take the right to send the generation's one final message; False if taken before (a job
        without a row, e.g. one that ended before createTask could record it, is not guarded)."""
        return await self.pool.fetchval(
            """
            WITH claimed AS (
                UPDATE generation_jobs SET notice_sent_at = now()
                 WHERE id = $1 AND notice_sent_at IS NULL RETURNING 1
            )
            SELECT EXISTS (SELECT 1 FROM claimed) OR NOT EXISTS (SELECT 1 FROM generation_jobs WHERE id = $1)
            """, job_id)

    async def release_notice(self, job_id: str) -> None:
        """Telegram surely did not take the message: a later attempt may send it."""
        await self.pool.execute("UPDATE generation_jobs SET notice_sent_at = NULL WHERE id = $1", job_id)

    # -- the delivery lock ---------------------------------------------------------------------

    async def try_acquire_delivery_lock(self, job_id: str, owner: str, lease_seconds: float) -> LockResult:
        row = await self.pool.fetchrow(
            f"""
            UPDATE generation_jobs
               SET delivering_at = now(), delivery_owner = $2, updated_at = now()
             WHERE id = $1
               AND delivered_at IS NULL
               AND (delivering_at IS NULL OR delivering_at < now() - make_interval(secs => $3))
            RETURNING {_COLUMNS}
            """,
            job_id, owner, float(lease_seconds),
        )
        if row is not None:
            return LockResult("won", dict(row))
        current = await self.pool.fetchrow(
            f"""
            SELECT {_COLUMNS}, GREATEST(0, EXTRACT(EPOCH FROM
                       delivering_at + make_interval(secs => $2) - now()))::float8 AS lease_left
              FROM generation_jobs WHERE id = $1
            """,
            job_id, float(lease_seconds),
        )
        if current is None:
            return LockResult("missing")
        job = dict(current)
        lease_left = job.pop("lease_left")  # GREATEST(0, …)::float8: never NULL
        if job["delivered_at"] is not None:
            return LockResult("delivered", job)
        return LockResult("busy", job, lease_left=lease_left)

    async def extend_delivery_lease(self, job_id: str, owner: str) -> bool:
        """Renew the lease of a live holder (every heartbeat of the delivering activity).

        False when `owner` no longer holds the lock (its lease was taken over, or the job is
        delivered): the holder must stop sending."""
        result = await self.pool.execute(
            """
            UPDATE generation_jobs SET delivering_at = now()
             WHERE id = $1 AND delivery_owner = $2 AND delivered_at IS NULL
            """,
            job_id, owner,
        )
        return result.endswith(" 1")

    async def mark_delivered(self, job_id: str, owner: str, *, message_id: int | None, level: str) -> bool:
        """Record the accepted photo. Clears the lock only if `owner` still holds it.

        Returns True when this owner still held the lock; False when its lease had been taken over
        (the delivery is recorded anyway, since Telegram accepted it; the new holder will find the
        job delivered when it tries to mark it).
        """
        row = await self.pool.fetchrow(
            """
            UPDATE generation_jobs
               SET delivered_at = now(), delivered_message_id = $3, delivery_level = $4,
                   state = 'delivered', error = NULL, updated_at = now(),
                   delivering_at  = CASE WHEN delivery_owner = $2 THEN NULL ELSE delivering_at END,
                   delivery_owner = CASE WHEN delivery_owner = $2 THEN NULL ELSE delivery_owner END
             WHERE id = $1 AND delivered_at IS NULL
            RETURNING (delivery_owner IS NULL) AS held
            """,
            job_id, owner, message_id, level,
        )
        return bool(row and row["held"])

    async def release_delivery_lock(self, job_id: str, owner: str, *, error: str | None = None) -> bool:
        """Give the lock back after a failed attempt, only if `owner` still holds it."""
        result = await self.pool.execute(
            """
            UPDATE generation_jobs
               SET delivering_at = NULL, delivery_owner = NULL, error = COALESCE($3, error), updated_at = now()
             WHERE id = $1 AND delivery_owner = $2 AND delivered_at IS NULL
            """,
            job_id, owner, error,
        )
        return result.endswith(" 1")

    async def mark_undeliverable(self, job_id: str, owner: str, error: str) -> None:
        """Telegram refused for good (e.g. the user blocked the bot): record it and drop the lock."""
        await self.pool.execute(
            """
            UPDATE generation_jobs
               SET state = 'undeliverable', error = $3, updated_at = now(),
                   delivering_at  = CASE WHEN delivery_owner = $2 THEN NULL ELSE delivering_at END,
                   delivery_owner = CASE WHEN delivery_owner = $2 THEN NULL ELSE delivery_owner END
             WHERE id = $1 AND delivered_at IS NULL
            """,
            job_id, owner, error,
        )


def _json(job: dict[str, Any], key: str, empty: Any) -> Any:
    raw = job.get(key)
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, type(empty)) else empty


def job_input_files(job: dict[str, Any]) -> list[dict[str, Any]]:
    """An edit job's input pictures, as the bot recorded them ([] for a text-to-image job)."""
    return [f for f in _json(job, "input_files", []) if isinstance(f, dict)]


def job_uploads(job: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """What was uploaded to Kie for the job, by picture index."""
    return {int(k): v for k, v in _json(job, "uploads", {}).items() if str(k).isdigit() and isinstance(v, dict)}


def job_options(job: dict[str, Any]) -> dict[str, str]:
    """The model options stored with a job row (a JSON object)."""
    raw = job.get("options")
    value = json.loads(raw) if isinstance(raw, str) else raw
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class BoundedPool(asyncpg.Pool):
    """An asyncpg pool whose every acquisition (``pool.fetchrow`` and friends too) has a timeout."""

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args, acquire_timeout: float | None, **kwargs):
        self._acquire_timeout = acquire_timeout
        super().__init__(*args, **kwargs)

    def acquire(self, *, timeout: float | None = None):
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset beyond asyncpg's own (which rolls back a transaction left open and drops
    listeners): nothing. asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release, a round trip for each statement the pool runs; these
    connections never carry session state (no SET, LISTEN, session advisory lock or cursor outside a
    transaction: the bot's leadership lock and the migrations use connections of their own)."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, command_timeout: float | None = 15.0,
                      acquire_timeout: float | None = 10.0) -> asyncpg.Pool:
    """The process's pool: at most `max_size` connections; a statement that runs longer than
    `command_timeout` s is cancelled, and a caller that waits longer than `acquire_timeout` s for a
    free connection gets a TimeoutError instead of queueing forever (docs/reliability.md, "Pools
    and concurrency"). Settings: DB_POOL_SIZE, DB_COMMAND_TIMEOUT_SECONDS, DB_ACQUIRE_TIMEOUT_SECONDS.
    A released connection is not reset by a query of its own (`_no_session_state`)."""
    return await BoundedPool(
        dsn, acquire_timeout=acquire_timeout, min_size=min_size, max_size=max_size, max_queries=50_000,
        max_inactive_connection_lifetime=300.0, loop=None, connection_class=asyncpg.Connection,
        record_class=asyncpg.Record, command_timeout=command_timeout, reset=_no_session_state,
    )
