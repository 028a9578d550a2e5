"""The HTTP job API: an ASGI app built by :func:`create_app` around a :class:`Conveyor`."""

from conveyor.api.app import create_app

__all__ = ["create_app"]
