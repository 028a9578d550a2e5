"""An app with process-mode tasks, loaded by path in child processes."""

from __future__ import annotations

import os
import time

from conveyor import Conveyor, Settings
from conveyor.errors import NonRetryableError

app = Conveyor(settings=Settings.from_env({}, url="memory://"))


@app.task(mode="process", retries=0)
def square(x: int) -> dict[str, int]:
    return {"value": x * x, "pid": os.getpid()}


@app.task(mode="process", retries=0, timeout=0.5)
def sleepy(seconds: float, marker: str) -> None:
    with open(marker, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)


@app.task(mode="process", retries=0)
def refuse() -> None:
    raise NonRetryableError("no way")


@app.task(mode="process", retries=0)
def die() -> None:
    os._exit(3)


@app.task(mode="process", retries=3)
def not_a_number() -> float:
    return float("nan")


@app.task(mode="process", retries=3)
def text(size: int) -> str:
    return "x" * size
