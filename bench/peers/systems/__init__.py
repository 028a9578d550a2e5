"""One adapter module per system; each is imported only inside that system's venv."""

#: Every system the harness knows, in the order tables list them.
SYSTEMS = ("conveyor", "celery", "rq", "arq", "dramatiq", "saq", "taskiq", "huey", "streaq")
