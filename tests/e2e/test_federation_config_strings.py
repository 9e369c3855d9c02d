"""Control characters are refused in every config string that can reach a header or a URL (issue #27, info):
a federation ``tenant_id`` holding CR/LF was stored, and every read through the backend then failed with a 502
(it is sent as ``X-Tenant-ID``). Now such a string is 422 ``validation_error`` naming the field, and nothing is
stored — for federation backends, lease engines, DNS providers and ACME accounts alike."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.e2e.iam_helpers import name
from tests.e2e.test_gateway_envelope import assert_envelope

SMUGGLED = ("\r\nX-Injected: 1", "\n", "\r", "\t", "\x7f", "\x85", "\u2028")
COFFER = {"url": "https://coffer.example.com", "client_id": "cli_abc", "client_secret": "cs_not-a-real-one",
          "tenant_id": "ten_abc"}
AWS = {"region": "us-east-1", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "not-a-real-one",
       "endpoint_url": "https://sm.example.com"}


async def _refused(api: Api, url: str, body: dict[str, Any], field: str) -> None:
    status, answer, headers = await api.request("POST", url, json=body)
    err = assert_envelope(status, answer, headers, "validation_error")
    assert [f["field"] for f in err["details"]["fields"]] == [field], err
    assert "control characters" in err["details"]["fields"][0]["message"]


@pytest.mark.parametrize("bad", SMUGGLED)
async def test_a_federation_tenant_id_with_control_characters_is_refused_and_not_stored(api: Api, bad: str) -> None:
    backend = name("fed")
    await _refused(api, "/v1/federation/backends", {
        "name": backend, "type": "coffer", "mount_path": backend,
        "config": {**COFFER, "tenant_id": f"ten_abc{bad}"}}, "config.tenant_id")
    status, answer, headers = await api.request("GET", f"/v1/federation/backends/{backend}")
    assert_envelope(status, answer, headers, "federation_backend_not_found")


@pytest.mark.parametrize(("kind", "config", "field"), [
    ("coffer", {**COFFER, "url": "https://coffer.example.com/\r\nHost: evil"}, "url"),
    ("coffer", {**COFFER, "client_id": "cli_abc\nX: 1"}, "client_id"),
    ("coffer", {**COFFER, "client_secret": "cs\r\n"}, "client_secret"),
    ("aws_secrets_manager", {**AWS, "access_key_id": "AKIA\r\nX-Amz: 1"}, "access_key_id"),
    ("aws_secrets_manager", {**AWS, "endpoint_url": "https://sm.example.com\n/x"}, "endpoint_url"),
])
async def test_other_federation_config_strings_with_control_characters(api: Api, kind: str, config: dict[str, Any],
                                                                       field: str) -> None:
    backend = name("fed")
    await _refused(api, "/v1/federation/backends", {"name": backend, "type": kind, "mount_path": backend,
                                                    "config": config}, f"config.{field}")
    status, page, _ = await api.request("GET", "/v1/federation/backends?limit=1000")
    assert status == 200 and backend not in [b["name"] for b in page["items"]]


@pytest.mark.parametrize(("kind", "config", "field"), [
    ("redis", {"host": "127.0.0.1\r\nFLUSHALL", "port": 6379, "password": "pw"}, "host"),
    ("redis", {"host": "127.0.0.1", "port": 6379, "username": "default\n", "password": "pw"}, "username"),
    ("rabbitmq", {"management_url": "http://127.0.0.1:15672/\r\n", "username": "a", "password": "b"},
     "management_url"),
    ("rabbitmq", {"management_url": "http://127.0.0.1:15672/", "username": "a\r\nX: 1", "password": "b"},
     "username"),
    ("postgresql", {"connection_url": "postgresql://u:p@127.0.0.1:5432/db\r\n"}, "connection_url"),
])
async def test_engine_config_strings_with_control_characters(api: Api, kind: str, config: dict[str, Any],
                                                             field: str) -> None:
    engine = name("eng")
    await _refused(api, "/v1/engines", {"name": engine, "type": kind, "config": config}, f"config.{field}")
    status, answer, headers = await api.request("GET", f"/v1/engines/{engine}")
    assert_envelope(status, answer, headers, "engine_not_found")


async def test_dns_provider_and_acme_account_strings_with_control_characters(api: Api) -> None:
    provider = name("dns")
    await _refused(api, "/v1/pki/acme/dns-providers", {"name": provider, "type": "rfc2136", "config": {
        "nameserver": "127.0.0.1:53", "zone": "example.com.", "tsig_key_name": "k\r\n", "tsig_secret": "c2VjcmV0"}},
        "config.tsig_key_name")
    status, page, _ = await api.request("GET", "/v1/pki/acme/dns-providers?limit=1000")
    assert status == 200 and provider not in [p["name"] for p in page["items"]]
    await _refused(api, "/v1/pki/acme/accounts", {"directory_url": "https://acme.example.com/dir\r\nX: 1"},
                   "directory_url")
