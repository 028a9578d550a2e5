"""An in-process store for tests and notebooks (``memory://``).

Thread-safe: a worker's heartbeat thread may call into it while the event loop runs.
Nothing survives the process.
"""

from __future__ import annotations

from conveyor.backends.memory.backend import InMemoryBackend

__all__ = ["InMemoryBackend"]
