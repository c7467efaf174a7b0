"""The Authenticator: which tokens pass, which are refused and why, and which key files
are refused at start. Synchronous: verification is pure code over keys read once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ffserve.config import AuthConfig, ConfigError
from ffserve.session.auth import (
    ANONYMOUS,
    Authenticator,
    Principal,
    Unauthorized,
    mint_token,
    presented_token,
)
from ffserve.wire.handshake import UpgradeRequest
from tests.session.keys import AUDIENCE, Keys, b64, claims, hs256_by_hand, jwk, public_pem


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys.make(tmp_path)


@pytest.fixture
def auth(keys: Keys) -> Authenticator:
    """Both kinds of key: the shared secret and a JWKS of two public keys."""
    return Authenticator.load(
        AuthConfig(
            mode="jwt", secret_file=str(keys.secret_file), public_key_file=str(keys.jwks_file)
        )
    )


def refused(auth: Authenticator, token: str) -> str:
    """The reason `token` is refused; it must say nothing of the token itself."""
    with pytest.raises(Unauthorized) as info:
        auth.verify_token(token)
    assert info.value.token_given
    for text in (info.value.reason, str(info.value), info.value.challenge.decode()):
        assert token not in text
        assert all(part not in text for part in token.split(".") if len(part) > 8)
    return info.value.reason


def test_a_valid_hs256_token_gives_its_subject_and_claims(auth: Authenticator, keys: Keys) -> None:
    token = jwt.encode(claims("app-1", tier=2), keys.secret, algorithm="HS256")
    principal = auth.verify_token(token)
    assert principal.subject == "app-1"
    assert principal.claims["tier"] == 2 and principal.claims["aud"] == AUDIENCE
    with pytest.raises(TypeError):
        principal.claims["tier"] = 3  # type: ignore[index]


def test_the_secret_file_loses_its_trailing_line_break(auth: Authenticator, keys: Keys) -> None:
    """`echo ... > secret` adds a newline the minting back-end does not sign with."""
    assert keys.secret_file.read_bytes().endswith(b"\n")
    assert auth.secret == keys.secret


@pytest.mark.parametrize("kid", ["ec-1", "ed-1"])
def test_either_key_of_a_jwks_verifies_by_kid(auth: Authenticator, keys: Keys, kid: str) -> None:
    private, alg = (keys.ec, "ES256") if kid == "ec-1" else (keys.ed, "EdDSA")
    token = jwt.encode(claims(f"via-{kid}"), private, algorithm=alg, headers={"kid": kid})
    assert auth.verify_token(token).subject == f"via-{kid}"


def test_an_unknown_or_missing_kid_is_refused(auth: Authenticator, keys: Keys) -> None:
    assert refused(auth, jwt.encode(claims(), keys.ec, "ES256", {"kid": "ec-0"})) == (
        "unknown key id"
    )
    # Two keys: a token must say which.
    assert refused(auth, jwt.encode(claims(), keys.ec, "ES256")) == "no key id"


def test_a_key_is_bound_to_its_own_algorithm(auth: Authenticator, keys: Keys) -> None:
    """An Ed25519 signature presented under the EC key's kid fails (ES256 != EdDSA)."""
    token = jwt.encode(claims(), keys.ed, algorithm="EdDSA", headers={"kid": "ec-1"})
    assert refused(auth, token) == "algorithm not accepted"


def test_a_token_signed_by_another_key_of_the_same_kid_is_refused(
    auth: Authenticator, keys: Keys
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), stranger, algorithm="ES256", headers={"kid": "ec-1"})
    assert refused(auth, token) == "bad signature"
    other_secret = b"x" * 40
    assert refused(auth, jwt.encode(claims(), other_secret, algorithm="HS256")) == "bad signature"


def test_a_single_pem_public_key_verifies_tokens_with_or_without_kid(keys: Keys) -> None:
    auth = Authenticator.load(AuthConfig(mode="jwt", public_key_file=str(keys.pem_file)))
    assert auth.public_keys[0].algorithm == "ES256"
    for headers in (None, {"kid": "anything"}):
        token = jwt.encode(claims("pem"), keys.ec, algorithm="ES256", headers=headers)
        assert auth.verify_token(token).subject == "pem"
    # No secret configured: HS256 is not accepted at all.
    assert refused(auth, jwt.encode(claims(), keys.secret, "HS256")) == "algorithm not accepted"


def test_expired_but_within_the_leeway_passes_past_it_fails(
    auth: Authenticator, keys: Keys
) -> None:
    now = int(time.time())
    within = jwt.encode(claims(iat=now - 100, exp=now - 10), keys.secret, algorithm="HS256")
    assert auth.verify_token(within).subject == "app-1"  # leeway_s = 30
    expired = jwt.encode(claims(iat=now - 100, exp=now - 60), keys.secret, algorithm="HS256")
    assert refused(auth, expired) == "token expired"


def test_a_token_not_yet_valid_is_refused(auth: Authenticator, keys: Keys) -> None:
    soon = int(time.time()) + 600
    token = jwt.encode(claims(nbf=soon), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    assert refused(auth, token) == "token not yet valid"


@pytest.mark.parametrize("aud", ["other-service", ["other", "more"]])
def test_a_token_for_another_audience_is_refused(
    auth: Authenticator, keys: Keys, aud: str | list[str]
) -> None:
    assert refused(auth, jwt.encode(claims(aud=aud), keys.secret, "HS256")) == "wrong audience"


def test_a_token_listing_our_audience_among_others_passes(auth: Authenticator, keys: Keys) -> None:
    token = jwt.encode(claims(aud=["billing", AUDIENCE]), keys.secret, "HS256")
    assert auth.verify_token(token).subject == "app-1"


@pytest.mark.parametrize(
    ("drop", "reason"),
    [("exp", "missing claim exp"), ("sub", "missing claim sub"), ("aud", None)],
)
def test_required_claims(auth: Authenticator, keys: Keys, drop: str, reason: str | None) -> None:
    token = jwt.encode(claims(**{drop: None}), keys.secret, algorithm="HS256")
    assert refused(auth, token) == (reason or "a required claim is missing")


def test_alg_none_is_refused(auth: Authenticator) -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert token.endswith(".")  # really unsigned
    assert refused(auth, token) == "algorithm not accepted"


def test_hs256_signed_with_the_public_key_pem_is_refused(auth: Authenticator, keys: Keys) -> None:
    """Algorithm confusion: the public key's PEM (which anyone may have) as HMAC secret."""
    pem = public_pem(keys.ec)
    for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "kid": "ec-1"}):
        forged = hs256_by_hand(pem, claims("mallory"), header)
        assert refused(auth, forged) == "bad signature"
        # A server holding only the public key does not take HS256 at all.
        public_only = Authenticator(enabled=True, public_keys=auth.public_keys)
        assert refused(public_only, forged) == "algorithm not accepted"
    # The forger makes good tokens: signed with the real secret, its token passes.
    genuine = hs256_by_hand(keys.secret, claims("mallory"), {"alg": "HS256"})
    assert auth.verify_token(genuine).subject == "mallory"


def test_a_tampered_payload_is_refused(auth: Authenticator, keys: Keys) -> None:
    token = jwt.encode(claims("app-1"), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    header, _, signature = token.split(".")
    tampered = ".".join([header, b64(json.dumps(claims("admin")).encode()), signature])
    assert refused(auth, tampered) == "bad signature"


@pytest.mark.parametrize(
    "garbage",
    [
        "not-a-token",
        "a.b.c",
        "e30.e30.",  # {} header: no alg
        b64(b'{"alg":"HS256","kid":{"x":1}}') + ".e30.c2ln",  # kid not a string
        b64(b'{"alg":["HS256"]}') + ".e30.c2ln",  # alg not a string
        b64(b"[1]") + ".e30.c2ln",
        "\u00e9\u00e9.\u00e9.\u00e9",
    ],
)
def test_garbage_is_refused_as_malformed(auth: Authenticator, garbage: str) -> None:
    assert refused(auth, garbage) in ("malformed token", "invalid token")


def test_no_token_is_a_plain_challenge(auth: Authenticator) -> None:
    with pytest.raises(Unauthorized) as info:
        auth.verify_token(None)
    assert not info.value.token_given
    assert info.value.challenge == b'Bearer realm="ffserve"'


def test_a_refusal_carries_the_unverified_subject_for_the_audit(
    auth: Authenticator, keys: Keys
) -> None:
    token = jwt.encode(claims("who-" + "x" * 500, aud="other"), keys.secret, "HS256")
    with pytest.raises(Unauthorized) as info:
        auth.verify_token(token)
    assert info.value.subject == ("who-" + "x" * 500)[:128]
    assert info.value.challenge == b'Bearer realm="ffserve", error="invalid_token"'


def request(target: str = "/", *headers: tuple[bytes, bytes]) -> UpgradeRequest:
    return UpgradeRequest(target, list(headers), b"k" * 24)


def test_a_request_presents_its_token_by_header_or_query(auth: Authenticator, keys: Keys) -> None:
    token = jwt.encode(claims("presented"), keys.secret, algorithm="HS256")
    by_header = request("/", (b"authorization", b"Bearer " + token.encode()))
    assert auth.verify(by_header).subject == "presented"
    assert auth.verify(request(f"/jobs?x=1&access_token={token}")).subject == "presented"
    # The scheme is case-insensitive (RFC 9110 11.1).
    assert auth.verify(request("/", (b"authorization", b"bearer " + token.encode())))
    with pytest.raises(Unauthorized, match="no token"):
        auth.verify(request("/?token=" + token))
    with pytest.raises(Unauthorized, match="no token"):
        auth.verify(request("/", (b"authorization", b"Basic YTpi")))
    with pytest.raises(Unauthorized, match="more than one token"):
        auth.verify(request(f"/?access_token={token}", *by_header.headers))


def test_only_the_header_counts_for_plain_http(auth: Authenticator, keys: Keys) -> None:
    token = jwt.encode(claims(), keys.secret, algorithm="HS256")
    assert presented_token([(b"authorization", f"Bearer {token}".encode())]) == token
    assert presented_token([(b"host", b"x")], f"/?access_token={token}") == token
    assert auth.verify_headers([(b"authorization", f"Bearer {token}".encode())]).subject


def test_with_auth_off_everyone_is_anonymous(keys: Keys) -> None:
    off = Authenticator.load(AuthConfig(secret_file=str(keys.secret_file)))
    assert not off.enabled
    assert off.verify(request("/")) is ANONYMOUS
    assert off.verify_token("garbage") == Principal(None, {})


def test_minted_tokens_verify(auth: Authenticator, keys: Keys) -> None:
    token = mint_token(keys.secret, "cli", audience=AUDIENCE, ttl_s=60, claims={"tier": 1})
    principal = auth.verify_token(token)
    assert principal.subject == "cli" and principal.claims["tier"] == 1
    assert principal.claims["exp"] - principal.claims["iat"] == 60
    stale = mint_token(keys.secret, "cli", audience=AUDIENCE, ttl_s=60, now=time.time() - 120)
    assert refused(auth, stale) == "token expired"


# --- key files refused at start --------------------------------------------------------


def private_pem(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def load(tmp_path: Path, name: str, content: bytes | str, key: str) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    Authenticator.load(AuthConfig(mode="jwt", **{key: str(path)}))


def test_jwt_mode_without_any_key_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"neither auth\.secret_file nor auth\.public_key_file"):
        Authenticator.load(AuthConfig(mode="jwt"))


@pytest.mark.parametrize(
    ("content", "key", "needle"),
    [
        (b"short\n", "secret_file", "needs at least 32"),
        (b"-----BEGIN PUBLIC KEY-----\nnope\n", "public_key_file", "neither a PEM"),
        ("private-ec", "public_key_file", "neither a PEM"),
        ("rsa-1024", "public_key_file", "1024 bits"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}', "public_key_file", "secret"),
        ("private-jwk", "public_key_file", "secret"),
        ('{"keys": []}', "public_key_file", "no signature key"),
        ('{"nokeys": 1}', "public_key_file", '"keys" array'),
        ("{not json", "public_key_file", "invalid JSON"),
        ("two-without-kid", "public_key_file", "each needs a kid"),
        ("p256-says-es384", "public_key_file", "alg ES384 does not fit"),
        ("ec-says-eddsa", "public_key_file", "cannot be used"),
    ],
)
def test_unusable_key_files_are_refused_at_start(
    tmp_path: Path, content: bytes | str, key: str, needle: str
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    made = {
        "private-ec": private_pem(ec_key),
        "rsa-1024": public_pem(rsa.generate_private_key(65537, 1024)),
        "private-jwk": json.dumps(
            {"keys": [json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(ec_key))]}
        ),
        "two-without-kid": json.dumps(
            {
                "keys": [
                    {**jwk(ec_key.public_key(), "a", "ES256"), "kid": None},
                    jwk(ed25519.Ed25519PrivateKey.generate().public_key(), "b", "EdDSA"),
                ]
            }
        ),
        "p256-says-es384": json.dumps(
            {"keys": [{**jwk(ec_key.public_key(), "a", "ES256"), "alg": "ES384"}]}
        ),
        "ec-says-eddsa": json.dumps(
            {"keys": [{**jwk(ec_key.public_key(), "a", "ES256"), "alg": "EdDSA"}]}
        ),
    }
    with pytest.raises(ConfigError, match=needle):
        load(tmp_path, "key", made.get(str(content), content), key)


def test_a_missing_key_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read auth\.public_key_file .*nope\.pem"):
        Authenticator.load(AuthConfig(mode="jwt", public_key_file=str(tmp_path / "nope.pem")))
