"""GenerationWorkflow: one Z-Image generation, from Kie task to exactly one delivered picture.

[an edit: upload its pictures to Kie's file host (activity)] → create task (activity) → wait for the ``kie_callback`` signal, with a polling timer as fallback →
on each wake-up, ask Kie's recordInfo (activity; the callback itself is only a wake-up) →
on success, deliver (activity, under the Postgres lock) → final status message (activity).
Issue 18's shapes (GenerationInput.shape) run createTask, recordInfo and the first delivery attempt as
local activities of the workflow tasks that need them, and the activities only for what those cannot do.

Deterministic: no I/O here, time comes from ``workflow.now()``, timers from ``wait_condition``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from types import MappingProxyType

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.generation import GenerationActivities
    from activities.inputs import InputActivities
    from imagegen.contracts import (
        CallbackSignal,
        CreateTaskInput,
        DeliverInput,
        DeliverResult,
        FinishInput,
        GenerationInput,
        GenerationResult,
        CreditsInput,
        CreditsResult,
        LEAN_SHAPE,
        LOCAL_CREATE_SHAPE,
        LOCAL_DELIVERY_SHAPE,
        OutcomeInput,
        PollInput,
        QueueStatusInput,
        StatusProgress,
        UploadedImage,
        UploadInput,
    )
    from imagegen import metrics, ratelimits, visibility
    from imagegen.models import MODELS

# createTask: retried by time, not by count (issue 19): an attempt handed back by the pacer
# (KiePaced: Kie's window is full for longer than the attempt may wait) is an attempt too, so under
# a long backlog a count would run out while nothing failed. Kie 5xx/429 and Postgres failures are
# retried for CREATE_SCHEDULE_TO_CLOSE, then the generation ends `error`.
CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["KieRejected"],
)
CREATE_SCHEDULE_TO_CLOSE = timedelta(minutes=5)
# One createTask attempt: the paced wait for Kie's window (up to 20 s), the Kie call with the client's
# whole timeout (30 s), storing the task id (5 s) and the margin (5 s) — activities/generation.py.
CREATE_START_TO_CLOSE = timedelta(seconds=60)
# The local attempt (LOCAL_CREATE_SHAPE) is tried once: whatever it cannot do, the queued attempt retries.
LOCAL_CREATE_RETRY = RetryPolicy(maximum_attempts=1)
POLL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
POLL_START_TO_CLOSE = timedelta(seconds=30)
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
# The local delivery attempt (LOCAL_DELIVERY_SHAPE) is tried once: whatever it cannot finish, the
# delivery activity retries (with the accepted memo when Telegram had taken the picture).
LOCAL_DELIVER_RETRY = RetryPolicy(maximum_attempts=1)
# A cancelled generation of that shape asks Postgres whether the local attempt delivered (it waits while
# an attempt holds the lock, at most one lease); retried until Postgres answers.
OUTCOME_START_TO_CLOSE = timedelta(minutes=3)
OUTCOME_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                            maximum_attempts=0)
# Search attributes, current details and metrics arrived after histories were recorded: workflows
# started before this change replay without them (workflow.patched), new ones record them.
VISIBILITY_PATCH = "operator-visibility-1"
STATUS_ICON = MappingProxyType({"done": "✅", "failed": "❌", "timeout": "⌛", "error": "❌", "undeliverable": "✖",
                                "cancelled": "🚫"})  # read-only: module state is shared by every run
PROGRESS_EVERY = 10.0  # seconds between two "generating" edits of the status message
# The user's status message says "queued" when createTask has not completed within this long (it waits in
# the rate-limited createTask queue); behind a patch, as it adds a timer to the command sequence.
QUEUED_STATUS_PATCH = "queued-status-1"
QUEUED_AFTER_SECONDS = 3.0
# Fewer server round trips per generation (issue 9, throughput): the bot already set
# GenerationState=creating at start, so the first upsert is skipped, and the deliver activity shows the
# final "✅" status itself instead of a separate `finish` activity (which stays the fallback). It implies
# the two patches above (one patch marker per new workflow instead of three).
LEAN_FINISH_PATCH = "lean-finish-1"
# Issue 16: an edit's pictures are uploaded to Kie's file host before createTask (activities/inputs.py).
# Only workflows with pictures run this step (and record this marker); older histories have none.
EDIT_INPUTS_PATCH = "edit-inputs-1"
# CREDITS=on (GenerationInput.price > 0): the price reserved before anything else, captured when the
# picture is delivered, released on every other ending (imagegen/credits.py). Asked only when the
# generation has a price, so free generations and older histories never see it.
CREDITS_PATCH = "credits-1"
CREDITS_REFUSED = "credits: the balance is too low for this generation"
CREDITS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                            maximum_attempts=0)
UPLOAD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["InputRejected", "KieRejected", "KieUnusable"],
)
UPLOAD_START_TO_CLOSE = timedelta(minutes=3)
UPLOAD_HEARTBEAT = timedelta(seconds=20)
UPLOAD_SCHEDULE_TO_CLOSE = timedelta(minutes=5)  # within launch.MARGIN + the createTask retries
STATUS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
FINISH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)


def poll_interval(schedule: list[list[float]], elapsed: float) -> float:
    """The polling interval in force `elapsed` seconds after the task was created."""
    for until, interval in schedule:
        if elapsed < until:
            return float(interval)
    return float(schedule[-1][1])


def _kie_model(key: str) -> str:
    model = MODELS.get(key)
    return model.kie_model if model is not None else key


def _raise_if_cancelled(err: BaseException) -> None:
    """A cancel that reached an activity surfaces as ActivityError(cause=CancelledError): never
    swallow it as an ordinary failure (run() turns it into the cancelled outcome)."""
    if is_cancelled_exception(err):
        raise err


def _cause(err: BaseException) -> BaseException | None:
    """What failed: an activity's failure is the ActivityError's cause; a local activity's own failure
    comes unwrapped (temporalio 1.35), as the ApplicationError itself."""
    return err.cause if isinstance(err, ActivityError) else err


def _failure_type(err: BaseException) -> str:
    """The ApplicationError type of the failure ("" when it is not one)."""
    cause = _cause(err)
    return (cause.type or "") if isinstance(cause, ApplicationError) else ""


def _failure_memo(err: BaseException, key: str, kind: type) -> dict | None:
    """The memo a local attempt put in its failure's details (the activity's heartbeat memo, handed
    over through the workflow) when it carries `key` of `kind`."""
    cause = _cause(err)
    memo = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else None
    return memo if isinstance(memo, dict) and isinstance(memo.get(key), kind) else None


def _failure_message(err: BaseException) -> str:
    cause = _cause(err)
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


def _deliver_summary(deliver: DeliverInput) -> str:
    """The delivery's one line in the UI (the local attempt and the activity alike)."""
    return "deliver (url → bytes → text)" + (" + status ✅" if deliver.show_done else "")


@workflow.defn
class GenerationWorkflow:
    def __init__(self) -> None:
        self._callbacks = 0
        self._task_id: str | None = None
        self._phase = "starting"
        self._polls = 0
        self._last_state = ""
        self._last_error = ""
        self._delivery_level = ""
        self._next_poll_at: str = ""
        self._visible = False  # search attributes / details / metrics (VISIBILITY_PATCH)
        self._direct: frozenset[str] = frozenset()  # kinds of call run on this workflow's own queue
        self._lean = False  # LEAN_FINISH_PATCH (implies VISIBILITY_PATCH and QUEUED_STATUS_PATCH)
        self._shaped = False  # GenerationInput.shape >= LEAN_SHAPE: issue 18's shape, chosen by the starter
        self._progress_shown: float | None = None  # elapsed seconds at the last "generating" status edit
        self._delivery: workflow.ActivityHandle | None = None  # the deliver activity, once scheduled
        self._uploads: list[UploadedImage] = []  # an edit's pictures on Kie's file host (EDIT_INPUTS_PATCH)
        self._price = 0
        self._credits = ""  # the ledger state of this generation's price (CREDITS_PATCH): reserved / captured / released
        # GenerationState=waiting and KieTaskId upserted (LOCAL_DELIVERY_SHAPE: only once the generation has
        # waited through the schedule's first segment; otherwise the final upsert carries the task id).
        self._waiting_shown = True
        self._accepted: dict | None = None  # a picture Telegram accepted, handed over by the local attempt

    @workflow.signal
    def kie_callback(self, signal: CallbackSignal) -> None:
        """Kie called back (forwarded by the bot). Only a wake-up: recordInfo decides."""
        if signal.task_id and self._task_id and signal.task_id != self._task_id:
            workflow.logger.warning("CALLBACK_IGNORED task_id=%s expected=%s", signal.task_id, self._task_id)
            return
        self._callbacks += 1
        self._show_details()

    @workflow.query
    def status(self) -> dict:
        """For operators (``temporal workflow query --type status``) and tests."""
        return {
            "phase": self._phase,
            "state": self._state(),
            "task_id": self._task_id,
            "callbacks": self._callbacks,
            "polls": self._polls,
            "last_state": self._last_state,
            "next_poll_at": self._next_poll_at if self._phase == "waiting" else "",
            "delivery_level": self._delivery_level,
            "price": self._price,
            "credits": self._credits,
            "last_error": self._last_error,
        }

    def _state(self) -> str:
        """The phase as a GenerationState (search attribute) value."""
        return visibility.OUTCOME_STATE.get(self._phase, self._phase if self._phase in visibility.STATES else "creating")

    def _queue(self, kind: str) -> str:
        """The activity task queue of one kind of external call: its rate-limited queue
        (imagegen/ratelimits.py), or this workflow's own when the kind has no limit (direct_kinds)."""
        base = workflow.info().task_queue
        return base if kind in self._direct else ratelimits.queue_name(base, kind)

    def _move_to(self, phase: str, *extra, upsert: bool = True) -> None:
        self._phase = phase
        if self._visible and upsert:
            workflow.upsert_search_attributes([visibility.state_update(self._state()), *extra])
        self._show_details()

    def _show_details(self) -> None:
        """The UI's "current details": what an operator needs to decide, kept current."""
        if not self._visible:
            return
        lines = [f"**State** {self._state()}", f"**Kie task** {self._task_id or '—'}",
                 f"**Callbacks received** {self._callbacks}", f"**recordInfo calls** {self._polls}"]
        if self._last_state:
            lines.append(f"**Last Kie state** {self._last_state}")
        if self._next_poll_at and self._phase == "waiting":
            lines.append(f"**Next poll** {self._next_poll_at}")
        if self._credits:
            lines.append(f"**Credits** {self._price} ({self._credits})")
        if self._uploads:
            reused = sum(u.reused for u in self._uploads)
            lines.append(f"**Input pictures** {len(self._uploads)} on Kie ({reused} reused): "
                         + ", ".join(f"[{u.file_name}]({u.url})" for u in self._uploads))
        if self._delivery_level:
            lines.append(f"**Delivered as** {self._delivery_level}")
        if self._last_error:
            lines.append(f"**Last error** {self._last_error}")
        workflow.set_current_details("\n".join(lines))

    def _progress(self, inp: GenerationInput, elapsed: float) -> StatusProgress | None:
        """Ask the poll to show "generating, N s" on the status message: at the first poll, then at most
        every PROGRESS_EVERY seconds (data in the poll's input: no extra command in the history)."""
        if inp.status_message_id is None:
            return None
        if self._progress_shown is not None and elapsed - self._progress_shown < PROGRESS_EVERY:
            return None
        self._progress_shown = elapsed
        return StatusProgress(chat_id=inp.chat_id, message_id=inp.status_message_id, lang=inp.lang,
                              model=inp.model, aspect_ratio=inp.aspect_ratio, elapsed=int(elapsed))

    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationResult:
        # Each patch() of a new workflow costs a marker and a TemporalChangeVersion upsert: the newest
        # patch implies the older ones (which old histories still answer on their own).
        self._direct = frozenset(inp.direct_kinds)
        self._price = inp.price
        # A workflow started with LEAN_SHAPE implies every patch (no marker, no TemporalChangeVersion
        # upsert): its input says which shape it runs, so old histories (shape 0) replay as recorded.
        self._shaped = inp.shape >= LEAN_SHAPE
        self._lean = self._shaped or workflow.patched(LEAN_FINISH_PATCH)
        self._visible = self._lean or workflow.patched(VISIBILITY_PATCH)
        try:
            return await self._generate(inp)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            delivered = self._delivered()
            if delivered is None and inp.shape >= LOCAL_DELIVERY_SHAPE and self._task_id:
                # A local delivery's result is in the history only once its workflow task completes: a
                # cancel that arrives during that task makes the server refuse a completion that would
                # close the workflow, and the rerun meets the cancel before any delivery. And a picture
                # the local attempt handed over (self._accepted) is not recorded when the cancel stops
                # the activity before it starts. Postgres knows what Telegram accepted.
                delivered = await self._delivery_outcome(inp)
            if delivered is not None:
                # The cancel came when the delivery had already completed (both in one workflow task):
                # the picture is in the chat, so the generation is done, not cancelled.
                return await self._done(inp, delivered)
            # An operator or the user cancelled it (UI, CLI, /cancel) at whatever moment: tell the
            # user once, record it, and end Canceled (re-raising a cancellation does that).
            self._last_error = "cancelled"
            await self._finish(inp, "cancelled", "cancelled")
            raise

    async def _generate(self, inp: GenerationInput) -> GenerationResult:
        lean = self._lean
        self._move_to("creating", upsert=not lean)  # lean: launch.py started it with GenerationState=creating
        if inp.price > 0 and (self._shaped or workflow.patched(CREDITS_PATCH)):
            reserved = await self._credit_step(GenerationActivities.credits_reserve, inp, "reserve")
            if reserved.outcome not in ("reserved", "already"):
                return await self._finish(inp, "failed", CREDITS_REFUSED)
        image_urls: list[str] = []
        if inp.images and (self._shaped or workflow.patched(EDIT_INPUTS_PATCH)):
            failed = await self._upload_inputs(inp)
            if failed is not None:
                return failed
            image_urls = [u.url for u in self._uploads]
        create_input = CreateTaskInput(
            job_id=inp.job_id,
            workflow_id=workflow.info().workflow_id,
            user_id=inp.user_id,
            chat_id=inp.chat_id,
            model=inp.model,
            prompt=inp.prompt,
            aspect_ratio=inp.aspect_ratio,
            status_message_id=inp.status_message_id,
            options=dict(inp.options),
            image_urls=image_urls,
        )
        try:
            task_id = ""
            if inp.shape >= LOCAL_CREATE_SHAPE:
                task_id, create_input = await self._create_here(create_input)
            if not task_id:
                task_id = await self._create_queued(inp, create_input)
            self._task_id = task_id
        except (ActivityError, ApplicationError) as err:
            _raise_if_cancelled(err)
            rejected = _failure_type(err) == "KieRejected"
            return await self._finish(inp, "failed" if rejected else "error", _failure_message(err))

        # Wait for the callback or the next poll, whichever comes first.
        # LOCAL_DELIVERY_SHAPE: the upsert waits for the end of the schedule's first (fastest) segment, 30 s
        # by default: most generations are done before, and their final upsert carries the task id (one
        # upsert a generation fewer: a visibility write each, docs/performance.md); one still waiting
        # then is what an operator looks for as GenerationState=waiting.
        self._waiting_shown = inp.shape < LOCAL_DELIVERY_SHAPE
        self._move_to("waiting", visibility.KIE_TASK_ID.value_set(self._task_id), upsert=self._waiting_shown)
        started = workflow.now()
        max_wait = float(inp.poll_schedule[-1][0])
        waiting_visible_after = float(inp.poll_schedule[0][0])
        seen = 0
        errors_in_row = 0  # recordInfo failures in a row: the polling interval doubles with each (max ×16)
        urls: list[str] = []
        woke_at = workflow.now()  # when the wake-up that found the result happened
        while True:
            elapsed = (workflow.now() - started).total_seconds()
            if elapsed >= max_wait:
                return await self._finish(inp, "timeout", f"no result after {int(max_wait)} s")
            if not self._waiting_shown and elapsed >= waiting_visible_after:
                self._waiting_shown = True
                self._move_to("waiting", visibility.KIE_TASK_ID.value_set(self._task_id))
            backoff = 2 ** min(errors_in_row, 4)
            wait = min(poll_interval(inp.poll_schedule, elapsed) * backoff, max_wait - elapsed)
            self._next_poll_at = (workflow.now() + timedelta(seconds=wait)).strftime("%H:%M:%S UTC")
            self._show_details()
            try:
                await workflow.wait_condition(lambda: self._callbacks > seen, timeout=timedelta(seconds=wait))
                reason = "callback"
            except asyncio.TimeoutError:
                reason = "timer"
            seen = self._callbacks
            woke_at = workflow.now()
            self._next_poll_at = ""  # due now: nothing is scheduled until the loop waits again
            self._polls += 1
            try:
                result = await self._poll(PollInput(
                    job_id=inp.job_id, task_id=self._task_id, tick=self._polls, reason=reason,
                    progress=self._progress(inp, (workflow.now() - started).total_seconds())))
            except (ActivityError, ApplicationError) as err:  # the local poll's failure comes unwrapped
                _raise_if_cancelled(err)
                self._last_error = f"recordInfo: {_failure_message(err)}"
                errors_in_row += 1  # a failed poll is a missed tick; the schedule goes on, slower
                continue
            self._last_state = result.state
            if result.state in ("error", "rejected") and result.error:
                self._last_error = f"recordInfo: {result.error}"
            self._show_details()
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

        # The lean shape records no upsert here: "delivering" lasts a second, an operator finds these
        # as GenerationState=waiting with the query's phase (README, "Operator guide").
        self._move_to("delivering", upsert=not self._shaped)
        deliver = DeliverInput(
            job_id=inp.job_id, chat_id=inp.chat_id, url=urls[0], model=inp.model, aspect_ratio=inp.aspect_ratio,
            lang=inp.lang, show_done=lean, status_message_id=inp.status_message_id,
        )
        try:
            delivered = None
            if inp.shape >= LOCAL_DELIVERY_SHAPE:
                delivered, deliver = await self._deliver_here(deliver)
            if delivered is None:
                delivered = await self._deliver_queued(deliver)
        except (ActivityError, ApplicationError) as err:  # the local attempt's failure comes unwrapped
            _raise_if_cancelled(err)
            permanent = _failure_type(err) == "PermanentDeliveryError"
            return await self._finish(inp, "undeliverable" if permanent else "error", _failure_message(err))
        if self._visible:
            metrics.observe("imagegen_callback_to_delivered_seconds", (workflow.now() - woke_at).total_seconds(),
                            meter=workflow.metric_meter())
        return await self._done(inp, delivered)

    async def _deliver_queued(self, deliver: DeliverInput) -> DeliverResult:
        """The delivery activity, retried until delivered or an hour has passed."""
        self._delivery = workflow.start_activity_method(
            GenerationActivities.deliver,
            deliver,
            task_queue=self._queue(ratelimits.TELEGRAM),
            start_to_close_timeout=DELIVER_START_TO_CLOSE,
            heartbeat_timeout=DELIVER_HEARTBEAT,
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=DELIVER_RETRY,
            # Wait for the activity to confirm a cancel: only then is it known that nothing is
            # being sent (an attempt that Telegram already accepted completes as delivered).
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=_deliver_summary(deliver),
        )
        return await self._delivery

    async def _deliver_here(self, deliver: DeliverInput) -> tuple[DeliverResult | None, DeliverInput]:
        """LOCAL_DELIVERY_SHAPE: the delivery as a local activity in this workflow task. Its result when
        it delivered (or found the picture delivered); a PermanentDeliveryError is raised; otherwise
        (None, the input for the delivery activity), carrying the accepted memo when Telegram had taken
        the picture and recording it was left to the activity."""
        self._delivery = workflow.start_local_activity_method(
            GenerationActivities.deliver, deliver,
            start_to_close_timeout=DELIVER_START_TO_CLOSE, retry_policy=LOCAL_DELIVER_RETRY,
            # As the activity: a cancel waits for the attempt, which completes when Telegram had accepted.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=_deliver_summary(deliver),
        )
        try:
            return await self._delivery, deliver
        except (ActivityError, ApplicationError) as err:  # a local activity's own failure comes unwrapped
            _raise_if_cancelled(err)
            if _failure_type(err) == "PermanentDeliveryError":
                raise
            accepted = _failure_memo(err, "message_id", int)
            self._accepted = accepted  # a cancel before the activity records it: delivery_outcome does
            self._last_error = f"deliver: {_failure_message(err)}"
            self._delivery = None
            # Telegram's retry_after (429), or the lock holder's lease: the activity starts after it, as
            # the activity's own retry would (a timer, only on this path).
            cause = _cause(err)
            delay = cause.next_retry_delay if isinstance(cause, ApplicationError) else None
            if accepted is None and delay is not None and delay > timedelta(0):
                await workflow.sleep(delay)
            return None, dataclasses.replace(deliver, accepted=accepted)

    async def _create_here(self, create: CreateTaskInput) -> tuple[str, CreateTaskInput]:
        """LOCAL_CREATE_SHAPE: createTask as a local activity in this workflow task, if Kie's window has a
        slot now. ("", the input for the queued attempt) when it has none or the attempt failed retryably
        (a task id Kie gave but Postgres did not take rides along); Kie's refusals are raised."""
        try:
            task_id = await workflow.execute_local_activity_method(
                GenerationActivities.create_task, dataclasses.replace(create, local=True),
                start_to_close_timeout=CREATE_START_TO_CLOSE, retry_policy=LOCAL_CREATE_RETRY,
                summary=f"createTask {_kie_model(create.model)}")
            return task_id, create
        except (ActivityError, ApplicationError) as err:  # a local activity's own failure comes unwrapped
            _raise_if_cancelled(err)
            if _failure_type(err) in ("KieRejected", "KieUnusable"):
                raise
            memo = _failure_memo(err, "task_id", str)
            self._last_error = f"createTask: {_failure_message(err)}"
            return "", dataclasses.replace(create, task_id=memo["task_id"] if memo else "")

    async def _create_queued(self, inp: GenerationInput, create: CreateTaskInput) -> str:
        """createTask on its rate-limited queue, retried by time; the user is told "queued" when it has
        not run within QUEUED_AFTER_SECONDS."""
        handle = workflow.start_activity_method(
            GenerationActivities.create_task,
            create,
            task_queue=self._queue(ratelimits.KIE_CREATE),
            start_to_close_timeout=CREATE_START_TO_CLOSE,
            schedule_to_close_timeout=CREATE_SCHEDULE_TO_CLOSE,
            retry_policy=CREATE_RETRY,
            summary=f"createTask {_kie_model(inp.model)}",
        )
        queued = False
        if self._lean or workflow.patched(QUEUED_STATUS_PATCH):
            done, _ = await workflow.wait([handle], timeout=QUEUED_AFTER_SECONDS)
            if not done:  # waiting its turn in the createTask queue: tell the user
                queued = True
                await self._queue_status(inp, "queued")
        task_id = await handle
        # The lean shape leaves "started" to the first poll's "🎨 generating" edit (or the picture):
        # in a burst those edits were a third of the Telegram queue's work (docs/performance.md).
        if queued and not self._shaped:
            await self._queue_status(inp, "started")
        return task_id

    async def _poll(self, poll: PollInput):
        """One recordInfo call. The lean shape runs it as a local activity in the workflow task that woke
        up (no activity task, no extra workflow task), paced across processes by the Postgres pacer
        (activities/generation.py); older shapes on the rate-limited recordInfo queue."""
        summary = f"recordInfo #{poll.tick} ({poll.reason})"
        if self._shaped:
            return await workflow.execute_local_activity_method(
                GenerationActivities.poll_task, poll, start_to_close_timeout=POLL_START_TO_CLOSE,
                retry_policy=POLL_RETRY, summary=summary)
        return await workflow.execute_activity_method(
            GenerationActivities.poll_task, poll, task_queue=self._queue(ratelimits.KIE_INFO),
            start_to_close_timeout=POLL_START_TO_CLOSE, retry_policy=POLL_RETRY, summary=summary)

    async def _delivery_outcome(self, inp: GenerationInput) -> DeliverResult | None:
        """The job's delivery as Postgres has it, once no attempt holds its lock (activities/generation.py)."""
        return await workflow.execute_activity_method(
            GenerationActivities.delivery_outcome, OutcomeInput(job_id=inp.job_id, accepted=self._accepted),
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=OUTCOME_START_TO_CLOSE, heartbeat_timeout=DELIVER_HEARTBEAT,
            retry_policy=OUTCOME_RETRY, summary="delivered before the cancel?")

    def _delivered(self) -> DeliverResult | None:
        """The delivery's result when it completed (Telegram accepted: nothing after that is cancelled)."""
        handle = self._delivery
        if handle is None or not handle.done() or handle.cancelled() or handle.exception() is not None:
            return None
        return handle.result()

    async def _done(self, inp: GenerationInput, delivered: DeliverResult) -> GenerationResult:
        self._delivery_level = delivered.level
        if self._visible:
            metrics.count("imagegen_deliveries", meter=workflow.metric_meter(), level=delivered.level or "unknown")
        return await self._finish(inp, "done", "", delivery_level=delivered.level, shown=delivered.status_shown)

    async def _credit_step(self, method, inp: GenerationInput, what: str, outcome: str = "") -> CreditsResult:
        """One ledger step, retried until Postgres answers (no ending may leave a reservation open)."""
        result = await workflow.execute_activity_method(
            method, CreditsInput(job_id=inp.job_id, user_id=inp.user_id, price=inp.price, outcome=outcome),
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=CREDITS_RETRY,
            summary=f"credits {what} {inp.price}",
        )
        if result.outcome in ("reserved", "already") and what == "reserve":
            self._credits = "reserved"
        elif result.outcome in ("captured", "released"):
            self._credits = result.outcome
        elif result.outcome == "already":  # an attempt whose answer was lost had written it (a retry)
            self._credits = "captured" if what == "capture" else "released"
        self._show_details()
        return result

    async def _upload_inputs(self, inp: GenerationInput) -> GenerationResult | None:
        """An edit's pictures to Kie's file host; the finished result when that cannot be done."""
        n = len(inp.images)
        try:
            self._uploads = await workflow.execute_activity_method(
                InputActivities.upload_inputs,
                UploadInput(job_id=inp.job_id, model=inp.model, images=list(inp.images)),
                # Telegram's getFile and Kie's upload host have no rate limit of their own here: the
                # workflow's own queue (the same worker runs it eagerly).
                task_queue=workflow.info().task_queue,
                start_to_close_timeout=UPLOAD_START_TO_CLOSE,
                heartbeat_timeout=UPLOAD_HEARTBEAT,
                schedule_to_close_timeout=UPLOAD_SCHEDULE_TO_CLOSE,
                retry_policy=UPLOAD_RETRY,
                summary=f"upload {n} picture{'s' if n != 1 else ''} → Kie files",
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            kind = _failure_type(err)
            # A picture that cannot be used (too big, not a picture, gone) or refused by Kie: the user is
            # told why; Kie or Telegram unusable for now (after the retries): "unavailable".
            outcome = "failed" if kind in ("InputRejected", "KieRejected") else "error"
            return await self._finish(inp, outcome, _failure_message(err))
        self._show_details()
        return None

    async def _queue_status(self, inp: GenerationInput, kind: str) -> None:
        """Cosmetic: a status edit that fails is logged, never a reason to stop the generation."""
        if inp.status_message_id is None:
            return
        try:
            await workflow.execute_activity_method(
                GenerationActivities.queue_status,
                QueueStatusInput(job_id=inp.job_id, chat_id=inp.chat_id, status_message_id=inp.status_message_id,
                                 kind=kind, model=inp.model, aspect_ratio=inp.aspect_ratio, lang=inp.lang),
                task_queue=self._queue(ratelimits.TELEGRAM),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STATUS_RETRY,
                summary=f"status {kind}",
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            workflow.logger.warning("QUEUE_STATUS_FAILED job_id=%s kind=%s", inp.job_id, kind)

    async def _finish(self, inp: GenerationInput, outcome: str, detail: str, delivery_level: str = "",
                      shown: bool = False) -> GenerationResult:
        """Record the outcome (state, metrics) and show it to the user, unless delivery already did (shown)."""
        if detail and outcome != "done":
            self._last_error = detail
        if self._credits == "reserved":  # exactly once per ending: the ledger's keys make a retry a no-op
            await self._credit_step(GenerationActivities.credits_settle, inp, "capture" if outcome == "done" else "release",
                                    outcome=outcome)
        extra = [visibility.DELIVERY_LEVEL.value_set(delivery_level)] if delivery_level else []
        if not self._waiting_shown and self._task_id:  # ended before the waiting upsert: its task id now
            extra.append(visibility.KIE_TASK_ID.value_set(self._task_id))
            self._waiting_shown = True
        self._move_to(outcome, *extra)
        if self._visible:
            meter = workflow.metric_meter()
            metrics.count("imagegen_generations_finished", meter=meter, outcome=outcome, model=inp.model)
            metrics.observe("imagegen_record_info_per_generation", float(self._polls), meter=meter)
        result = GenerationResult(
            job_id=inp.job_id, outcome=outcome, task_id=self._task_id, detail=detail, delivery_level=delivery_level
        )
        if shown:
            return result
        try:
            await workflow.execute_activity_method(
                GenerationActivities.finish,
                FinishInput(
                    job_id=inp.job_id,
                    chat_id=inp.chat_id,
                    status_message_id=inp.status_message_id,
                    outcome=outcome,
                    detail=detail,
                    lang=inp.lang,
                ),
                task_queue=self._queue(ratelimits.TELEGRAM),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=FINISH_RETRY,
                summary=f"status {STATUS_ICON.get(outcome, '')} {'' if outcome == 'done' else outcome}".rstrip(),
            )
        except ActivityError:
            workflow.logger.warning("FINISH_FAILED job_id=%s outcome=%s", inp.job_id, outcome)
        return result
