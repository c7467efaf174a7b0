"""Who is at the door: JSON Web Tokens checked before the WebSocket upgrade.

A client presents its token as `Authorization: Bearer <token>` on the upgrade request,
or, from a browser (whose WebSocket API cannot set headers), as the `access_token` query
parameter of the URL (RFC 6750 2.1, 2.3). The `Authenticator` is built once at start from
`[auth]`, its keys read and checked then, and answers each request with a `Principal` or
`Unauthorized`.

Which key checks a token is settled by configuration, never by the token: the shared
secret verifies HS256 only, a public key only the asymmetric algorithm of its own type
(RFC 8725 2.1). So `alg: none` is refused, and so is an HS256 token whose HMAC key is a
public key's PEM (algorithm confusion). `exp` and `sub` are required, `aud` must be
`[auth] audience`, and `exp`, `nbf` and `iat` are checked with `leeway_s` of skew.

With `mode = "off"` every request is `ANONYMOUS`, whose subject is None: no token can
claim it, since a verified token always has a string `sub`.

Errors: `Unauthorized.reason` is a short phrase from a fixed set ("token expired",
"bad signature", ...), never the token or text derived from it, so it may be logged and
sent back. Key files that cannot be used raise ConfigError at start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ffserve.config import AuthConfig, ConfigError
from ffserve.wire.handshake import UpgradeRequest

REALM = "ffserve"
SECRET_ALGORITHM = "HS256"
# Signatures a public key may verify; each key is bound to the one its type implies.
PUBLIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
# HS256 wants a key as long as its hash (RFC 7518 3.2).
MIN_SECRET_BYTES = 32
REQUIRED_CLAIMS = ("exp", "sub")
# An unverified subject is logged (audit) only this long: it is the client's text.
MAX_SUBJECT_SHOWN = 128
_RSA_ALGORITHMS = frozenset(a for a in PUBLIC_ALGORITHMS if a[:2] in ("RS", "PS"))
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class Unauthorized(Exception):
    """No valid token. `reason` is a fixed phrase; `token_given` tells "no token" (a
    plain challenge) from "a bad one" (`error="invalid_token"`); `subject` is the
    token's unverified `sub`, for the audit log only."""

    def __init__(self, reason: str, *, token_given: bool, subject: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token_given = token_given
        self.subject = subject

    @property
    def challenge(self) -> bytes:
        """The `WWW-Authenticate` value of the 401 (RFC 6750 3)."""
        error = ', error="invalid_token"' if self.token_given else ""
        return f'Bearer realm="{REALM}"{error}'.encode()


def _read_only(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(claims))


@attrs.frozen
class Principal:
    """Who a connection acts for: the token's `sub` and all its verified claims (quotas
    key on them). With auth off, `ANONYMOUS`: subject None, no claims."""

    subject: str | None
    claims: Mapping[str, Any] = attrs.field(factory=dict, converter=_read_only, hash=False)


ANONYMOUS = Principal(None)


@attrs.frozen
class VerifyKey:
    """A public key and the one algorithm it verifies; `kid` from its JWKS entry."""

    algorithm: str
    key: Any
    kid: str | None = None


@attrs.frozen(eq=False)
class Authenticator:
    """Checks tokens against the keys read at start. `enabled` False: mode "off"."""

    enabled: bool = False
    secret: bytes | None = None
    public_keys: tuple[VerifyKey, ...] = ()
    audience: str = "ffserve"
    leeway_s: float = 30.0

    @classmethod
    def load(cls, config: AuthConfig) -> Authenticator:
        """Read the key files of `[auth]` (only with mode "jwt").

        Errors: ConfigError when no key file is given, or one cannot be read or used.
        """
        if config.mode == "off":
            return cls()
        if not (config.secret_file or config.public_key_file):
            raise ConfigError(
                'auth.mode is "jwt", but neither auth.secret_file nor auth.public_key_file is set'
            )
        return cls(
            enabled=True,
            secret=read_secret(Path(config.secret_file)) if config.secret_file else None,
            public_keys=(
                read_public_keys(Path(config.public_key_file)) if config.public_key_file else ()
            ),
            audience=config.audience,
            leeway_s=config.leeway_s,
        )

    def verify(self, request: UpgradeRequest) -> Principal:
        """The principal of a WebSocket upgrade request. Errors: Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        return self.verify_token(presented_token(request.headers, request.target))

    def verify_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal:
        """The principal of a plain HTTP request (its Authorization header only: a token
        in a URL ends up in access logs). Errors: Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        return self.verify_token(presented_token(headers))

    def verify_token(self, token: str | None) -> Principal:
        """Errors: Unauthorized (a missing token too, `token_given` False)."""
        if not self.enabled:
            return ANONYMOUS
        if token is None:
            raise Unauthorized("no token", token_given=False)
        try:
            key, algorithm = self._key_for(jwt.get_unverified_header(token))
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except Unauthorized as exc:
            exc.subject = _unverified_subject(token)
            raise
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized(
                _reason(exc), token_given=True, subject=_unverified_subject(token)
            ) from None
        return Principal(claims["sub"], claims)

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        """The key, and the one algorithm it may verify, for a token with `header`."""
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or not (kid is None or isinstance(kid, str)):
            raise Unauthorized("malformed token", token_given=True)
        if alg == SECRET_ALGORITHM and self.secret is not None:
            return self.secret, SECRET_ALGORITHM
        if alg not in PUBLIC_ALGORITHMS or not self.public_keys:
            raise Unauthorized("algorithm not accepted", token_given=True)
        if kid is not None:
            for candidate in self.public_keys:
                if candidate.kid == kid:
                    return candidate.key, candidate.algorithm
        if len(self.public_keys) == 1 and (kid is None or self.public_keys[0].kid is None):
            only = self.public_keys[0]
            return only.key, only.algorithm
        raise Unauthorized("unknown key id" if kid else "no key id", token_given=True)


def presented_token(
    headers: Iterable[tuple[bytes, bytes]], target: str | None = None
) -> str | None:
    """The bearer token of a request: its `Authorization: Bearer` header or (with a
    `target`) its `access_token` query parameter. None when there is neither; an
    Authorization header of another scheme counts as none.

    Errors: Unauthorized when a token is given in more than one way or more than once
    (RFC 6750 2: a client uses one method only)."""
    found: list[str] = []
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer":
            found.append(credentials.strip())
    if target is not None:
        query = urlsplit(target).query
        found += [value for name, value in parse_qsl(query, keep_blank_values=True)
                  if name == "access_token"]  # fmt: skip
    if len(found) > 1:
        raise Unauthorized("more than one token", token_given=True)
    return found[0] if found else None


def read_secret(path: Path) -> bytes:
    """The HS256 secret in `path`, trailing line breaks dropped.

    Errors: ConfigError if unreadable or shorter than MIN_SECRET_BYTES."""
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read auth.secret_file {path}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"auth.secret_file {path} holds {len(secret)} bytes; an HS256 secret needs at "
            f"least {MIN_SECRET_BYTES}"
        )
    return secret


def read_public_keys(path: Path) -> tuple[VerifyKey, ...]:
    """The verification keys in `path`: one PEM public key, or a JWKS.

    Errors: ConfigError naming the file (and the key) that cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read auth.public_key_file {path}: {exc.strerror}") from None
    where = f"auth.public_key_file {path}"
    if data.lstrip().startswith(b"{"):
        return _jwks_keys(data, where)
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{where} is neither a PEM public key nor a JWKS (ffserve needs only the public key)"
        ) from None
    return (VerifyKey(_algorithm_of(key, where), key),)


def _jwks_keys(data: bytes, where: str) -> tuple[VerifyKey, ...]:
    try:
        document = json.loads(data)
    except ValueError:
        raise ConfigError(f"{where}: invalid JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{where}: a JWKS is an object with a "keys" array')
    keys: list[VerifyKey] = []
    for index, entry in enumerate(entries):
        name = f"{where}: key {index}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{name} is not an object")
        if entry.get("use", "sig") != "sig":
            continue  # an encryption key has nothing to do with signatures
        if entry.get("kty") == "oct" or "d" in entry:
            raise ConfigError(
                f"{name} is secret (a symmetric or private key): a JWKS here holds public "
                "keys only; an HS256 secret goes in auth.secret_file"
            )
        kid = entry.get("kid")
        if not (kid is None or isinstance(kid, str)):
            raise ConfigError(f"{name}: kid must be a string")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{name} cannot be used: {exc}") from None
        keys.append(VerifyKey(_algorithm_of(jwk.key, name, jwk.algorithm_name), jwk.key, kid))
    if not keys:
        raise ConfigError(f"{where} holds no signature key")
    kids = [key.kid for key in keys]
    if len(keys) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise ConfigError(f"{where}: with several keys, each needs a kid of its own")
    return tuple(keys)


def _algorithm_of(key: Any, where: str, stated: str | None = None) -> str:
    """The one algorithm a public key verifies: its curve's, EdDSA, or for RSA the
    `stated` one (a JWK's `alg`: RS* or PS*), RS256 by default.

    Errors: ConfigError for a key type, size or stated algorithm that is not accepted."""
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        algorithm = _CURVES[key.curve.name]
    elif isinstance(key, ed25519.Ed25519PublicKey):
        algorithm = "EdDSA"
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ConfigError(f"{where}: an RSA key of {key.key_size} bits; 2048 is the least")
        algorithm = stated if stated in _RSA_ALGORITHMS else "RS256"
    else:
        raise ConfigError(f"{where}: not an ECDSA (P-256/384/521), RSA or Ed25519 public key")
    if stated is not None and stated != algorithm:
        raise ConfigError(f"{where}: alg {stated} does not fit its key")
    return algorithm


# Foreign errors to fixed phrases, in one place: the most specific first.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not accepted"),
    (jwt.MissingRequiredClaimError, "a required claim is missing"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidKeyError, "key not accepted"),
    (jwt.InvalidTokenError, "invalid token"),
)


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim in REQUIRED_CLAIMS:
                return f"missing claim {exc.claim}"
            return reason
    return "malformed token"


def _unverified_subject(token: str) -> str | None:
    """The `sub` a token claims, unchecked: for the audit log, clipped."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    subject = claims.get("sub")
    return subject[:MAX_SUBJECT_SHOWN] if isinstance(subject, str) else None


def mint_token(
    secret: bytes,
    subject: str,
    *,
    audience: str,
    ttl_s: int,
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for `subject`, valid `ttl_s` seconds (`ffserve token`, tests)."""
    issued = int(time.time() if now is None else now)
    payload = {**(claims or {}), "sub": subject, "aud": audience, "iat": issued}
    payload["exp"] = issued + ttl_s
    return jwt.encode(payload, secret, algorithm=SECRET_ALGORITHM)
