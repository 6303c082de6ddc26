"""`make demo`: the whole stack on embedded defaults, one generation pushed through as a Telegram user.

Starts: PostgreSQL (embedded, unless DATABASE_URL is set), the Temporal dev server (with its UI),
the Kie.ai and Telegram Bot API simulators (in this process), then the real `worker.py` and `bot.py`
as subprocesses configured only through their environment. A scripted user talks to the bot through
the Telegram simulator: /start → Z-Image → prompt → 16:9. Prints the log chain, the workflow id,
the Temporal UI link and a last line `demo: delivered=N duplicates=N status=... workflow=...`.

DEMO_KEEP=1 keeps everything running after the generation (to look around in the Temporal UI)
until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from temporalio.client import Client

from imagegen.contracts import GenerationResult, workflow_id_for
from imagegen.migrate import apply_migrations
from tests.support.kie_sim import KieSimulator
from tests.support.services import EmbeddedPostgres, TemporalDevServer, connect_temporal, free_port, wait_for_port
from tests.support.telegram_sim import TelegramSimulator

ROOT = Path(__file__).resolve().parent.parent
CHAT_ID = 424242
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
CHAIN = ("JOB_SUBMITTED", "JOB_CREATED", "CALLBACK_RECEIVED", "CALLBACK_PARSED", "CALLBACK_SIGNALLED", "POLL_TICK",
         "DELIVER_LOCK_WIN", "DELIVER_LOCK_SKIP", "DELIVER_START", "DELIVER_OK", "MARK_DELIVERED", "FINISHED")


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


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
            "POLL_SCHEDULE": "30:3,120:8,900:20",
            "ALLOW_PRIVATE_URLS": "1",  # the simulators live on 127.0.0.1
        }
        say("starting worker.py and bot.py…")
        logs = [self.spawn("worker", "worker.py", env), self.spawn("bot", "bot.py", env)]
        try:
            await asyncio.to_thread(wait_for_port, http_port, 60)
            result = await self.play_user(tg, kie, client)
        finally:
            await asyncio.sleep(0.3)
        job_id, result = result
        wf_id = workflow_id_for(job_id) if job_id else "-"
        self.print_chain(job_id, logs)
        photos = [p for p in tg.photos if p.chat_id == CHAT_ID]
        print()
        say(f"workflow id: {wf_id}")
        say(f"Temporal UI: {ui}/namespaces/default/workflows/{wf_id}")
        say(f"logs: {self.workdir}")
        if os.environ.get("DEMO_KEEP"):
            say("DEMO_KEEP set: everything keeps running; Ctrl-C to stop")
            try:
                while True:
                    await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
        await tg.stop()
        await kie.stop()
        status = result.outcome if result else "unfinished"
        print(f"demo: delivered={len(photos)} duplicates={max(0, len(photos) - 1)} status={status} workflow={wf_id}")
        return 0 if status == "done" and len(photos) == 1 else 1

    async def play_user(self, tg: TelegramSimulator, kie: KieSimulator, client: Client):
        def button(label: str):
            try:
                return tg.find_button(CHAT_ID, label)
            except LookupError:
                return None

        def bot_said(fragment: str) -> bool:
            return any(fragment in (m.get("text") or "") for m in tg.messages(CHAT_ID))

        say(f"user {CHAT_ID}: /start")
        tg.user_send_command(CHAT_ID, "/start")
        msg_id, data = await tg.wait_for(lambda: button("Z-Image"), timeout=30)
        say("user: taps «Z-Image»")
        tg.user_press_button(CHAT_ID, msg_id, data)
        await tg.wait_for(lambda: bot_said("Опишите"), timeout=15)
        say(f"user: «{PROMPT}»")
        tg.user_send_text(CHAT_ID, PROMPT)
        msg_id, data = await tg.wait_for(lambda: button("16:9"), timeout=15)
        say("user: taps «16:9»")
        tg.user_press_button(CHAT_ID, msg_id, data)
        await tg.wait_for(lambda: kie.tasks, timeout=30)
        task = next(iter(kie.tasks.values()))
        job_id = parse_qs(urlparse(task.callback_url).query)["job"][0]
        handle = client.get_workflow_handle(workflow_id_for(job_id), result_type=GenerationResult)
        say(f"bot started workflow {handle.id}; Kie task {task.task_id if hasattr(task, 'task_id') else '?'}")
        result = await asyncio.wait_for(handle.result(), 120)
        await tg.wait_for(lambda: bot_said("✅"), timeout=15)
        for m in tg.messages(CHAT_ID):
            kind = "photo" if m.get("kind") == "photo" else "text"
            say(f"chat shows #{m['message_id']} {kind}: {(m.get('text') or m.get('caption') or '')[:70]}")
        return job_id, result

    def print_chain(self, job_id: str | None, logs: list[Path]) -> None:
        if not job_id:
            return
        print()
        say(f"log chain for correlation id {job_id}:")
        lines = []
        for path in logs:
            for line in path.read_text(errors="replace").splitlines():
                if f"[{job_id}]" in line and any(f" {e}" in line for e in CHAIN):
                    lines.append(line)
        for line in sorted(lines):  # both logs start with the same timestamp format
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
