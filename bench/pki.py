"""The PKI's part of ``make bench``: a CA and a role per key type to issue from, OCSP requests to ask."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

ISSUE_BODY = json.dumps({"common_name": "svc.bench.test", "alt_names": ["api.bench.test"], "ttl": "24h"})


async def pki_setup(session: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> dict[str, list[str]]:
    """An EC P-256 CA, a role per key type, and OCSP GET paths for 50 certificates it issued."""
    async with session.post(f"{url}/v1/pki/cas", headers=auth, json={
            "name": "bench", "common_name": "Bench CA", "key_type": "ec-p256", "ttl": "8760h"}) as r:
        ca = await r.json()
        assert r.status == 201, ca
    for role, key_type in (("bench-ec", "ec-p256"), ("bench-rsa", "rsa-2048")):
        async with session.put(f"{url}/v1/pki/roles/{role}", headers=auth, json={
                "ca_id": ca["id"], "allowed_domains": ["bench.test"], "allow_subdomains": True,
                "key_type": key_type, "ttl": "24h", "max_ttl": "48h"}) as r:
            assert r.status in (200, 201), await r.text()
    issuer = x509.load_pem_x509_certificate(ca["certificate"].encode())
    paths = []
    for _ in range(50):
        async with session.post(f"{url}/v1/pki/roles/bench-ec:issue", headers=auth, data=ISSUE_BODY) as r:
            leaf = x509.load_pem_x509_certificate((await r.json())["certificate"].encode())
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        der = request.public_bytes(serialization.Encoding.DER)
        paths.append("/v1/pki/ocsp/" + quote(base64.b64encode(der).decode(), safe=""))
    return {"ocsp": paths}
