"""Metrics and logs of the real entry points (worker.py, bot.py as subprocesses).

Both /metrics endpoints are scraped before and after generations and the counters must move; with
LOG_FORMAT=json every worker line is one JSON object; failures the code expects and retries (Kie
5xx, Telegram 429/5xx, a blocked user's 403) leave one log line each and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
import pytest_asyncio

from tests.support.procstack import ProcStack
from tests.support.services import free_port


@pytest_asyncio.fixture
async def ops_stack(temporal_env, pg_dsn):
    ps = ProcStack(name="observability", dsn=pg_dsn,
                   temporal_address=temporal_env.client.service_client.config.target_host,
                   client=temporal_env.client)
    await ps.start()
    try:
        yield ps
    finally:
        await ps.stop()


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            return await r.text()


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([0-9.eE+-]+|NaN)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


async def test_both_metrics_endpoints_move_with_generations(ops_stack):
    ps = ops_stack
    worker_port, bot_port = free_port(), free_port()
    await ps.start_worker(METRICS_PORT=str(worker_port), LOG_FORMAT="json")
    await ps.start_bot(METRICS_PORT=str(bot_port))
    before_w, before_b = await scrape(worker_port), await scrape(bot_port)

    # Expected failures on the way: Kie answers 500 once, Telegram 429 (retry_after 1) and 502 once.
    ps.kie.create_errors.append(500)
    ps.tg.fail_next("sendPhoto", 429, "Too Many Requests: retry after 1", retry_after=1)
    ps.tg.fail_next("sendPhoto", 502, "Bad Gateway")
    gen = await ps.user_generation()
    result = await asyncio.wait_for(gen.handle.result(), 60)
    assert result.outcome == "done" and len(ps.photos_for(gen.chat_id)) == 1

    # A user who blocked the bot: 403 is permanent (undeliverable), expected, no traceback either.
    ps.kie.delay = 1.0
    g2 = await ps.start_generation()
    ps.tg.block_user(g2.chat_id)  # after the status message, before the photo
    assert (await asyncio.wait_for(g2.handle.result(), 60)).outcome == "undeliverable"

    await asyncio.sleep(1.5)  # the exporter reads instruments on scrape; give the SDK a moment
    w, b = await scrape(worker_port), await scrape(bot_port)

    def moved(text_before, text_after, name, **labels) -> float:
        return value(text_after, name, **labels) - value(text_before, name, **labels)

    # The worker: the pipeline's own counters and the Temporal SDK's.
    assert moved(before_w, w, "imagegen_generations_finished_total", outcome="done", model="zimage") == 1
    assert moved(before_w, w, "imagegen_generations_finished_total", outcome="undeliverable") == 1
    assert moved(before_w, w, "imagegen_deliveries_total", level="url") == 1
    assert moved(before_w, w, "imagegen_delivery_lock_total", outcome="won") >= 2
    assert moved(before_w, w, "imagegen_kie_calls_total", endpoint="createTask", status="500") == 1
    assert moved(before_w, w, "imagegen_kie_calls_total", endpoint="createTask", status="200") == 2
    assert moved(before_w, w, "imagegen_kie_calls_total", endpoint="recordInfo", status="200") >= 2
    assert moved(before_w, w, "imagegen_telegram_calls_total", method="SendPhoto", status="429") == 1
    assert moved(before_w, w, "imagegen_telegram_calls_total", method="SendPhoto", status="5xx") == 1
    assert moved(before_w, w, "imagegen_telegram_calls_total", method="SendPhoto", status="403") == 1
    assert moved(before_w, w, "imagegen_telegram_calls_total", method="SendPhoto", status="ok") == 1
    assert moved(before_w, w, "imagegen_callback_to_delivered_seconds_count") == 1
    assert moved(before_w, w, "imagegen_record_info_per_generation_count") == 2
    assert moved(before_w, w, "temporal_workflow_completed_total") == 2
    # Local attempts (createTask, recordInfo, the delivery: issue 18) and the activities they hand over
    # to (createTask after Kie's 500, the delivery after Telegram's 429, `finish` for the blocked user).
    assert moved(before_w, w, "temporal_local_activity_execution_latency_count") >= 6
    assert moved(before_w, w, "temporal_activity_execution_latency_count") >= 4

    # The bot: the start, the callback's verdict, its own Bot API calls.
    assert moved(before_b, b, "imagegen_generations_started_total", model="zimage") == 1
    assert moved(before_b, b, "imagegen_callbacks_total", verdict="signalled") >= 1
    assert moved(before_b, b, "imagegen_telegram_calls_total", method="SendMessage", status="ok") >= 1
    assert "temporal_request" in b  # the bot's Temporal client is measured too

    # Quiet logs: JSON lines, the expected failures named once each with the correlation id, no traceback.
    worker_log = ps.procs[0].log()
    lines = [json.loads(line) for line in worker_log.splitlines() if line.strip()]
    events = [(x.get("corr_id"), x.get("event")) for x in lines if x.get("event")]
    assert (gen.job_id, "DELIVER_RETRY") in events and (g2.job_id, "DELIVER_FAILED") in events
    assert (gen.job_id, "JOB_CREATE_FAILED") in events and (gen.job_id, "MARK_DELIVERED") in events
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert "Traceback" not in worker_log and not any("exc" in x for x in lines), worker_log[-3000:]
    assert "Traceback" not in ps.procs[1].log()
    assert "loop=uvloop" in ps.procs[1].log()  # the bot runs on uvloop (EVENT_LOOP's default)


async def test_metrics_are_off_by_default_and_never_on_the_public_port(ops_stack):
    ps = ops_stack
    bot = await ps.start_bot()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"http://127.0.0.1:{bot.port}/metrics") as r:
            assert r.status == 404


def test_json_lines_carry_the_event_and_redact_secrets():
    import io
    import logging

    from imagegen import redact
    from imagegen.logs import log_event, setup_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("INFO", stream=stream, fmt="json")
        redact.install()
        redact.register("s3cr3t-value-for-json")
        log_event("job123", "DELIVER_RETRY", error="token s3cr3t-value-for-json refused", retry_after=3)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["corr_id"] == "job123" and line["event"] == "DELIVER_RETRY" and line["level"] == "INFO"
    assert line["fields"] == {"error": "token <redacted> refused", "retry_after": 3}
    assert "s3cr3t" not in stream.getvalue()
