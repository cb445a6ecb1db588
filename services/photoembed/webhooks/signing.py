"""The Standard Webhooks signature (https://www.standardwebhooks.com): HMAC-SHA256 of
`{webhook-id}.{webhook-timestamp}.{body}` with the endpoint's secret, base64, as `v1,<signature>`."""

from __future__ import annotations

import base64
import hashlib
import hmac

from photoembed.webhooks.secrets import secret_bytes


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": "photoembed-webhooks/1",
    }
