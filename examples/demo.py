"""The demo app: `conveyor run examples/demo.py:app` (or simply `conveyor demo`)."""

from conveyor.demo import app

__all__ = ["app"]
