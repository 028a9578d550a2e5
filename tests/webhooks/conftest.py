"""A real HTTP receiver on a free loopback port, and a loopback canary listener."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from tests.redis_server import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST; answers with the next status of ``script`` (then 200)."""

    port: int
    received: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    location: str | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        request = Request(scope, receive)  # type: ignore[arg-type]
        self.received.append(Received(dict(request.headers), await request.body()))
        self.arrived.set()
        status = self.script.pop(0) if self.script else 200
        headers = {"location": self.location} if self.location and 300 <= status < 400 else {}
        await Response(b"ok", status_code=status, headers=headers)(scope, receive, send)  # type: ignore[arg-type]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver(free_port())
    config = uvicorn.Config(
        target, host="127.0.0.1", port=target.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    try:
        yield target
    finally:
        server.should_exit = True
        await task


@dataclass
class Canary:
    """A loopback TCP listener that counts connections (it must see none)."""

    port: int
    connections: int = 0


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    bird = Canary(0)

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bird.connections += 1
        writer.close()

    servers = [await asyncio.start_server(accept, "127.0.0.1", 0)]
    bird.port = servers[0].sockets[0].getsockname()[1]
    with contextlib.suppress(OSError):  # the same port on ::1, where there is IPv6
        servers.append(await asyncio.start_server(accept, "::1", bird.port))
    try:
        yield bird
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
