"""Run N worker processes and restart any that dies.

The supervisor itself runs no jobs and holds no store connection: it starts children,
restarts a child that exits unexpectedly (backing off when a child keeps dying at start,
so a broken deployment does not spin), and on SIGTERM/SIGINT forwards SIGTERM so every
child drains, then kills those still alive after their grace period.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

logger = logging.getLogger(__name__)

#: A child that dies sooner than this after starting counts as a crash loop.
QUICK_DEATH_SECONDS = 2.0
MAX_RESTART_DELAY = 10.0


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    delay: float = 0.0
    restarts: int = field(default=0)


class Supervisor:
    """Keeps ``count`` copies of ``command`` running until told to stop.

    Args:
        command: argv of one worker process.
        count: how many to keep alive.
        grace: seconds children get to drain after SIGTERM before they are killed.
    """

    def __init__(self, command: Sequence[str], count: int, *, grace: float) -> None:
        self._command = list(command)
        self._slots = [_Slot(i) for i in range(count)]
        self._grace = grace
        self._stopping = False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; return 0 when every child drained cleanly."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while not self._stopping:
                self._tick(time.monotonic())
                time.sleep(0.1)
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _tick(self, now: float) -> None:
        for slot in self._slots:
            proc = slot.process
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                lived = now - slot.started
                slot.delay = (
                    min(max(slot.delay * 2, 0.5), MAX_RESTART_DELAY)
                    if lived < QUICK_DEATH_SECONDS
                    else 0.0
                )
                slot.restart_at = now + slot.delay
                slot.process = None
                slot.restarts += 1
                logger.warning(
                    "worker %d (pid %d) exited with %s; restarting in %.1fs",
                    slot.index,
                    proc.pid,
                    proc.returncode,
                    slot.delay,
                )
            if now >= slot.restart_at:
                slot.process = subprocess.Popen(self._command)
                slot.started = now
                logger.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _shutdown(self) -> int:
        alive = [s.process for s in self._slots if s.process is not None]
        for proc in alive:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 5
        for proc in alive:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker pid %d did not drain in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        return 0 if all(p.returncode == 0 for p in alive) else 1
