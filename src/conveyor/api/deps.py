"""Per-app state and guarded access to the store."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from fastapi import Request

from conveyor.api.params import ParameterChecker
from conveyor.app import Conveyor
from conveyor.backends.base import Backend
from conveyor.errors import BackendUnavailableError, ConveyorError

logger = logging.getLogger(__name__)


# Dependencies are `async def`: FastAPI runs plain functions in a thread pool, a thread
# hop per request for what is an attribute read.
async def get_conveyor(request: Request) -> Conveyor:
    """The application this API serves (set by :func:`conveyor.api.create_app`)."""
    return cast(Conveyor, request.app.state.conveyor)


async def get_checker(request: Request) -> ParameterChecker:
    """This API app's cache of parameter validators."""
    return cast(ParameterChecker, request.app.state.parameter_checker)


@contextmanager
def backend_errors() -> Iterator[None]:
    """Turn a store driver's own exceptions into :class:`BackendUnavailableError`.

    Only store calls run inside this; Conveyor's exceptions pass through unchanged.
    """
    try:
        yield
    except ConveyorError:
        raise
    except Exception as exc:
        logger.warning("store operation failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise BackendUnavailableError(f"store operation failed ({type(exc).__name__})") from exc


async def open_backend(conveyor: Conveyor) -> Backend:
    """The app's store for this event loop, opening it if needed."""
    with backend_errors():
        return await conveyor.backend()
