"""TLS for tests: a throwaway PKI made with the `openssl` CLI, and a TLS-terminating TCP proxy.

The Temporal dev server (`temporal server start-dev`) has no TLS options, so the TLS test puts
:class:`TlsProxy` in front of it: it terminates TLS (optionally requiring a client certificate signed
by the test CA, as mTLS to a self-hosted cluster or Temporal Cloud does), offers ALPN ``h2`` for gRPC
and pipes the bytes to the dev server on loopback. It records the subject of every client certificate
it accepted, so a test can prove the connection really went through mutual TLS.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_name: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path, server_name: str = "temporal.test") -> Pki:
    """A CA, a server certificate for `server_name` and a client certificate, all EC P-256."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl CLI is needed to make test certificates")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=imagegen test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    leaves = {
        "server": (f"/CN={server_name}", f"subjectAltName=DNS:{server_name}\nextendedKeyUsage=serverAuth\n"),
        "client": ("/CN=imagegen-worker", "subjectAltName=DNS:imagegen-worker\nextendedKeyUsage=clientAuth\n"),
    }
    for name, (subject, ext) in leaves.items():
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return Pki(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
               client_cert=d / "client.pem", client_key=d / "client.key", server_name=server_name)


@dataclass
class TlsProxy:
    """TLS on 127.0.0.1:<port> → plain TCP to 127.0.0.1:<upstream_port>."""

    pki: Pki
    upstream_port: int
    require_client_cert: bool = True
    port: int = field(default_factory=free_port)
    client_subjects: list[str] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _tasks: set = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        ctx.set_alpn_protocols(["h2"])
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.pki.ca)
        return ctx

    async def start(self) -> "TlsProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._context(),
                                                  ssl_handshake_timeout=10)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peercert")
        if peer:
            self.client_subjects.append(dict(x[0] for x in peer["subject"]).get("commonName", "?"))
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:
                    pass

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
