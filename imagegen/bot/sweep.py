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

from imagegen.contracts import GenerationInput, workflow_id_for
from imagegen.i18n import normalize, t
from imagegen.jobs import JobRepository
from imagegen.launch import deployment_fields, ensure_started, workflow_exists
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
    return GenerationInput(
        job_id=job["id"], user_id=job["user_id"], chat_id=job["chat_id"], model=job["model"], prompt=job["prompt"],
        aspect_ratio=job["aspect_ratio"], status_message_id=job["status_message_id"],
        lang=normalize(job.get("lang")), options=json.loads(job["options"]) if job.get("options") else {},
        images=images_from_job(job),  # an edit's pictures (issue 16)
        **deployment_fields(settings),
    )


async def sweep_once(temporal: Client, repo: JobRepository, bot: Bot, settings: Settings, *,
                     grace_seconds: float = GRACE_SECONDS, give_up_seconds: float = GIVE_UP_SECONDS) -> Counter:
    """One pass; returns how many jobs it started / found running / closed / could not decide."""
    done: Counter = Counter()
    for job in await repo.unstarted_jobs(grace_seconds):
        job_id = job["id"]
        if job["age_s"] < give_up_seconds:
            outcome = await ensure_started(temporal, input_for(job, settings), task_queue=settings.temporal_task_queue)
            done[outcome] += 1
            log_event(job_id, "SWEEP_STARTED" if outcome == "started" else "SWEEP_SEEN", outcome=outcome,
                      age_s=round(job["age_s"]))
            continue
        if await workflow_exists(temporal, workflow_id_for(job_id)) is not False:
            done["unknown"] += 1  # it runs (or the server cannot say): not ours to close
            continue
        if await repo.close_unstarted(job_id, "never started"):
            done["closed"] += 1
            log_event(job_id, "SWEEP_CLOSED", age_s=round(job["age_s"]))
            try:
                text = t("start_failed", normalize(job.get("lang")))
                if job["status_message_id"] is not None:
                    await bot.edit_message_text(text=text, chat_id=job["chat_id"], message_id=job["status_message_id"])
                else:
                    await bot.send_message(job["chat_id"], text)
            except Exception as exc:  # the row is closed; telling the user is best effort
                log_event(job_id, "SWEEP_TELL_FAILED", error=redact(f"{type(exc).__name__}: {exc}")[:200])
    return done


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
