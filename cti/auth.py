"""Who is calling the API: password hashing, signed access/refresh tokens, the aiohttp guard.

Tokens are our own compact HMAC-SHA256 signed JSON (`<payload>.<signature>`, both base64url)
rather than JWT: one algorithm, no header to negotiate, so the `alg=none` family of mistakes
cannot exist. Access tokens are short-lived and checked without a database round trip (the
hot paths: every REST call, every websocket connect); refresh tokens live longer and are the
only thing a client keeps across an access token's expiry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("agent", "supervisor", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}

#: /api paths reachable without a token (logging in needs no token, the API description is
#: public so that clients and the fuzzer can read it)
PUBLIC_API_PATHS = frozenset({"/api/auth/login", "/api/auth/refresh", "/api/openapi.json"})

_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller; `agent_id` is the stable key everything else uses."""

    agent_id: str
    username: str
    role: str  # agent | supervisor | admin
    #: when the token it came from expires (epoch seconds); None when not from a token
    expires_at: float | None = field(default=None, compare=False)

    def can(self, role: str) -> bool:
        """Roles nest: an admin may do what a supervisor may, a supervisor what an agent may."""
        need = _RANK.get(role)
        have = _RANK.get(self.role)
        if need is None:
            raise ValueError(f"unknown role {role!r}")
        return have is not None and have >= need

    def to_dict(self) -> dict[str, str]:
        return {"agent_id": self.agent_id, "username": self.username, "role": self.role}


# -- passwords -------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """argon2id with the library's current defaults (salted; the hash carries its parameters)."""
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """True when the hash was made with weaker parameters than today's defaults."""
    try:
        return _hasher.check_needs_rehash(hashed)
    except InvalidHashError:
        return True


# -- tokens ----------------------------------------------------------------------------------


class TokenError(Exception):
    """A token was refused; `kind` is "expired" (ask for a refresh) or "invalid" (log in)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenService:
    """Issues and checks tokens; the clock is injected so expiry is testable."""

    def __init__(
        self,
        secret: bytes,
        access_seconds: int,
        refresh_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("token secret must be at least 16 bytes")
        if access_seconds <= 0 or refresh_seconds <= 0:
            raise ValueError("token lifetimes must be positive")
        self._key = hashlib.sha256(b"cti-token-v1" + secret).digest()
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds
        self._clock = clock

    def _sign(self, body: str) -> str:
        return _b64e(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def _encode(self, p: Principal, typ: str, lifetime: int) -> str:
        now = int(self._clock())
        claims = {
            "typ": typ,
            "sub": p.agent_id,
            "usr": p.username,
            "rol": p.role,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
        }
        body = _b64e(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._sign(body)}"

    def _decode(self, token: str, typ: str) -> Principal:
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
            raise TokenError("invalid", "malformed token")
        body, sig = token.split(".")
        try:
            body.encode("ascii")
            sig.encode("ascii")
        except UnicodeEncodeError:
            raise TokenError("invalid", "malformed token") from None
        if not hmac.compare_digest(self._sign(body), sig):
            raise TokenError("invalid", "bad token signature")
        try:
            claims: Any = json.loads(_b64d(body))
        except (ValueError, binascii.Error):
            raise TokenError("invalid", "malformed token") from None
        if not isinstance(claims, dict) or claims.get("typ") != typ:
            raise TokenError("invalid", f"not an {typ} token")
        exp = claims.get("exp")
        sub, usr, rol = claims.get("sub"), claims.get("usr"), claims.get("rol")
        if not (
            isinstance(exp, int)
            and isinstance(sub, str)
            and isinstance(usr, str)
            and isinstance(rol, str)
        ):
            raise TokenError("invalid", "malformed token claims")
        if rol not in _RANK:
            raise TokenError("invalid", "unknown role in token")
        if self._clock() >= exp:
            raise TokenError("expired", f"{typ} token expired")
        return Principal(agent_id=sub, username=usr, role=rol, expires_at=float(exp))

    def issue(self, p: Principal) -> dict[str, Any]:
        return {
            "access_token": self._encode(p, "access", self.access_seconds),
            "refresh_token": self._encode(p, "refresh", self.refresh_seconds),
            "token_type": "bearer",
            "expires_in": self.access_seconds,
        }

    def verify_access(self, token: str) -> Principal:
        return self._decode(token, "access")

    def verify_refresh(self, refresh_token: str) -> Principal:
        """For callers that must look the account up (disabled?) before issuing new tokens."""
        return self._decode(refresh_token, "refresh")

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self.issue(self._decode(refresh_token, "refresh"))


# -- aiohttp glue ----------------------------------------------------------------------------

#: where the guard leaves the caller (read it with principal_of)
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The API's one error shape: {"error": {"code", "message"}}."""
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers or None
    )


def _http_error(cls: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    body = json.dumps({"error": {"code": code, "message": message}})
    extra = {"WWW-Authenticate": "Bearer"} if cls is web.HTTPUnauthorized else None
    return cls(text=body, content_type="application/json", headers=extra)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(tokens: TokenService) -> Any:
    """Guard every /api/* request except the public ones; sets request[PRINCIPAL_KEY]."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path == "/api" or path.startswith("/api/")) or path in PUBLIC_API_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _http_error(web.HTTPUnauthorized, "unauthorized", "bearer token required")
        try:
            request[PRINCIPAL_KEY] = tokens.verify_access(token.strip())
        except TokenError as e:
            code = "token_expired" if e.kind == "expired" else "unauthorized"
            raise _http_error(web.HTTPUnauthorized, code, str(e)) from None
        return await handler(request)

    return middleware


def principal_of(request: web.Request) -> Principal:
    p = request.get(PRINCIPAL_KEY)
    if p is None:
        raise _http_error(web.HTTPUnauthorized, "unauthorized", "not authenticated")
    return p


def require_role(request: web.Request, role: str) -> Principal:
    p = principal_of(request)
    if not p.can(role):
        raise _http_error(web.HTTPForbidden, "forbidden", f"requires role {role}")
    return p
