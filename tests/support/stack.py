"""A whole pipeline inside the test's event loop: Kie and Telegram simulators, the bot's callback
HTTP server, a Temporal worker (real activities, real aiogram Bot) and optionally the bot's
dispatcher polling the Telegram simulator.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.generation import GenerationActivities
from imagegen.bot.app import build_dispatcher, poll_until_cancelled, start_http
from imagegen.bot.callback_api import build_http_app
from imagegen.contracts import GENERATION_SHAPE, GenerationInput, InputImage, workflow_id_for
from imagegen.launch import start_generation
from imagegen.delivery import create_bot
from imagegen.jobs import JobRepository
from imagegen.kie import KieClient
from imagegen import ratelimits
from imagegen.ratelimits import RateLimit
from imagegen.settings import Settings
from imagegen.telegram_pacing import telegram_pacing
from imagegen.uploads import input_records
from tests.support.kie_sim import KieSimulator
from tests.support.services import free_port
from tests.support.telegram_sim import TelegramSimulator
from worker import build_workers

FAST_SCHEDULE = [(2.0, 0.4), (6.0, 1.0), (12.0, 2.0)]
# What a bot with the default limits passes (Settings.direct_kinds): Telegram is paced in Postgres by
# each call (imagegen/telegram_pacing.py), so its activities need no rate-limited queue.
PRODUCTION_DIRECT = [ratelimits.TELEGRAM]


async def start_generation_workflow(client: Client, bot, task_queue: str, poll_schedule, *, prompt: str,
                                    ratio: str, chat_id: int | None = None, job_id: str | None = None,
                                    direct_kinds: list[str] | None = None, price: int = 0,
                                    shape: int = GENERATION_SHAPE) -> tuple[WorkflowHandle, str, int]:
    """What the bot does on the ratio tap, minus the conversation: a status message, then the workflow
    (`price`: its cost in credits, CREDITS=on; `shape`: 0 runs the shape older histories recorded)."""
    chat_id = chat_id or int(uuid.uuid4().int % 10**9) + 1000
    job_id = job_id or uuid.uuid4().hex[:16]
    status = await bot.send_message(chat_id, "⏳ test status")
    inp = GenerationInput(job_id=job_id, user_id=chat_id, chat_id=chat_id, model="zimage", prompt=prompt,
                          aspect_ratio=ratio, status_message_id=status.message_id,
                          poll_schedule=[[u, i] for u, i in poll_schedule], direct_kinds=list(direct_kinds or []),
                          price=price, shape=shape)
    handle = await start_generation(client, inp, task_queue=task_queue)
    return handle, job_id, chat_id


async def reset_kie_account(pool) -> None:
    """Every stack starts with the Kie account open: a test whose Kie answered 402 closed it for the
    whole (shared) database, as it would in production (imagegen/kie_account.py)."""
    from imagegen.bot import generation as bot_generation

    await pool.execute("UPDATE kie_account SET out_of_credits = false, reason = 'test stack start'")
    bot_generation._kie_flag.invalidate()


def user_pictures(tg: TelegramSimulator, chat_id: int, pictures: list[bytes]) -> list[InputImage]:
    """A scripted user sends each picture as a photo; the InputImages the bot would take (the largest size)."""
    images = []
    for data in pictures:
        tg.user_send_photo(chat_id, image=data)
        full = tg.updates[-1]["message"]["photo"][-1]
        images.append(InputImage(file_id=full["file_id"], file_unique_id=full["file_unique_id"],
                                 size=full["file_size"]))
    return images


async def start_edit_workflow(client: Client, bot, repo: JobRepository, task_queue: str, poll_schedule, *,
                              images: list[InputImage], prompt: str, model: str = "nanobanana_edit",
                              ratio: str = "auto", options: dict[str, str] | None = None,
                              chat_id: int | None = None, job_id: str | None = None,
                              direct_kinds: list[str] | None = None,
                              shape: int = GENERATION_SHAPE) -> tuple[WorkflowHandle, str, int]:
    """What the bot does when an edit's ratio is tapped, minus the conversation: the job row with its
    input pictures (the bot's admission), a status message, then the workflow."""
    chat_id = chat_id or int(uuid.uuid4().int % 10**9) + 1000
    job_id = job_id or uuid.uuid4().hex[:16]
    status = await bot.send_message(chat_id, "⏳ test status")
    await repo.create_job(job_id=job_id, workflow_id=workflow_id_for(job_id, model), user_id=chat_id, chat_id=chat_id,
                          model=model, prompt=prompt, aspect_ratio=ratio, status_message_id=status.message_id,
                          options=options or {}, input_files=input_records(images))
    inp = GenerationInput(job_id=job_id, user_id=chat_id, chat_id=chat_id, model=model, prompt=prompt,
                          aspect_ratio=ratio, status_message_id=status.message_id, options=dict(options or {}),
                          poll_schedule=[[u, i] for u, i in poll_schedule],
                          direct_kinds=list(PRODUCTION_DIRECT if direct_kinds is None else direct_kinds),
                          images=list(images), shape=shape)
    handle = await start_generation(client, inp, task_queue=task_queue)
    return handle, job_id, chat_id


class Stack:
    def __init__(self, *, client: Client, pool: asyncpg.Pool, dsn: str, task_queue: str,
                 poll_schedule: list[tuple[float, float]] | None = None, **settings_overrides: Any):
        self.client = client
        self.pool = pool
        self.repo = JobRepository(pool)
        self.dsn = dsn
        self.task_queue = task_queue
        self.kie = KieSimulator(api_key="test-kie-key")
        self.tg = TelegramSimulator(token="123456:TEST-TOKEN")
        self.http_port = free_port()
        self.poll_schedule = poll_schedule or list(FAST_SCHEDULE)
        self.settings_overrides = settings_overrides  # e.g. delivery_mode="edit"
        self._tasks: list[asyncio.Task] = []
        self._runner = None
        self.workers: list[Worker] = []

    def settings(self, **overrides: Any) -> Settings:
        values = dict(
            telegram_bot_token=self.tg.token,
            kie_api_key="test-kie-key",
            public_base_url=f"http://127.0.0.1:{self.http_port}",
            callback_secret="test-callback-secret",
            telegram_api_base=self.tg.base_url,
            kie_api_base=self.kie.base_url,
            kie_upload_base=self.kie.upload_base_url,
            http_host="127.0.0.1",
            http_port=self.http_port,
            database_url=self.dsn,
            temporal_task_queue=self.task_queue,
            poll_schedule=self.poll_schedule,
            delivery_lease_seconds=30,
            download_timeout_seconds=5.0,
            allow_private_urls=True,  # the simulators live on 127.0.0.1
            # Global rate limits off unless a test asks (tests/test_rate_limits.py): the other tests'
            # timings and call counts are about their own faults, not about Kie's windows.
            kie_create_limit=RateLimit(0, 1.0),
            kie_record_info_limit=RateLimit(0, 1.0),
            telegram_send_limit=RateLimit(0, 1.0),
        )
        values.update(overrides)
        return Settings(**values)

    async def start(self) -> None:
        await reset_kie_account(self.pool)
        await self.kie.start()
        await self.tg.start()
        self.config = self.settings(**self.settings_overrides)
        self.bot = create_bot(self.config.telegram_bot_token.get_secret_value(), self.config.telegram_api_base, timeout=10,
                              pacing=telegram_pacing(self.config, self.pool))
        self.kie_client = KieClient(self.config.kie_api_base, self.config.kie_api_key.get_secret_value())
        self.activities = GenerationActivities(settings=self.config, repo=self.repo, kie=self.kie_client, bot=self.bot)
        self._runner = await start_http(build_http_app(self.client, self.config.callback_secret.get_secret_value()), "127.0.0.1", self.http_port)
        self.workers = build_workers(self.client, self.task_queue, self.activities)
        self._tasks += [asyncio.create_task(w.run()) for w in self.workers]

    async def start_bot(self) -> None:
        """Run the bot's dispatcher (long polling against the Telegram simulator)."""
        dp = build_dispatcher(self.client, self.config, self.pool)
        self._tasks.append(asyncio.create_task(poll_until_cancelled(dp, self.bot, polling_timeout=1)))

    async def stop(self) -> None:
        await asyncio.gather(*(w.shutdown() for w in self.workers))
        for t in self._tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.activities.close()
        await self.kie_client.close()
        await self.bot.session.close()
        await self.tg.stop()
        await self.kie.stop()

    async def start_generation(self, prompt: str = "a red fox in snow", ratio: str = "1:1",
                               chat_id: int | None = None, job_id: str | None = None,
                               direct_kinds: list[str] | None = None, price: int = 0,
                               shape: int = GENERATION_SHAPE) -> tuple[WorkflowHandle, str, int]:
        """Start a GenerationWorkflow as the bot would (status message first). Returns (handle, job_id, chat_id).
        Without `direct_kinds`, the production shape with its default limits (PRODUCTION_DIRECT: the
        Telegram activities on the workflow's own queue, createTask on its rate-limited queue)."""
        return await start_generation_workflow(self.client, self.bot, self.task_queue, self.poll_schedule,
                                               prompt=prompt, ratio=ratio, chat_id=chat_id, job_id=job_id,
                                               direct_kinds=PRODUCTION_DIRECT if direct_kinds is None else direct_kinds,
                                               price=price, shape=shape)

    async def start_edit(self, pictures: list[bytes] | None = None, prompt: str = "make it winter", *,
                         images: list[InputImage] | None = None, chat_id: int | None = None,
                         **kwargs: Any) -> tuple[WorkflowHandle, str, int]:
        """An edit as the bot starts it: the user's `pictures` (sent as photos) or given `images`."""
        chat_id = chat_id or int(uuid.uuid4().int % 10**9) + 1000
        if images is None:
            images = user_pictures(self.tg, chat_id, pictures or [])
        return await start_edit_workflow(self.client, self.bot, self.repo, self.task_queue, self.poll_schedule,
                                         images=images, prompt=prompt, chat_id=chat_id, **kwargs)

    def photos_for(self, chat_id: int) -> list:
        return [p for p in self.tg.photos if p.chat_id == chat_id]
