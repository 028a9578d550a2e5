"""The SSRF guard: every private, loopback, link-local... target is refused before any
connection, in any spelling, through DNS and through redirects (G16)."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from conveyor import Conveyor, Settings
from conveyor.webhooks import WebhookDeliverer, forbidden_reason, literal_ip
from conveyor.webhooks.ssrf import PinnedTransport, TargetRefusedError
from tests.webhooks.conftest import Canary, Receiver

pytestmark = pytest.mark.timeout(30)

REFUSED_HOSTS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "017700000001",
    "0.0.0.0",
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.1",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "[::1]",
    "[::]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::1]",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_literal_forms_are_forbidden(host: str) -> None:
    ip = literal_ip(host)
    assert ip is not None, host
    assert forbidden_reason(ip) is not None, (host, ip)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_spellings_normalize_like_inet_aton() -> None:
    assert str(literal_ip("0x7f.1")) == "127.0.0.1"
    assert str(literal_ip("2130706433")) == "127.0.0.1"
    assert str(literal_ip("0177.0.0.01")) == "127.0.0.1"
    assert str(literal_ip("10.1")) == "10.0.0.1"
    assert literal_ip("example.com") is None
    assert literal_ip("deadbeef") is None
    assert literal_ip("1.2.3.4.5") is None
    assert literal_ip("256.1.1.1") is None


async def _rebinding(host: str, port: int) -> list[str]:
    """A resolver that says every name is loopback (a DNS-rebinding attacker)."""
    return ["127.0.0.1"]


async def test_no_connection_is_made_to_refused_targets(canary: Canary) -> None:
    urls = [f"http://{host}:{canary.port}/hook" for host in REFUSED_HOSTS]
    urls += [f"https://{host}:{canary.port}/hook" for host in ("127.0.0.1", "[::1]")]
    urls.append(f"http://localhost:{canary.port}/hook")  # the system resolver says loopback
    async with httpx.AsyncClient(
        transport=PinnedTransport(allow_private=False), follow_redirects=False, trust_env=False
    ) as client:
        for url in urls:
            # httpx itself refuses some spellings (0177.0.0.1) as invalid URLs.
            with pytest.raises((TargetRefusedError, httpx.InvalidURL)):
                await client.post(url, content=b"{}")
    async with httpx.AsyncClient(
        transport=PinnedTransport(allow_private=False, resolver=_rebinding), trust_env=False
    ) as client:
        with pytest.raises(TargetRefusedError, match="loopback"):
            await client.post(f"http://hooks.example.com:{canary.port}/x", content=b"{}")
    await asyncio.sleep(0.05)
    assert canary.connections == 0


async def test_the_vetted_address_is_the_one_connected_to(receiver: Receiver) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        assert host == "hooks.example.com"
        return ["127.0.0.1"]

    async with httpx.AsyncClient(
        transport=PinnedTransport(allow_private=True, resolver=resolver), trust_env=False
    ) as client:
        response = await client.post(f"http://hooks.example.com:{receiver.port}/hook", content=b"1")
    assert response.status_code == 200
    (got,) = receiver.received
    assert got.headers["host"] == f"hooks.example.com:{receiver.port}"  # Host kept


async def _deliverer_outcome(app: Conveyor, url: str) -> dict[str, object]:
    task = app.get_task("hook")
    job = task.build_job((), {}, _options(url), 0.0)
    backend = await app.backend()
    await backend.enqueue([job], idempotency_ttl=60)
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    from conveyor.backends.base import Outcome, OutcomeKind

    await backend.complete([Outcome(leased.id, "w", leased.attempts, OutcomeKind.COMPLETED, 1)])
    deliverer = WebhookDeliverer(app, backoff=0.01, poll_interval=0.02, lock_ttl=3)
    run = asyncio.create_task(deliverer.run())
    try:
        async with asyncio.timeout(10):
            while True:
                stored = await backend.get_job(job.id)
                assert stored is not None
                if stored.webhook and stored.webhook["state"] != "pending":
                    return stored.webhook
                await asyncio.sleep(0.02)
    finally:
        deliverer.stop()
        await run


def _options(url: str) -> object:
    from conveyor.task import make_job_options

    return make_job_options(callback_url=url, callback_secret="s")


def _app(allow_private: bool) -> Conveyor:
    app = Conveyor(settings=Settings(url="memory://", webhook_allow_private=allow_private))

    @app.task()
    async def hook() -> int:
        return 1

    return app


async def test_the_deliverer_refuses_and_gives_up_at_once(canary: Canary) -> None:
    app = _app(allow_private=False)
    try:
        state = await _deliverer_outcome(app, f"http://0x7f.1:{canary.port}/hook")
    finally:
        await app.aclose()
    assert state["state"] == "failed"
    assert state["attempts"] == 1
    assert "loopback" in str(state["lastError"])
    assert canary.connections == 0


async def test_redirects_are_not_followed(receiver: Receiver, canary: Canary) -> None:
    # Private targets allowed (the receiver is on loopback), yet the redirect it answers
    # with is never followed: the canary sees nothing.
    receiver.script = [302, 302, 302]
    receiver.location = f"http://127.0.0.1:{canary.port}/internal"
    app = _app(allow_private=True)
    deliverer_attempts = 3
    try:
        task = asyncio.create_task(_deliverer_outcome(app, receiver.url))
        state = await asyncio.wait_for(task, 15)
    finally:
        await app.aclose()
    assert len(receiver.received) == deliverer_attempts + 1  # three 302s, then a 200
    assert state["state"] == "delivered"
    assert state["attempts"] == deliverer_attempts + 1
    assert canary.connections == 0
