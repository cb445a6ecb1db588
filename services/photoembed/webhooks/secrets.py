"""An endpoint's signing secret: made here, shown once, kept encrypted with ENCRYPTION_KEY.

The secret is in the Standard Webhooks form, `whsec_` and the base64 of 24 random bytes (what the
`standardwebhooks` and `svix` libraries take). The database holds it encrypted (Fernet: AES-128-CBC
and HMAC-SHA256), so a dump of it signs nothing; the API and the worker's events process need the
same ENCRYPTION_KEY (`photoembed secret-key` prints a new one; `make run` keeps one in
.photoembed/).
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken

from photoembed.config import Settings

PREFIX = "whsec_"


class EncryptionUnavailable(Exception):
    """ENCRYPTION_KEY is not set, or is not a Fernet key."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key an HMAC signs with: the base64 part of `whsec_...`."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def new_encryption_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(settings: Settings) -> Fernet:
    key = settings.encryption_key.get_secret_value()
    if not key:
        raise EncryptionUnavailable(
            "webhooks need ENCRYPTION_KEY (their signing secrets are stored encrypted): set it, "
            "the same on the API and the workers, to the output of `photoembed secret-key`"
        )
    try:
        return Fernet(key.encode())
    except ValueError:
        raise EncryptionUnavailable(
            "ENCRYPTION_KEY is not a Fernet key (32 url-safe base64 bytes): make one with "
            "`photoembed secret-key`"
        ) from None


def encrypt(settings: Settings, secret: str) -> str:
    return _fernet(settings).encrypt(secret.encode()).decode()


def decrypt(settings: Settings, stored: str) -> str:
    try:
        return _fernet(settings).decrypt(stored.encode()).decode()
    except InvalidToken:
        raise EncryptionUnavailable(
            "a webhook's secret cannot be decrypted with this ENCRYPTION_KEY: it was stored with "
            "another one (the API and the workers must share it)"
        ) from None
