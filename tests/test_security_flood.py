"""The callback server keeps serving after 10,000 bad requests over loopback (bounded concurrency),
and a valid, signed callback still wakes a real workflow afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import time

import aiohttp

from imagegen.callbacks import callback_token
from imagegen.contracts import workflow_id_for
from tests.test_security_support import CallbackServer, callback_path, documented_body, sign

N_BAD = 10_000
CONCURRENCY = 50
HMAC_KEY = "flood-webhook-hmac-key"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def bad_request(i: int, secret: str, live_job: str) -> tuple[str, dict, bytes]:
    """The i-th bad request: a rotation through every way a callback can be wrong."""
    kind = i % 10
    job = f"{i:016x}"
    ok_path = callback_path(job, secret=secret)
    body = json.dumps(documented_body(f"task_{i}")).encode()
    j = {"Content-Type": "application/json"}
    if kind == 0:
        return callback_path(job, secret=secret, token="0" * 32), j, body             # wrong token
    if kind == 1:
        return "/kie/callback", j, body                                              # no job/token
    if kind == 2:
        return ok_path, j, b'{"taskId": "x", "data": {'                             # malformed JSON
    if kind == 3:
        return ok_path, {"Content-Type": "text/plain"}, body                         # wrong content type
    if kind == 4:
        return ok_path, j, b'{"data": {"state": "success"}}'                        # no task id
    if kind == 5:
        return ok_path, j, b"x" * (70 * 1024)                                        # over the size cap
    if kind == 6:
        return ok_path, j, body                                                      # unsigned
    if kind == 7:
        return ok_path, {**j, **sign(HMAC_KEY, f"task_{i}", int(time.time()) - 3600)}, body  # stale signature
    if kind == 8:
        return ok_path, {**j, **sign("wrong-key", f"task_{i}")}, body                # forged signature
    # a live job's token with a signature for another task: valid token, invalid signature
    return callback_path(live_job, secret=secret), {**j, **sign(HMAC_KEY, "task_other")}, \
        json.dumps(documented_body("task_mine")).encode()


async def test_ten_thousand_bad_requests_then_a_valid_callback_still_works(stack, caplog):
    caplog.set_level(logging.WARNING)  # 10,000 rejection lines at WARNING: keep capture cheap
    stack.kie.lose_callback = True  # we deliver the real callback ourselves, after the flood
    stack.kie.delay = 0.5
    stack.poll_schedule = [(60.0, 30.0)]  # slow polling: the callback is what wakes the workflow
    secret = stack.config.callback_secret.get_secret_value()
    handle, job_id, chat_id = await stack.start_generation()
    async with CallbackServer(stack.client, secret=secret, hmac_key=HMAC_KEY) as srv:
        statuses: dict[int, int] = {}
        sem = asyncio.Semaphore(CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        fds_before = open_fds()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def one(i: int) -> None:
                path, headers, body = bad_request(i, secret, job_id)
                async with sem:
                    try:
                        async with session.post(srv.base + path, data=body, headers=headers) as resp:
                            await resp.read()
                            statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    except aiohttp.ClientError:  # the server may close a connection after a 413
                        statuses[-1] = statuses.get(-1, 0) + 1

            t0 = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(N_BAD)))
            elapsed = time.monotonic() - t0

        print(f"\nFLOOD {N_BAD} bad callbacks in {elapsed:.2f} s ({N_BAD / elapsed:.0f}/s, concurrency "
              f"{CONCURRENCY}); statuses {dict(sorted(statuses.items()))}; open fds {fds_before}->{open_fds()}; "
              f"max RSS {rss_before // 1024}->{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")

        assert statuses.get(-1, 0) <= N_BAD // 10  # only 413s may be cut short
        assert set(statuses) <= {400, 401, 403, 413, -1} and 200 not in statuses
        stats = srv.stats
        assert stats["received"] == N_BAD and stats["rejected"] == N_BAD
        assert stats["signalled"] == 0 and stats["errors"] == 0
        assert (await handle.query("status"))["callbacks"] == 0  # the flood never reached the workflow
        assert open_fds() <= fds_before + 20  # no leaked connections
        assert elapsed < 60

        # the real, signed callback still works
        task_id = await _task_id(stack, job_id)
        await stack.kie.wait_done(task_id, timeout=10)
        status, _ = await srv.post(callback_path(job_id, secret=secret), json_body=stack.kie.make_callback_body(task_id),
                                   headers=sign(HMAC_KEY, task_id))
        assert status == 200 and srv.stats["signalled"] == 1
        result = await asyncio.wait_for(handle.result(), 20)
        assert result.outcome == "done"
        assert (await handle.query("status"))["callbacks"] == 1
        assert len(stack.photos_for(chat_id)) == 1
    assert callback_token(secret, job_id) not in "\n".join(r.getMessage() for r in caplog.records)
    assert workflow_id_for(job_id, "zimage") == handle.id


async def _task_id(stack, job_id: str) -> str:
    for _ in range(500):
        row = await stack.repo.get(job_id)
        if row and row["external_task_id"]:
            return row["external_task_id"]
        await asyncio.sleep(0.02)
    raise TimeoutError("task id never stored")
