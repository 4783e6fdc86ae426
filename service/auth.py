"""Bearer tokens, roles and who may do what.

Tokens are configured as SHA-256 hashes; a presented token is hashed and compared with every
configured hash in constant time. A token is never logged or stored: the audit names the
token's configured name.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from service.errors import Forbidden, Unauthorized
from service.settings import AuthSettings

ROLES = ("client", "feedback", "viewer", "operator", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self._entries: list[tuple[bytes, Principal]] = [
            (bytes.fromhex(t.sha256), Principal(t.name, t.role)) for t in settings.tokens]
        if settings.bootstrap_admin_token:
            self._entries.append((hashlib.sha256(settings.bootstrap_admin_token.encode())
                                  .digest(), Principal("bootstrap", "admin")))

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal behind an ``Authorization: Bearer <token>`` header, if any."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 4096:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, principal in self._entries:  # no early exit: constant time in the match
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def require(self, authorization: str | None, role: str) -> Principal:
        """The principal if it holds at least ``role``; 401 or 403 otherwise."""
        principal = self.identify(authorization)
        if principal is None:
            raise Unauthorized(present=bool(authorization and authorization.strip()))
        if RANK[principal.role] < RANK[role]:
            raise Forbidden("authorization", "insufficient role", message=(
                f"role '{principal.role}' may not do this; it needs '{role}'"))
        return principal
