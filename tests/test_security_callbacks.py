"""The Kie callback endpoint under hostile and careless input (no Temporal server needed: a recording
stand-in takes the signals). Requirements: per-job token, Kie's HMAC signature with a 5-minute window,
400/401/403/413 without detail, logged with the reason, counted, never signalled."""

from __future__ import annotations

import json
import logging
import time

import pytest

from imagegen.bot.callback_api import MAX_BODY_BYTES, kie_signature
from imagegen.contracts import legacy_workflow_id, workflow_id_candidates, workflow_id_for
from imagegen.models import MODELS
from tests.test_security_support import (
    HMAC_KEY,
    CallbackServer,
    callback_path,
    documented_body,
    sign,
)

JOB = "0123456789abcdef"
TASK = "task_z-image_1765174270120"


def rejected_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "CALLBACK_REJECTED" in r.getMessage()]


async def test_authentic_callback_signals_its_own_workflow_once():
    async with CallbackServer() as srv:
        status, body = await srv.post(callback_path(JOB), json_body=documented_body(TASK))
        assert (status, body) == (200, {"ok": True})
        ((wid, name, sig),) = srv.temporal.signals
        assert wid == workflow_id_for(JOB, "zimage") and name == "kie_callback" and sig.task_id == TASK
        assert srv.stats["signalled"] == 1 and srv.stats["rejected"] == 0


async def test_callback_signals_the_workflow_its_url_names_and_finds_a_legacy_one():
    seedream = workflow_id_for(JOB, "seedream45")
    async with CallbackServer() as srv:
        assert (await srv.post(callback_path(JOB, workflow_id=seedream), json_body=documented_body(TASK)))[0] == 200
        assert [wid for wid, _, _ in srv.temporal.signals] == [seedream]
    # A workflow started before ids named their model (`zimage-<job>`), with a URL made then (no
    # `wf`) or made after the upgrade by its still-running workflow's activity (`wf` is its own id).
    for path in (callback_path(JOB, workflow_id=None), callback_path(JOB, workflow_id=legacy_workflow_id(JOB))):
        async with CallbackServer() as srv:
            srv.temporal.missing.update(workflow_id_candidates(JOB, list(MODELS))[:-1])
            status, body = await srv.post(path, json_body=documented_body(TASK))
            assert (status, body) == (200, {"ok": True})
            assert [wid for wid, _, _ in srv.temporal.signals] == [legacy_workflow_id(JOB)]
            assert srv.stats["signalled"] == 1 and srv.stats["unknown"] == 0


async def test_callback_never_signals_a_workflow_of_another_job_its_url_names():
    other = workflow_id_for("fedcba9876543210", "zimage")  # the token is JOB's: wf cannot point elsewhere
    async with CallbackServer() as srv:
        assert (await srv.post(callback_path(JOB, workflow_id=other), json_body=documented_body(TASK)))[0] == 200
        ((wid, _, _),) = srv.temporal.signals
        assert wid != other and wid in workflow_id_candidates(JOB, list(MODELS))


@pytest.mark.parametrize("case", ["no token", "wrong token", "token of another job", "no job", "job too long"])
async def test_bad_job_token_is_403_without_detail_and_never_signals(case, caplog):
    path = {
        "no token": f"/kie/callback?job={JOB}",
        "wrong token": callback_path(JOB, token="0" * 32),
        "token of another job": callback_path(JOB, token=callback_path("fedcba9876543210").split("token=")[1]),
        "no job": "/kie/callback",
        "job too long": callback_path("a" * 200),
    }[case]
    caplog.set_level(logging.INFO)
    async with CallbackServer() as srv:
        status, body = await srv.post(path, json_body=documented_body(TASK))
        assert status == 403 and body == {"ok": False}  # no hint which check failed
        assert srv.temporal.signals == []
        assert srv.stats["rejected"] == 1 and srv.stats["rejected_reasons"] == {"bad or missing job token": 1}
    (line,) = rejected_logs(caplog)
    assert 'reason="bad or missing job token"' in line and "status=403" in line


@pytest.mark.parametrize("case,expected_reason", [
    ("text/plain", "content type is not JSON"),
    ("form", "content type is not JSON"),
    ("no content type", "content type is not JSON"),
    ("malformed", "malformed JSON"),
    ("not utf-8", "malformed JSON"),
    ("deep nesting", "malformed JSON"),
    ("huge integer", "malformed JSON"),
    ("array", "JSON is not an object"),
    ("string", "JSON is not an object"),
    ("null", "JSON is not an object"),
    ("no task id", "no task id"),
    ("task id not a string", "no task id"),
    ("empty task id", "no task id"),
])
async def test_malformed_callbacks_are_400_and_never_signal(case, expected_reason, caplog):
    body, ctype = json.dumps(documented_body(TASK)).encode(), "application/json"
    if case == "text/plain":
        ctype = "text/plain"
    elif case == "form":
        body, ctype = b"taskId=x", "application/x-www-form-urlencoded"
    elif case == "no content type":
        ctype = None
    elif case == "malformed":
        body = b'{"taskId": "x",'
    elif case == "not utf-8":
        body = b'{"taskId": "\xff\xfe"}'
    elif case == "deep nesting":
        body = b"[" * 50_000 + b"]" * 50_000
        body = body[: MAX_BODY_BYTES - 1]
    elif case == "huge integer":
        body = b'{"taskId": ' + b"9" * 30_000 + b"}"
    elif case == "array":
        body = b'[{"taskId": "x"}]'
    elif case == "string":
        body = b'"taskId"'
    elif case == "null":
        body = b"null"
    elif case == "no task id":
        body = json.dumps({"code": 200, "data": {"state": "success"}}).encode()
    elif case == "task id not a string":
        body = json.dumps({"taskId": {"a": 1}, "data": {"task_id": ["x"]}}).encode()
    elif case == "empty task id":
        body = json.dumps({"taskId": "   ", "data": {"task_id": ""}}).encode()
    caplog.set_level(logging.INFO)
    async with CallbackServer() as srv:
        status, reply = await srv.post(callback_path(JOB), data=body, content_type=ctype,
                                       headers={} if ctype else {"Content-Type": ""})
        assert status == 400 and reply == {"ok": False, "error": "bad request"}
        assert srv.temporal.signals == []
        assert srv.stats["rejected_reasons"] == {expected_reason: 1}
    assert any(f'reason="{expected_reason}"' in line for line in rejected_logs(caplog))


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 5 * MAX_BODY_BYTES])
async def test_oversized_body_is_413_and_never_signals(size):
    filler = "x" * size
    async with CallbackServer() as srv:
        status, _ = await srv.post(callback_path(JOB), json_body={**documented_body(TASK), "pad": filler})
        assert status == 413 and srv.temporal.signals == []
        assert srv.stats["rejected_reasons"] == {"body too large": 1}
        # chunked (no Content-Length): the cap holds while reading
        async def chunks():
            yield json.dumps(documented_body(TASK))[:-1].encode() + b', "pad": "'
            for _ in range(size // 8192 + 1):
                yield b"x" * 8192
            yield b'"}'
        async with srv.session.post(srv.base + callback_path(JOB), data=chunks(),
                                    headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
        assert srv.temporal.signals == [] and srv.stats["rejected_reasons"] == {"body too large": 2}


async def test_body_just_under_the_cap_is_accepted():
    async with CallbackServer() as srv:
        body = documented_body(TASK)
        body["pad"] = "x" * (MAX_BODY_BYTES - len(json.dumps(body)) - 20)
        status, _ = await srv.post(callback_path(JOB), json_body=body)
        assert status == 200 and len(srv.temporal.signals) == 1


async def test_unknown_job_is_answered_200_logged_and_counted(caplog):
    caplog.set_level(logging.INFO)
    async with CallbackServer() as srv:
        srv.temporal.missing.update(workflow_id_candidates(JOB, list(MODELS)))
        status, body = await srv.post(callback_path(JOB), json_body=documented_body(TASK))
        assert status == 200 and body == {"ok": True, "ignored": True}
        assert srv.stats["unknown"] == 1 and srv.stats["signalled"] == 0
        # and the server goes on serving
        assert (await srv.post(callback_path(JOB), json_body=documented_body(TASK)))[0] == 200
        assert srv.stats["unknown"] == 2
    assert any("CALLBACK_UNKNOWN" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- HMAC signatures

@pytest.mark.parametrize("where", ["data.task_id", "taskId", "data.taskId"])
async def test_signed_callback_is_accepted_wherever_the_task_id_is(where):
    if where == "data.task_id":
        body = {"code": 200, "data": {"task_id": TASK, "callbackType": "task_completed"}}
    elif where == "taskId":
        body = {"code": 200, "taskId": TASK, "data": {"callbackType": "task_completed"}}
    else:
        body = {"code": 200, "msg": "success", "data": {"taskId": TASK, "state": "success"}}
    async with CallbackServer(hmac_key=HMAC_KEY) as srv:
        status, _ = await srv.post(callback_path(JOB), json_body=body, headers=sign(HMAC_KEY, TASK))
        assert status == 200
        ((_, _, sig),) = srv.temporal.signals
        assert sig.task_id == TASK


def _signature_case(case: str) -> dict[str, str]:
    now = int(time.time())
    good = sign(HMAC_KEY, TASK, now)
    return {
        "no headers": {},
        "no signature": {"X-Webhook-Timestamp": str(now)},
        "no timestamp": {"X-Webhook-Signature": good["X-Webhook-Signature"]},
        "wrong key": sign("some-other-key", TASK, now),
        "other task": sign(HMAC_KEY, "task_other", now),
        "signature of other timestamp": {"X-Webhook-Timestamp": str(now - 1),
                                         "X-Webhook-Signature": good["X-Webhook-Signature"]},
        "stale (6 min)": sign(HMAC_KEY, TASK, now - 360),
        "future (6 min)": sign(HMAC_KEY, TASK, now + 360),
        "timestamp not a number": {**good, "X-Webhook-Timestamp": "yesterday"},
        "timestamp in ms": sign(HMAC_KEY, TASK, now * 1000),
        "hex instead of base64": {**good, "X-Webhook-Signature": kie_signature(HMAC_KEY, TASK, str(now)).encode().hex()},
        "truncated": {**good, "X-Webhook-Signature": good["X-Webhook-Signature"][:-4]},
        "non-ascii": {**good, "X-Webhook-Signature": "é" * 44},
    }[case]


@pytest.mark.parametrize("case", ["no headers", "no signature", "no timestamp", "wrong key", "other task",
                                  "signature of other timestamp", "stale (6 min)", "future (6 min)",
                                  "timestamp not a number", "timestamp in ms", "hex instead of base64",
                                  "truncated", "non-ascii"])
async def test_bad_signature_is_401_without_detail_and_never_signals(case, caplog):
    caplog.set_level(logging.INFO)
    async with CallbackServer(hmac_key=HMAC_KEY) as srv:
        status, body = await srv.post(callback_path(JOB), json_body=documented_body(TASK),
                                      headers=_signature_case(case))
        assert status == 401 and body == {"ok": False}
        assert srv.temporal.signals == [] and srv.stats["rejected"] == 1
    (line,) = rejected_logs(caplog)
    assert "status=401" in line and "signature" in line


async def test_signature_window_is_five_minutes_both_ways():
    clock = [1_765_000_000.0]
    async with CallbackServer(hmac_key=HMAC_KEY, clock=lambda: clock[0]) as srv:
        for offset, ok in [(-300, True), (300, True), (-301, False), (301, False), (0, True)]:
            status, _ = await srv.post(callback_path(JOB), json_body=documented_body(TASK),
                                       headers=sign(HMAC_KEY, TASK, int(clock[0]) + offset))
            assert (status == 200) is ok, (offset, status)
        assert len(srv.temporal.signals) == 3


async def test_signature_only_matters_with_a_valid_token():
    async with CallbackServer(hmac_key=HMAC_KEY) as srv:
        status, _ = await srv.post(callback_path(JOB, token="f" * 32), json_body=documented_body(TASK),
                                   headers=sign(HMAC_KEY, TASK))
        assert status == 403 and srv.temporal.signals == []


async def test_the_signed_task_id_is_the_one_signalled():
    """A body naming two task ids: the signature decides which one reaches the workflow."""
    body = {"taskId": "task_forged", "data": {"task_id": TASK}}
    async with CallbackServer(hmac_key=HMAC_KEY) as srv:
        status, _ = await srv.post(callback_path(JOB), json_body=body, headers=sign(HMAC_KEY, TASK))
        assert status == 200 and srv.temporal.signals[0][2].task_id == TASK


async def test_unsigned_mode_is_announced_once_at_start_up(caplog):
    caplog.set_level(logging.INFO)
    async with CallbackServer() as srv:
        for _ in range(5):
            assert (await srv.post(callback_path(JOB), json_body=documented_body(TASK)))[0] == 200
    warnings = [r for r in caplog.records if "CALLBACK_SIGNATURES_OFF" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    caplog.clear()
    async with CallbackServer(hmac_key=HMAC_KEY):
        pass
    assert not [r for r in caplog.records if "CALLBACK_SIGNATURES_OFF" in r.getMessage()]


async def test_attacker_controlled_values_cannot_forge_log_lines(caplog):
    caplog.set_level(logging.INFO)
    evil_job = "x\n[0123456789abcdef] DELIVER_OK level=url"
    async with CallbackServer() as srv:
        await srv.post(callback_path(evil_job, token="bad"), json_body=documented_body(TASK))
        evil_task = "t\r\n[victim] CALLBACK_SIGNALLED"
        await srv.post(callback_path(JOB), json_body={"taskId": evil_task, "data": {"state": "success"}})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "\n[0123456789abcdef] DELIVER_OK" not in text and "\r" not in text
    assert not any(r.getMessage().startswith("[victim]") for r in caplog.records)
    assert all("\n" not in r.getMessage() for r in caplog.records if "CALLBACK" in r.getMessage())


async def test_rejections_are_counted_by_reason():
    """Counted in the app's stats, which the bot serves on its internal /status (not the public port)."""
    async with CallbackServer(hmac_key=HMAC_KEY) as srv:
        await srv.post(callback_path(JOB, token="x"), json_body={})
        await srv.post(callback_path(JOB), data=b"{", content_type="application/json")
        await srv.post(callback_path(JOB), json_body=documented_body(TASK))  # unsigned
        async with srv.session.get(srv.base + "/healthz") as resp:
            assert resp.status == 404  # the callback app exposes nothing but the callback endpoint
        stats = srv.stats
    assert stats["received"] == 3 and stats["rejected"] == 3 and stats["signalled"] == 0
    assert stats["rejected_reasons"] == {"bad or missing job token": 1, "malformed JSON": 1,
                                         "signature headers missing": 1}


async def test_callbacks_per_job_are_throttled_so_a_flood_cannot_grow_the_history(stack):
    """Valid-token callbacks for one job beyond 5 a minute are answered 429 and never signalled."""
    import asyncio

    import aiohttp

    from imagegen.callbacks import callback_url as make_url

    stack.kie.lose_callback = True
    stack.poll_schedule = [(30.0, 10.0)]
    handle, job_id, chat_id = await stack.start_generation()
    await stack.tg.wait_for(lambda: stack.kie.tasks)
    task_id = next(iter(stack.kie.tasks))
    await stack.kie.wait_done(task_id)
    url = make_url(stack.config.public_base_url, stack.config.callback_secret.get_secret_value(), job_id)
    # The first signal starts the delivery; holding the photo keeps the workflow running through the flood,
    # so every callback let through is one the workflow gets (a fast delivery would close it after four).
    stack.tg.delay_next("sendPhoto", 5.0)
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(30):
            async with s.post(url, json=stack.kie.make_callback_body(task_id)) as r:
                statuses.append(r.status)
    assert statuses.count(200) == 5 and statuses.count(429) == 25
    await asyncio.wait_for(handle.result(), 30)
    history = await handle.fetch_history()
    signals = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert len(signals) == 5


def test_signal_throttle_window_and_memory_bound():
    from imagegen.bot.callback_api import SignalThrottle

    now = [0.0]
    t = SignalThrottle(limit=2, window=10, clock=lambda: now[0], max_jobs=3)
    assert [t.allow("a") for _ in range(3)] == [True, True, False]
    now[0] = 10.5
    assert t.allow("a") is True  # the window moved on
    for job in "bcdef":
        t.allow(job)
    now[0] = 30
    t.allow("g")
    assert len(t._seen) <= 3
