"""Helpers of the PKI tests: making CAs, roles and certificates through the gateway, and the relying
parties that judge them (``openssl`` and Python's ``ssl``)."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Api, remember_secret


def unique(prefix: str = "p") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def make_ca(api: Api, *, token: str | None = "default", headers: dict[str, str] | None = None,
                  **body: Any) -> dict[str, Any]:
    payload = {"name": unique("ca-"), "common_name": "Coffer Test CA", "key_type": "ec-p256", "ttl": "8760h", **body}
    status, ca, _ = await api.request("POST", "/v1/pki/cas", token=token, headers=headers, json=payload)
    assert status == 201, ca
    return dict(ca)


async def make_role(api: Api, ca_id: str, *, token: str | None = "default", headers: dict[str, str] | None = None,
                    **body: Any) -> str:
    name = unique("role-")
    payload = {"ca_id": ca_id, "allowed_domains": ["example.com"], "allow_subdomains": True,
               "allow_bare_domains": True, "allow_ip_sans": True, "ttl": "24h", "max_ttl": "720h", **body}
    status, role, _ = await api.request("PUT", f"/v1/pki/roles/{name}", token=token, headers=headers, json=payload)
    assert status == 201, role
    return name


async def issue(api: Api, role: str, cn: str = "www.example.com", *, token: str | None = "default",
                headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    status, cert, _ = await api.request("POST", f"/v1/pki/roles/{role}:issue", token=token, headers=headers,
                                        json={"common_name": cn, **body})
    assert status == 201, cert
    remember_secret(cert["private_key"].strip().splitlines()[1])  # a line of the key: never in a log line
    return dict(cert)


def csr_pem(cn: str, sans: list[str] = (), key: Any = None) -> str:  # type: ignore[assignment]
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def run(*command: str, check: bool = False) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    assert not check or proc.returncode == 0, text
    return proc.returncode or 0, text


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


async def tls_handshake(server_chain: str, server_key: str, ca_bundle: str, hostname: str, directory: Path,
                        crl_pem: str | None = None) -> str | None:
    """A TLS handshake between a server holding ``server_chain`` and a client trusting ``ca_bundle``
    (checking the leaf against ``crl_pem`` when given): ``None`` on success, else the client's error."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(write(directory, unique("chain-") + ".pem", server_chain),
                               write(directory, unique("key-") + ".pem", server_key))
    client_ctx = ssl.create_default_context(cadata=ca_bundle)
    if crl_pem is not None:
        client_ctx.load_verify_locations(cafile=write(directory, unique("crl-") + ".pem", crl_pem))  # a CRL: by file
        client_ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"hello")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=hostname)
        data = await reader.read(5)
        writer.close()
        return None if data == b"hello" else f"unexpected {data!r}"
    except ssl.SSLError as exc:
        return str(exc)
    finally:
        server.close()
        await server.wait_closed()
