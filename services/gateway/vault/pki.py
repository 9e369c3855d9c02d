"""``pki/issue/<role>`` and ``pki/sign/<role>`` on the Vault listener (api.md §13): a Coffer PKI role's
``:issue`` and ``:sign``, through the same client and policy target (``pki/roles/<role>``, capability
``issue`` / ``sign``, scope ``pki``), answered in Vault's shape.

Vault's fields map one to one: ``certificate``; ``issuing_ca`` (the role's CA) and ``ca_chain`` (it and its
parents: Coffer's ``chain``); ``serial_number`` as colon-separated hex pairs; ``expiration`` (seconds since
the epoch — a number, as Vault answers it, though its docs' example shows a string); for ``issue``
``private_key`` and ``private_key_type``. The key is PEM in Vault's default form — PKCS#1 for RSA, SEC1 for EC
("``private_key_format``: der" under ``format: pem``), PKCS#8 for Ed25519 as Vault has it — or PKCS#8 with
``private_key_format: pkcs8``. ``alt_names`` and ``ip_sans`` are comma-separated strings (or lists). Only
``format: pem`` is served; ``uri_sans``, ``other_sans`` and ``exclude_cn_from_sans: true`` ask for what
Coffer's roles don't do (422 ``validation_error``). ``sign`` takes its names from the CSR, as Vault's roles do
by default (``use_csr_common_name``, ``use_csr_sans``): ``common_name``, ``alt_names`` and the like in its body
are not used.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from services.gateway.edge.routes import Route, context, read_object
from services.gateway.forward.pki import ISSUE_ERRORS
from services.gateway.state import state
from services.gateway.vault.answers import answer
from shared.contracts import parse
from shared.contracts.pki import Issue, Sign, Signed
from shared.errors import ValidationError

ROLE = r"{role:[a-z0-9][a-z0-9_-]*}"  # its length: the service's invalid_role
MAX_SANS = 100


class _Vault(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    ttl: StrictStr | int | None = None
    format: StrictStr = "pem"


class VaultIssue(_Vault):
    common_name: StrictStr = Field(min_length=1, max_length=1024)
    alt_names: StrictStr | list[StrictStr] = ""
    ip_sans: StrictStr | list[StrictStr] = ""
    uri_sans: Any = ""
    other_sans: Any = ""
    exclude_cn_from_sans: Any = False
    private_key_format: StrictStr = ""


class VaultSign(_Vault):
    csr: StrictStr = Field(min_length=1, max_length=64 * 1024, repr=False)


def _names(value: str | list[str], field: str) -> list[str]:
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    if len(names) > MAX_SANS:
        raise ValidationError.on(field, f"at most {MAX_SANS} names")
    return names


def _ttl(value: str | int | None) -> str | None:
    """Vault's ``ttl`` (a duration, or seconds) as Coffer's duration."""
    if value is None or value in ("", 0):
        return None
    return f"{value}s" if isinstance(value, int) or value.isdigit() else value


def _checked(body: _Vault) -> None:
    if body.format != "pem":
        raise ValidationError.on("format", "only pem is served here")
    if isinstance(body, VaultIssue):
        if body.uri_sans or body.other_sans:
            raise ValidationError.on("uri_sans" if body.uri_sans else "other_sans", "Coffer's roles don't issue these")
        if body.exclude_cn_from_sans not in (False, "false", "", 0, None):
            raise ValidationError.on("exclude_cn_from_sans", "Coffer's roles don't issue this")
        if body.private_key_format not in ("", "der", "pem", "pkcs8"):
            raise ValidationError.on("private_key_format", "one of der, pem, pkcs8")


def serial_number(serial: str) -> str:
    """Coffer's lower-case hex serial as Vault writes one: ``39:dd:2e:…``."""
    digits = serial if len(serial) % 2 == 0 else "0" + serial
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def vault_key(pkcs8_pem: str, key_format: str) -> tuple[str, str]:
    """``(private_key, private_key_type)`` of Coffer's PKCS#8 PEM key, in the form Vault answers."""
    key = serialization.load_pem_private_key(pkcs8_pem.encode(), password=None)
    kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec" if isinstance(key, ec.EllipticCurvePrivateKey) \
        else "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "unknown"
    if key_format == "pkcs8" or kind not in ("rsa", "ec"):
        return pkcs8_pem, kind
    traditional = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    return traditional.decode(), kind


def _certificate(signed: Signed) -> dict[str, Any]:
    return {"certificate": signed.certificate, "issuing_ca": signed.chain[0] if signed.chain else "",
            "ca_chain": list(signed.chain), "serial_number": serial_number(signed.serial),
            "expiration": int(signed.expires_at.timestamp())}


async def issue(request: web.Request) -> web.Response:
    body = parse(VaultIssue, await read_object(request))
    _checked(body)
    issued = await state(request).pki.issue(context(request), Issue(
        role=request.match_info["role"], common_name=body.common_name, alt_names=_names(body.alt_names, "alt_names"),
        ip_sans=_names(body.ip_sans, "ip_sans"), ttl=_ttl(body.ttl)))
    private_key, key_type = vault_key(issued.private_key, body.private_key_format)
    return answer(request, data={**_certificate(issued), "private_key": private_key, "private_key_type": key_type})


async def sign(request: web.Request) -> web.Response:
    body = parse(VaultSign, await read_object(request))
    _checked(body)
    signed = await state(request).pki.sign(context(request), Sign(role=request.match_info["role"], csr=body.csr,
                                                                  ttl=_ttl(body.ttl)))
    return answer(request, data=_certificate(signed))


def _role(capability: str) -> Any:
    return lambda request: (f"pki/roles/{request.match_info['role']}", capability)


ROUTES: tuple[Route, ...] = (
    *(Route(method, f"/v1/pki/issue/{ROLE}", issue, scope="pki", target=_role("issue"), body=VaultIssue,
            errors=ISSUE_ERRORS) for method in ("POST", "PUT")),
    *(Route(method, f"/v1/pki/sign/{ROLE}", sign, scope="pki", target=_role("sign"), body=VaultSign,
            errors=(*ISSUE_ERRORS, "csr_invalid")) for method in ("POST", "PUT")),
)
