"""Checking a submission's ``parameters`` against the task function's signature.

Arguments arrive as JSON. They must bind to the signature (no unknown, missing or surplus
arguments), and each must be the JSON form of its parameter's annotation: a strict
pydantic validation in JSON mode (``"5"`` is not an ``int``; an RFC 3339 string is a
``datetime``). Unannotated parameters take anything. The task receives the values exactly
as sent. A validator is built on a task's first submission and cached.
"""

from __future__ import annotations

import inspect
import logging
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic
import typing_extensions

from conveyor.api.errors import field_errors, shorten, summarize
from conveyor.errors import InvalidArgumentsError, SerializationError
from conveyor.task import Task

logger = logging.getLogger(__name__)

_P = inspect.Parameter


@dataclass(frozen=True, slots=True)
class _Compiled:
    task: Task[Any, Any]
    adapter: pydantic.TypeAdapter[Any] | None  # None: every parameter takes anything


def _annotations(task: Task[Any, Any]) -> dict[str, Any]:
    """Resolved annotations per parameter; ``Any`` where one cannot be resolved."""
    params = task.signature.parameters
    try:
        hints = typing.get_type_hints(task.fn, include_extras=True)
    except Exception:  # a forward reference that does not resolve: go one by one
        hints = {}
        namespace = getattr(task.fn, "__globals__", {})
        for name, param in params.items():
            annotation = param.annotation
            # What get_type_hints does, per parameter: the task module's own source. A
            # quoted annotation under `from __future__ import annotations` is quoted twice.
            for _ in range(2):
                if isinstance(annotation, str):
                    try:
                        annotation = eval(annotation, namespace)
                    except Exception:
                        annotation = Any
            hints[name] = annotation
    out: dict[str, Any] = {}
    for name, param in params.items():
        annotation = hints.get(name, param.annotation)
        if annotation is _P.empty:
            annotation = Any
        if param.kind is _P.VAR_POSITIONAL:
            annotation = tuple[annotation, ...]  # type: ignore[valid-type]
        elif param.kind is _P.VAR_KEYWORD:
            annotation = dict[str, annotation]  # type: ignore[valid-type]
        out[name] = annotation
    return out


def _supported(annotation: Any) -> Any:
    """The annotation if pydantic can validate it, else ``Any``."""
    if annotation is Any:
        return Any
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            complete = pydantic.TypeAdapter(annotation).pydantic_complete
    except Exception:
        return Any
    return annotation if complete else Any


def compile_task(task: Task[Any, Any]) -> _Compiled:
    """Build the validator of a task's parameters."""
    fields = {name: _supported(a) for name, a in _annotations(task).items()}
    if all(a is Any for a in fields.values()):
        return _Compiled(task, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape = typing_extensions.TypedDict("Parameters", fields, total=False)  # type: ignore[misc]
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(shape)
        if not adapter.pydantic_complete:
            raise TypeError("unresolved annotations")
    except Exception:
        logger.warning("task %r: cannot validate parameter types", task.name, exc_info=True)
        return _Compiled(task, None)
    return _Compiled(task, adapter)


def _binding_errors(
    signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]
) -> list[dict[str, Any]]:
    """Field-level reasons why ``signature`` cannot take these arguments."""
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in params if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)}
    var_args = any(p.kind is _P.VAR_POSITIONAL for p in params)
    var_kwargs = any(p.kind is _P.VAR_KEYWORD for p in params)
    errors: list[dict[str, Any]] = []

    def error(loc: str | int, message: str, type_: str) -> None:
        errors.append({"loc": ["parameters", loc], "message": message, "type": type_})

    if not var_args:
        for index in range(len(positional), len(args)):
            error(index, f"takes at most {len(positional)} positional arguments", "extra_argument")
    given = {p.name for p in positional[: len(args)]}
    for key in kwargs:
        if key in given and key in by_name:
            error(shorten(key), "given both by position and by name", "duplicate_argument")
        elif key not in by_name and not var_kwargs:
            error(shorten(key), "unexpected parameter", "unexpected_argument")
    for p in params:
        required = p.default is _P.empty and p.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)
        named = p.kind is not _P.POSITIONAL_ONLY and p.name in kwargs
        if required and p.name not in given and not named:
            error(p.name, "missing required parameter", "missing_argument")
    return errors[:50]


class ParameterChecker:
    """Validates parameters per task; one per API app (the cache is per app)."""

    def __init__(self) -> None:
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, task: Task[Any, Any]) -> _Compiled:
        compiled = self._compiled.get(task.name)
        if compiled is None or compiled.task is not task:
            compiled = self._compiled[task.name] = compile_task(task)
        return compiled

    def check(
        self, task: Task[Any, Any], parameters: dict[str, Any] | list[Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Return ``(args, kwargs)`` for ``task``, checked against its signature and in the
        form a job stores them (:meth:`Task.stored_form`): bound once, here.

        Raises:
            InvalidArgumentsError: with ``details.errors`` naming each bad parameter.
            SerializationError: the values cannot be re-encoded (nested too deeply).
        """
        args, kwargs = (list(parameters), {}) if isinstance(parameters, list) else ([], parameters)
        what = f"task {task.name!r} cannot take these parameters"
        errors = _binding_errors(task.signature, args, kwargs)
        if errors:
            raise InvalidArgumentsError(summarize(errors, what), {"errors": errors})
        try:
            bound = task.signature.bind(*args, **kwargs)
        except TypeError as exc:  # a case _binding_errors does not foresee
            raise InvalidArgumentsError(f"{what}: {exc}", {"errors": []}) from None
        # Encoded once, for both checks: that the values can be stored (JSON deeper than
        # the store's encoder goes is refused here, not when storing), and their types.
        try:
            payload = orjson.dumps(bound.arguments)
        except orjson.JSONEncodeError as exc:
            raise SerializationError(f"parameters cannot be encoded: {exc}") from None
        compiled = self._for(task)
        if compiled.adapter is not None:
            try:
                compiled.adapter.validate_json(payload, strict=True)
            except pydantic.ValidationError as exc:
                found = field_errors(
                    exc.errors(include_url=False, include_input=False), ("parameters",)
                )
                raise InvalidArgumentsError(summarize(found, what), {"errors": found}) from None
        return task.stored_form(bound, args, kwargs)
