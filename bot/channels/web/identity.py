"""Who is asking: an anonymous browser token, a host app's signed user, or an API client.

* Anonymous respondents get a ``respondent_token``: the time it was made (12 hex digits of
  milliseconds), then 256 random bits (``secrets.token_urlsafe(32)``). Only ``web:`` + that
  time + sha256(token) is stored, so a leaked database does not leak credentials that could
  answer as someone else. The time comes first so that new respondents land at the end of
  the key's index: with bare hashes every start wrote into a page of its own, anywhere in
  the index (``bench/web_api.py``: 2% more answers a second without). Tokens made before
  (43 characters, no time) keep their ``web:`` + sha256 keys.
* A host app names its own user with ``user`` + ``signature`` (hex HMAC-SHA256 of the user id
  under ``PARLEY_WEB_SECRET``); the respondent key is then ``user:<id>``, the same person on
  every device. The token returned to a signed user is itself signed (``s.<b64 id>.<mac>``),
  so later requests need no database lookup to know who it is.
* Machine clients send ``Authorization: Bearer KEY`` (``PARLEY_API_KEYS``) and may then name a
  user without a signature: the host app's server is trusted.

Tokens travel in ``X-Parley-Token`` (the widget keeps them in the host page's localStorage,
because third-party cookies are blocked in the usual embed) or, for same-origin pages, in the
HttpOnly ``parley_token`` cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from bot.channels.web.errors import ApiError

TOKEN_HEADER = "X-Parley-Token"
USER_HEADER = "X-Parley-User"
SIGNATURE_HEADER = "X-Parley-Signature"
COOKIE = "parley_token"
CROSS_ORIGIN = web.RequestKey("parley.cross_origin", bool)  # set by the CORS middleware
COOKIE_MAX_AGE = 365 * 24 * 3600
_COOKIE_ATTRIBUTES = f"HttpOnly; Max-Age={COOKIE_MAX_AGE}; Path=/; SameSite=Lax"
_SECURE = {True: "; Secure", False: ""}

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}\Z")  # \Z: "$" would allow a trailing newline
_SIGNED = re.compile(r"^s\.([A-Za-z0-9_-]{1,1024})\.([0-9a-f]{64})\Z")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}\Z")
MAX_USER = 190  # "user:" + id must fit the 200-character respondent key
_SESSION_CONTEXT = b"parley-session\x00"


@dataclass(frozen=True)
class Identity:
    """A resolved respondent: the stored key and the token the client should keep."""

    key: str
    token: str | None
    kind: str  # "token" | "user"
    new: bool = False
    via_cookie: bool = False


def new_token() -> str:
    # secrets.token_urlsafe(32), without its detour through random.SystemRandom
    secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode("ascii")
    return f"{time.time_ns() // 1_000_000:012x}{secret}"


def token_key(token: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    if len(token) == _TIMED_LENGTH and _TIMED.match(token):
        return f"web:{token[:12]}{digest}"
    return "web:" + digest


_TIMED = re.compile(r"[0-9a-f]{12}")
_TIMED_LENGTH = 12 + 43


def sign(secret: str, user: str) -> str:
    """The signature a host app computes (documented in docs/api.md)."""
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


def _session_mac(secret: str, user: str) -> str:
    # A different message than the user signature, so a session token is never a valid
    # signature (and vice versa).
    return hmac.new(secret.encode(), _SESSION_CONTEXT + user.encode(), hashlib.sha256).hexdigest()


def session_token(secret: str, user: str) -> str:
    encoded = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
    return f"s.{encoded}.{_session_mac(secret, user)}"


def _check_user(user: Any) -> str:
    if not isinstance(user, str | int) or isinstance(user, bool):
        raise ApiError(400, "bad_user", "user must be a string id")
    text = str(user)
    if not 1 <= len(text) <= MAX_USER or not text.isprintable():
        # control, format (zero-width, bidi overrides) and surrogate characters: a user id
        # that displays as another one must not be accepted
        raise ApiError(400, "bad_user", f"user must be 1 to {MAX_USER} printable characters")
    return text


def _from_session_token(secret: str, token: str) -> Identity:
    match = _SIGNED.match(token)
    if not match or not secret:
        raise ApiError(403, "bad_token", "this respondent token is not valid here")
    try:
        padded = match.group(1) + "=" * (-len(match.group(1)) % 4)
        user = base64.urlsafe_b64decode(padded).decode()
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ApiError(403, "bad_token", "this respondent token is not valid here") from err
    if not hmac.compare_digest(match.group(2), _session_mac(secret, user)):
        raise ApiError(403, "bad_token", "this respondent token is not valid here")
    return Identity(key=f"user:{user}", token=token, kind="user")


def _signed_user(secret: str, user: Any, signature: Any, *, trusted: bool) -> Identity:
    user_id = _check_user(user)
    if not trusted:
        if not secret:
            raise ApiError(
                403,
                "signed_users_disabled",
                "signed users need PARLEY_WEB_SECRET to be set on the server",
            )
        if not isinstance(signature, str) or not _HEX64.match(signature):
            raise ApiError(403, "bad_signature", "signature must be the hex HMAC-SHA256 of user")
        if not hmac.compare_digest(signature.lower(), sign(secret, user_id)):
            raise ApiError(403, "bad_signature", "the signature does not match this user")
    token = session_token(secret, user_id) if secret else None
    return Identity(key=f"user:{user_id}", token=token, kind="user")


def bearer_key(request: web.Request) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header ("" when empty); None for no header
    or another scheme: a dashboard login or a site-wide auth proxy sends Basic to every page
    of the origin, the widget's requests included, and that is no API client."""
    header = request.headers.get("Authorization")
    if header is None:  # the widget's requests: no header at all
        return None
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def key_matches(given: str, keys: list[str]) -> bool:
    """Compared with every key, no early exit: timing says nothing about which one matched."""
    matched = False
    for candidate in keys:
        matched |= hmac.compare_digest(given.encode(), candidate.encode())
    return matched and bool(given)


def api_client(request: web.Request, api_keys: list[str]) -> bool:
    """True for a valid ``Authorization: Bearer KEY``; a wrong key is refused (401)."""
    key = bearer_key(request)
    if key is None:
        return False
    if not key_matches(key, api_keys):
        raise ApiError(401, "unauthorized", "unknown API key (send Authorization: Bearer <key>)")
    return True


def resolve(
    request: web.Request,
    *,
    secret: str,
    api_keys: list[str],
    body: Mapping[str, Any] | None = None,
) -> Identity | None:
    """The respondent behind a request, or None when it carries no identity at all.

    Precedence: a named user (signed, or vouched for by an API key) beats a token, and the
    ``X-Parley-Token`` header beats the cookie.
    """
    trusted = api_client(request, api_keys)
    body = body or {}
    user = body.get("user", request.headers.get(USER_HEADER))
    if user is not None:
        signature = body.get("signature", request.headers.get(SIGNATURE_HEADER))
        return _signed_user(secret, user, signature, trusted=trusted)
    via_cookie = False
    token = request.headers.get(TOKEN_HEADER)
    if not token and not request.get(CROSS_ORIGIN):
        # Only for Parley's own pages: another origin's page (even an allowed one, even on
        # the same site, where browsers send cookies) must not act as the visitor here.
        token = request.cookies.get(COOKIE)
        via_cookie = bool(token)
    if not token:
        return None
    if token.startswith("s."):
        return _from_session_token(secret, token)
    if not _TOKEN.match(token):
        raise ApiError(400, "bad_token", "X-Parley-Token is not a Parley respondent token")
    return Identity(key=token_key(token), token=token, kind="token", via_cookie=via_cookie)


def mint() -> Identity:
    """A brand-new anonymous respondent."""
    token = new_token()
    return Identity(key=token_key(token), token=token, kind="token", new=True)


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    identity: Identity,
    *,
    public_url: str = "",
) -> None:
    """Same-origin pages can rely on this HttpOnly cookie instead of localStorage.

    It is ``Secure`` on HTTPS, and also when ``PARLEY_PUBLIC_URL`` is https: behind a
    TLS-terminating proxy the request itself arrives over plain HTTP.
    """
    if request.get(CROSS_ORIGIN):
        return  # the cookie is for Parley's own pages (resolve reads it only from them)
    if identity.kind != "token" or identity.token is None or identity.via_cookie:
        return
    # Written out rather than through response.set_cookie (http.cookies' Morsel cost more
    # than the rest of the start request's headers): a token needs no quoting (_TOKEN).
    secure = request.secure or public_url.lower().startswith("https://")
    response.headers.add(
        hdrs.SET_COOKIE, f"{COOKIE}={identity.token}; {_COOKIE_ATTRIBUTES}{_SECURE[secure]}"
    )
