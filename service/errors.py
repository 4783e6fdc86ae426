"""The errors only an HTTP request can meet, leaves of the one tree in ``models.errors``:

    VigilError (models.errors)
    ├── Unauthorized             missing or unknown bearer token
    ├── Forbidden                the token's role is too low
    ├── PayloadTooLarge          body bytes or rows over the configured limit
    ├── HeadersTooLarge
    └── PreconditionRequired     a deployment change without ``If-Match``

Their statuses, like every other error's, are in ``service.httperrors``.
"""

from __future__ import annotations

from models.errors import VigilError


class Unauthorized(VigilError):
    def __init__(self, present: bool = False) -> None:
        """``present``: a credential was sent but is not a known bearer token (RFC 6750 §3:
        ``invalid_token`` then, no error code for a request without one)."""
        self.present = present
        if present:
            super().__init__("authorization", "unknown token",
                             message="invalid bearer token: not a token this server knows")
        else:
            super().__init__("authorization", "missing",
                             message="missing bearer token: send Authorization: Bearer <token>")


class Forbidden(VigilError):
    pass


class PayloadTooLarge(VigilError):
    def compose(self) -> str:
        return f"{self.field} too large: {self.reason}"


class HeadersTooLarge(VigilError):
    pass


class PreconditionRequired(VigilError):
    pass
