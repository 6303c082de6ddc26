"""A TCP proxy for fault tests: put it between a process and a server (e.g. the bot and Temporal's
gRPC frontend) to hold one direction of the traffic and then release or cut it.

    proxy = TcpProxy("127.0.0.1", 7233); await proxy.start()     # connect to 127.0.0.1:proxy.port
    proxy.hold("up")      # client → server bytes wait in the proxy (the request never arrives)
    proxy.hold("down")    # server → client bytes wait (the server acted; the answer is "lost")
    proxy.release()       # deliver what was held, in order, and stop holding
    await proxy.cut()     # drop every connection and whatever it held (as a crash would)

Bytes are held per connection in order (a pump waits before writing), so releasing keeps every
stream consistent; cutting discards them.
"""

from __future__ import annotations

import asyncio

from tests.support.services import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host, self.port = host, free_port()
        self.gates = {"up": asyncio.Event(), "down": asyncio.Event()}
        for g in self.gates.values():
            g.set()
        self.held_chunks = {"up": 0, "down": 0}
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    def hold(self, direction: str) -> None:
        self.gates[direction].clear()

    def release(self) -> None:
        for g in self.gates.values():
            g.set()

    async def cut(self) -> None:
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.cut()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            self._conns.discard(task)
            return
        self._writers |= {c_writer, s_writer}
        pumps = [asyncio.create_task(self._pump(c_reader, s_writer, "up")),
                 asyncio.create_task(self._pump(s_reader, c_writer, "down"))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (c_writer, s_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._conns.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        gate = self.gates[direction]
        while data := await reader.read(65536):
            if not gate.is_set():
                self.held_chunks[direction] += 1
                await gate.wait()
            writer.write(data)
            await writer.drain()
