"""Keys and tokens for the auth tests, made fresh by `cryptography` (nothing checked in)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

AUDIENCE = "ffserve"


@attrs.frozen
class Keys:
    """An HS256 secret, an ES256 key ("ec-1") and an Ed25519 key ("ed-1"), and files:
    the secret, a JWKS of both public keys, and the EC public key alone as PEM."""

    secret: bytes
    ec: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    secret_file: Path
    jwks_file: Path
    pem_file: Path

    @classmethod
    def make(cls, directory: Path) -> Keys:
        secret = base64.urlsafe_b64encode(os.urandom(32))
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ed_key = ed25519.Ed25519PrivateKey.generate()
        secret_file, jwks_file, pem_file = (
            directory / n for n in ("secret", "jwks.json", "public.pem")
        )
        secret_file.write_bytes(secret + b"\n")
        jwks_file.write_text(
            json.dumps(
                {
                    "keys": [
                        jwk(ec_key.public_key(), "ec-1", "ES256"),
                        jwk(ed_key.public_key(), "ed-1", "EdDSA"),
                    ]
                }
            )
        )
        pem_file.write_bytes(public_pem(ec_key))
        return cls(secret, ec_key, ed_key, secret_file, jwks_file, pem_file)


def jwk(public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    data: dict[str, Any] = json.loads(algorithm.to_jwk(public_key))
    return {**data, "kid": kid, "use": "sig", "alg": alg}


def public_pem(private_key: Any) -> bytes:
    key: bytes = private_key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    return key


def claims(sub: str = "app-1", **changes: Any) -> dict[str, Any]:
    """Good claims (valid for an hour) with `changes`; a value of None drops the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 3600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(key: bytes, payload: dict[str, Any], header: dict[str, Any]) -> str:
    """An HS256 token signed with any bytes at all (pyjwt refuses a PEM as HMAC key)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"
