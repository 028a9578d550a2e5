"""The demo application that ``conveyor demo`` runs (also ``examples/demo.py``).

Try it::

    curl -s -X POST localhost:8000/api/v1/jobs -H 'content-type: application/json' \\
         -d '{"type": "resize_image", "parameters": {"url": "https://example.com/a.png"}}'
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from conveyor import Conveyor, current_job
from conveyor.errors import NonRetryableError

app = Conveyor()


@app.task()
async def resize_image(url: str, width: int = 800) -> dict[str, object]:
    """Pretend to download and resize an image, reporting progress as it goes."""
    for step in range(1, 5):
        await asyncio.sleep(0.25)
        await current_job().set_progress(step * 25)
    return {"url": url, "width": width, "bytes": random.randint(20_000, 90_000)}


@app.task(mode="thread")
def send_email(to: str, subject: str = "Hello from Conveyor") -> str:
    """A blocking call, run in a thread so the event loop stays free."""
    import time

    time.sleep(0.2)
    return f"sent {subject!r} to {to}"


@app.task(mode="process", queue="default", name="hash-password")
def hash_password(password: str, rounds: int = 200_000) -> str:
    """CPU-heavy work in a child process."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), b"conveyor-demo", rounds)
    return digest.hex()


@app.task(retries=3, backoff=0.5)
async def flaky(fail_rate: float = 0.5) -> str:
    """Fails at random to show retries with backoff."""
    await asyncio.sleep(0.05)
    if random.random() < fail_rate:
        raise RuntimeError("the upstream service hiccuped")
    return "made it"


@app.task(retries=0)
async def divide(a: float, b: float) -> float:
    """Fails for good on b = 0: the job ends in `failed`, retryable from the API."""
    if b == 0:
        raise NonRetryableError("division by zero")
    return a / b
