"""The polling singleton: two bot processes' worth of run_bot against one Telegram simulator."""

import asyncio

import aiohttp

from imagegen.bot.app import run_bot
from imagegen.callbacks import callback_url
from tests.support.services import free_port


_health_ports: dict[int, int] = {}  # public HTTP port -> internal HEALTH_PORT of that instance


async def health(port):
    """The instance's internal /status (role and callback counters are not on the public port)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{_health_ports[port]}/status") as r:
            return await r.json()


async def roles(ports):
    return [(await health(p))["role"] for p in ports]


async def start_instance(stack, port):
    stop = asyncio.Event()
    _health_ports[port] = free_port()
    settings = stack.settings(http_port=port, public_base_url=f"http://127.0.0.1:{port}",
                              health_port=_health_ports[port])
    task = asyncio.create_task(run_bot(settings, stack.client, stop=stop, leader_retry_seconds=0.3))
    return stop, task


async def wait_roles(ports, predicate, timeout=15):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            current = await roles(ports)
            if predicate(current):
                return current
        except aiohttp.ClientError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"roles stayed {current}")
        await asyncio.sleep(0.1)


async def test_two_bots_one_polls_and_the_other_takes_over(stack):
    ports = [free_port(), free_port()]
    a_stop, a_task = await start_instance(stack, ports[0])
    await wait_roles(ports[:1], lambda r: r == ["leader"])
    b_stop, b_task = await start_instance(stack, ports[1])
    await wait_roles(ports, lambda r: r == ["leader", "passive"])
    await asyncio.sleep(1.5)  # several retry rounds: B stays passive, nobody fights over getUpdates
    assert await roles(ports) == ["leader", "passive"]
    assert stack.tg.get_updates_conflicts == 0

    # The conversation is served by the leader.
    chat = 810_001
    stack.tg.user_send_command(chat, "/start")
    await stack.tg.wait_for(lambda: stack.tg.messages(chat))

    # Kill the leader: the passive one takes over within seconds and serves the next user.
    a_stop.set()
    await a_task
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await wait_roles(ports[1:], lambda r: r == ["leader"], timeout=10)
    takeover = loop.time() - t0
    assert takeover < 5
    stack.tg.user_send_command(chat + 1, "/start")
    await stack.tg.wait_for(lambda: stack.tg.messages(chat + 1))
    await asyncio.sleep(1.5)
    # The old leader's poller really stopped: nobody ever fought over getUpdates.
    assert stack.tg.get_updates_conflicts == 0
    b_stop.set()
    await b_task
    calls = len(stack.tg.calls_of("getUpdates"))
    await asyncio.sleep(1.5)
    assert len(stack.tg.calls_of("getUpdates")) == calls  # nothing polls after both stopped


async def test_callbacks_are_served_by_leader_and_passive_alike(stack):
    ports = [free_port(), free_port()]
    instances = [await start_instance(stack, p) for p in ports]
    await wait_roles(ports, lambda r: sorted(r) == ["leader", "passive"])
    stack.kie.lose_callback = True
    stack.poll_schedule = [(30.0, 10.0)]  # only callbacks wake it up quickly
    handle, job_id, chat_id = await stack.start_generation()
    await stack.tg.wait_for(lambda: stack.kie.tasks)
    task_id = next(iter(stack.kie.tasks))
    await stack.kie.wait_done(task_id)
    body = stack.kie.make_callback_body(task_id)
    async with aiohttp.ClientSession() as s:
        for port in ports:
            url = callback_url(f"http://127.0.0.1:{port}", stack.config.callback_secret.get_secret_value(), job_id)
            async with s.post(url, json=body) as r:
                assert r.status == 200
    for port in ports:
        assert (await health(port))["callbacks"]["signalled"] == 1
    result = await asyncio.wait_for(handle.result(), 20)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
    for stop, task in instances:
        stop.set()
        await task


async def test_conversation_survives_a_leader_change(stack):
    """State is in Postgres: the user starts with one bot process and finishes with another."""
    ports = [free_port(), free_port()]
    (a_stop, a_task), (b_stop, b_task) = [await start_instance(stack, p) for p in ports]
    current = await wait_roles(ports, lambda r: sorted(r) == ["leader", "passive"])
    leader, other = (0, 1) if current[0] == "leader" else (1, 0)
    stops, tasks = [a_stop, b_stop], [a_task, b_task]
    chat = 820_001
    stack.tg.user_send_command(chat, "/start")
    msg_id, data = await stack.tg.wait_for(lambda: _button(stack, chat, "Z-Image"))
    stack.tg.user_press_button(chat, msg_id, data)
    await stack.tg.wait_for(lambda: any("Опишите" in (m.get("text") or "") for m in stack.tg.messages(chat)))
    stops[leader].set()  # the deploy stops the old process mid-conversation
    await tasks[leader]
    await wait_roles(ports[other:other + 1], lambda r: r == ["leader"])
    stack.tg.user_send_text(chat, "a prompt sent to the new process")
    msg_id, data = await stack.tg.wait_for(lambda: _button(stack, chat, "4:3"))
    stack.tg.user_press_button(chat, msg_id, data)
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    (task,) = stack.kie.tasks.values()
    assert task.prompt == "a prompt sent to the new process"
    stops[other].set()
    await tasks[other]


def _button(stack, chat, label):
    try:
        return stack.tg.find_button(chat, label)
    except LookupError:
        return None


async def test_leader_whose_lock_session_dies_stops_polling_and_another_takes_over(stack, pool, caplog):
    """The lock lives in a dedicated autocommit session. Kill that session (as a Postgres restart or a
    network cut would): LOCK_LOST, polling stops, and exactly one instance leads again."""
    import logging

    from imagegen.bot.leader import APPLICATION_NAME

    caplog.set_level(logging.INFO, logger="imagegen.leader")
    ports = [free_port(), free_port()]
    instances = [await start_instance(stack, p) for p in ports]
    await wait_roles(ports, lambda r: sorted(r) == ["leader", "passive"])
    sessions = await pool.fetch(
        "SELECT a.pid, a.state FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
        " WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.granted", APPLICATION_NAME)
    assert len(sessions) == 1 and sessions[0]["state"] != "idle in transaction"
    await pool.execute("SELECT pg_terminate_backend($1)", sessions[0]["pid"])
    await stack.tg.wait_for(lambda: "LOCK_LOST" in caplog.text, timeout=10)
    await wait_roles(ports, lambda r: sorted(r) == ["leader", "passive"], timeout=15)
    await asyncio.sleep(3)  # settled: whatever overlap the switch had is over
    conflicts = stack.tg.get_updates_conflicts
    await asyncio.sleep(3)
    assert stack.tg.get_updates_conflicts == conflicts
    assert caplog.text.count("LOCK_ACQUIRED") == 2 and "LOCK_BUSY" in caplog.text
    chat = 830_001
    stack.tg.user_send_command(chat, "/start")
    await stack.tg.wait_for(lambda: stack.tg.messages(chat))
    # Never "idle in transaction": the lock session is autocommit and idle between checks.
    states = await pool.fetch("SELECT state FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME)
    assert states and all(r["state"] != "idle in transaction" for r in states)
    for stop, task in instances:
        stop.set()
        await task
