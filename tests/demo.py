"""`make demo`: the whole stack on embedded defaults, one generation pushed through as a Telegram user.

Starts: PostgreSQL (embedded, unless DATABASE_URL is set), the Temporal dev server (with its UI),
the Kie.ai and Telegram Bot API simulators (in this process), then the real `worker.py` and `bot.py`
as subprocesses configured only through their environment (each with its internal health and
metrics ports). A scripted user talks to the bot through the Telegram simulator: /start → Z-Image →
prompt → 16:9, then sends their own photo with a caption and edits it with Nano Banana Edit
(the picture goes through Telegram's getFile and Kie's file upload). Prints the whole conversation (every message and edit, numbered, in order), the log
chain in the order it was written, where to look (Temporal frontend address, a ready
`temporal workflow list` line, the UI link, the health and metrics URLs) and a last line
`demo: delivered=N duplicates=N status=... workflow=...`.

DEMO_KEEP=1 keeps everything running after the generation (to look around in the Temporal UI, or
curl /status and /metrics) until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import re
import shlex
import time
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from temporalio.client import Client

from imagegen.contracts import GenerationResult
from imagegen.migrate import apply_migrations
from tests.support.kie_sim import KieSimulator
from tests.support.services import (EmbeddedPostgres, TemporalDevServer, connect_temporal, free_port, temporal_cli,
                                    wait_for_port)
from tests.support.telegram_sim import TelegramSimulator

ROOT = Path(__file__).resolve().parent.parent
CHAT_ID = 424242
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
EDIT_CAPTION = "сделай закат над морем"
CHAIN = ("JOB_SUBMITTED", "INPUT_UPLOADED", "INPUTS_UPLOADED", "JOB_CREATED", "CALLBACK_RECEIVED", "CALLBACK_PARSED", "CALLBACK_SIGNALLED", "POLL_TICK",
         "DELIVER_LOCK_WIN", "DELIVER_LOCK_SKIP", "DELIVER_START", "DELIVER_OK", "MARK_DELIVERED", "FINISHED")


# What the bot did in the chat, as the Telegram simulator recorded it (successful calls only).
CHAT_METHODS = {"sendMessage": "message", "sendPhoto": "photo", "sendDocument": "document",
                "editMessageText": "edits", "editMessageCaption": "edits caption of", "editMessageMedia": "edits photo of",
                "editMessageReplyMarkup": "edits buttons of", "deleteMessage": "deletes", "answerCallbackQuery": "toast"}


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def log_time(line: str) -> str:
    """The timestamp a log line starts with (`YYYY-MM-DD HH:MM:SS,mmm`); lines without one sort first."""
    parts = line.split(" ", 2)
    return " ".join(parts[:2]) if len(parts) > 2 and parts[0][:1].isdigit() else ""


def chain_lines(job_id: str, logs: list[Path]) -> list[str]:
    """The job's log chain across the processes' logs in the order it was written: each file in its
    own order, files merged by timestamp (a stable merge: lines of the same millisecond keep their
    file order instead of coming out alphabetically)."""
    per_file = []
    for path in logs:
        per_file.append([line for line in path.read_text(errors="replace").splitlines()
                         if f"[{job_id}]" in line and any(f" {e}" in line for e in CHAIN)])
    return list(heapq.merge(*per_file, key=log_time))


async def probe(url: str) -> str:
    """What a GET of `url` answers, in a few words (the demo shows that the URLs it prints work)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(url) as resp:
                body = await resp.text()
                if url.endswith("/metrics"):
                    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
                    return f"HTTP {resp.status}, {samples} samples"
                return f"HTTP {resp.status}"
    except Exception as exc:
        return f"no answer: {type(exc).__name__}"


def _short(text: str | None, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def conversation(tg: TelegramSimulator, user_lines: list[tuple[float, str]], chat_id: int) -> list[str]:
    """The whole chat in order: what the user did (`user_lines`: (time, text)) and every successful
    Bot API call of the bot in this chat, status edits included."""
    events = [(t, f"user: {text}") for t, text in user_lines]
    queries = {q["id"] for q in tg.answered_callbacks}
    for call in tg.calls:
        kind = CHAT_METHODS.get(call.method)
        if kind is None or call.status != 200:
            continue
        p = call.params
        if call.method == "answerCallbackQuery":
            if not p.get("text") or p.get("callback_query_id") not in queries:
                continue
            events.append((call.time, f"bot: toast «{_short(p.get('text'))}»"))
            continue
        if str(p.get("chat_id")) != str(chat_id):
            continue
        result = (call.response or {}).get("result")
        mid = result.get("message_id") if isinstance(result, dict) else p.get("message_id")
        text = p.get("text") or p.get("caption") or ""
        if call.method == "editMessageMedia" and isinstance(p.get("media"), dict):
            text = p["media"].get("caption") or ""
        buttons = p.get("reply_markup") or {}
        labels = [b.get("text") for row in buttons.get("inline_keyboard", []) for b in row] if isinstance(buttons, dict) else []
        where = f"#{mid}" if mid is not None else ""
        line = f"bot: {kind} {where}".rstrip()
        if text:
            line += f" «{_short(text)}»"
        if labels:
            line += f" [{' | '.join(_short(x, 20) for x in labels)}]"
        events.append((call.time, line))
    events.sort(key=lambda e: e[0])  # stable: same-time events keep their order
    return [f"{i:>3}. {text}" for i, (_, text) in enumerate(events, 1)]


def preferred_port(port: int) -> int:
    """`port` when it is free, else any free port."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


class Demo:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="imagegen-demo-"))
        self.procs: list[subprocess.Popen] = []
        self.pg: EmbeddedPostgres | None = None
        self.temporal: TemporalDevServer | None = None
        self.user_lines: list[tuple[float, str]] = []  # (time, what the scripted user did)

    def user(self, text: str) -> None:
        self.user_lines.append((time.time(), text))
        say(f"user {CHAT_ID}: {text}")

    def spawn(self, name: str, script: str, env: dict[str, str]) -> Path:
        log_path = self.workdir / f"{name}.log"
        proc = subprocess.Popen([sys.executable, str(ROOT / script)], cwd=ROOT, env={**os.environ, **env},
                                stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return log_path

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.temporal:
            self.temporal.stop()
        if self.pg:
            self.pg.close()

    async def run(self) -> int:
        dsn = os.environ.get("DATABASE_URL", "").strip()
        if not dsn:
            say("starting an embedded PostgreSQL…")
            self.pg = await asyncio.to_thread(lambda: EmbeddedPostgres().start())
            dsn = self.pg.dsn
        await apply_migrations(dsn)
        temporal_port, ui_port = preferred_port(7233), preferred_port(8233)
        say("starting the Temporal dev server…")
        self.temporal = TemporalDevServer(port=temporal_port, ui_port=ui_port, headless=False,
                                          db_file=str(self.workdir / "temporal.db"),
                                          log_path=str(self.workdir / "temporal.log")).start()
        client = await connect_temporal(self.temporal.address)
        ui = f"http://localhost:{ui_port}"

        kie = KieSimulator(api_key="demo-kie-key")
        kie.delay = 2.0
        tg = TelegramSimulator(token="100200300:DEMO-TOKEN")
        await kie.start()
        await tg.start()
        http_port = free_port()
        env = {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE": tg.base_url,
            "KIE_API_KEY": "demo-kie-key",
            "KIE_API_BASE": kie.base_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
            "CALLBACK_SECRET": os.urandom(16).hex(),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "DATABASE_URL": dsn,
            "TEMPORAL_ADDRESS": self.temporal.address,
            "TEMPORAL_TASK_QUEUE": "image-generation-demo",
            "KIE_UPLOAD_BASE": kie.upload_base_url,
            "POLL_SCHEDULE": "30:3,120:8,900:20",
            "ALLOW_PRIVATE_URLS": "1",  # the simulators live on 127.0.0.1
        }
        ports = {name: {"HEALTH_PORT": str(free_port()), "METRICS_PORT": str(free_port())} for name in ("worker", "bot")}
        say("starting worker.py and bot.py…")
        logs = [self.spawn(name, f"{name}.py", {**env, **ports[name]}) for name in ("worker", "bot")]
        try:
            await asyncio.to_thread(wait_for_port, http_port, 60)
            job_id, wf_id, result = await self.play_user(tg, kie, client)
            edit_wf, edit_result = await self.play_edit(tg, kie, client)
        finally:
            await asyncio.sleep(0.3)
        photos = [p for p in tg.photos if p.chat_id == CHAT_ID]
        print()
        say(f"the conversation in chat {CHAT_ID}, in order (status edits included):")
        for line in conversation(tg, self.user_lines, CHAT_ID):
            print("   ", line)
        self.print_chain(job_id, logs)
        self.print_chain(edit_wf.rsplit("-", 1)[-1] if edit_wf else None, logs)
        keep = bool(os.environ.get("DEMO_KEEP"))
        address = self.temporal.address
        print()
        say(f"workflow id: {wf_id}")
        say(f"Temporal frontend: {address} (namespace default)")
        query = f"TelegramChatId = {CHAT_ID}"
        say("list it: " + " ".join([shlex.quote(temporal_cli()), "workflow", "list", "--address", address,
                                     "--query", shlex.quote(query)]))
        listed = await asyncio.to_thread(subprocess.run, [temporal_cli(), "workflow", "list", "--address", address,
                                                           "--query", query], capture_output=True, text=True, timeout=30)
        for line in (listed.stdout or listed.stderr).strip().splitlines()[:5]:
            print("   ", line)
        say(f"Temporal UI: {ui}/namespaces/default/workflows/{wf_id}")
        if edit_wf:
            say(f"Temporal UI (the edit): {ui}/namespaces/default/workflows/{edit_wf}")
        for name in ("worker", "bot"):
            health = f"http://127.0.0.1:{ports[name]['HEALTH_PORT']}/status"
            metrics_url = f"http://127.0.0.1:{ports[name]['METRICS_PORT']}/metrics"
            say(f"{name}: health {health} ({await probe(health)}) · metrics {metrics_url} ({await probe(metrics_url)})")
        say(f"logs: {self.workdir}")
        if keep:
            say("DEMO_KEEP set: everything keeps running (UI, frontend, /status, /metrics); Ctrl-C to stop")
            try:
                while True:
                    await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
        else:
            say("everything stops now, so these links and ports go dead in a second: "
                "run `DEMO_KEEP=1 make demo` to keep them up (Ctrl-C to stop)")
        await tg.stop()
        await kie.stop()
        status = result.outcome if result else "unfinished"
        edit_status = edit_result.outcome if edit_result else "unfinished"
        # one picture per request: the generation's and the edit's
        print(f"demo: edit workflow={edit_wf} status={edit_status}")
        print(f"demo: delivered={len(photos)} duplicates={max(0, len(photos) - 2)} status={status} workflow={wf_id}")
        return 0 if status == "done" and edit_status == "done" and len(photos) == 2 else 1

    async def play_user(self, tg: TelegramSimulator, kie: KieSimulator, client: Client):
        def button(label: str):
            try:
                return tg.find_button(CHAT_ID, label)
            except LookupError:
                return None

        def bot_said(fragment: str) -> bool:
            return any(fragment in (m.get("text") or "") for m in tg.messages(CHAT_ID))

        self.user("/start")
        tg.user_send_command(CHAT_ID, "/start")
        msg_id, data = await tg.wait_for(lambda: button("Z-Image"), timeout=30)
        self.user(f"taps «Z-Image» under #{msg_id}")
        tg.user_press_button(CHAT_ID, msg_id, data)
        await tg.wait_for(lambda: bot_said("Опишите"), timeout=15)
        self.user(f"«{PROMPT}»")
        tg.user_send_text(CHAT_ID, PROMPT)
        msg_id, data = await tg.wait_for(lambda: button("16:9"), timeout=15)
        self.user(f"taps «16:9» under #{msg_id}")
        tg.user_press_button(CHAT_ID, msg_id, data)
        await tg.wait_for(lambda: kie.tasks, timeout=30)
        task = next(iter(kie.tasks.values()))
        query = parse_qs(urlparse(task.callback_url).query)
        job_id, wf_id = query["job"][0], query["wf"][0]  # the callback URL names the workflow
        handle = client.get_workflow_handle(wf_id, result_type=GenerationResult)
        say(f"bot started workflow {handle.id}; Kie task {getattr(task, 'task_id', '?')}")
        result = await asyncio.wait_for(handle.result(), 120)
        await tg.wait_for(lambda: bot_said("✅"), timeout=15)
        return job_id, wf_id, result

    async def play_edit(self, tg: TelegramSimulator, kie: KieSimulator, client: Client):
        """The same user sends their own photo with a caption and edits it with Nano Banana Edit."""
        from tests.support.images import make_png

        before = set(kie.tasks)
        self.user(f"sends a photo with the caption «{EDIT_CAPTION}»")
        tg.user_send_photo(CHAT_ID, caption=EDIT_CAPTION, image=make_png(64, 48, seed=7))
        for label in ("Nano Banana Edit", "auto"):
            (msg_id,) = await tg.user_presses(CHAT_ID, label, timeout=30)
            self.user(f"taps «{label}» under #{msg_id}")
        task = await tg.wait_for(lambda: next((t for k, t in kie.tasks.items() if k not in before), None), timeout=60)
        wf_id = parse_qs(urlparse(task.callback_url).query)["wf"][0]
        say(f"bot started workflow {wf_id}; Kie task {task.task_id} with {len(task.body['input'].get('image_urls', []))}"
            f" uploaded picture(s)")
        result = await asyncio.wait_for(client.get_workflow_handle(wf_id, result_type=GenerationResult).result(), 120)
        return wf_id, result

    def print_chain(self, job_id: str | None, logs: list[Path]) -> None:
        if not job_id:
            return
        print()
        say(f"log chain for correlation id {job_id}:")
        for line in chain_lines(job_id, logs):
            print("   ", re.sub(r"^\S+ \S+ INFO imagegen ", "", line))


def main() -> int:
    demo = Demo()
    loop = asyncio.new_event_loop()
    task = loop.create_task(demo.run())
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 130
    finally:
        demo.stop()
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
