"""GenerationWorkflow on the real Temporal dev server, real Postgres, real aiogram, simulated Kie/Telegram.

These also guard the asyncpg-in-sandbox trap (temporalio 1.35 + asyncpg 0.32: a workflow module that
imports asyncpg, even through an activities module, makes the sandbox re-import its C extension and
the worker segfaults on the first query in an activity): every test here runs real queries in
activities under a real sandboxed Worker; see test_activity_runs_a_real_query_under_the_real_worker.
"""

import asyncio
import time

import pytest

from imagegen.contracts import GENERATION_SHAPE, LEAN_SHAPE, LOCAL_CREATE_SHAPE, LOCAL_DELIVERY_SHAPE
from imagegen.i18n import t
from tests.support.histories import activity_types
from workflows.generation import POLL_RETRY


async def finished(stack, handle, chat_id, timeout=30):
    result = await asyncio.wait_for(handle.result(), timeout)
    return result


def status_text(stack, chat_id):
    msgs = [m for m in stack.tg.messages(chat_id) if m.get("text") is not None]
    return msgs[0]["text"] if msgs else None


async def test_callback_path_delivers_one_photo(stack):
    stack.kie.delay = 0.2
    stack.poll_schedule = [(30.0, 10.0)]  # polling too slow to matter: the callback must wake the workflow
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id, timeout=20)
    assert result.outcome == "done"
    assert len(stack.photos_for(chat_id)) == 1
    assert status_text(stack, chat_id) == t("status.done", "ru")
    status = await handle.query("status")
    assert status["callbacks"] >= 1 and status["polls"] == 1  # one recordInfo, woken by the callback
    # finished: nothing is due, so no (past) next poll time; the phase is the outcome
    assert status["phase"] == "done" and status["state"] == "delivered" and status["next_poll_at"] == ""
    row = await stack.repo.get(job_id)
    assert row["delivered_at"] is not None and row["delivery_level"] == "url" and row["external_task_id"]
    assert row["delivered_message_id"] == stack.photos_for(chat_id)[0].message_id


async def test_delivery_shows_the_final_status_itself_and_finish_is_only_the_fallback(stack):
    """Three activities per generation: the delivery also edits the status to "✅". When that edit
    fails, the photo still counts as delivered and the `finish` activity shows the status (retried)."""
    handle, _, chat_id = await stack.start_generation()
    assert (await finished(stack, handle, chat_id)).outcome == "done"
    assert status_text(stack, chat_id) == t("status.done", "ru")
    assert activity_types(await handle.fetch_history()) == ["create_task (local)", "poll_task (local)",
                                                            "deliver (local)"]

    stack.tg.fail_next("editMessageText", 502, "Bad Gateway")  # the delivery's own status edit
    handle, job_id, chat_id = await stack.start_generation(prompt="a second fox")
    assert (await finished(stack, handle, chat_id)).outcome == "done"
    assert len(stack.photos_for(chat_id)) == 1
    assert status_text(stack, chat_id) == t("status.done", "ru")
    assert activity_types(await handle.fetch_history()) == ["create_task (local)", "poll_task (local)",
                                                            "deliver (local)", "finish"]
    assert (await stack.repo.get(job_id))["delivered_at"] is not None


async def test_callback_lost_polling_delivers(stack):
    stack.kie.lose_callback = True
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "done"
    assert len(stack.photos_for(chat_id)) == 1
    assert stack.kie.callbacks == []
    status = await handle.query("status")
    assert status["callbacks"] == 0 and status["polls"] >= 1 and status["next_poll_at"] == ""


async def test_duplicate_callbacks_one_photo(stack):
    stack.kie.duplicate_callbacks = 3
    stack.kie.duplicates_concurrent = True
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "done"
    await stack.kie.wait_for_callbacks(3)
    await asyncio.sleep(0.5)
    assert len(stack.photos_for(chat_id)) == 1


async def test_callback_and_poll_both_success_one_photo(stack):
    # The poll interval equals the generation time, so a poll sees success as the callback lands.
    stack.kie.delay = 0.4
    stack.poll_schedule = [(10.0, 0.4)]
    stack.kie.callback_delay = 0.05
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "done"
    await asyncio.sleep(0.5)
    assert len(stack.photos_for(chat_id)) == 1
    assert len(stack.tg.calls_of("sendPhoto")) == 1


async def test_callback_before_task_id_is_stored(stack):
    stack.kie.callback_before_create_response = True
    stack.poll_schedule = [(30.0, 10.0)]
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id, timeout=20)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1


async def test_kie_fail_tells_the_user_and_sends_no_photo(stack):
    handle, job_id, chat_id = await stack.start_generation(prompt="a forbidden thing [fail]")
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "failed"
    assert stack.photos_for(chat_id) == []
    # A human reason in the user's language; Kie's raw text only in the result and the job row.
    assert status_text(stack, chat_id) == t("status.content_refused", "ru")
    assert "prohibited" in result.detail
    row = await stack.repo.get(job_id)
    assert row["state"] == "fail" and row["delivered_at"] is None and "prohibited" in row["error"]


async def test_generation_that_never_finishes_times_out(stack):
    stack.kie.delay = 60
    stack.kie.lose_callback = True
    stack.poll_schedule = [(1.5, 0.5)]
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "timeout"
    assert status_text(stack, chat_id) == t("status.timeout", "ru")
    assert (await stack.repo.get(job_id))["state"] == "timeout"


async def test_kie_rejects_task_creation(stack):
    stack.kie.create_errors.append(422)  # validation: not retryable, the user is told why
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "failed"
    assert status_text(stack, chat_id) == t("status.prompt_invalid", "ru")  # 422: the prompt, in human words
    assert "422" in result.detail
    assert stack.kie.create_calls == 1
    assert (await stack.repo.get(job_id))["state"] == "fail"


async def test_kie_transient_create_error_is_retried(stack):
    stack.kie.create_errors.append(500)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "done" and stack.kie.create_calls == 2
    assert len(stack.kie.tasks) == 1
    # the local attempt got the 500; the queued attempt (retried by time) created the task
    assert activity_types(await handle.fetch_history())[:2] == ["create_task (local)", "create_task"]


async def test_a_task_id_the_local_create_could_not_store_goes_to_the_queued_attempt(stack, monkeypatch):
    """Kie created the task, but Postgres is away for longer than the local attempt may hold its
    workflow task (LOCAL_STORE_SECONDS): the id comes back in the failure's details, and the queued
    attempt only stores it. Kie has no idempotency key: a second createTask would be a second paid task."""
    from activities.generation import LOCAL_STORE_SECONDS

    original = stack.repo.set_task_id
    back_at = time.monotonic() + LOCAL_STORE_SECONDS + 2
    refused = []

    async def away_for_a_while(job_id, task_id):
        if time.monotonic() < back_at:
            refused.append(task_id)
            raise ConnectionRefusedError("Postgres is away")
        return await original(job_id, task_id)

    monkeypatch.setattr(stack.repo, "set_task_id", away_for_a_while)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id, timeout=40)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
    assert stack.kie.create_calls == 1 and len(stack.kie.tasks) == 1
    (task_id,) = stack.kie.tasks
    assert set(refused) == {task_id} and (await stack.repo.get(job_id))["external_task_id"] == task_id
    assert activity_types(await handle.fetch_history())[:2] == ["create_task (local)", "create_task"]


async def test_same_request_twice_is_one_generation(stack):
    from temporalio.exceptions import WorkflowAlreadyStartedError
    import pytest

    handle, job_id, chat_id = await stack.start_generation()
    with pytest.raises(WorkflowAlreadyStartedError):
        await stack.start_generation(job_id=job_id, chat_id=chat_id)
    await finished(stack, handle, chat_id)
    assert len(stack.kie.tasks) == 1 and len(stack.photos_for(chat_id)) == 1


async def test_activity_runs_a_real_query_under_the_real_worker(stack):
    import ast
    from pathlib import Path

    # The workflow modules import nothing but temporalio and the standard library at top level;
    # activities and domain code only inside `with workflow.unsafe.imports_passed_through():`.
    for module in ("generation.py", "retention.py"):
        tree = ast.parse((Path(__file__).resolve().parent.parent / "workflows" / module).read_text())
        passed_through = {id(n) for w in ast.walk(tree) if isinstance(w, ast.With)
                          and "imports_passed_through" in ast.unparse(w.items[0].context_expr)
                          for n in ast.walk(w)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in passed_through:
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for name in names:
                    top = (name or "").split(".")[0]
                    assert top in {"__future__", "asyncio", "datetime", "temporalio", "dataclasses", "typing", "types"}, \
                        (module, name)
    handle, job_id, chat_id = await stack.start_generation()
    await finished(stack, handle, chat_id)
    row = await stack.pool.fetchrow("SELECT state, external_task_id FROM generation_jobs WHERE id = $1", job_id)
    assert row["state"] == "delivered" and row["external_task_id"] in stack.kie.tasks


async def test_record_info_errors_back_off_then_deliver(stack):
    stack.kie.lose_callback = True
    stack.poll_schedule = [(30.0, 0.3)]
    stack.kie.record_info_errors.extend([502, 500, 455])  # (a 429 is retried at once: test_rate_limits)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
    # Three failed ticks in a row: the gaps between recordInfo calls grow (0.3 → 0.6 → 1.2 → 2.4 s).
    task_id = (await stack.repo.get(job_id))["external_task_id"]
    assert stack.kie.record_info_calls[task_id] == 4
    history = await handle.fetch_history()
    timers = [e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
              for e in history.events if e.HasField("timer_started_event_attributes")]
    # (createTask ran as a local activity in the first workflow task: no "queued" status timer)
    assert timers[:4] == sorted(timers[:4]) and timers[3] >= 4 * timers[0]


async def test_a_local_poll_that_keeps_failing_is_a_missed_tick_not_a_failed_generation(stack):
    """A local activity's failure reaches the workflow unwrapped (an ApplicationError, not an
    ActivityError as a regular activity's): the callback's confirmation refused by Kie's 429 on all of
    its attempts is a missed tick, and the polling timer's recordInfo finds the picture."""
    stack.poll_schedule = [(30.0, 2.0)]  # the callback (after 0.3 s) wakes the workflow first
    stack.kie.record_info_errors.extend([429] * POLL_RETRY.maximum_attempts)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id, timeout=30)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
    status = await handle.query("status")
    assert status["callbacks"] >= 1 and status["polls"] == 2 and "rate limited" in status["last_error"]
    task_id = (await stack.repo.get(job_id))["external_task_id"]
    assert stack.kie.record_info_calls[task_id] == POLL_RETRY.maximum_attempts + 1


async def test_success_without_urls_ends_failed_in_postgres_too(stack, monkeypatch):
    import json

    original = stack.kie.record_info_data

    def no_urls(task_id):
        data = original(task_id)
        if data.get("state") == "success":
            data["resultJson"] = json.dumps({"resultUrls": []})
        return data

    monkeypatch.setattr(stack.kie, "record_info_data", no_urls)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "failed" and stack.photos_for(chat_id) == []
    row = await stack.repo.get(job_id)
    assert row["state"] == "fail" and row["delivered_at"] is None  # terminal, frees the user's slot


async def test_account_problem_on_record_info_ends_at_once(stack):
    stack.kie.lose_callback = True
    stack.poll_schedule = [(60.0, 0.3)]
    stack.kie.record_info_errors.append(401)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id, timeout=15)
    assert result.outcome == "error"  # not a 60 s wait for a timeout
    assert status_text(stack, chat_id) == t("status.unavailable", "ru")
    assert (await stack.repo.get(job_id))["state"] == "error"


async def test_generation_failed_code_on_record_info_fails_the_generation(stack):
    stack.kie.lose_callback = True
    stack.kie.record_info_errors.append(501)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "failed" and stack.photos_for(chat_id) == []
    assert (await stack.repo.get(job_id))["state"] == "fail"


async def test_account_problem_on_create_is_an_outage_message_not_a_prompt_problem(stack):
    stack.kie.create_errors.append(402)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "error" and status_text(stack, chat_id) == t("status.unavailable", "ru")
    # 402 = no credits: the bot is closed to new generations until a check sees credits (kie_account)
    assert await stack.pool.fetchval("SELECT out_of_credits FROM kie_account") is True


async def test_task_id_is_kept_when_postgres_blips_after_kie_answered(stack, monkeypatch):
    """Kie has no idempotency key: a failing write of the task id must not create a second task."""
    original = stack.repo.set_task_id
    failures = {"left": 3}

    async def flaky(job_id, task_id):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionRefusedError("postgres is restarting")
        await original(job_id, task_id)

    monkeypatch.setattr(stack.repo, "set_task_id", flaky)
    handle, job_id, chat_id = await stack.start_generation()
    result = await finished(stack, handle, chat_id)
    assert result.outcome == "done" and failures["left"] == 0
    assert stack.kie.create_calls == 1 and len(stack.kie.tasks) == 1
    assert (await stack.repo.get(job_id))["external_task_id"] == result.task_id


async def test_operator_cancel_tells_the_user_and_records_it(stack):
    from temporalio.client import WorkflowFailureError

    stack.kie.delay = 60
    stack.kie.lose_callback = True
    handle, job_id, chat_id = await stack.start_generation()
    await stack.tg.wait_for(lambda: stack.kie.tasks)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 20)
    assert status_text(stack, chat_id) == t("status.cancelled", "ru")
    assert (await stack.repo.get(job_id))["state"] == "cancelled"
    assert stack.photos_for(chat_id) == []


async def test_each_shape_costs_fewer_round_trips_than_the_one_before(stack):
    """Issue 18: what `make bench` counts per generation, on the callback path. The lean shape (the
    input's shape, no patch marker) polls recordInfo in a local activity and upserts only at the phase
    changes an operator queries; the local-create shape (today's) also creates the Kie task in a local
    activity of the first workflow task (Kie's window has room: no "queued" timer either); a workflow
    an older bot started keeps its shape (2: lean; 0: patched)."""
    from tests.bench.measure import history_counts

    stack.kie.delay = 1.0  # the callback comes while the workflow waits on its polling timer...
    stack.poll_schedule = [(30.0, 10.0)]  # ...which is too slow to matter: the callback wakes it

    async def counts(shape):
        handle, _, chat_id = await stack.start_generation(shape=shape)
        assert (await finished(stack, handle, chat_id, timeout=20)).outcome == "done"
        assert len(stack.photos_for(chat_id)) == 1 and status_text(stack, chat_id) == t("status.done", "ru")
        return await history_counts(stack.client, [handle.id])

    assert GENERATION_SHAPE == LOCAL_DELIVERY_SHAPE
    here = await counts(LOCAL_DELIVERY_SHAPE)
    local, lean, patched = await counts(LOCAL_CREATE_SHAPE), await counts(LEAN_SHAPE), await counts(0)
    # The local-delivery shape upserts "waiting" only past the schedule's first segment: a generation
    # done before has one upsert, its outcome with the task id.
    assert here == {"workflow_tasks": 2, "activity_tasks": 0, "timers": 1, "upserts": 1, "markers": 3, "events": 15}
    assert local == {"workflow_tasks": 3, "activity_tasks": 1, "timers": 1, "upserts": 2, "markers": 2, "events": 21}
    assert lean == {"workflow_tasks": 4, "activity_tasks": 2, "timers": 2, "upserts": 2, "markers": 1, "events": 28}
    assert patched == {"workflow_tasks": 5, "activity_tasks": 3, "timers": 2, "upserts": 4, "markers": 1, "events": 36}
