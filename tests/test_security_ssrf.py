"""The byte-download fallback cannot be aimed at internal addresses (SSRF), and is capped in size,
time and content type.

No internet here, so "the internet" is a loopback server on 127.0.0.1 that a test policy declares
public (``problem=`` hook), while a second server on 127.0.0.2 plays the internal service that must
never be reached. Tests without that hook use the production policy, under which every loopback
address is refused.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from imagegen.delivery import TELEGRAM_PHOTO_MAX_BYTES, DownloadError, download_image, send_result
from imagegen.urlguard import address_problem, check_url, static_resolver, UrlRefused
from tests.support.images import make_png
from tests.support.services import free_port

PNG = make_png(8, 8, seed=3)


class Site:
    """A tiny HTTP server that records every request it gets."""

    def __init__(self, host: str):
        self.host, self.port = host, free_port()
        self.hits: list[str] = []
        self.runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "Site":
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path_qs)
        path = request.path
        if path == "/img.png":
            return web.Response(body=PNG, content_type="image/png")
        if path == "/redirect":
            return web.Response(status=int(request.query.get("code", "302")), headers={"Location": request.query["to"]})
        if path.startswith("/loop"):
            n = int(path.removeprefix("/loop") or 0)
            return web.Response(status=302, headers={"Location": f"/loop{n + 1}"})
        if path == "/big-declared":
            resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": str(50 * 1000 * 1000)})
            await resp.prepare(request)
            await resp.write(PNG)
            return resp
        if path == "/big-stream":
            size = int(request.query["size"])
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(PNG)
            sent, block = len(PNG), b"\0" * 65536
            while sent < size:
                await resp.write(block)
                sent += len(block)
            await resp.write_eof()
            return resp
        if path == "/slow":
            await asyncio.sleep(10)
            return web.Response(body=PNG, content_type="image/png")
        if path == "/drip":
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            await resp.prepare(request)
            await resp.write(PNG[:8])
            for _ in range(100):
                await asyncio.sleep(0.1)
                await resp.write(b"\0")
            return resp
        if path == "/html":
            return web.Response(text="<html>login</html>", content_type="text/html")
        if path == "/svg":
            return web.Response(text="<svg xmlns='http://www.w3.org/2000/svg'><script>x</script></svg>",
                                content_type="image/svg+xml")
        if path == "/fake-png":
            return web.Response(text="<html>not an image</html>", content_type="image/png")
        if path == "/no-type":
            return web.Response(body=PNG, headers={"Content-Type": ""})
        return web.Response(status=404)


@pytest.fixture
async def sites():
    public, internal = await Site("127.0.0.1").start(), await Site("127.0.0.2").start()
    try:
        yield public, internal
    finally:
        await public.stop()
        await internal.stop()


def test_policy_public_and_refused_addresses():
    for ok in ("8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e"):
        assert address_problem(ok) is None, ok
    for bad in ("127.0.0.1", "127.9.9.9", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.10",
                "169.254.169.254", "169.254.170.2", "100.64.0.1", "100.100.100.200", "0.0.0.0", "::",
                "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "fe80::1", "fc00::1",
                "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
                "64:ff9b::7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::1", "fec0::1", "198.18.0.1", "192.0.0.1"):
        assert address_problem(bad), bad


@pytest.mark.parametrize("url", [
    "ftp://cdn.example/a.png", "file:///etc/passwd", "gopher://127.0.0.1:11211/_stats", "data:image/png;base64,AAAA",
    "javascript:alert(1)", "//cdn.example/a.png", "http://", "http:///a.png", "not a url",
])
async def test_only_http_urls_are_fetched(url):
    with pytest.raises(DownloadError, match="refused"):
        await download_image(url, max_bytes=10**6, timeout=2)


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "2130706433", "0x7f000001", "127.1", "0", "0.0.0.0",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "127.0.0.2", "foo.localhost",
])
async def test_loopback_in_any_spelling_is_refused_before_connecting(sites, host):
    public, internal = sites
    for site in (public, internal):
        with pytest.raises(DownloadError, match="refused"):
            await download_image(f"http://{host}:{site.port}/img.png", max_bytes=10**6, timeout=2)
    assert public.hits == [] and internal.hits == []


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/", "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/", "http://10.0.0.5:8080/admin", "http://192.168.1.1/",
    "http://172.17.0.1:2375/containers/json", "http://[fe80::1%25eth0]/", "http://[64:ff9b::a9fe:a9fe]/",
])
async def test_private_link_local_and_metadata_addresses_are_refused_fast(url):
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="refused"):
        await download_image(url, max_bytes=10**6, timeout=5)
    assert time.monotonic() - t0 < 1.0  # refused by policy, not by a connection timing out


async def test_allow_private_setting_lets_local_development_through(sites):
    public, _ = sites
    data = await download_image(f"{public.base}/img.png", max_bytes=10**6, timeout=2, allow_private=True)
    assert data == PNG and public.hits == ["/img.png"]
    with pytest.raises(DownloadError, match="refused"):  # the scheme check stays
        await download_image("file:///etc/passwd", max_bytes=10**6, timeout=2, allow_private=True)


# --- with a test policy: 127.0.0.1 stands for the internet, 127.0.0.2 for the internal network ------

def test_problem(ip: str) -> str | None:
    return None if ip == "127.0.0.1" else address_problem(ip)


test_problem.__test__ = False  # not a pytest test
DNS = static_resolver({"cdn.test": ["127.0.0.1"], "evil.test": ["127.0.0.2"], "rebind.test": ["127.0.0.1", "127.0.0.2"],
                       "meta.test": ["169.254.169.254"], "v6.test": ["::1"]})


async def fetch(url: str, **kw):
    kw.setdefault("max_bytes", 10**6)
    kw.setdefault("timeout", 3)
    return await download_image(url, resolve=DNS, problem=test_problem, **kw)


async def test_names_are_checked_after_resolution(sites):
    public, internal = sites
    assert await fetch(f"http://cdn.test:{public.port}/img.png") == PNG
    for name in ("evil.test", "rebind.test", "meta.test", "v6.test"):
        with pytest.raises(DownloadError, match=f"refused: {name} resolves to"):
            await fetch(f"http://{name}:{internal.port}/img.png")
    assert internal.hits == [] and public.hits == ["/img.png"]


@pytest.mark.parametrize("target", [
    "http://127.0.0.2:{internal}/img.png", "http://evil.test:{internal}/img.png", "http://localhost:{internal}/",
    "http://[::1]:{internal}/", "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd",
    "gopher://127.0.0.2:{internal}/",
])
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_to_internal_addresses_are_refused(sites, target, code):
    public, internal = sites
    to = target.format(internal=internal.port)
    with pytest.raises(DownloadError, match="refused"):
        await fetch(f"http://cdn.test:{public.port}/redirect?code={code}&to={to}")
    assert internal.hits == [] and len(public.hits) == 1


async def test_redirects_to_public_addresses_are_followed_a_few_times(sites):
    public, _ = sites
    assert await fetch(f"http://cdn.test:{public.port}/redirect?to=/img.png") == PNG
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        await fetch(f"http://cdn.test:{public.port}/loop")
    assert len([h for h in public.hits if h.startswith("/loop")]) == 6


@pytest.mark.parametrize("path,match", [
    ("/html", "not a photo type"), ("/svg", "not a photo type"), ("/no-type", "not a photo type"),
    ("/fake-png", "not a image/png image"), ("/missing", "HTTP 404"),
])
async def test_only_real_images_are_accepted(sites, path, match):
    public, _ = sites
    with pytest.raises(DownloadError, match=match):
        await fetch(f"http://cdn.test:{public.port}{path}")


async def test_size_is_capped_declared_or_streamed(sites):
    public, _ = sites
    with pytest.raises(DownloadError, match="over the 1000000 cap"):
        await fetch(f"http://cdn.test:{public.port}/big-declared")
    with pytest.raises(DownloadError, match="exceeds the 200000 byte cap"):
        await fetch(f"http://cdn.test:{public.port}/big-stream?size=400000", max_bytes=200_000)
    # a bigger setting is still held to Telegram's photo limit
    with pytest.raises(DownloadError, match=f"exceeds the {TELEGRAM_PHOTO_MAX_BYTES} byte cap"):
        await fetch(f"http://cdn.test:{public.port}/big-stream?size={TELEGRAM_PHOTO_MAX_BYTES + 200_000}",
                    max_bytes=10**9)


@pytest.mark.parametrize("path", ["/slow", "/drip"])
async def test_time_is_capped(sites, path):
    public, _ = sites
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        await fetch(f"http://cdn.test:{public.port}{path}", timeout=0.6)
    assert time.monotonic() - t0 < 2.0


async def test_delivery_falls_back_to_the_link_instead_of_fetching_an_internal_url(stack):
    """Level 2 with the production policy: the result URL is on loopback (the Kie simulator), so
    the bytes are not fetched and the user gets the link (level 3)."""
    stack.kie.delay = 0.0
    # a finished task whose file lives on 127.0.0.1
    handle, job_id, chat_id = await stack.start_generation()
    await asyncio.wait_for(handle.result(), 30)
    task_id = (await stack.repo.get(job_id))["external_task_id"]
    url = f"{stack.kie.base_url}/files/{task_id}.png"
    downloads_before = stack.kie.downloads.get(task_id, 0)
    stack.tg.fail_next("sendPhoto", 400, "Bad Request: wrong file identifier/HTTP URL specified")
    result = await send_result(stack.bot, chat_id, url, caption="c", link_text=f"link {url}", corr_id=job_id,
                               max_bytes=10**6, download_timeout=3, allow_private=False)
    assert result.level == "text"
    assert stack.kie.downloads.get(task_id, 0) == downloads_before  # we never fetched it
    assert stack.tg.last_message(chat_id)["text"] == f"link {url}"


def test_check_url_keeps_public_urls():
    assert str(check_url("https://tempfile.aiquickdraw.com/a/b.png?x=1", allow_private=False)).startswith("https://")
    with pytest.raises(UrlRefused):
        check_url("https://169.254.169.254/", allow_private=False)
