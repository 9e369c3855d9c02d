"""Key types of the PKI: generating keys, naming a public key's type, the signature hash each uses.

Only ``cryptography``'s primitives. Generation is CPU work (RSA-4096 takes
about a second): callers run it through ``shared.cpu.run_cpu``.
"""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]
KEY_TYPES: tuple[str, ...] = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
SUPPORTED_PUBLIC = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)

_CURVES: dict[str, type[ec.EllipticCurve]] = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}


def generate(key_type: str) -> PrivateKey:
    """A new private key of ``key_type`` (CPU work: run it off the event loop)."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


def type_of(key: object) -> str | None:
    """The key type of a public (or private) key, ``None`` for a kind the PKI does not sign
    (DSA, other curves, RSA outside 2048–4096 bits or with a non-standard size)."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return {2048: "rsa-2048", 3072: "rsa-3072", 4096: "rsa-4096"}.get(key.key_size)
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    return None


def accepts(role_key_type: str, key_type: str | None) -> bool:
    """Does a role of ``role_key_type`` sign a key of ``key_type``? ``any``: every supported type;
    an RSA role: RSA of that size or larger; otherwise exactly that type."""
    if key_type is None:
        return False
    if role_key_type == "any" or role_key_type == key_type:
        return True
    if role_key_type in _RSA_BITS and key_type in _RSA_BITS:
        return _RSA_BITS[key_type] >= _RSA_BITS[role_key_type]
    return False


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash a CA key signs with: SHA-384 for P-384, none for Ed25519, SHA-256 otherwise."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def to_der(key: PrivateKey) -> bytes:
    """PKCS#8 DER, unencrypted: only ever sealed before it is stored."""
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def to_pem(key: PrivateKey) -> str:
    """PKCS#8 PEM: what ``:issue`` hands to the caller, once."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def from_der(der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("not a key type of the PKI")
    return key
