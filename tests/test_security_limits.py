"""Per-user limits: concurrent generations and requests per minute, exact under concurrency, with a
message saying when to try again; the same button works once the limit allows."""

from __future__ import annotations

import asyncio
import uuid

from imagegen.i18n import t
from imagegen.contracts import workflow_id_for


def new_job(user_id: int) -> dict:
    job_id = uuid.uuid4().hex[:16]
    return dict(job_id=job_id, workflow_id=workflow_id_for(job_id, "zimage"), user_id=user_id, chat_id=user_id, model="zimage",
                prompt="p", aspect_ratio="1:1", status_message_id=None)


async def admit(repo, user_id, *, max_active=2, max_per_minute=5, job=None):
    return await repo.admit_job(**(job or new_job(user_id)), max_active=max_active, max_per_minute=max_per_minute)


async def test_concurrent_limit_counts_only_unfinished_jobs(repo):
    user = 990_000_001
    a, b = await admit(repo, user), await admit(repo, user)
    assert a.outcome == b.outcome == "created"
    third = await admit(repo, user)
    assert third.outcome == "too_many_active" and third.active == 2 and not third.admitted
    assert await repo.pool.fetchval("SELECT count(*) FROM generation_jobs WHERE user_id = $1", user) == 2
    # a generation that ended (delivered, failed, timed out…) frees its slot
    await repo.set_state(a.job["id"], "fail", error="x")
    assert (await admit(repo, user)).outcome == "created"
    assert (await admit(repo, 990_000_002)).outcome == "created"  # other users are not affected


async def test_a_repeated_request_is_not_counted_again(repo):
    user = 990_000_003
    job = new_job(user)
    assert (await admit(repo, user, job=job)).outcome == "created"
    await admit(repo, user)
    again = await admit(repo, user, job=job)  # the same button pressed again, user already at the limit
    assert again.outcome == "exists" and again.admitted and again.job["id"] == job["job_id"]


async def test_stuck_jobs_do_not_block_a_user_forever(repo):
    user = 990_000_004
    for _ in range(2):
        r = await admit(repo, user)
        await repo.pool.execute("UPDATE generation_jobs SET created_at = now() - interval '3 hours' WHERE id = $1",
                                r.job["id"])
    assert (await admit(repo, user)).outcome == "created"


async def test_per_minute_limit_says_when_to_retry(repo):
    user = 990_000_005
    ages = [50, 40, 30]  # seconds ago
    for age in ages:
        r = await admit(repo, user, max_active=99, max_per_minute=3)
        await repo.set_state(r.job["id"], "delivered")
        await repo.pool.execute("UPDATE generation_jobs SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
                                r.job["id"], float(age))
    limited = await admit(repo, user, max_active=99, max_per_minute=3)
    assert limited.outcome == "too_many_recent" and limited.recent == 3
    assert 9 <= limited.retry_after <= 11  # the oldest (50 s ago) leaves the window in ~10 s
    # a job older than a minute does not count
    await repo.pool.execute("UPDATE generation_jobs SET created_at = now() - interval '61 seconds' "
                            "WHERE user_id = $1 AND created_at < now() - interval '45 seconds'", user)
    assert (await admit(repo, user, max_active=99, max_per_minute=3)).outcome == "created"


async def test_limits_hold_under_concurrent_requests(repo):
    user = 990_000_006
    results = await asyncio.gather(*(admit(repo, user, max_active=2, max_per_minute=50) for _ in range(20)))
    assert sorted(r.outcome for r in results).count("created") == 2
    assert await repo.pool.fetchval("SELECT count(*) FROM generation_jobs WHERE user_id = $1", user) == 2
    user2 = 990_000_007
    results = await asyncio.gather(*(admit(repo, user2, max_active=99, max_per_minute=4) for _ in range(20)))
    assert [r.outcome for r in results].count("created") == 4


# --------------------------------------------------------------------------- through the bot

async def converse(stack, chat, prompt, ratio="1:1"):
    """/start → model → prompt → ratio; returns the ratio button (message_id, data)."""
    before = len(stack.tg.calls_of("sendMessage"))
    stack.tg.user_send_command(chat, "/start")
    await stack.tg.wait_for(lambda: len(stack.tg.calls_of("sendMessage")) > before)
    mid, data = await stack.tg.wait_for(lambda: _button(stack, chat, "Z-Image"))
    stack.tg.user_press_button(chat, mid, data)
    await stack.tg.wait_for(lambda: (stack.tg.last_message(chat) or {}).get("message_id") == mid
                            and "Опишите" in (stack.tg.last_message(chat).get("text") or ""))
    stack.tg.user_send_text(chat, prompt)
    return await stack.tg.wait_for(lambda: _button_after(stack, chat, ratio, mid))


def _button(stack, chat, label):
    try:
        return stack.tg.find_button(chat, label)
    except (LookupError, ValueError):
        return None


def _button_after(stack, chat, label, after):
    found = _button(stack, chat, label)
    return found if found and found[0] > after else None


def answers(stack) -> list[str]:
    return [c.params.get("text") or "" for c in stack.tg.calls_of("answerCallbackQuery")]


async def test_bot_refuses_a_third_concurrent_generation_then_accepts_it(stack):
    stack.kie.delay = 2.5
    await stack.start_bot()
    chat = 881_001
    for i in range(2):
        mid, data = await converse(stack, chat, f"slow one {i}")
        stack.tg.user_press_button(chat, mid, data)
        await stack.tg.wait_for(lambda: stack.kie.create_calls == i + 1)
    mid, data = await converse(stack, chat, "third")
    stack.tg.user_press_button(chat, mid, data)
    expected = t("limit.active", "ru").format(active=2, limit=2)
    await stack.tg.wait_for(lambda: expected in answers(stack))
    call = [c for c in stack.tg.calls_of("answerCallbackQuery") if c.params.get("text") == expected][0]
    assert str(call.params.get("show_alert")).lower() == "true"
    await asyncio.sleep(0.3)
    assert stack.kie.create_calls == 2  # no Kie call for the refused request
    # once the first two are delivered, the same button works
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 2, timeout=20)
    await stack.tg.wait_for(lambda: stack.kie.create_calls == 2 and all(t.done for t in stack.kie.tasks.values()))
    await asyncio.sleep(0.3)
    stack.tg.user_press_button(chat, mid, data)
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == 3, timeout=20)
    assert stack.kie.tasks[max(stack.kie.tasks)].prompt == "third"


async def test_bot_limits_requests_per_minute_and_says_when(stack):
    stack.config = stack.settings(user_max_active=10, user_max_per_minute=2)
    await stack.start_bot()
    chat = 881_002
    for i in range(2):
        mid, data = await converse(stack, chat, f"quick {i}")
        stack.tg.user_press_button(chat, mid, data)
        await stack.tg.wait_for(lambda: stack.kie.create_calls == i + 1)
    mid, data = await converse(stack, chat, "one too many")
    stack.tg.user_press_button(chat, mid, data)
    await stack.tg.wait_for(lambda: any(a.startswith("Слишком много запросов") for a in answers(stack)))
    (msg,) = [a for a in answers(stack) if a.startswith("Слишком много запросов")]
    seconds = int(msg.rsplit("через ", 1)[1].split()[0])
    assert 50 <= seconds <= 60 and "2 в минуту" in msg
    await asyncio.sleep(0.3)
    assert stack.kie.create_calls == 2
