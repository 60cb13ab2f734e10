"""Bearer tokens: each request's token against every configured one, in constant time.

A configured entry is the token itself or `sha256:<hex>`, its SHA-256 digest, so the
environment need not hold the secret. No entry configured: every request is refused."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

HASH_PREFIX = "sha256:"


def token_matches(given: str, entries: tuple[str, ...]) -> bool:
    """Whether `given` is one of `entries`; every entry is compared, whatever matched."""
    given_bytes = given.encode("utf-8")
    given_digest = hashlib.sha256(given_bytes).hexdigest().encode("ascii")
    found = False
    for entry in entries:
        if entry.startswith(HASH_PREFIX):
            expected = entry.removeprefix(HASH_PREFIX).strip().lower().encode("ascii", "replace")
            found |= hmac.compare_digest(given_digest, expected)
        else:
            found |= hmac.compare_digest(given_bytes, entry.encode("utf-8"))
    return found


class BearerAuth:
    """A FastAPI dependency: 401 with `WWW-Authenticate: Bearer` unless the token is known."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.entries = entries
        self.scheme = HTTPBearer(auto_error=False)

    async def __call__(self, request: Request) -> None:
        credentials: HTTPAuthorizationCredentials | None = await self.scheme(request)
        if credentials is None or not token_matches(credentials.credentials, self.entries):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
