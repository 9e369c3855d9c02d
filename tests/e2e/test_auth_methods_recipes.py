"""The README's three workload recipes as roles of ``jwt`` methods, each logged in through the gateway with a
token of its platform's shape (a Kubernetes projected service-account token, a GitHub Actions and a GitLab
CI OIDC token) — and bad input on every auth-method route, refused with nothing stored. Both run modes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform
from tests.e2e.iam_helpers import allow, name
from tests.e2e.method_helpers import RSA, Issuer, login, make_method, put_role, serve_issuer
from tests.e2e.test_gateway_envelope import assert_envelope


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[Issuer]:
    async for served in serve_issuer():
        yield served


async def reader(api: Api) -> tuple[str, str]:
    """A secret and a policy that reads it."""
    path = f"recipes/{secrets.token_hex(4)}/db"
    assert (await api.request("PUT", f"/v1/secrets/{path}", json={"value": "s3cret-" + secrets.token_hex(6)}))[0] == 201
    policy = name("p")
    status, body, _ = await api.request("POST", "/v1/policies",
                                        json={"name": policy, "rules": [allow([f"secrets/{path}"], ["read"])]})
    assert status == 201, body
    return path, policy


async def logs_in_and_reads(api: Api, method: str, role: str, token: str, path: str) -> None:
    status, body, _ = await login(api, method, role, token)
    assert status == 200, body
    assert (await api.request("GET", f"/v1/secrets/{path}", token=body["access_token"]))[0] == 200


async def refused(api: Api, method: str, role: str, token: str, reason: str = "claims") -> None:
    status, body, headers = await login(api, method, role, token)
    assert assert_envelope(status, body, headers, "authentication_required")["details"]["reason"] == reason


async def test_kubernetes_service_account_token(api: Api, issuer: Issuer) -> None:
    """A projected token (``serviceAccountToken`` volume, ``audience: coffer``); the cluster's issuer is
    not reachable from Coffer here, so its key is pinned (``kubectl get --raw /openid/v1/jwks``)."""
    iss_name, _ = issuer.add()
    cluster = "https://kubernetes.default.svc.cluster.local"
    pem = RSA.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    method = (await make_method(api, cluster, public_keys=[pem], audiences=["coffer"]))["name"]
    path, policy = await reader(api)
    await put_role(api, method, "payments-api", bound_subject="system:serviceaccount:payments:api",
                   bound_claims={"/kubernetes.io/namespace": ["payments"],
                                 "/kubernetes.io/serviceaccount/name": ["api"]},
                   scopes=["secrets:read"], policies=[policy], ttl="15m")

    def sa_token(namespace: str, account: str) -> str:
        return issuer.mint(iss_name, iss=cluster, aud=["coffer"], sub=f"system:serviceaccount:{namespace}:{account}",
                           nbf=None, claims={"kubernetes.io": {
                               "namespace": namespace, "pod": {"name": "api-7d9f", "uid": "5a1c"},
                               "serviceaccount": {"name": account, "uid": "9e2b"}}})

    await logs_in_and_reads(api, method, "payments-api", sa_token("payments", "api"), path)
    await refused(api, method, "payments-api", sa_token("default", "api"))
    await refused(api, method, "payments-api", sa_token("payments", "batch"))


async def test_github_actions_token(api: Api, issuer: Issuer) -> None:
    iss_name, iss_url = issuer.add()
    github = "https://token.actions.githubusercontent.com"
    method = (await make_method(api, github, audiences=None, jwks_url=f"{iss_url}/jwks"))["name"]
    path, policy = await reader(api)
    await put_role(api, method, "deploy-prod", bound_audiences=["https://github.com/acme"],
                   bound_claims={"repository": ["acme/api"], "ref": ["refs/heads/main"],
                                 "environment": ["production"]},
                   user_claim="repository", scopes=["secrets:read"], policies=[policy], ttl="10m")

    def gha(ref: str = "refs/heads/main", environment: str = "production", repo: str = "acme/api") -> str:
        return issuer.mint(iss_name, iss=github, aud="https://github.com/acme",
                           sub=f"repo:{repo}:environment:{environment}",
                           claims={"repository": repo, "repository_owner": "acme", "ref": ref, "ref_type": "branch",
                                   "environment": environment, "workflow": "deploy", "run_id": "4242",
                                   "actor": "octocat", "event_name": "push"})

    await logs_in_and_reads(api, method, "deploy-prod", gha(), path)
    await refused(api, method, "deploy-prod", gha(ref="refs/heads/feature"))
    await refused(api, method, "deploy-prod", gha(environment="staging"))
    await refused(api, method, "deploy-prod", gha(repo="evil/api"))


async def test_gitlab_ci_token(api: Api, issuer: Issuer) -> None:
    iss_name, iss_url = issuer.add()
    gitlab = "https://gitlab.example.com"
    method = (await make_method(api, gitlab, audiences=["https://coffer.example.com"],
                                jwks_url=f"{iss_url}/jwks"))["name"]
    path, policy = await reader(api)
    await put_role(api, method, "release", bound_claims={"project_path": ["acme/api"], "ref": ["main", "release-*"],
                                                         "ref_type": ["branch"]},
                   user_claim="project_path", scopes=["secrets:read"], policies=[policy])

    def ci(ref: str = "main", ref_type: str = "branch") -> str:
        return issuer.mint(iss_name, iss=gitlab, aud="https://coffer.example.com",
                           sub=f"project_path:acme/api:ref_type:{ref_type}:ref:{ref}",
                           claims={"namespace_path": "acme", "project_path": "acme/api", "project_id": "42",
                                   "ref": ref, "ref_type": ref_type, "ref_protected": "true", "pipeline_id": "7"})

    await logs_in_and_reads(api, method, "release", ci(), path)
    await logs_in_and_reads(api, method, "release", ci(ref="release-2"), path)
    await refused(api, method, "release", ci(ref="main", ref_type="tag"))
    await refused(api, method, "release", ci(ref="feature"))


async def _names(api: Api, path: str) -> set[str]:
    status, page, _ = await api.request("GET", f"{path}?limit=1000")
    assert status == 200, page
    return {item["name"] for item in page["items"]}


async def test_bad_input_on_every_route_is_refused_and_stores_nothing(api: Api, issuer: Issuer) -> None:
    _, iss_url = issuer.add()
    method = (await make_method(api, iss_url))["name"]
    await put_role(api, method, "ok", scopes=["secrets:read"])
    methods, roles = await _names(api, "/v1/auth/methods"), await _names(api, f"/v1/auth/methods/{method}/roles")
    config = {"issuer": iss_url}
    creates: list[Any] = [
        {"name": 5, "type": "jwt", "config": config}, {"name": "méthode", "type": "jwt", "config": config},
        {"name": "x" * 64, "type": "jwt", "config": config}, {"type": "jwt", "config": config},
        {"name": "m-extra", "type": "jwt", "config": config, "extra": 1},
        {"name": "m-oidc", "type": "oidc", "config": config}, {"name": "m-noconf", "type": "jwt"},
        {"name": "m-cfg", "type": "jwt", "config": {**config, "unknown": True}},
        {"name": "m-iss", "type": "jwt", "config": {"issuer": 42}},
        {"name": "m-pem", "type": "jwt", "config": {**config, "public_keys": ["not a pem"]}},
        {"name": "m-both", "type": "jwt", "config": {**config, "jwks_url": f"{iss_url}/jwks",
                                                     "public_keys": ["x"]}},
        {"name": "m-leeway", "type": "jwt", "config": {**config, "leeway": "forever"}},
        {"name": "m-aud", "type": "jwt", "config": {**config, "audiences": "coffer"}},
        {"name": "m-ftp", "type": "jwt", "config": {"issuer": "ftp://127.0.0.1/x"}},
        ["not", "an", "object"], "x" * 20_000,
    ]
    patches: list[Any] = [{"config": "x"}, {"config": {"leeway": 5}}, {"other": 1}, {},
                          {"config": {"jwks_url": 7}}, {"config": {"issuer": "ftp://x"}}]
    role_bodies: list[Any] = [{}, {"scopes": "secrets:read"}, {"scopes": ["fly"]}, {"scopes": [], "extra": 1},
                              {"scopes": [], "bound_claims": {"a": "not-a-list"}},
                              {"scopes": [], "bound_claims": {"a": ["a[b"]}}, {"scopes": [], "ttl": "2d"},
                              {"scopes": [], "ttl": 60}, {"scopes": [], "user_claim": "/a/~2"},
                              {"scopes": [], "policies": ["Not A Policy"]}, {"scopes": [], "bound_audiences": [""]}]
    logins: list[Any] = [{"role": 5, "jwt": "a.b.c"}, {"role": "ok"}, {"jwt": "a.b.c"},
                         {"role": "ok", "jwt": "a" * (16 * 1024 + 1)}, {"role": "ok", "jwt": "a.b.c", "x": 1},
                         {"role": "ok", "jwt": ["a.b.c"]}, [], "🔑"]
    calls = [("POST", "/v1/auth/methods", b) for b in creates]
    calls += [("PATCH", f"/v1/auth/methods/{method}", b) for b in patches]
    calls += [("PUT", f"/v1/auth/methods/{method}/roles/new-role", b) for b in role_bodies]
    calls += [("PUT", f"/v1/auth/methods/{method}/roles/{role}", {"scopes": []}) for role in ("rôle", "a" * 64, ".x")]
    calls += [("POST", f"/v1/auth/methods/{method}/login", b) for b in logins]
    for verb, path, body in calls:
        kwargs = {"data": body.encode()} if isinstance(body, str) else {"json": body}
        status, answer, _ = await api.request(verb, path, token=None if path.endswith("/login") else "default",
                                              headers={"Content-Type": "application/json"}, **kwargs)
        assert status in (400, 422), (verb, path, body if len(str(body)) < 200 else "…", status, answer)
    for verb, path in (("GET", "/v1/auth/methods/méthode"), ("GET", f"/v1/auth/methods/{method}/roles/rôle"),
                       ("DELETE", f"/v1/auth/methods/{method}/roles/{'r' * 300}"),
                       ("GET", "/v1/auth/methods?limit=0"), ("GET", "/v1/auth/methods?cursor=garbage")):
        status, answer, _ = await api.request(verb, path)
        assert status in (400, 404, 422), (verb, path, status, answer)
    assert await _names(api, "/v1/auth/methods") == methods
    assert await _names(api, f"/v1/auth/methods/{method}/roles") == roles
    status, current, _ = await api.request("GET", f"/v1/auth/methods/{method}")
    assert status == 200 and current["config"]["issuer"] == iss_url and current["config"]["leeway"] == "60s"
