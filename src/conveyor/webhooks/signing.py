"""Signing webhook deliveries, and :func:`verify` for receivers.

Every delivery carries two signature styles over the same raw body:

- ``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` with ``X-Webhook-Id``
  and ``X-Webhook-Timestamp`` (the body alone is signed: the timestamp is not);
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256(secret, "id.timestamp.body")>``, which
  binds id and timestamp to the body, so prefer it.

The key is the UTF-8 bytes of the job's ``callbackSecret``. A Standard Webhooks library
takes secrets as ``whsec_`` + base64 of the key: pass
``"whsec_" + base64.b64encode(secret.encode()).decode()`` to it. :func:`verify` accepts
both forms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Container, Mapping, MutableSet, Sequence
from typing import Any

import orjson

from conveyor.errors import ConveyorError

#: Default accepted distance between a delivery's timestamp and now, in seconds.
DEFAULT_TOLERANCE = 300.0


class WebhookVerificationError(ConveyorError):
    """A webhook delivery failed verification: do not trust it (answer 400 or 401)."""


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except binascii.Error:
            raise WebhookVerificationError("a whsec_ secret is not valid base64") from None
    return secret.encode()


def hex_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``body`` (the ``X-Webhook-Signature`` value)."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` over ``id.timestamp.body`` (the ``webhook-signature`` value)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(body: bytes, msg_id: str, timestamp: int, secret: str | None) -> dict[str, str]:
    """The delivery's id, timestamp and (with a secret) signature headers, both styles.

    Without a secret the delivery is sent unsigned: ids and timestamps only.
    """
    headers = {
        "X-Webhook-Id": msg_id,
        "X-Webhook-Timestamp": str(timestamp),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        headers["X-Webhook-Signature"] = hex_signature(secret, body)
        headers["webhook-signature"] = standard_signature(secret, msg_id, timestamp, body)
    return headers


Seen = MutableSet[str] | Container[str] | Callable[[str], bool]


def verify(
    payload: bytes,
    headers: Mapping[str, str],
    secrets: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
    seen: Seen | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature, age and novelty; return its decoded JSON body.

    Args:
        payload: the raw request body, exactly as received.
        headers: the request headers (any case).
        secrets: the callback secret, or several (during a rotation any one may match);
            ``whsec_``-prefixed base64 secrets are accepted too.
        tolerance: the most seconds the delivery's timestamp may be from ``now``.
        now: the current time (seconds since the epoch); ``time.time()`` when omitted.
        seen: replay protection by ``webhook-id``: a set (the id is added once the
            delivery verifies) or container of ids already accepted, or a callable that
            records the id and returns True if it had been seen before.

    Raises:
        WebhookVerificationError: missing headers, no secret matches (altered body or
            wrong secret), a timestamp outside ``tolerance``, a replayed id, or a body
            that is not a JSON object.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys or not all(keys):
        raise WebhookVerificationError("no secret to verify with")
    h = {k.lower(): v for k, v in headers.items()}
    if "webhook-signature" in h:
        msg_id, ts_text = h.get("webhook-id", ""), h.get("webhook-timestamp", "")
        if not msg_id or not ts_text:
            raise WebhookVerificationError("webhook-id or webhook-timestamp header missing")
        timestamp = _timestamp(ts_text)
        offered = [p.strip() for p in h["webhook-signature"].split(" ") if p.strip()]
        expected = [standard_signature(k, msg_id, timestamp, payload) for k in keys]
    elif "x-webhook-signature" in h:
        msg_id, ts_text = h.get("x-webhook-id", ""), h.get("x-webhook-timestamp", "")
        if not msg_id or not ts_text:
            raise WebhookVerificationError("X-Webhook-Id or X-Webhook-Timestamp header missing")
        timestamp = _timestamp(ts_text)
        offered = [h["x-webhook-signature"].strip()]
        expected = [hex_signature(k, payload) for k in keys]
    else:
        raise WebhookVerificationError("no signature header (webhook-signature)")
    matched = False
    for candidate in offered:  # compare every pair: no early exit on a match
        for wanted in expected:
            matched |= hmac.compare_digest(candidate.encode(), wanted.encode())
    if not matched:
        raise WebhookVerificationError("signature mismatch: altered body or wrong secret")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"timestamp {timestamp} is more than {tolerance:g}s away from now"
        )
    _check_replay(msg_id, seen)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return body


def _timestamp(text: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise WebhookVerificationError(f"invalid webhook timestamp {text[:20]!r}")
    return int(text)


def _check_replay(msg_id: str, seen: Seen | None) -> None:
    if seen is None:
        return
    if callable(seen):
        if seen(msg_id):
            raise WebhookVerificationError(f"replayed webhook id {msg_id!r}")
        return
    if msg_id in seen:
        raise WebhookVerificationError(f"replayed webhook id {msg_id!r}")
    if isinstance(seen, MutableSet):
        seen.add(msg_id)
