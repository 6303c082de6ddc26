"""Kie's file upload API (imagegen/uploads.py) and the edit models, against the Kie simulator: an upload
answers a downloadUrl that serves the same bytes, the same name replaces instead of adding, errors are
classified like the jobs API's; an edit's createTask fetches its pictures (a wrong or expired URL is
refused) and its result names the inputs it was made from."""

import hashlib
import time

import aiohttp
import pytest

from imagegen.kie import KieClient, KieError, parse_kie_state
from imagegen.models import MODELS
from imagegen.uploads import (InputProblem, KieUploader, check_picture, sniff_type, still_kept, upload_name)
from tests.support.images import make_jpeg_like, make_png, make_webp, png_text
from tests.support.kie_sim import KieSimulator

KEY = "k"


@pytest.fixture
async def kie():
    async with KieSimulator(api_key=KEY) as sim:
        sim.delay = 0.05
        yield sim


@pytest.fixture
async def uploader(kie):
    u = KieUploader(kie.upload_base_url, KEY)
    yield u
    await u.close()


@pytest.fixture
async def jobs(kie):
    c = KieClient(kie.base_url, KEY)
    yield c
    await c.close()


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.read()


async def test_an_upload_answers_a_download_url_with_the_same_bytes(kie, uploader):
    data = make_png(16, 16, seed=4)
    up = await uploader.upload(data, file_name="job1-0.png", mime="image/png")
    assert up.url.startswith(kie.upload_base_url + "/files/") and up.url.endswith("/imagegen/inputs/job1-0.png")
    assert up.size == len(data) and up.sha256 == hashlib.sha256(data).hexdigest() and up.mime == "image/png"
    assert await fetch(up.url) == (200, data)
    assert kie.uploads["imagegen/inputs/job1-0.png"].data == data
    assert not kie.upload_base_url.startswith(kie.base_url)  # its own host, as Kie's


async def test_the_same_name_replaces_the_earlier_file_instead_of_adding_one(kie, uploader):
    first = await uploader.upload(make_png(seed=1), file_name="j-0.png", mime="image/png")
    second = await uploader.upload(make_png(seed=2), file_name="j-0.png", mime="image/png")
    assert first.url == second.url and len(kie.uploads) == 1
    assert kie.upload_writes() == {"imagegen/inputs/j-0.png": 2}
    assert (await fetch(first.url))[1] == make_png(seed=2)


@pytest.mark.parametrize("fault,code,retryable", [
    (500, 500, True), (429, 429, True), (401, 401, False), (402, 402, False),
    ((200, {"success": False, "code": 200, "msg": "busy"}), 200, True),
    ((200, {"success": True, "code": 200, "msg": "ok", "data": {}}), 200, True),  # no downloadUrl
])
async def test_upload_errors_are_classified_like_the_jobs_api(kie, uploader, fault, code, retryable):
    kie.upload_errors.append(fault)
    with pytest.raises(KieError) as err:
        await uploader.upload(b"\x89PNG\r\n\x1a\nxx", file_name="a.png", mime="image/png")
    assert err.value.code == code and err.value.retryable is retryable


async def test_a_wrong_key_is_refused_by_the_upload_host(kie):
    wrong = KieUploader(kie.upload_base_url, "wrong")
    try:
        with pytest.raises(KieError) as err:
            await wrong.upload(make_png(), file_name="a.png", mime="image/png")
        assert err.value.code == 401 and not err.value.retryable
    finally:
        await wrong.close()


async def test_an_edit_uses_the_uploaded_pictures_and_its_result_names_them(kie, uploader, jobs):
    pictures = [make_png(20, 20, seed=s) for s in (7, 8, 9)]
    urls = [(await uploader.upload(p, file_name=f"j-{i}.png", mime="image/png")).url for i, p in enumerate(pictures)]
    body = MODELS["seedream45_edit"].kie_request("make it night", "16:9", {"quality": "high"}, image_urls=urls)
    task_id = await jobs.create_task(body)
    task = kie.tasks[task_id]
    assert task.input_urls == urls and task.input_sha256 == [hashlib.sha256(p).hexdigest() for p in pictures]
    await kie.wait_done(task_id)
    state, results, _ = parse_kie_state(await jobs.record_info(task_id))
    status, result = await fetch(results[0])
    assert state == "success" and status == 200
    assert png_text(result) == "inputs=" + ",".join(task.input_sha256)


@pytest.mark.parametrize("case", ["wrong", "expired", "not_a_picture"])
async def test_an_edit_whose_picture_kie_cannot_fetch_is_refused_naming_the_picture(kie, uploader, jobs, case):
    good = (await uploader.upload(make_png(seed=1), file_name="j-0.png", mime="image/png")).url
    if case == "wrong":
        second = kie.upload_base_url + "/files/nope/imagegen/inputs/missing.png"
    elif case == "not_a_picture":
        second = (await uploader.upload(b"%PDF-1.4 not a picture", file_name="j-1.pdf", mime="application/pdf")).url
    else:
        second = (await uploader.upload(make_png(seed=2), file_name="j-1.png", mime="image/png")).url
        kie.expire_uploads()
        good = (await uploader.upload(make_png(seed=1), file_name="j-0.png", mime="image/png")).url  # fresh again
    body = MODELS["nanobanana_edit"].kie_request("add a hat", "auto", image_urls=[good, second])
    with pytest.raises(KieError) as err:
        await jobs.create_task(body)
    assert err.value.code == 422 and not err.value.retryable and "image_urls[1]" in err.value.message
    assert kie.tasks == {}


def test_picture_checks_read_the_bytes_not_the_name():
    assert sniff_type(make_png()) == "image/png" and sniff_type(make_webp()) == "image/webp"
    assert sniff_type(make_jpeg_like(100)) == "image/jpeg" and sniff_type(b"GIF89a...") == "image/gif"
    assert sniff_type(b"%PDF-1.4") is None and sniff_type(b"RIFF\x00\x00\x00\x00WAVE") is None
    types = ("image/jpeg", "image/png", "image/webp")
    assert check_picture(make_png(8, 8), max_bytes=10_000, types=types, what="p") == "image/png"
    with pytest.raises(InputProblem) as err:
        check_picture(make_jpeg_like(10_001), max_bytes=10_000, types=types, what="p")
    assert err.value.reason == "too_big"
    for data in (b"GIF89a...", b"%PDF-1.4"):
        with pytest.raises(InputProblem) as err:
            check_picture(data, max_bytes=10_000, types=types, what="p")
        assert err.value.reason == "bad_type"


def test_names_are_deterministic_and_reuse_stays_within_kies_three_days():
    assert upload_name("abc", 2, "image/jpeg") == "abc-2.jpg" == upload_name("abc", 2, "image/jpeg")
    assert upload_name("abc", 0, "image/webp") == "abc-0.webp"
    now = time.time()
    assert still_kept(now - 3600, 60, now) and not still_kept(now - 61 * 3600, 60, now)
    assert not still_kept(now - 3600, 0, now) and not still_kept(0, 60, now)
    assert not still_kept(now - 73 * 3600, 72, now) and still_kept(now - 71 * 3600, 72, now)
