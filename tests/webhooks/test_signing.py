"""Signing and verify(): both header styles, rotation, tampering, age, replay."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.webhooks import WebhookVerificationError, signed_headers, verify

NOW = 1_700_000_000
BODY = orjson.dumps({"jobId": "j1", "status": "completed", "result": 3})


def _standard_only(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("webhook-")}


def _legacy_only(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("X-")}


def test_headers_follow_both_formats() -> None:
    headers = signed_headers(BODY, "msg_j1", NOW, "s3cret")
    expected_hex = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == f"sha256={expected_hex}"
    assert headers["X-Webhook-Id"] == headers["webhook-id"] == "msg_j1"
    assert headers["X-Webhook-Timestamp"] == headers["webhook-timestamp"] == str(NOW)
    signed = f"msg_j1.{NOW}.".encode() + BODY
    digest = base64.b64encode(hmac.new(b"s3cret", signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{digest}"


def test_without_a_secret_nothing_is_signed() -> None:
    headers = signed_headers(BODY, "msg_j1", NOW, None)
    assert "X-Webhook-Signature" not in headers
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == "msg_j1"


@pytest.mark.parametrize("style", [_standard_only, _legacy_only, dict])
def test_verify_accepts_each_style(style: object) -> None:
    headers = style(signed_headers(BODY, "msg_j1", NOW, "s3cret"))  # type: ignore[operator]
    assert verify(BODY, headers, "s3cret", now=NOW) == {
        "jobId": "j1",
        "status": "completed",
        "result": 3,
    }
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify(BODY, upper, "s3cret", now=NOW)["jobId"] == "j1"


@pytest.mark.parametrize("style", [_standard_only, _legacy_only])
def test_verify_rejects_tampering_and_wrong_secrets(style: object) -> None:
    headers = style(signed_headers(BODY, "msg_j1", NOW, "s3cret"))  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(BODY.replace(b"3", b"4"), headers, "s3cret", now=NOW)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(BODY, headers, "other", now=NOW)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(BODY + b" ", headers, "s3cret", now=NOW)


def test_rotated_secrets_either_verifies() -> None:
    old = signed_headers(BODY, "m1", NOW, "old-secret")
    new = signed_headers(BODY, "m2", NOW, "new-secret")
    secrets = ["new-secret", "old-secret"]
    assert verify(BODY, old, secrets, now=NOW)["jobId"] == "j1"
    assert verify(BODY, new, secrets, now=NOW)["jobId"] == "j1"
    with pytest.raises(WebhookVerificationError):
        verify(BODY, old, ["new-secret", "third"], now=NOW)


def test_standard_webhooks_whsec_secrets() -> None:
    headers = signed_headers(BODY, "m1", NOW, "s3cret")
    whsec = "whsec_" + base64.b64encode(b"s3cret").decode()
    assert verify(BODY, _standard_only(headers), whsec, now=NOW)["status"] == "completed"


def test_the_timestamp_must_be_within_tolerance() -> None:
    headers = signed_headers(BODY, "m1", NOW, "s")
    assert verify(BODY, headers, "s", now=NOW + 300)
    assert verify(BODY, headers, "s", now=NOW - 300)
    for skew in (301, -301, 10_000):
        with pytest.raises(WebhookVerificationError, match="timestamp"):
            verify(BODY, headers, "s", now=NOW + skew)
    assert verify(BODY, headers, "s", now=NOW + 3000, tolerance=3600)
    # The standard signature covers the timestamp: changing it breaks the signature.
    forged = _standard_only(headers) | {"webhook-timestamp": str(NOW + 100)}
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(BODY, forged, "s", now=NOW + 100)


def test_replayed_ids_are_rejected() -> None:
    seen: set[str] = set()
    headers = signed_headers(BODY, "msg_once", NOW, "s")
    assert verify(BODY, headers, "s", now=NOW, seen=seen)
    assert seen == {"msg_once"}
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verify(BODY, headers, "s", now=NOW, seen=seen)

    recorded: list[str] = []

    def check(msg_id: str) -> bool:
        before = msg_id in recorded
        recorded.append(msg_id)
        return before

    assert verify(BODY, headers, "s", now=NOW, seen=check)
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verify(BODY, headers, "s", now=NOW, seen=check)


def test_a_forged_delivery_does_not_poison_the_seen_set() -> None:
    seen: set[str] = set()
    forged = signed_headers(BODY, "msg_x", NOW, "attacker")
    with pytest.raises(WebhookVerificationError):
        verify(BODY, forged, "s", now=NOW, seen=seen)
    assert seen == set()
    assert verify(BODY, signed_headers(BODY, "msg_x", NOW, "s"), "s", now=NOW, seen=seen)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-signature": "v1,xxx"},
        {"webhook-signature": "v1,xxx", "webhook-id": "m"},
        {"webhook-signature": "v1,xxx", "webhook-id": "m", "webhook-timestamp": "soon"},
        {"X-Webhook-Signature": "sha256=00", "X-Webhook-Id": "m"},
    ],
)
def test_missing_or_malformed_headers(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, "s", now=NOW)


def test_non_object_bodies_and_empty_secrets() -> None:
    body = b"[1,2]"
    with pytest.raises(WebhookVerificationError, match="JSON object"):
        verify(body, signed_headers(body, "m", NOW, "s"), "s", now=NOW)
    with pytest.raises(WebhookVerificationError, match="no secret"):
        verify(BODY, signed_headers(BODY, "m", NOW, "s"), [], now=NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    result=json_values,
    secret=st.text(min_size=1, max_size=64).filter(lambda s: not s.startswith("whsec_")),
    other=st.text(min_size=1, max_size=64),
    msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    skew=st.integers(-300, 300),
    flip=st.integers(0, 10_000),
)
def test_round_trips(
    result: object, secret: str, other: str, msg_id: str, skew: int, flip: int
) -> None:
    body = orjson.dumps({"jobId": "j", "status": "completed", "result": result})
    headers = signed_headers(body, msg_id, NOW, secret)
    for style in (_standard_only, _legacy_only):
        assert verify(body, style(headers), [other, secret], now=NOW + skew)["result"] == result
        if other != secret:
            with pytest.raises(WebhookVerificationError):
                verify(body, style(headers), other, now=NOW)
        i = flip % len(body)
        altered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        with pytest.raises(WebhookVerificationError):
            verify(altered, style(headers), secret, now=NOW)
