"""The sweep: requests the bot admitted (a 'created' job row) but never turned into a workflow —
the bot crashed between the insert and the start, or the start failed in a way nobody could check.

Every bot process runs it every SWEEP_EVERY_SECONDS (it is safe to repeat and to run in several
processes at once: the workflow id is the job's, so only one start wins, and closing is one
conditional UPDATE). A job older than the grace period with no workflow is started; one that has
waited so long that a picture now would surprise the user is closed instead, and the user is told.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

from aiogram import Bot
from temporalio.client import Client

from imagegen.contracts import GenerationInput, GenerationResult
from imagegen.i18n import normalize, t
from imagegen.jobs import JobRepository
from imagegen.launch import MISSING, RPC_TIMEOUT, deployment_fields, generation_price, ensure_started, workflow_status
from imagegen.outcomes import ROW_STATE, status_text
from imagegen.logs import log_event
from imagegen.redact import redact
from imagegen.settings import Settings
from imagegen.uploads import images_from_job

log = logging.getLogger("imagegen.bot")
SWEEP_EVERY_SECONDS = 30.0
GRACE_SECONDS = 30.0  # a handler that is still starting its workflow is left alone
GIVE_UP_SECONDS = 15 * 60.0  # older than this: close instead of starting


def input_for(job: dict, settings: Settings) -> GenerationInput:
    """The workflow input the ratio tap would have started, rebuilt from the job row."""
    options = json.loads(job["options"]) if job.get("options") else {}
    return GenerationInput(
        job_id=job["id"], user_id=job["user_id"], chat_id=job["chat_id"], model=job["model"], prompt=job["prompt"],
        aspect_ratio=job["aspect_ratio"], status_message_id=job["status_message_id"],
        lang=normalize(job.get("lang")), options=options,
        images=images_from_job(job),  # an edit's pictures (issue 16)
        price=generation_price(settings, job["model"], options),
        **deployment_fields(settings),
    )


# A closed workflow whose row still says 'created' (its own writes failed, or it was terminated):
# the row's state for each ending, and the outcome the user is shown.
CLOSED_OUTCOME = {"CANCELED": "cancelled", "TIMED_OUT": "timeout", "TERMINATED": "error", "FAILED": "error"}
PAGE = 50  # rows per query; a pass goes through every page (at most MAX_PAGES)
MAX_PAGES = 20


async def sweep_once(temporal: Client, repo: JobRepository, bot: Bot, settings: Settings, *,
                     grace_seconds: float = GRACE_SECONDS, give_up_seconds: float = GIVE_UP_SECONDS) -> Counter:
    """One pass over every 'created' job older than the grace period; returns how many it started /
    found running or already started / closed / could not decide / failed on. One job that fails
    (a start that raises, a message that cannot be edited) does not stop the pass."""
    done: Counter = Counter()
    after = None
    for _ in range(MAX_PAGES):
        jobs = await repo.unstarted_jobs(grace_seconds, limit=PAGE, after=after)
        for job in jobs:
            try:
                done[await _sweep_job(temporal, repo, bot, settings, job, give_up_seconds)] += 1
            except Exception as exc:
                done["failed"] += 1
                log_event(job["id"], "SWEEP_JOB_FAILED", severity=logging.WARNING,
                          error=redact(f"{type(exc).__name__}: {exc}")[:200])
        if len(jobs) < PAGE:
            break
        after = (jobs[-1]["created_at"], jobs[-1]["id"])
    return done


async def _sweep_job(temporal: Client, repo: JobRepository, bot: Bot, settings: Settings, job: dict,
                     give_up_seconds: float) -> str:
    job_id = job["id"]
    status = await workflow_status(temporal, job["workflow_id"])
    if status is None:
        return "unknown"  # the server cannot say now: the next pass asks again
    if status == "RUNNING":
        return "running"  # e.g. its createTask waits in the rate-limited queue
    if status != MISSING:
        return await _close_finished(temporal, repo, bot, job, status)
    if job["age_s"] < give_up_seconds:
        outcome = await ensure_started(temporal, input_for(job, settings), task_queue=settings.temporal_task_queue,
                                       workflow_id=job["workflow_id"])
        log_event(job_id, "SWEEP_STARTED" if outcome == "started" else "SWEEP_SEEN", outcome=outcome,
                  age_s=round(job["age_s"]))
        return outcome
    if not await repo.close_unstarted(job_id, "never started"):
        return "moved_on"
    log_event(job_id, "SWEEP_CLOSED", age_s=round(job["age_s"]))
    await _tell(bot, job, t("start_failed", normalize(job.get("lang"))))
    return "closed"


async def _close_finished(temporal: Client, repo: JobRepository, bot: Bot, job: dict, status: str) -> str:
    """The workflow has ended but the row was never moved on: record its ending, tell the user."""
    outcome, detail = CLOSED_OUTCOME.get(status, "error"), f"workflow {status.lower()}"
    if status == "COMPLETED":
        result = await temporal.get_workflow_handle(job["workflow_id"], result_type=GenerationResult).result(
            rpc_timeout=RPC_TIMEOUT)
        outcome, detail = result.outcome, result.detail or detail
        if outcome == "done":  # delivered: the delivery recorded it (or its write is what failed); nothing to tell
            log_event(job["id"], "SWEEP_SEEN", workflow_status=status, outcome=outcome)
            return "already"
    if not await repo.close_unstarted(job["id"], detail[:500], state=ROW_STATE.get(outcome, "error")):
        return "moved_on"
    log_event(job["id"], "SWEEP_CLOSED", workflow_status=status, outcome=outcome, age_s=round(job["age_s"]))
    text = status_text(outcome, detail, normalize(job.get("lang")))
    if text is not None:
        await _tell(bot, job, text)
    return "closed"


async def _tell(bot: Bot, job: dict, text: str) -> None:
    """Show `text` on the request's "⏳" status message (or as a message). Best effort: the row is closed."""
    try:
        if job["status_message_id"] is not None:
            await bot.edit_message_text(text=text, chat_id=job["chat_id"], message_id=job["status_message_id"])
        else:
            await bot.send_message(job["chat_id"], text)
    except Exception as exc:
        log_event(job["id"], "SWEEP_TELL_FAILED", error=redact(f"{type(exc).__name__}: {exc}")[:200])


async def run_sweeper(temporal: Client, repo: JobRepository, bot: Bot, settings: Settings, *,
                      every: float = SWEEP_EVERY_SECONDS, **kwargs) -> None:
    """Sweep forever (until cancelled); a failed pass (database or Temporal away) waits for the next."""
    while True:
        try:
            counts = await sweep_once(temporal, repo, bot, settings, **kwargs)
            if counts:
                log.info("SWEEP %s", " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("SWEEP_FAILED %s", redact(f"{type(exc).__name__}: {exc}")[:200])
        await asyncio.sleep(every)
