"""``/api/v1/tasks``: the task types this app can run, with their parameters."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.responses import Response

from conveyor.api.deps import get_conveyor
from conveyor.api.errors import JSONResponse
from conveyor.api.schemas import ERROR_DEFAULT
from conveyor.app import Conveyor
from conveyor.task import Task

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=ERROR_DEFAULT)

_EXAMPLES: dict[Any, Any] = {
    str: "text",
    int: 1,
    float: 1.0,
    bool: False,
    "str": "text",
    "int": 1,
    "float": 1.0,
    "bool": False,
}


class TaskParameter(BaseModel):
    name: str
    annotation: str | None
    required: bool
    default: Any = None


class TaskInfo(BaseModel):
    name: str
    queue: str
    mode: str
    retries: int
    timeout: float | None
    priority: int
    doc: str | None
    parameters: list[TaskParameter]
    example: dict[str, Any]


class TaskList(BaseModel):
    items: list[TaskInfo]


def describe(task: Task[Any, Any]) -> dict[str, Any]:
    """A task's options and parameters, with an example ``parameters`` object."""
    params = []
    example: dict[str, Any] = {}
    for p in task.signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        annotation = None if p.annotation is inspect.Parameter.empty else p.annotation
        shown = (
            annotation
            if isinstance(annotation, str) or annotation is None
            else getattr(annotation, "__name__", str(annotation))
        )
        default = None if required else p.default
        params.append(
            {
                "name": p.name,
                "annotation": shown,
                "required": required,
                "default": default if _jsonable(default) else None,
            }
        )
        if required:
            example[p.name] = _EXAMPLES.get(annotation)
    o = task.options_
    return {
        "name": task.name,
        "queue": o.queue,
        "mode": o.mode,
        "retries": o.retries,
        "timeout": o.timeout,
        "priority": o.priority,
        "doc": inspect.cleandoc(task.__doc__) if task.__doc__ else None,
        "parameters": params,
        "example": example,
    }


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


@router.get("", response_model=TaskList, summary="List task types")
async def list_tasks(conveyor: Annotated[Conveyor, Depends(get_conveyor)]) -> Response:
    """Every task registered in the app this API serves, by name."""
    items = [describe(task) for _, task in sorted(conveyor.tasks.items())]
    return JSONResponse({"items": items})
