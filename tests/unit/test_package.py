"""The public surface of the package."""

from __future__ import annotations

import conveyor


def test_public_surface_is_exactly_what_all_lists() -> None:
    public = {name for name in dir(conveyor) if not name.startswith("_")}
    assert set(conveyor.__all__) <= public
    assert sorted(conveyor.__all__) == [
        "Conveyor",
        "Job",
        "JobHandle",
        "JobStatus",
        "Settings",
        "Task",
        "current_job",
        "errors",
    ]
