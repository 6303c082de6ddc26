"""GenerationWorkflow: one Z-Image generation, from Kie task to exactly one delivered picture.

create task (activity) → wait for the ``kie_callback`` signal, with a polling timer as fallback →
on each wake-up, ask Kie's recordInfo (activity; the callback itself is only a wake-up) →
on success, deliver (activity, under the Postgres lock) → final status message (activity).

Deterministic: no I/O here, time comes from ``workflow.now()``, timers from ``wait_condition``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.generation import GenerationActivities
    from imagegen.contracts import (
        CallbackSignal,
        CreateTaskInput,
        DeliverInput,
        FinishInput,
        GenerationInput,
        GenerationResult,
        PollInput,
        workflow_id_for,
    )

CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=["KieRejected"],
)
POLL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# Delivery: retried until it succeeds or an hour has passed (schedule_to_close). Lock-busy retries
# are one UPDATE each, so the interval is capped low to take over soon after a dead holder's lease.
# See docs/reliability.md, "Lease, timeouts and retries".
DELIVER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["PermanentDeliveryError"],
)
DELIVER_START_TO_CLOSE = timedelta(seconds=100)
DELIVER_HEARTBEAT = timedelta(seconds=15)
FINISH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)


def poll_interval(schedule: list[list[float]], elapsed: float) -> float:
    """The polling interval in force `elapsed` seconds after the task was created."""
    for until, interval in schedule:
        if elapsed < until:
            return float(interval)
    return float(schedule[-1][1])


def _failure_message(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


@workflow.defn
class GenerationWorkflow:
    def __init__(self) -> None:
        self._callbacks = 0
        self._task_id: str | None = None
        self._phase = "starting"
        self._polls = 0
        self._last_state = ""

    @workflow.signal
    def kie_callback(self, signal: CallbackSignal) -> None:
        """Kie called back (forwarded by the bot). Only a wake-up: recordInfo decides."""
        if signal.task_id and self._task_id and signal.task_id != self._task_id:
            workflow.logger.warning("CALLBACK_IGNORED task_id=%s expected=%s", signal.task_id, self._task_id)
            return
        self._callbacks += 1

    @workflow.query
    def status(self) -> dict:
        return {
            "phase": self._phase,
            "task_id": self._task_id,
            "callbacks": self._callbacks,
            "polls": self._polls,
            "last_state": self._last_state,
        }

    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationResult:
        try:
            return await self._generate(inp)
        except asyncio.CancelledError:
            # An operator cancelled it (Temporal UI / CLI): tell the user, record it, stay cancelled.
            await self._finish(inp, "cancelled", "cancelled by an operator")
            raise

    async def _generate(self, inp: GenerationInput) -> GenerationResult:
        self._phase = "creating"
        try:
            self._task_id = await workflow.execute_activity_method(
                GenerationActivities.create_task,
                CreateTaskInput(
                    job_id=inp.job_id,
                    workflow_id=workflow_id_for(inp.job_id),
                    user_id=inp.user_id,
                    chat_id=inp.chat_id,
                    model=inp.model,
                    prompt=inp.prompt,
                    aspect_ratio=inp.aspect_ratio,
                    status_message_id=inp.status_message_id,
                ),
                start_to_close_timeout=timedelta(seconds=40),
                retry_policy=CREATE_RETRY,
            )
        except ActivityError as err:
            rejected = isinstance(err.cause, ApplicationError) and err.cause.type == "KieRejected"
            return await self._finish(inp, "failed" if rejected else "error", _failure_message(err))

        # Wait for the callback or the next poll, whichever comes first.
        self._phase = "waiting"
        started = workflow.now()
        max_wait = float(inp.poll_schedule[-1][0])
        seen = 0
        errors_in_row = 0  # recordInfo failures in a row: the polling interval doubles with each (max ×16)
        urls: list[str] = []
        while True:
            elapsed = (workflow.now() - started).total_seconds()
            if elapsed >= max_wait:
                return await self._finish(inp, "timeout", f"no result after {int(max_wait)} s")
            backoff = 2 ** min(errors_in_row, 4)
            wait = min(poll_interval(inp.poll_schedule, elapsed) * backoff, max_wait - elapsed)
            try:
                await workflow.wait_condition(lambda: self._callbacks > seen, timeout=timedelta(seconds=wait))
                reason = "callback"
            except asyncio.TimeoutError:
                reason = "timer"
            seen = self._callbacks
            self._polls += 1
            try:
                result = await workflow.execute_activity_method(
                    GenerationActivities.poll_task,
                    PollInput(job_id=inp.job_id, task_id=self._task_id, tick=self._polls, reason=reason),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=POLL_RETRY,
                )
            except ActivityError:
                errors_in_row += 1  # a failed poll is a missed tick; the schedule goes on, slower
                continue
            self._last_state = result.state
            errors_in_row = errors_in_row + 1 if result.state == "error" else 0
            if result.state == "success":
                if result.result_urls:
                    urls = result.result_urls
                    break
                return await self._finish(inp, "failed", result.error or "no result URL")
            if result.state == "fail":
                return await self._finish(inp, "failed", result.error)
            if result.state == "rejected":  # Kie account unusable (key, credits): polling on cannot help
                return await self._finish(inp, "error", result.error)

        self._phase = "delivering"
        try:
            delivered = await workflow.execute_activity_method(
                GenerationActivities.deliver,
                DeliverInput(
                    job_id=inp.job_id, chat_id=inp.chat_id, url=urls[0], model=inp.model, aspect_ratio=inp.aspect_ratio
                ),
                start_to_close_timeout=DELIVER_START_TO_CLOSE,
                heartbeat_timeout=DELIVER_HEARTBEAT,
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=DELIVER_RETRY,
            )
        except ActivityError as err:
            permanent = isinstance(err.cause, ApplicationError) and err.cause.type == "PermanentDeliveryError"
            return await self._finish(inp, "undeliverable" if permanent else "error", _failure_message(err))
        return await self._finish(inp, "done", "", delivery_level=delivered.level)

    async def _finish(self, inp: GenerationInput, outcome: str, detail: str, delivery_level: str = "") -> GenerationResult:
        self._phase = outcome
        try:
            await workflow.execute_activity_method(
                GenerationActivities.finish,
                FinishInput(
                    job_id=inp.job_id,
                    chat_id=inp.chat_id,
                    status_message_id=inp.status_message_id,
                    outcome=outcome,
                    detail=detail,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=FINISH_RETRY,
            )
        except ActivityError:
            workflow.logger.warning("FINISH_FAILED job_id=%s outcome=%s", inp.job_id, outcome)
        return GenerationResult(
            job_id=inp.job_id, outcome=outcome, task_id=self._task_id, detail=detail, delivery_level=delivery_level
        )
