"""Forged callbacks against the whole pipeline (real Temporal, Postgres, aiogram; simulated Kie and
Telegram), and secrets kept out of logs and the Temporal event history."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from imagegen.bot.app import start_http
from imagegen.bot.callback_api import STATS_KEY, build_http_app
from imagegen.callbacks import callback_token
from tests.support.images import make_png
from tests.support.services import free_port

HMAC_KEY = "e2e-webhook-hmac-key-7f3a"


class Attacker:
    """The attacker's image host: records whether anybody ever fetched from it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[str] = []
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/evil.png"

    async def start(self) -> "Attacker":
        async def handle(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            return web.Response(body=make_png(8, 8, seed=666), content_type="image/png")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def attacker():
    a = await Attacker().start()
    yield a
    await a.stop()


async def serve_callbacks(stack, **kw) -> web.Application:
    """Swap the stack's callback server (same port, so Kie's callBackUrl still reaches it) for one
    built with `kw` (e.g. webhook_hmac_key)."""
    await stack._runner.cleanup()
    app = build_http_app(stack.client, stack.config.callback_secret.get_secret_value(), **kw)
    stack._runner = await start_http(app, "127.0.0.1", stack.http_port)
    return app


def forged_bodies(task_id: str, url: str) -> list[dict]:
    """A fake success in both callback shapes, naming the attacker's image."""
    result_json = json.dumps({"resultUrls": [url]})
    return [
        {"code": 200, "msg": "success", "taskId": task_id,
         "data": {"task_id": task_id, "callbackType": "task_completed", "state": "success", "resultJson": result_json}},
        {"code": 200, "msg": "success",
         "data": {"taskId": task_id, "model": "z-image", "state": "success", "resultJson": result_json}},
    ]


async def post(url: str, body: dict, headers: dict | None = None) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body, headers=headers or {}) as resp:
            return resp.status


async def wait_task(stack, timeout: float = 10.0):
    for _ in range(int(timeout / 0.02)):
        if stack.kie.tasks:
            return next(iter(stack.kie.tasks.values()))
        await asyncio.sleep(0.02)
    raise TimeoutError("no Kie task created")


def assert_only_the_real_image(stack, chat_id, task, attacker):
    photos = stack.photos_for(chat_id)
    assert len(photos) == 1
    assert photos[0].sha256 == hashlib.sha256(stack.kie.image_bytes(task.task_id)).hexdigest()
    assert photos[0].url is None or attacker.url not in photos[0].url
    assert attacker.hits == []  # neither Telegram nor we ever fetched the attacker's URL
    texts = [m.get("text") or "" for m in stack.tg.messages(chat_id)]
    assert not any(attacker.url in t for t in texts)


async def test_forged_callback_with_the_leaked_url_arrives_first_user_gets_only_the_real_image(stack, attacker):
    """The attacker knows the full callback URL (token included) and no HMAC key is configured: the
    forged "success" is only a wake-up; recordInfo says "generating", so nothing is delivered
    until Kie really finishes, and then Kie's own URL is delivered."""
    stack.kie.delay = 2.0
    handle, job_id, chat_id = await stack.start_generation()
    task = await wait_task(stack)
    assert task.callback_url and callback_token(stack.config.callback_secret.get_secret_value(), job_id) in task.callback_url
    for body in forged_bodies(task.task_id, attacker.url):
        assert await post(task.callback_url, body) == 200  # accepted as a wake-up…
    await asyncio.sleep(0.5)
    status = await handle.query("status")
    assert status["callbacks"] >= 2 and status["phase"] == "waiting"  # …which changed nothing
    assert stack.photos_for(chat_id) == []
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "done"
    assert_only_the_real_image(stack, chat_id, task, attacker)
    row = await stack.repo.get(job_id)
    assert row["result_urls"] == [f"{stack.kie.base_url}/files/{task.task_id}.png"]


async def test_with_hmac_a_forged_callback_is_401_and_never_reaches_the_workflow(stack, attacker, caplog):
    caplog.set_level(logging.INFO)
    app = await serve_callbacks(stack, webhook_hmac_key=HMAC_KEY)
    stack.kie.webhook_hmac_key = HMAC_KEY
    stack.kie.delay = 1.0
    stack.poll_schedule = [(30.0, 10.0)]  # polls far apart: the real callback is what wakes it
    handle, job_id, chat_id = await stack.start_generation()
    task = await wait_task(stack)
    forged = forged_bodies(task.task_id, attacker.url)
    assert await post(task.callback_url, forged[0]) == 401  # unsigned
    bad_sig = {"X-Webhook-Timestamp": stack.kie.sign(task.task_id)["X-Webhook-Timestamp"],
               "X-Webhook-Signature": "AAAA" + stack.kie.sign(task.task_id)["X-Webhook-Signature"][4:]}
    assert await post(task.callback_url, forged[1], bad_sig) == 401
    stale = stack.kie.sign(task.task_id, timestamp=int(__import__("time").time()) - 600)
    assert await post(task.callback_url, forged[0], stale) == 401  # a replayed old signature
    assert (await handle.query("status"))["callbacks"] == 0
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "done"
    assert_only_the_real_image(stack, chat_id, task, attacker)
    stats = app[STATS_KEY]
    assert stats["rejected"] == 3 and stats["signalled"] == 1  # Kie's own, signed callback
    assert (await handle.query("status"))["callbacks"] == 1
    assert result.outcome == "done" and stack.kie.callbacks[0].status == 200
    rejected = [r.getMessage() for r in caplog.records if "CALLBACK_REJECTED" in r.getMessage()]
    assert len(rejected) == 3 and all(job_id in line for line in rejected)


async def test_forged_callback_after_delivery_changes_nothing(stack, attacker):
    handle, job_id, chat_id = await stack.start_generation()
    await asyncio.wait_for(handle.result(), 30)
    task = next(iter(stack.kie.tasks.values()))
    for body in forged_bodies(task.task_id, attacker.url):
        assert await post(task.callback_url, body) == 200  # answered (no Kie retry storm), ignored
    await asyncio.sleep(0.3)
    assert_only_the_real_image(stack, chat_id, task, attacker)


async def test_callback_token_of_one_job_cannot_wake_another(stack, attacker):
    stack.kie.delay = 1.0
    h1, job1, chat1 = await stack.start_generation()
    h2, job2, chat2 = await stack.start_generation()
    await asyncio.sleep(0.2)
    token1 = callback_token(stack.config.callback_secret.get_secret_value(), job1)
    url = f"http://127.0.0.1:{stack.http_port}/kie/callback?job={job2}&token={token1}"
    assert await post(url, forged_bodies("task_x", attacker.url)[0]) == 403
    assert (await h2.query("status"))["callbacks"] == 0
    await asyncio.wait_for(asyncio.gather(h1.result(), h2.result()), 30)


# --------------------------------------------------------------------------- secrets

SECRET_CALLBACK = "test-callback-secret"


def secrets_of(stack, job_ids) -> dict[str, str]:
    out = {
        "bot token": stack.config.telegram_bot_token.get_secret_value(),
        "bot token secret part": stack.config.telegram_bot_token.get_secret_value().split(":", 1)[1],
        "kie key": stack.config.kie_api_key.get_secret_value(),
        "callback secret": stack.config.callback_secret.get_secret_value(),
        "hmac key": HMAC_KEY,
    }
    for job_id in job_ids:
        out[f"callback token of {job_id}"] = callback_token(stack.config.callback_secret.get_secret_value(), job_id)
    return out


async def test_secrets_never_reach_the_event_history_or_the_logs(stack, caplog):
    """Several generations through the bot conversation, with signed callbacks, a Kie outage, a
    Telegram error whose text quotes the bot's API URL, and the download fallback: none of the
    secrets appear in any workflow's event history (inputs, results, failures) or in the logs."""
    caplog.set_level(logging.DEBUG)
    await serve_callbacks(stack, webhook_hmac_key=HMAC_KEY)
    stack.kie.webhook_hmac_key = HMAC_KEY
    token = stack.config.telegram_bot_token.get_secret_value()
    await stack.start_bot()
    scenarios = [
        lambda: None,
        lambda: stack.kie.create_errors.extend([500]),
        lambda: stack.tg.fail_next("sendPhoto", 502, f"Bad Gateway: upstream POST /bot{token}/sendPhoto failed"),
        lambda: stack.tg.fail_next("sendPhoto", 400, f"Bad Request: failed to get HTTP URL content (bot{token})"),
    ]
    for i, arrange in enumerate(scenarios):
        chat = 880_100 + i
        arrange()
        stack.tg.user_send_command(chat, "/start")
        mid, data = await stack.tg.wait_for(lambda: _button(stack, chat, "Z-Image"))
        stack.tg.user_press_button(chat, mid, data)
        await stack.tg.wait_for(lambda: any("Опишите" in (m.get("text") or "") for m in stack.tg.messages(chat)))
        stack.tg.user_send_text(chat, f"secret test {i}")
        mid, data = await stack.tg.wait_for(lambda: _button(stack, chat, "1:1"))
        stack.tg.user_press_button(chat, mid, data)
        await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=30)
    rows = await stack.pool.fetch("SELECT id, workflow_id FROM generation_jobs WHERE chat_id = ANY($1::bigint[])",
                                  [880_100 + i for i in range(len(scenarios))])
    assert len(rows) == len(scenarios)
    secrets = secrets_of(stack, [r["id"] for r in rows])
    for r in rows:
        handle = stack.client.get_workflow_handle(r["workflow_id"])
        await asyncio.wait_for(handle.result(), 30)
        history = readable_history((await handle.fetch_history()).to_json())
        assert "secret test" in history  # the history is readable: the check below can see inside it
        leaked = [name for name, value in secrets.items() if value in history]
        assert not leaked, f"{r['workflow_id']} history contains {leaked}"
    logs = "\n".join(r.getMessage() + (("\n" + r.exc_text) if r.exc_text else "") for r in caplog.records)
    assert "DELIVER_RETRY" in logs and "<redacted>" in logs  # the scenarios did produce the error lines
    leaked = [name for name, value in secrets.items() if value in logs]
    assert not leaked, f"logs contain {leaked}"
    assert len(stack.kie.callbacks) >= len(scenarios) and all(c.status == 200 for c in stack.kie.callbacks)


def readable_history(history_json: str) -> str:
    """The history JSON with every payload's base64 data decoded in place, so substrings are visible."""
    def walk(node):
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if isinstance(node.get("data"), str) and "metadata" in node:
                try:
                    out["data"] = base64.b64decode(node["data"]).decode("utf-8", "replace")
                except ValueError:
                    pass
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    decoded = walk(json.loads(history_json))
    return history_json + "\n" + json.dumps(decoded, ensure_ascii=False)


def _button(stack, chat, label):
    try:
        return stack.tg.find_button(chat, label)
    except (LookupError, ValueError):
        return None
