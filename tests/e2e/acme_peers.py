"""The ACME tests' real peers: ``named`` (bind9) and ``pebble``, started on loopback ports and stopped after.

- ``named`` is authoritative for ``acme.test``. Two TSIG keys are known to it:
  ``coffer-update`` may change TXT records under the zone (RFC 2136);
  ``coffer-readonly`` may only sign queries, so an update with it is refused.
- ``pebble`` (Let's Encrypt's test CA, Debian's 2.4) serves ACME over TLS with a
  certificate made here, and asks ``named`` for the DNS-01 TXT records.

Both are Debian packages (``make test`` installs them) and bind 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

ZONE = "acme.test"
NAMED = shutil.which("named") or "/usr/sbin/named"
PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"


@dataclass(frozen=True)
class Peers:
    dns_port: int
    update_key: str  # base64 secret of coffer-update
    readonly_key: str  # base64 secret of coffer-readonly
    directory_url: str
    management_url: str
    tls_root: str  # PEM of the CA that signed pebble's TLS certificate
    eab_kid: str
    eab_hmac: str  # base64url, as CAs hand it out
    folder: Path

    def provider(self, name: str, *, key: str = "coffer-update", secret: str | None = None,
                 zone: str = ZONE) -> dict[str, object]:
        return {"name": name, "type": "rfc2136", "config": {
            "nameserver": f"127.0.0.1:{self.dns_port}", "zone": zone, "tsig_key_name": key,
            "tsig_secret": secret or (self.update_key if key == "coffer-update" else self.readonly_key),
            "tsig_algorithm": "hmac-sha256"}}

    async def pebble_roots(self) -> list[x509.Certificate]:
        """Pebble's issuing root (made anew at each start), from its management interface."""
        context = ssl.create_default_context(cadata=self.tls_root)
        async with aiohttp.ClientSession() as http, http.get(f"{self.management_url}/roots/0", ssl=context) as r:
            return x509.load_pem_x509_certificates(await r.read())


def _tls_pair(folder: Path) -> str:
    """A CA and a certificate for 127.0.0.1 / localhost signed by it; returns the CA's PEM."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coffer test pebble TLS root")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM).decode()


def _named_conf(folder: Path, port: int, update_key: str, readonly_key: str) -> Path:
    (folder / f"{ZONE}.zone").write_text(
        f"$TTL 60\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 60 60 600 60\n"
        f"@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n")
    conf = folder / "named.conf"
    conf.write_text(f"""
options {{
    directory "{folder}";
    pid-file "{folder}/named.pid";
    session-keyfile "{folder}/session.key";
    managed-keys-directory "{folder}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ 127.0.0.1; }};
}};
controls {{ }};
key "coffer-update" {{ algorithm hmac-sha256; secret "{update_key}"; }};
key "coffer-readonly" {{ algorithm hmac-sha256; secret "{readonly_key}"; }};
zone "{ZONE}" {{
    type primary;
    file "{folder}/{ZONE}.zone";
    update-policy {{ grant coffer-update subdomain {ZONE}. TXT; }};
}};
""")
    return conf


async def _wait_tcp(port: int, what: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited: {_tail(log)}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.1)


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


def _spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A peer started with its output in ``log`` (a quick fork: not worth a thread)."""
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def _pebble_config(folder: Path, config: dict[str, Any]) -> Path:
    (folder / "pebble.json").write_text(json.dumps(config))
    return folder / "pebble.json"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def acme_peers(folder: Path, *, validity_seconds: int = 3600, nonce_reject: int = 10) -> AsyncIterator[Peers]:
    """``named`` and ``pebble`` for the duration of the block (certificates valid ``validity_seconds``; pebble
    refuses ``nonce_reject`` % of good nonces, at random, as a CA may)."""
    dns_port, acme_port, mgmt_port = free_port(), free_port(), free_port()
    update_key = base64.b64encode(secrets.token_bytes(32)).decode()
    readonly_key = base64.b64encode(secrets.token_bytes(32)).decode()
    named_log = folder / "named.log"
    named = _spawn([NAMED, "-g", "-n", "1", "-c", str(_named_conf(folder, dns_port, update_key, readonly_key))],
                   named_log)
    procs = [named]
    try:
        await _wait_tcp(dns_port, "named", named, named_log)
        tls_root = _tls_pair(folder)
        eab_kid, eab_hmac = "coffer-kid-1", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress": f"127.0.0.1:{mgmt_port}",
            "certificate": str(folder / "cert.pem"), "privateKey": str(folder / "key.pem"),
            "httpPort": free_port(), "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False, "externalAccountMACKeys": {eab_kid: eab_hmac},
            "certificateValidityPeriod": validity_seconds}}
        pebble_log = folder / "pebble.log"
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
               "PEBBLE_AUTHZREUSE": "0"}
        pebble = _spawn([PEBBLE, "-config", str(_pebble_config(folder, config)), "-dnsserver",
                         f"127.0.0.1:{dns_port}"], pebble_log, env)
        procs.append(pebble)
        await _wait_tcp(acme_port, "pebble", pebble, pebble_log)
        await _wait_tcp(mgmt_port, "pebble management", pebble, pebble_log)
        yield Peers(dns_port, update_key, readonly_key, f"https://127.0.0.1:{acme_port}/dir",
                    f"https://127.0.0.1:{mgmt_port}", tls_root, eab_kid, eab_hmac, folder)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def txt_records(peers: Peers, name: str) -> list[str]:
    """The TXT strings at ``name`` as ``named`` answers them now (dig, as an operator would look)."""
    out = subprocess.run(["dig", "+short", "-p", str(peers.dns_port), "@127.0.0.1", name, "TXT"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.strip().strip('"') for line in out.splitlines() if line.strip()]



class CaFront:
    """A loopback TLS front of pebble (its certificate) for what pebble 2.4 doesn't do on demand: it passes
    every request through with its own ``Host`` (so pebble's URLs, and the URL each JWS signs, name the
    front) and, when told, answers ``rateLimited`` (HTTP 429 with
    ``Retry-After``), ``badNonce`` once, or offers ACME Renewal Information (RFC 9773) with a window
    of its choosing."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers
        self.upstream = peers.directory_url.rsplit("/", 1)[0]
        self.rate_limit_new_order = False
        self.refuse_new_order = False
        self.bad_nonces = 0
        self.ari_window: tuple[datetime, datetime] | None = None
        #: a window of its own for some certificates (by ARI id)
        self.ari_windows: dict[str, tuple[datetime, datetime]] = {}
        #: a Location to hand back for new orders instead of pebble's
        self.order_location: str | None = None
        #: seconds to wait before answering anything
        self.delay = 0.0
        #: answer ARI with a 500
        self.ari_fail = False
        self.ari_asked: list[str] = []
        self.replaces: list[str] = []
        self.url = ""
        self._runner: Any = None

    @property
    def directory_url(self) -> str:
        return f"{self.url}/dir"

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        await asyncio.sleep(self.delay)
        if request.path.startswith("/renewal-info/"):
            ident = request.path.rsplit("/", 1)[-1]
            if self.ari_fail:
                return web.Response(status=500, text="ARI is down")
            self.ari_asked.append(ident)
            assert self.ari_window is not None
            start, end = self.ari_windows.get(ident, self.ari_window)
            return web.json_response({"suggestedWindow": {"start": start.isoformat(), "end": end.isoformat()}},
                                     headers={"Retry-After": "3600"})
        body = await request.read()
        if request.method == "POST" and request.path.endswith("/order-plz"):
            payload = json.loads(base64.urlsafe_b64decode(json.loads(body)["payload"] + "=="))
            if "replaces" in payload:  # pebble 2.4 knows no ARI: it ignores the field
                self.replaces.append(payload["replaces"])
            if self.refuse_new_order:
                return web.json_response(
                    {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "policy forbids these names",
                     "status": 400}, status=400, content_type="application/problem+json")
            if self.rate_limit_new_order:
                return web.json_response(
                    {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many new orders", "status": 429},
                    status=429, headers={"Retry-After": "7"}, content_type="application/problem+json")
        if request.method == "POST" and self.bad_nonces > 0:
            self.bad_nonces -= 1
            async with aiohttp.ClientSession() as http, http.head(f"{self.upstream}/nonce-plz",
                                                                   ssl=self._ssl) as fresh:
                nonce = fresh.headers["Replay-Nonce"]
            stale = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "stale", "status": 400}
            return web.json_response(stale, status=400, headers={"Replay-Nonce": nonce},
                                     content_type="application/problem+json")
        async with aiohttp.ClientSession() as http, http.request(
                request.method, self.upstream + request.path_qs, data=body or None, ssl=self._ssl,
                headers={**{k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")},
                         "Host": request.host}, allow_redirects=False) as resp:
            raw = await resp.read()
            headers = {k: v for k, v in resp.headers.items()
                       if k.lower() in ("location", "replay-nonce", "link", "retry-after", "content-type")}
        if request.path.endswith("/order-plz") and self.order_location and resp.status == 201:
            headers["Location"] = self.order_location
        if request.path == "/dir" and self.ari_window is not None:
            doc = json.loads(raw)
            doc["renewalInfo"] = f"{self.url}/renewal-info"
            raw = json.dumps(doc).encode()
        return web.Response(body=raw, status=resp.status, headers=headers)

    async def __aenter__(self) -> CaFront:
        from aiohttp import web

        self._ssl = ssl.create_default_context(cadata=self.peers.tls_root)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(self.peers.folder / "cert.pem", self.peers.folder / "key.pem")
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=served).start()
        self.url = f"https://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()
