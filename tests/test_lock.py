"""The Postgres delivery lock, on a real server."""

import asyncio
import uuid

from imagegen.migrate import apply_migrations


async def new_job(repo) -> str:
    job_id = uuid.uuid4().hex[:16]
    await repo.create_job(job_id=job_id, workflow_id=f"zimage-{job_id}", user_id=1, chat_id=1, model="zimage",
                          prompt="p", aspect_ratio="1:1", status_message_id=None)
    return job_id


async def test_twenty_concurrent_acquirers_exactly_one_wins(repo):
    job_id = await new_job(repo)
    results = await asyncio.gather(*[repo.try_acquire_delivery_lock(job_id, f"owner-{i}", 60) for i in range(20)])
    outcomes = [r.outcome for r in results]
    assert outcomes.count("won") == 1 and outcomes.count("busy") == 19
    winner = next(r for r in results if r.outcome == "won")
    row = await repo.get(job_id)
    assert row["delivery_owner"] == winner.job["delivery_owner"] and row["delivering_at"] is not None


async def test_delivered_job_is_skipped(repo):
    job_id = await new_job(repo)
    assert (await repo.try_acquire_delivery_lock(job_id, "a", 60)).outcome == "won"
    assert await repo.mark_delivered(job_id, "a", message_id=77, level="url") is True
    row = await repo.get(job_id)
    assert row["delivered_at"] is not None and row["delivering_at"] is None and row["delivered_message_id"] == 77
    assert row["state"] == "delivered"
    again = await repo.try_acquire_delivery_lock(job_id, "b", 60)
    assert again.outcome == "delivered"


async def test_stale_lease_is_reacquired(repo, pool):
    job_id = await new_job(repo)
    assert (await repo.try_acquire_delivery_lock(job_id, "dead", 60)).outcome == "won"
    assert (await repo.try_acquire_delivery_lock(job_id, "live", 60)).outcome == "busy"
    await pool.execute("UPDATE generation_jobs SET delivering_at = now() - interval '61 seconds' WHERE id = $1", job_id)
    taken = await repo.try_acquire_delivery_lock(job_id, "live", 60)
    assert taken.outcome == "won" and taken.job["delivery_owner"] == "live"


async def taken_over(repo, pool) -> str:
    """A job whose lock "old" held until its lease ran out, and "new" took over."""
    job_id = await new_job(repo)
    await repo.try_acquire_delivery_lock(job_id, "old", 60)
    await pool.execute("UPDATE generation_jobs SET delivering_at = now() - interval '2 minutes' WHERE id = $1", job_id)
    assert (await repo.try_acquire_delivery_lock(job_id, "new", 60)).outcome == "won"
    return job_id


async def test_stale_owner_cannot_clear_new_owners_lock(repo, pool):
    job_id = await taken_over(repo, pool)
    assert await repo.release_delivery_lock(job_id, "old") is False
    row = await repo.get(job_id)
    assert row["delivery_owner"] == "new" and row["delivering_at"] is not None
    # the old owner finishing late records the delivery but leaves the new owner's lock alone
    assert await repo.mark_delivered(job_id, "old", message_id=1, level="url") is False
    row = await repo.get(job_id)
    assert row["delivered_at"] is not None and row["delivery_owner"] == "new"
    assert await repo.release_delivery_lock(job_id, "new") is False  # delivered: nothing to release


async def test_release_lets_the_next_attempt_in(repo):
    job_id = await new_job(repo)
    await repo.try_acquire_delivery_lock(job_id, "a", 60)
    assert await repo.release_delivery_lock(job_id, "a", error="429") is True
    assert (await repo.try_acquire_delivery_lock(job_id, "b", 60)).outcome == "won"


async def test_missing_job(repo):
    assert (await repo.try_acquire_delivery_lock("nope", "a", 60)).outcome == "missing"


async def test_migrations_apply_once_when_two_processes_start_together(pg_dsn, pool):
    db = f"mig_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE DATABASE {db}")
    dsn = pg_dsn.rsplit("/", 1)[0] + "/" + db
    results = await asyncio.gather(*[apply_migrations(dsn) for _ in range(4)])
    applied = [r for r in results if r]
    assert len(applied) == 1 and applied[0][0].startswith("001_")  # one run applied all, the others none
    assert results.count([]) == 3


async def test_create_job_is_idempotent(repo):
    job_id = await new_job(repo)
    again = await repo.create_job(job_id=job_id, workflow_id=f"zimage-{job_id}", user_id=2, chat_id=2, model="zimage",
                                  prompt="other", aspect_ratio="16:9", status_message_id=None)
    assert again["prompt"] == "p" and again["user_id"] == 1


async def test_holder_extends_its_lease_and_is_never_overtaken(repo):
    job_id = await new_job(repo)
    assert (await repo.try_acquire_delivery_lock(job_id, "holder", 1)).outcome == "won"
    busy = await repo.try_acquire_delivery_lock(job_id, "other", 1)
    assert busy.outcome == "busy" and 0.5 < busy.lease_left <= 1.0  # when to come back
    for _ in range(3):  # three lease lengths, renewed in between: nobody else gets in
        await asyncio.sleep(0.6)
        assert await repo.extend_delivery_lease(job_id, "holder") is True
        assert (await repo.try_acquire_delivery_lock(job_id, "other", 1)).outcome == "busy"
    await asyncio.sleep(1.1)  # the holder stops renewing (dead): replaced after one lease
    assert (await repo.try_acquire_delivery_lock(job_id, "other", 1)).outcome == "won"


async def test_extension_fails_for_a_holder_that_lost_the_lock(repo, pool):
    job_id = await taken_over(repo, pool)
    assert await repo.extend_delivery_lease(job_id, "old") is False
    assert await repo.extend_delivery_lease(job_id, "new") is True
    assert await repo.mark_delivered(job_id, "new", message_id=5, level="url") is True
    assert await repo.extend_delivery_lease(job_id, "new") is False  # delivered: nothing left to hold


async def test_a_released_connection_costs_no_reset_round_trip_and_still_drops_an_open_transaction(pg_dsn):
    """asyncpg resets a released connection with a query of its own by default (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL: a round trip per pool statement); the project's pool does not, since its
    connections carry no session state. A transaction left open by a caller is still rolled back."""
    from imagegen.jobs import create_pool

    queries: list[str] = []
    name = f"reset-test-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: queries.append(record.query))
            await conn.execute("BEGIN")  # left open, as a caller cancelled mid-transaction would
            await conn.execute("INSERT INTO rate_slots (name, at) VALUES ($1, now())", name)
        for _ in range(3):
            assert await pool.fetchval("SELECT count(*) FROM rate_slots WHERE name = $1", name) == 0
        assert [q for q in queries if q.startswith("SELECT count")] and not [q for q in queries if "RESET ALL" in q], queries
    finally:
        await pool.close()
