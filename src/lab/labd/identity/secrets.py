"""Join-token secrets: ``<id>.<secret>``, stored only as a hash, compared in constant time.

The secret is 32 random bytes, so a single SHA-256 is enough (no dictionary to guess from);
the id lets labd find the row without scanning hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from lab.errors import Unauthenticated
from lab.model.records import new_id


def new_token() -> tuple[str, str, str]:
    """(token id, full token to show once, hash to store)."""
    token_id = new_id()
    secret = secrets.token_urlsafe(32)
    return token_id, f"{token_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """(id, secret) of a presented token; Unauthenticated(reason=malformed) otherwise."""
    token_id, sep, secret = token.strip().partition(".")
    if not sep or not token_id or not secret or len(token) > 256:
        raise Unauthenticated("malformed join token", details={"reason": "malformed"})
    return token_id, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
