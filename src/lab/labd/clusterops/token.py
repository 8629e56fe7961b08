"""k3s join tokens in the secure form, made and checked by labd.

``K10<sha256 hex of the cluster CA bundle>::server:<secret>``: a joining node fetches the CA
from ``/cacerts`` on the server it joins and refuses it unless its sha256 is the one in the
token, so a node never trusts a server that merely answers on the right address. labd makes
the CA itself, so it knows the hash before the first server starts and checks it again on
what the server actually serves. Pure (hashlib only).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from attrs import frozen

from lab.errors import Invalid

_TOKEN = re.compile(r"K10([0-9a-f]{64})::([a-z]+):(.+)")


@frozen(kw_only=True)
class JoinToken:
    ca_hash: str
    user: str
    secret: str

    def __str__(self) -> str:
        return f"K10{self.ca_hash}::{self.user}:{self.secret}"

    def __repr__(self) -> str:  # never the secret in a log line or traceback
        return f"JoinToken(ca_hash={self.ca_hash!r}, user={self.user!r}, secret=<hidden>)"


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


def make_token(ca_pem: bytes) -> JoinToken:
    return JoinToken(ca_hash=ca_hash(ca_pem), user="server", secret=secrets.token_hex(32))


def parse_token(text: str) -> JoinToken:
    match = _TOKEN.fullmatch(text.strip())
    if match is None:
        raise Invalid("not a secure k3s token (K10<ca hash>::server:<secret>)")
    return JoinToken(ca_hash=match[1], user=match[2], secret=match[3])


def ca_matches(token: JoinToken, served_ca_pem: bytes) -> bool:
    """Whether ``served_ca_pem`` is the CA the token was made for (constant time)."""
    return hmac.compare_digest(token.ca_hash, ca_hash(served_ca_pem))
