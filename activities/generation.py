"""Activities of GenerationWorkflow: thin adapters over imagegen's domain code.

One instance per worker process holds the shared resources (asyncpg pool, aiogram Bot, Kie client,
settings), all created inside the running loop by worker.py.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramNetworkError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from imagegen.callbacks import callback_url
from imagegen.credits import Ledger
from imagegen.contracts import (
    CreateTaskInput,
    CreditsInput,
    CreditsResult,
    DeliverInput,
    DeliverResult,
    FinishInput,
    OutcomeInput,
    PollInput,
    PollResult,
    QueueStatusInput,
    StatusProgress,
)
from activities import budget
from activities.inputs import InputActivities
from activities.lease import LeaseKeeper
from imagegen.delivery import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    classify_telegram_error,
)
from imagegen.delivery_edit import deliver_result
from imagegen.bot.keyboards import result_keyboard
from imagegen.i18n import t
from imagegen.jobs import JobRepository
from imagegen.outcomes import ROW_STATE, status_text
from imagegen.kie import ACCOUNT_CODES, KieClient, KieError, parse_kie_state
from imagegen import kie_account, metrics, ratelimits
from imagegen.logs import log_event
from imagegen.redact import redact, register_settings
from imagegen.models import MODELS
from imagegen.pacer import Pacer
from imagegen.settings import Settings
from imagegen.uploads import KieUploader


# Failures the code expects and retries (Kie 429/5xx, lock busy, Telegram 429/5xx/403): the SDK logs
# BENIGN ones at DEBUG without a traceback; our own log line (with the correlation id) says what happened.
BENIGN = ApplicationErrorCategory.BENIGN
# After Kie answered createTask, the attempt keeps this long for storing the task id (a retried write).
TASK_ID_WRITE_SECONDS = budget.DB_CALL_SECONDS
# A createTask call is not started with less than this left of the attempt: it could not get Kie's
# answer, and a call cut short may still have created a (paid) task that nobody learns of.
MIN_CREATE_CALL_SECONDS = 5.0
# A recordInfo poll waits at most this long for its slot in Kie's window (the lean shape's poll is a
# local activity: its workflow task stays open meanwhile); beyond, the attempt is retried when it frees.
INFO_MAX_WAIT_SECONDS = 3.0
# The local createTask attempt (LOCAL_CREATE_SHAPE) waits at most this long for its slot of Kie's window
# (its workflow task stays open meanwhile); a slot further away: the workflow queues the task instead.
LOCAL_CREATE_MAX_WAIT_SECONDS = 1.0
LOCAL_STORE_SECONDS = 5.0  # how long the local attempt retries storing Kie's task id (then: the queued one)
# A delivery cancelled while its request is on the way to Telegram waits this long for the answer:
# an accepted picture makes the generation done (never "cancelled" with a picture in the chat).
CANCEL_GRACE_SECONDS = 5.0
# Telegram accepted the picture: if recording that takes longer than this, its message id is heartbeated
# (a later attempt then only records it); a normal commit takes milliseconds and costs no heartbeat.
MEMO_AFTER_SECONDS = 0.25


def _memo(details: object, key: str, kind: type) -> dict | None:
    """The memo a previous attempt heartbeated (its last heartbeat's details) when it carries `key`."""
    if isinstance(details, (list, tuple)) and details:
        last = details[-1]
        if isinstance(last, dict) and isinstance(last.get(key), kind):
            return last
    return None


async def _cancel_proof(job_id: str, work) -> object:
    """Run `work` to its end even when the activity is cancelled meanwhile, and return its result.

    For what follows Telegram's accept: recording the delivery (retried through a Postgres outage)
    and the final "✅" (a 429's wait included). A cancel that lands then comes too late: the picture
    is in the chat, so the attempt completes as delivered and the workflow ends done, never
    "cancelled" without its message id (docs/reliability.md, "Cancel")."""
    task = asyncio.ensure_future(work)
    late_cancel = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done() and task.cancelled():
                raise
            if not late_cancel:
                late_cancel = True
                log_event(job_id, "DELIVER_CANCEL_TOO_LATE", reason="Telegram already accepted the picture")
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
    return result


async def _memo_if_slow(work, memo: dict):
    """Await `work` (recording an accepted delivery); if it takes longer than MEMO_AFTER_SECONDS,
    heartbeat `memo` (the accepted message id) so that a later attempt only records it. Not up front:
    a prompt commit then costs the server no heartbeat (docs/performance.md); after this, the lease
    keeper beats the memo every 2 s and _retry_db with each failed write."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=MEMO_AFTER_SECONDS)
    if not done:
        budget.heartbeat(memo)
    return await task


async def _answer_in_flight(send: asyncio.Future, grace: float):
    """The result of a send already under way when its activity was cancelled, if Telegram answers
    within `grace` seconds and accepted it; None otherwise (the send is then stopped)."""
    try:
        async with asyncio.timeout(grace):
            return await asyncio.shield(send)
    except (Exception, asyncio.CancelledError):
        send.cancel()
        return None


def _retry_delay(err: RetryableDeliveryError) -> timedelta | None:
    """Telegram's retry_after (429), with jitter, as the next retry's delay; None lets the retry policy decide."""
    return ratelimits.jittered(err.retry_after) if err.retry_after else None


class GenerationActivities:
    def __init__(self, *, settings: Settings, repo: JobRepository, kie: KieClient, bot: Bot,
                 uploader: KieUploader | None = None):
        self.settings = settings
        register_settings(settings)  # its secrets are scrubbed from every error text and log line
        self.repo = repo
        self.kie = kie
        self.bot = bot
        limit = settings.kie_create_limit
        self.ledger = Ledger(repo.pool, free_credits=settings.free_credits)
        self.create_pacer = Pacer(repo.pool, ratelimits.KIE_CREATE, limit) if limit.paces(ratelimits.KIE_CREATE) else None
        # recordInfo (issue 18): the lean shape polls in a local activity, which no task-queue limiter
        # sees, so every poll takes a slot of Kie's window in Postgres, queued ones too.
        info = settings.kie_record_info_limit
        self.info_pacer = Pacer(repo.pool, ratelimits.KIE_INFO, info) if info.paces(ratelimits.KIE_INFO) else None
        # An edit's pictures to Kie's upload host (activities/inputs.py); its session is closed by close().
        self.inputs = InputActivities(settings=settings, repo=repo, bot=bot, uploader=uploader or KieUploader(
            settings.kie_upload_base, settings.kie_api_key.get_secret_value()))

    async def close(self) -> None:
        """Close what this object opened itself (the upload client's session)."""
        await self.inputs.uploader.close()

    @activity.defn(name="credits_reserve")
    async def credits_reserve(self, inp: CreditsInput) -> CreditsResult:
        """Reserve the generation's price (imagegen/credits.py; repeated: "already", nothing taken twice)."""
        r = await self.ledger.reserve(inp.job_id, inp.user_id, inp.price)
        log_event(inp.job_id, "CREDITS_RESERVE", outcome=r.outcome, price=inp.price, balance=r.balance)
        return CreditsResult(outcome=r.outcome, balance=r.balance)

    @activity.defn(name="credits_settle")
    async def credits_settle(self, inp: CreditsInput) -> CreditsResult:
        """Delivered: capture the reservation; any other ending: release it (the credits go back)."""
        if inp.outcome == "done":
            outcome = await self.ledger.capture(inp.job_id)
        else:
            outcome = await self.ledger.release(inp.job_id, inp.outcome)
        log_event(inp.job_id, "CREDITS_CAPTURE" if inp.outcome == "done" else "CREDITS_RELEASE", outcome=outcome,
                  ending=inp.outcome)
        return CreditsResult(outcome=outcome)

    @activity.defn(name="create_task")
    async def create_task(self, inp: CreateTaskInput) -> str:
        """Record the job and create the Kie task; on a retry, reuse the task already created.

        `inp.local` (LOCAL_CREATE_SHAPE: a local activity in the workflow's first task): only if Kie's
        window has a slot now; "" when it has none (the workflow then queues a regular attempt)."""
        model = MODELS[inp.model]
        deadline = budget.attempt_deadline()
        job = await self.repo.create_job(
            job_id=inp.job_id,
            workflow_id=inp.workflow_id,
            user_id=inp.user_id,
            chat_id=inp.chat_id,
            model=inp.model,
            prompt=inp.prompt,
            aspect_ratio=inp.aspect_ratio,
            status_message_id=inp.status_message_id,
            options=model.clean_options(inp.options),
        )
        if job["external_task_id"]:
            return job["external_task_id"]
        earlier = _memo(activity.info().heartbeat_details, "task_id", str)
        if earlier is None and inp.task_id:  # the local attempt got one but could not store it
            earlier = {"task_id": inp.task_id}
        if earlier is not None:  # a previous attempt got a task id but could not store it
            task_id = earlier["task_id"]
            await self._retry_db(inp.job_id, "set_task_id", lambda: self.repo.set_task_id(inp.job_id, task_id),
                                 deadline, earlier)
            log_event(inp.job_id, "JOB_CREATED", task_id=task_id, user_id=inp.user_id, reused=True)
            return task_id
        # One Kie call at a time per job (migration 009): a local attempt whose workflow task timed out
        # may still be inside its call while another worker runs the attempt again.
        claimed, stored, held = await self.repo.claim_create(inp.job_id, budget.remaining(deadline) + budget.MARGIN_SECONDS)
        if stored:  # the other attempt's task, stored meanwhile
            log_event(inp.job_id, "JOB_CREATED", task_id=stored, user_id=inp.user_id, reused=True)
            return stored
        if not claimed:
            log_event(inp.job_id, "KIE_CREATE_BUSY", held=round(held, 1), local=inp.local)
            if inp.local:
                return ""  # the queued attempt comes back when the other one is done
            raise ApplicationError("another attempt is creating this job's Kie task", type="KiePaced",
                                   category=BENIGN, next_retry_delay=timedelta(seconds=max(held, 1.0)))
        answered = False
        try:
            task_id = await self._call_kie(inp, model, deadline)
            answered = bool(task_id)
        finally:
            if not answered:  # no task was created (as far as Kie said): the next attempt may call
                await self._release_create(inp.job_id)
        if not task_id:
            return ""  # Kie's window is full: the workflow hands createTask to its queue
        # Kie has no idempotency key either: once it answered, keep its task id even if Postgres is
        # briefly away (the write retried here, the id heartbeated with each failure for a retried
        # attempt). Not heartbeated up front: a heartbeat is a server write per generation, and the
        # write normally succeeds within milliseconds (docs/performance.md, "Throughput").
        memo = {"task_id": task_id}
        # The local attempt holds its workflow task open: through a longer Postgres outage the queued
        # attempt (retried by time) stores the id instead.
        store_by = min(deadline, asyncio.get_running_loop().time() + LOCAL_STORE_SECONDS) if inp.local else deadline
        try:
            await self._retry_db(inp.job_id, "set_task_id", lambda: self.repo.set_task_id(inp.job_id, task_id),
                                 store_by, memo)
        except ApplicationError as exc:
            if not inp.local:
                raise
            # A local attempt has no heartbeat to keep the id in: it goes back to the workflow in the
            # failure's details, and the queued attempt the workflow starts next only stores it.
            raise ApplicationError(exc.message, memo, type=exc.type) from None
        log_event(inp.job_id, "JOB_CREATED", task_id=task_id, user_id=inp.user_id, model=model.kie_model,
                  aspect_ratio=inp.aspect_ratio)
        return task_id

    async def _call_kie(self, inp: CreateTaskInput, model, deadline: float) -> str:
        """Kie's createTask within this attempt's budget, after its slot of Kie's window; "" when a local
        attempt finds no slot now."""
        if inp.local:
            if not await self._create_slot_now(inp.job_id):
                return ""
        else:
            await self._wait_for_create_slot(inp.job_id, deadline)
        # Every wait above came out of the same attempt: the call gets what is left of it (never more
        # than the client's own timeout), minus the time to store the answer. A call that would run
        # past the attempt's end is never started: Temporal would time the attempt out while Kie
        # creates the task, and the retry, finding no task id, would create a second, paid one.
        call_budget = budget.remaining(deadline) - TASK_ID_WRITE_SECONDS
        if call_budget < MIN_CREATE_CALL_SECONDS:
            log_event(inp.job_id, "KIE_CREATE_DEFERRED", left=round(call_budget, 2))
            raise ApplicationError("createTask attempt has no time left for the call", type="KiePaced",
                                   category=BENIGN, next_retry_delay=timedelta(seconds=1))
        try:
            task_id = await self.kie.create_task(model.kie_request(
                inp.prompt, inp.aspect_ratio, inp.options,
                callback_url=callback_url(self.settings.public_base_url, self.settings.callback_secret.get_secret_value(),
                                          inp.job_id, inp.workflow_id),
                image_urls=inp.image_urls or None,  # an edit: its pictures on Kie's file host (upload_inputs)
            ), timeout=min(call_budget, self.kie.timeout))
        except KieError as exc:
            log_event(inp.job_id, "JOB_CREATE_FAILED", code=exc.code, retryable=exc.retryable, error=redact(exc.message))
            if not exc.retryable:
                await self.repo.set_state(inp.job_id, "fail", error=redact(exc))
                if exc.code == 402:  # Kie is out of credits: the bot admits nothing until a check sees credits
                    await kie_account.set_account(self.repo.pool, out_of_credits=True, reason="createTask answered 402")
                    log_event(inp.job_id, "KIE_CREDITS_OUT", severity=logging.WARNING, reason="createTask 402")
                # KieRejected: this request was refused (the user is told why); KieUnusable: the
                # account is (401 key, 402 credits, 505 feature) — the user sees "unavailable".
                kind = "KieUnusable" if exc.code in ACCOUNT_CODES else "KieRejected"
                raise ApplicationError(redact(exc), type=kind, non_retryable=True, category=BENIGN) from None
            # 429: Kie gives no retry_after; its window frees within 10 s. Jittered, so refused tasks
            # do not come back as one herd (and the createTask queue paces them anyway).
            delay = ratelimits.jittered(ratelimits.KIE_CREATE_WINDOW_SECONDS) if exc.code == 429 else None
            raise ApplicationError(redact(exc), type="KieUnavailable", next_retry_delay=delay,
                                   category=BENIGN) from None
        return task_id

    async def _release_create(self, job_id: str) -> None:
        try:
            await asyncio.shield(self.repo.release_create(job_id))
        except Exception as exc:  # Postgres away: the claim runs out by itself at the attempt's end
            log_event(job_id, "KIE_CREATE_RELEASE_FAILED", error=redact(f"{type(exc).__name__}: {exc}")[:200])

    async def _create_slot_now(self, job_id: str) -> bool:
        """The local attempt's slot of Kie's createTask window: taken only if it is (nearly) free now."""
        if self.create_pacer is None:
            return True
        taken, delay = await self.create_pacer.reserve(LOCAL_CREATE_MAX_WAIT_SECONDS)
        if not taken:
            log_event(job_id, "KIE_PACED", wait=round(delay, 2), queued=True)
            return False
        if delay > 0.05:
            await asyncio.sleep(delay)
        return True

    async def _wait_for_create_slot(self, job_id: str, deadline: float) -> None:
        """Kie's createTask window, exact across all workers (imagegen/pacer.py). A slot too far away for
        this attempt's budget is not taken: the task goes back to the Temporal queue until then."""
        if self.create_pacer is None:
            return
        # The whole Kie call (the client's full timeout) and the task-id write must fit after the wait.
        max_wait = max(budget.remaining(deadline) - self.kie.timeout - TASK_ID_WRITE_SECONDS, 0.0)
        taken, delay = await self.create_pacer.reserve(max_wait)
        if not taken:
            log_event(job_id, "KIE_PACED", wait=round(delay, 2), requeued=True)
            raise ApplicationError("createTask window full", type="KiePaced", category=BENIGN,
                                   next_retry_delay=timedelta(seconds=max(delay - max_wait, 1.0)))
        if delay > 0.05:
            log_event(job_id, "KIE_PACED", wait=round(delay, 2))
            await budget.sleep_heartbeating(delay)

    @activity.defn(name="poll_task")
    async def poll_task(self, inp: PollInput) -> PollResult:
        """Ask recordInfo once. Kie errors are reported as state "error", not raised: a missed tick."""
        await self._wait_for_info_slot(inp)
        try:
            # Within the attempt, with time left to record a final state.
            call_budget = budget.remaining(budget.attempt_deadline()) - budget.DB_CALL_SECONDS
            payload = await self.kie.record_info(inp.task_id, timeout=max(call_budget, 1.0))
        except KieError as exc:
            # 501: the generation failed; 401/402/505: the account is unusable, polling on cannot help;
            # anything else (429, 5xx, network, "recordInfo is null" right after creation): a missed tick.
            state = "fail" if exc.code == 501 else "rejected" if exc.code in ACCOUNT_CODES else "error"
            if exc.code == 429 and inp.reason == "callback":
                # A callback's confirmation refused by a rate limit: asked again after Kie's window
                # (jittered), never left to the next polling tick. A timer's tick just misses (backoff).
                log_event(inp.job_id, "POLL_RATE_LIMITED", i=inp.tick, task_id=inp.task_id, reason=inp.reason)
                raise ApplicationError("recordInfo rate limited", type="KieRateLimited", category=BENIGN,
                                       next_retry_delay=ratelimits.jittered(ratelimits.KIE_INFO_WINDOW_SECONDS, 1.0))
            log_event(inp.job_id, "POLL_TICK", i=inp.tick, task_id=inp.task_id, reason=inp.reason, state=state,
                      error=redact(exc))
            if state == "fail":
                await self.repo.set_state(inp.job_id, "fail", error=redact(exc.message))
            return PollResult(state, [], redact(exc.message if state == "fail" else exc))
        state, urls, error = parse_kie_state(payload)
        log_event(inp.job_id, "POLL_TICK", i=inp.tick, task_id=inp.task_id, reason=inp.reason, state=state,
                  urls=len(urls), **({"error": error} if error else {}))
        if state in ("success", "fail"):
            await self.repo.set_state(inp.job_id, state, error=error or None, result_urls=urls)
        elif inp.progress is not None:
            await self._show_progress(inp.job_id, inp.progress)
        return PollResult(state, urls, error)

    async def _wait_for_info_slot(self, inp: PollInput) -> None:
        """Kie's recordInfo window, exact across all workers (imagegen/pacer.py). A slot further than
        INFO_MAX_WAIT_SECONDS is not taken: the attempt is retried when it frees (a benign failure)."""
        if self.info_pacer is None:
            return
        taken, delay = await self.info_pacer.reserve(INFO_MAX_WAIT_SECONDS)
        if not taken:
            log_event(inp.job_id, "POLL_PACED", i=inp.tick, wait=round(delay, 2), retried=True)
            raise ApplicationError("recordInfo window full", type="KieRateLimited", category=BENIGN,
                                   next_retry_delay=timedelta(seconds=max(delay - INFO_MAX_WAIT_SECONDS, 0.5)))
        if delay > 0.05:
            await budget.sleep_heartbeating(delay)

    async def _show_progress(self, job_id: str, p: StatusProgress) -> None:
        """"Generating, N s so far" on the status message. Cosmetic: a refusal is only logged."""
        text = t("status.generating", p.lang, model=MODELS[p.model].title(p.lang), ratio=p.aspect_ratio,
                 elapsed=p.elapsed)
        try:
            await self.bot.edit_message_text(text=text, chat_id=p.chat_id, message_id=p.message_id)
        except Exception as exc:
            log_event(job_id, "STATUS_PROGRESS_FAILED", error=redact(f"{type(exc).__name__}: {exc}")[:200])

    @activity.defn(name="deliver")
    async def deliver(self, inp: DeliverInput) -> DeliverResult:
        """Take the lock, deliver with the 3-level fallback (DELIVERY_MODE: a new photo, or the status
        message edited into it), mark delivered only after Telegram accepted.

        The lease is renewed with every heartbeat while sending (activities/lease.py); a holder that
        cannot keep it stops sending. Once Telegram has accepted, this attempt never sends again: the
        accepted message id is heartbeated unless recording it commits promptly (_memo_if_slow),
        recording it in Postgres is retried within the attempt's budget, and a later attempt that finds
        it in the heartbeat details only records it (see docs/reliability.md).
        """
        info = activity.info()
        deadline = budget.attempt_deadline()
        lease = self.settings.delivery_lease_seconds
        owner = f"{info.workflow_id}#{info.attempt}#{uuid.uuid4().hex[:8]}"
        # Telegram accepted it in an earlier attempt: that attempt's heartbeat, or the local attempt's
        # failure (LOCAL_DELIVERY_SHAPE, handed over through the workflow) carries the message id.
        accepted = _memo(info.heartbeat_details, "message_id", int) or _memo([inp.accepted], "message_id", int)
        if accepted is not None:
            activity.heartbeat(accepted)  # carry it forward in case recording fails again
            log_event(inp.job_id, "DELIVER_ALREADY_ACCEPTED", message_id=accepted["message_id"],
                      level=accepted["level"], attempt=info.attempt)
            # No lease keeper runs on this path: heartbeat while recording and showing the status.
            return await _cancel_proof(inp.job_id, budget.heartbeating(self._record_and_show(inp, accepted, deadline),
                                                                        accepted))

        lock = await self.repo.try_acquire_delivery_lock(inp.job_id, owner, lease)
        metrics.count("imagegen_delivery_lock", outcome=lock.outcome)  # won / busy / delivered / missing
        if lock.outcome == "delivered":
            log_event(inp.job_id, "DELIVER_LOCK_SKIP", reason="already delivered")
            return DeliverResult("skipped", lock.job.get("delivery_level") or "", lock.job.get("delivered_message_id"))
        if lock.outcome == "missing":
            raise ApplicationError(f"job {inp.job_id} not found", type="PermanentDeliveryError", non_retryable=True)
        if lock.outcome == "busy":
            # Come back when the holder's lease runs out (a dead holder no longer renews it).
            retry_in = min(lock.lease_left + 0.5, float(lease))
            log_event(inp.job_id, "DELIVER_LOCK_SKIP", reason="another owner is delivering",
                      owner=lock.job["delivery_owner"], retry_in=round(retry_in, 1))
            raise ApplicationError("delivery lock held by another owner", type="DeliveryLockBusy", category=BENIGN,
                                   next_retry_delay=timedelta(seconds=retry_in))

        log_event(inp.job_id, "DELIVER_LOCK_WIN", owner=owner)
        log_event(inp.job_id, "DELIVER_START", chat_id=inp.chat_id, attempt=info.attempt,
                  mode=self.settings.delivery_mode)
        beat: dict = {}
        send = asyncio.ensure_future(self._send(inp, lock.job.get("status_message_id")))
        keeper = LeaseKeeper(self.repo, inp.job_id, owner, lease, beat)
        keeping = asyncio.create_task(keeper.run(send))
        try:
            try:
                async with asyncio.timeout(max(budget.remaining(deadline) - budget.RECORD_RESERVE_SECONDS, 1.0)):
                    # Shielded: a cancel of the activity does not drop a request already on its way to
                    # Telegram (it is given CANCEL_GRACE_SECONDS to answer, below); the lease keeper
                    # and the timeout still stop it.
                    result = await asyncio.shield(send)
            except TimeoutError:
                await self.repo.release_delivery_lock(inp.job_id, owner, error="delivery attempt timed out")
                log_event(inp.job_id, "DELIVER_RETRY", error="attempt budget exceeded")
                raise ApplicationError("delivery attempt timed out", type="RetryableDeliveryError",
                                       category=BENIGN) from None
            except PermanentDeliveryError as exc:
                await self.repo.mark_undeliverable(inp.job_id, owner, redact(exc))
                log_event(inp.job_id, "DELIVER_FAILED", permanent=True, error=redact(exc))
                raise ApplicationError(redact(exc), type="PermanentDeliveryError", non_retryable=True,
                                       category=BENIGN) from None
            except RetryableDeliveryError as exc:
                await self.repo.release_delivery_lock(inp.job_id, owner, error=redact(exc))
                log_event(inp.job_id, "DELIVER_RETRY", error=redact(exc), retry_after=exc.retry_after or "")
                raise ApplicationError(redact(exc), type="RetryableDeliveryError",
                                       next_retry_delay=_retry_delay(exc), category=BENIGN) from None
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if keeper.lost and not current.cancelling():
                    # The lease could not be kept: stop here, a later attempt delivers.
                    raise ApplicationError(f"delivery stopped: {keeper.lost}", type="RetryableDeliveryError",
                                           category=BENIGN) from None
                # Cancelled (UI, CLI, /cancel) while sending: if Telegram accepts the request in
                # flight within the grace, the picture is in the chat and the attempt completes as
                # delivered (the workflow ends done); otherwise nothing was sent and the cancel stands.
                result = await _answer_in_flight(send, CANCEL_GRACE_SECONDS)
                if result is None:
                    await asyncio.shield(self.repo.release_delivery_lock(inp.job_id, owner))
                    raise
                current.uncancel()
                log_event(inp.job_id, "DELIVER_CANCEL_TOO_LATE", reason="Telegram accepted the picture in flight")
            except BaseException:
                await asyncio.shield(self.repo.release_delivery_lock(inp.job_id, owner))
                raise
            # Accepted by Telegram: from here on, never send again.
            beat.update(message_id=result.message_id, level=result.level, owner=owner)
            log_event(inp.job_id, "DELIVER_OK", level=result.level, message_id=result.message_id,
                      edited=result.edited, lease_renewals=keeper.renewals)
            if info.is_local:
                return await _cancel_proof(inp.job_id, self._record_here(inp, dict(beat), deadline))
            return await _cancel_proof(inp.job_id, _memo_if_slow(self._record_and_show(inp, dict(beat), deadline),
                                                                 dict(beat)))
        finally:
            keeping.cancel()
            if not send.done():
                send.cancel()

    @activity.defn(name="delivery_outcome")
    async def delivery_outcome(self, inp: OutcomeInput) -> DeliverResult | None:
        """For a cancelled generation whose delivery ran as a local activity: what Postgres says was
        delivered (the message Telegram accepted), or None when nothing was. A memo the workflow holds
        (the local attempt handed an accepted picture over, and the cancel stopped the activity before
        it recorded it) is recorded first. While an attempt holds the job's lock (sending, or recording
        what Telegram accepted), it waits for that attempt, at most one lease (a holder that died
        without recording: None, as nothing is known to be in the chat)."""
        job_id = inp.job_id
        accepted = _memo([inp.accepted], "message_id", int)
        if accepted is not None:
            await self._record(job_id, accepted, budget.attempt_deadline())
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.delivery_lease_seconds + 1.0
        while True:
            job = await self.repo.get(job_id)
            if job is not None and job["delivered_at"] is not None:
                log_event(job_id, "DELIVERY_OUTCOME", delivered=True, message_id=job["delivered_message_id"])
                return DeliverResult("delivered", job["delivery_level"] or "", job["delivered_message_id"])
            if job is None or job["delivering_at"] is None or loop.time() > until:
                log_event(job_id, "DELIVERY_OUTCOME", delivered=False)
                return None
            await budget.sleep_heartbeating(0.5)

    async def _send(self, inp: DeliverInput, status_message_id: int | None):
        model = MODELS[inp.model]
        caption = t("caption", inp.lang, model=model.title(inp.lang), ratio=inp.aspect_ratio)
        link_text = t("result_link", inp.lang, url=inp.url)
        edit = self.settings.delivery_mode == "edit"
        done = t("status.done", inp.lang)
        return await deliver_result(
            self.bot, self.settings.delivery_mode, inp.chat_id, status_message_id, inp.url,
            caption=caption,
            edit_caption=f"{caption}\n{done}",
            link_text=f"{link_text}\n{done}" if edit else link_text,
            reply_markup=result_keyboard(inp.job_id, inp.lang),
            corr_id=inp.job_id,
            max_bytes=self.settings.download_max_bytes,
            download_timeout=self.settings.download_timeout_seconds,
            allow_private=self.settings.allow_private_urls,
        )

    async def _record_here(self, inp: DeliverInput, accepted: dict, deadline: float) -> DeliverResult:
        """The local attempt's (LOCAL_DELIVERY_SHAPE) record and status. It has no heartbeat to keep the
        accepted memo in, so when recording does not commit within MEMO_AFTER_SECONDS (where the
        activity heartbeats it), the write is stopped and the memo goes back to the workflow in the
        failure's details: the delivery activity the workflow starts next only records it and shows the
        status (recording is idempotent). A cancel that came meanwhile: recorded here, however long."""
        record = asyncio.ensure_future(self._record(inp.job_id, accepted, deadline))
        await asyncio.wait({record}, timeout=MEMO_AFTER_SECONDS)
        if not record.done() and activity.is_cancelled():
            await asyncio.wait({record})  # a cancel came meanwhile: recorded here, however long
        if record.done() and record.exception() is None:
            return await self._show(inp, record.result(), accepted, deadline)
        slow = not record.done()  # else it failed: the attempt's budget ran out
        record.cancel()  # never a failure without the memo
        log_event(inp.job_id, "DELIVER_HANDED_OVER", message_id=accepted["message_id"],
                  reason="recording is slow" if slow else "recording failed")
        raise ApplicationError("Telegram accepted the picture; recording it is left to the delivery activity",
                               dict(accepted), type="DeliveryAccepted", category=BENIGN)

    async def _record_and_show(self, inp: DeliverInput, accepted: dict, deadline: float) -> DeliverResult:
        return await self._show(inp, await self._record(inp.job_id, accepted, deadline), accepted, deadline)

    async def _record(self, job_id: str, accepted: dict, deadline: float) -> DeliverResult:
        """Telegram accepted `accepted`: record it (retried while Postgres is unreachable)."""
        held = await self._retry_db(job_id, "mark_delivered", lambda: self.repo.mark_delivered(
            job_id, accepted["owner"], message_id=accepted["message_id"], level=accepted["level"]),
            deadline, accepted)
        log_event(job_id, "MARK_DELIVERED", message_id=accepted["message_id"], lock_held=held)
        return DeliverResult("delivered", accepted["level"], accepted["message_id"])

    async def _show(self, inp: DeliverInput, result: DeliverResult, accepted: dict, deadline: float) -> DeliverResult:
        """The picture is recorded: show the final status when the workflow asks (show_done). A 429 on
        that status is honoured here (its retry_after, jittered, then once more, heartbeating the memo
        meanwhile) when the attempt's budget allows; any other failure leaves it to the workflow's
        `finish` activity, which retries it. The picture stays delivered whatever happens to the status."""
        if not inp.show_done:
            return result
        final = FinishInput(job_id=inp.job_id, chat_id=inp.chat_id, outcome="done", detail="",
                            status_message_id=inp.status_message_id, lang=inp.lang)
        for retried in (False, True):
            try:
                await self._final_status(final, delivered_message_id=result.message_id)
                result.status_shown = True
                return result
            except (Exception, asyncio.CancelledError) as exc:  # delivered stays delivered, even if cancelled now
                wait = exc.next_retry_delay if isinstance(exc, ApplicationError) else None
                if retried or wait is None or budget.remaining(deadline) < wait.total_seconds() + 1.0:
                    log_event(inp.job_id, "FINAL_STATUS_DEFERRED", error=redact(f"{type(exc).__name__}: {exc}")[:200])
                    return result
                log_event(inp.job_id, "FINAL_STATUS_RETRY", retry_in=round(wait.total_seconds(), 1))
                await budget.sleep_heartbeating(wait.total_seconds(), accepted)
        return result

    async def _retry_db(self, job_id: str, what: str, call, deadline: float, memo: dict):
        """Run a database write that must not be lost, retrying until the attempt's `deadline`
        (activities/budget.py) and heartbeating `memo` meanwhile, so that neither start_to_close nor
        the heartbeat timeout ends the attempt first; a later attempt finds `memo` and only writes."""
        delay = 0.2
        while True:
            try:
                return await asyncio.wait_for(call(), min(max(budget.remaining(deadline), 0.5), budget.DB_CALL_SECONDS))
            except Exception as exc:  # connection refused, server restarting, pool errors…
                budget.heartbeat(memo)
                if budget.remaining(deadline) < delay:
                    log_event(job_id, "DB_WRITE_FAILED", what=what, error=redact(f"{type(exc).__name__}: {exc}")[:200])
                    raise ApplicationError(f"could not {what}: {type(exc).__name__}",
                                           type="DatabaseUnavailable") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @activity.defn(name="finish")
    async def finish(self, inp: FinishInput) -> None:
        """Record the outcome and edit the user's status message to its final text."""
        # (undeliverable is recorded by the delivery itself, with its reason)
        db_state = ROW_STATE.get(inp.outcome) if inp.outcome != "undeliverable" else None
        if db_state:  # every generation ends in a terminal state (delivered/undeliverable are set by deliver)
            await self.repo.set_state(inp.job_id, db_state, error=inp.detail or None)
        await self._final_status(inp)

    async def _final_status(self, inp: FinishInput, delivered_message_id: int | None = None) -> None:
        """Log FINISHED and show the outcome on the user's status message (`delivered_message_id`: the
        delivered picture's message, when the caller knows it; otherwise read from the job)."""
        text = status_text(inp.outcome, inp.detail, inp.lang)  # human; the raw detail stays in logs and the row
        log_event(inp.job_id, "FINISHED", outcome=inp.outcome, **({"detail": inp.detail} if inp.detail else {}))
        if text is None:  # undeliverable: the user cannot be reached
            return
        if inp.outcome == "done" and await self._status_became_result(inp, delivered_message_id):
            # DELIVERY_MODE=edit: the status message IS the picture (its caption carries the ✅), and
            # Telegram does not notify on edits: one short message that does — sent once.
            await self._show_status(inp.job_id, inp.chat_id, None, t("notice.done", inp.lang), once=True)
            return
        await self._show_status(inp.job_id, inp.chat_id, inp.status_message_id, text, once=True)

    @activity.defn(name="queue_status")
    async def queue_status(self, inp: QueueStatusInput) -> None:
        """The status message while the generation waits in the rate-limited createTask queue."""
        if inp.kind == "queued":
            text = t("status.queued", inp.lang)
        else:
            model = MODELS.get(inp.model)
            text = t("status.started", inp.lang, model=model.title(inp.lang) if model else inp.model,
                     ratio=inp.aspect_ratio)
        await self._show_status(inp.job_id, inp.chat_id, inp.status_message_id, text)

    async def _status_became_result(self, inp: FinishInput, delivered_message_id: int | None) -> bool:
        if inp.status_message_id is None:
            return False
        if delivered_message_id is None:
            job = await self.repo.get(inp.job_id)
            delivered_message_id = job["delivered_message_id"] if job is not None else None
        return delivered_message_id == inp.status_message_id

    async def _show_status(self, job_id: str, chat_id: int, message_id: int | None, text: str,
                           once: bool = False) -> None:
        """Edit the status message to `text` (idempotent), or send `text` when there is none. `once`:
        the generation's final message, which a new message must never repeat (_send_once)."""
        try:
            if message_id is not None:
                await self.bot.edit_message_text(text=text, chat_id=chat_id, message_id=message_id)
            elif once:
                await self._send_once(job_id, chat_id, text)
            else:
                await self.bot.send_message(chat_id, text)
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return  # already shows this text (a retried attempt)
            if message_id is not None and "not found" in exc.message:  # the status message was deleted
                await (self._send_once(job_id, chat_id, text) if once else self.bot.send_message(chat_id, text))
                return
            raise ApplicationError(redact(f"status update refused: {exc.message}"), non_retryable=True) from None
        except Exception as exc:
            mapped = classify_telegram_error(exc)
            if isinstance(mapped, PermanentDeliveryError):
                raise ApplicationError(redact(mapped), non_retryable=True, category=BENIGN) from None
            if isinstance(mapped, RetryableDeliveryError):
                raise ApplicationError(redact(mapped), next_retry_delay=_retry_delay(mapped), category=BENIGN) from None
            raise ApplicationError(redact(mapped or exc)) from None
        log_event(job_id, "STATUS_UPDATED", text=text[:40])

    async def _send_once(self, job_id: str, chat_id: int, text: str) -> None:
        """Send the generation's final message at most once, through retried attempts and lost answers:
        the right to send is claimed in Postgres first and given back only when Telegram surely refused
        (an error answer). A request whose answer never came may have been taken: it keeps the claim
        (the user has the picture either way; a repeat would be a second "ready")."""
        if not await self.repo.claim_notice(job_id):
            log_event(job_id, "NOTICE_ALREADY_SENT")
            return
        try:
            await self.bot.send_message(chat_id, text)
        except TelegramNetworkError as exc:  # no answer: it may have arrived
            log_event(job_id, "NOTICE_AMBIGUOUS", error=redact(f"{type(exc).__name__}: {exc}")[:200])
            return
        except BaseException:
            await asyncio.shield(self.repo.release_notice(job_id))
            raise

    def all(self) -> list:
        return [self.create_task, self.poll_task, self.deliver, self.delivery_outcome, self.finish, self.queue_status,
                self.credits_reserve, self.credits_settle, *self.inputs.all()]

    def for_queue(self, kind: str) -> list:
        """The activities that run on one rate-limited task queue (imagegen/ratelimits.py)."""
        return {ratelimits.KIE_CREATE: [self.create_task], ratelimits.KIE_INFO: [self.poll_task],
                ratelimits.TELEGRAM: [self.deliver, self.finish, self.queue_status]}[kind]
