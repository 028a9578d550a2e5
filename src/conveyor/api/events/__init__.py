"""Job events for clients: one hub per API app fans the store's feed out to SSE streams
and WebSockets."""

from __future__ import annotations

from typing import cast

from starlette.datastructures import State

from conveyor.api.events.catchup import Catchup
from conveyor.api.events.hub import EventHub
from conveyor.api.events.render import EVENT_TYPES, Published, publish, render_event
from conveyor.api.events.sse import EventStreamResponse
from conveyor.api.events.subscription import CloseReason, Subscription, SubscriptionClosed

__all__ = [
    "EVENT_TYPES",
    "Catchup",
    "CloseReason",
    "EventHub",
    "EventStreamResponse",
    "Published",
    "Subscription",
    "SubscriptionClosed",
    "hub_of",
    "publish",
    "render_event",
]


def hub_of(state: State) -> EventHub:
    """The hub of the app whose ``app.state`` this is."""
    return cast(EventHub, state.event_hub)
