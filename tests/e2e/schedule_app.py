"""The app the scheduler replica tests run: a 1-s interval and a 2-s cron schedule.

No worker runs it; the tests read the jobs each fire stored.
"""

from __future__ import annotations

from conveyor import Conveyor

app = Conveyor()


@app.every(1.0, name="every-second")
async def beat() -> None:
    """Fired every second."""


@app.cron("*/2 * * * * *", name="every-2s")
async def even() -> None:
    """Fired at every even second."""
