"""Per-app state and access to the store."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from conveyor.api.params import ParameterChecker
from conveyor.app import Conveyor
from conveyor.backends.base import Backend


# Dependencies are `async def`: FastAPI runs plain functions in a thread pool, a thread
# hop per request for what is an attribute read.
async def get_conveyor(request: Request) -> Conveyor:
    """The application this API serves (set by :func:`conveyor.api.create_app`)."""
    return cast(Conveyor, request.app.state.conveyor)


async def get_checker(request: Request) -> ParameterChecker:
    """This API app's cache of parameter validators."""
    return cast(ParameterChecker, request.app.state.parameter_checker)


async def open_backend(conveyor: Conveyor) -> Backend:
    """The app's store for this event loop, opening it if needed.

    Store calls are made without a net: a store raises
    :class:`~conveyor.errors.BackendUnavailableError` itself when it cannot serve now,
    and any other exception is a bug for the API's last-resort handler.
    """
    return await conveyor.backend()
