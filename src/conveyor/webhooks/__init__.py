"""Signed webhooks: the deliverer API processes run, and :func:`verify` for receivers.

Receivers::

    from conveyor.webhooks import WebhookVerificationError, verify

    try:
        event = verify(raw_body, request.headers, ["current-secret", "previous-secret"])
    except WebhookVerificationError:
        return 400

See ``docs/webhooks.md``.
"""

from __future__ import annotations

from conveyor.addresses import forbidden_reason, literal_ip
from conveyor.webhooks.deliverer import WebhookDeliverer
from conveyor.webhooks.signing import WebhookVerificationError, signed_headers, verify
from conveyor.webhooks.ssrf import TargetRefusedError

__all__ = [
    "TargetRefusedError",
    "WebhookDeliverer",
    "WebhookVerificationError",
    "forbidden_reason",
    "literal_ip",
    "signed_headers",
    "verify",
]
