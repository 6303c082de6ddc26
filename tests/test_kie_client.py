"""The Kie.ai client against the simulator: HTTP status and body code are both checked."""

import pytest

from imagegen.models import MODELS
from imagegen.kie import KieClient, KieError, parse_kie_state
from tests.support.kie_sim import KieSimulator
from tests.support.services import free_port


@pytest.fixture
async def kie():
    async with KieSimulator(api_key="k") as sim:
        yield sim


@pytest.fixture
async def client(kie):
    c = KieClient(kie.base_url, "k")
    yield c
    await c.close()


async def create(client):
    return await client.create_task(MODELS["zimage"].kie_request("p", "1:1"))


async def test_create_and_record_info(kie, client):
    task_id = await client.create_task(MODELS["zimage"].kie_request("p", "4:3"))
    assert kie.tasks[task_id].aspect_ratio == "4:3"
    await kie.wait_done(task_id)
    state, urls, error = parse_kie_state(await client.record_info(task_id))
    assert state == "success" and urls and urls[0].endswith(f"{task_id}.png") and error == ""


@pytest.mark.parametrize("code,retryable", [
    (401, False), (402, False), (422, False), (501, False), (505, False),
    (429, True), (433, True), (455, True), (500, True),
])
async def test_body_codes_map_to_retryable_or_not(kie, client, code, retryable):
    kie.create_errors.append(code)
    with pytest.raises(KieError) as err:
        await create(client)
    assert err.value.code == code and err.value.retryable is retryable


async def test_http_200_with_error_body_code_is_an_error(kie, client):
    kie.create_errors.append((200, {"code": 402, "msg": "Credits insufficient"}))
    with pytest.raises(KieError) as err:
        await create(client)
    assert err.value.code == 402 and not err.value.retryable and err.value.http_status == 200


async def test_wrong_key_is_not_retryable(kie):
    wrong = KieClient(kie.base_url, "wrong")
    try:
        with pytest.raises(KieError) as err:
            await create(wrong)
        assert err.value.code == 401 and not err.value.retryable
    finally:
        await wrong.close()


async def test_unknown_task_record_info(client):
    with pytest.raises(KieError) as err:
        await client.record_info("task_missing")
    assert err.value.code == 422 and "recordInfo is null" in err.value.message


async def test_network_error_is_retryable():
    unreachable = KieClient(f"http://127.0.0.1:{free_port()}", "k", timeout=2)
    try:
        with pytest.raises(KieError) as err:
            await unreachable.record_info("t")
        assert err.value.retryable and err.value.code is None
    finally:
        await unreachable.close()
