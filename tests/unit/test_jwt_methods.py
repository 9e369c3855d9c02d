"""``jwt`` auth methods (api.md §10, issue #30): config and role models, key selection, every refusal reason,
the bounded refetch on unknown kids, and the recipes' token shapes (Kubernetes, GitHub Actions, GitLab CI).

Keys come from a ``KeySource`` whose fetch is an in-memory JWK set (the HTTP side is
``tests/integration/test_jwt_keys.py``); tokens are minted with PyJWT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from services.gateway.methods.keys import Key, KeySource, check_urls, parse_jwks
from services.gateway.methods.models import JwtConfig, RoleBody
from services.gateway.methods.verify import MAX_TOKEN, claim_at, verify
from shared.contracts import parse
from shared.errors import AuthenticationRequired, InvalidConfig, InvalidDuration, InvalidGlob, ValidationError
from shared.outbound import OutboundPolicy

ISS = "https://issuer.example"
NOW = 1_800_000_000.0

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
ED = ed25519.Ed25519PrivateKey.generate()
FAMILIES = [("RS256", RSA), ("RS384", RSA), ("RS512", RSA), ("PS256", RSA), ("ES256", P256), ("ES384", P384),
            ("EdDSA", ED)]
KID = {id(RSA): "rsa-1", id(P256): "p256-1", id(P384): "p384-1", id(ED): "ed-1"}


def pem(private: Any) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def jwk(private: Any, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    family = ("RS256" if isinstance(private, rsa.RSAPrivateKey)
              else "ES256" if isinstance(private, ec.EllipticCurvePrivateKey) else "EdDSA")
    algo = jwt.get_algorithm_by_name(family)
    data: dict[str, Any] = algo.to_jwk(private.public_key(), as_dict=True)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        data["crv"] = {256: "P-256", 384: "P-384"}[private.curve.key_size]
    data.pop("alg", None)
    if kid is not None:
        data["kid"] = kid
    if alg is not None:
        data["alg"] = alg
    return data


def mint(key: Any = RSA, alg: str = "RS256", kid: str | None = "", headers: dict[str, Any] | None = None,
         **claims: Any) -> str:
    payload = {"iss": ISS, "sub": "workload", "aud": "coffer", "iat": NOW - 10, "exp": NOW + 300, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    hdr = dict(headers or {})
    if kid == "":
        kid = KID.get(id(key))
    if kid is not None:
        hdr["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=hdr)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(alg: str, secret: bytes, **claims: Any) -> str:
    """A token with any ``alg`` (PyJWT won't make these): ``none`` unsigned, ``HS256`` keyed with ``secret``."""
    header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps({"iss": ISS, "sub": "workload", "aud": "coffer", "exp": NOW + 300, **claims}).encode())
    signing_input = f"{header}.{body}".encode()
    signature = b"" if alg == "none" else hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


class MemoryJwks(KeySource):
    """The real ``KeySource`` with its one fetch answered from ``self.jwks`` (the HTTP fetch is the integration
    test's); the clock is the test's."""

    def __init__(self, config: JwtConfig, jwks: list[dict[str, Any]], **kwargs: Any) -> None:
        self.now = 0.0
        super().__init__(config, OutboundPolicy(), clock=lambda: self.now, **kwargs)
        self.jwks = jwks

    async def _fetch(self, reach: Any = None) -> list[Key]:
        self.fetches += 1
        await asyncio.sleep(0)
        return parse_jwks({"keys": self.jwks})


def config(**overrides: Any) -> JwtConfig:
    return JwtConfig.model_validate({"issuer": ISS, "jwks_url": "https://issuer.example/jwks",
                                     "audiences": ["coffer"], **overrides})


def role(**overrides: Any) -> RoleBody:
    return RoleBody.model_validate({"scopes": ["secrets:read"], **overrides})


def source(cfg: JwtConfig | None = None, keys: list[dict[str, Any]] | None = None, **kwargs: Any) -> MemoryJwks:
    default = [jwk(RSA, "rsa-1"), jwk(P256, "p256-1"), jwk(P384, "p384-1"), jwk(ED, "ed-1")]
    return MemoryJwks(cfg or config(), default if keys is None else keys, **kwargs)


async def login(token: str, src: KeySource | None = None, cfg: JwtConfig | None = None, rl: RoleBody | None = None,
                now: float = NOW) -> Any:
    cfg = cfg or config()
    return await verify(token, src or source(cfg), cfg, rl or role(), now=now)


async def refused(token: str, reason: str, **kwargs: Any) -> AuthenticationRequired:
    with pytest.raises(AuthenticationRequired) as caught:
        await login(token, **kwargs)
    assert caught.value.details == {"reason": reason}
    assert (len(token) < 8 or token not in caught.value.message) and "workload" not in caught.value.message
    return caught.value


# -- good tokens ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("alg", "key"), FAMILIES, ids=[a for a, _ in FAMILIES])
async def test_a_good_token_of_every_allowed_algorithm_logs_in(alg: str, key: Any) -> None:
    claims = await login(mint(key, alg))
    assert (claims.user, claims.issuer, claims.subject, claims.groups) == ("workload", ISS, "workload", ())


@pytest.mark.parametrize(("alg", "key"), FAMILIES, ids=[a for a, _ in FAMILIES])
async def test_pinned_public_keys_verify_without_any_fetch(alg: str, key: Any) -> None:
    cfg = JwtConfig(issuer=ISS, public_keys=[pem(RSA), pem(P256), pem(P384), pem(ED)], audiences=["coffer"])
    src = KeySource(cfg, OutboundPolicy())
    assert (await login(mint(key, alg, kid=None), src=src, cfg=cfg)).user == "workload"
    assert (await login(mint(key, alg, kid="whatever-the-issuer-says"), src=src, cfg=cfg)).user == "workload"
    assert src.fetches == 0
    await src.check()  # nothing to reach


async def test_a_token_without_kid_is_tried_against_every_fitting_key() -> None:
    src = source(keys=[jwk(RSA_OTHER, "old"), jwk(RSA, "new")])
    assert (await login(mint(RSA, kid=None), src=src)).user == "workload"


# -- algorithms ----------------------------------------------------------------------------------------------

async def test_alg_none_is_refused() -> None:
    await refused(forged("none", b""), "algorithm")


async def test_hs256_keyed_with_the_rsa_public_key_is_refused() -> None:
    """The classic confusion: the verifier's RSA public key (PEM, JWK or DER) used as an HMAC secret."""
    public = RSA.public_key()
    for secret in (pem(RSA).encode(), public.public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)):
        await refused(forged("HS256", secret), "algorithm")
        await refused(forged("HS512", secret), "algorithm")


async def test_a_key_of_another_type_or_curve_never_verifies() -> None:
    await refused(mint(P256, "ES256", kid="rsa-1"), "algorithm")  # an ES token against the RSA key
    await refused(mint(P384, "ES384", kid="p256-1"), "algorithm")  # P-384 against P-256
    await refused(mint(RSA, "RS256", kid="ed-1"), "algorithm")
    cfg = JwtConfig(issuer=ISS, public_keys=[pem(RSA)], audiences=["coffer"])
    await refused(mint(P256, "ES256", kid=None), "algorithm", src=KeySource(cfg, OutboundPolicy()), cfg=cfg)


async def test_a_jwk_naming_its_alg_verifies_that_alg_only() -> None:
    src = source(keys=[jwk(RSA, "rsa-1", alg="PS256")])
    assert (await login(mint(RSA, "PS256"), src=src)).user == "workload"
    await refused(mint(RSA, "RS256"), "algorithm", src=src)


def test_a_jwk_set_keeps_only_usable_signing_keys() -> None:
    keys = parse_jwks({"keys": [
        jwk(RSA, "a"), {**jwk(RSA, "enc"), "use": "enc"}, {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**jwk(RSA, "hs"), "alg": "HS256"}, {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {**jwk(P256, "p"), "kid": 7}, "not a key", jwk(ED, "ed")]})
    assert [k.kid for k in keys] == ["a", "ed"]
    assert parse_jwks({"keys": "nope"}) == [] and parse_jwks({}) == []


# -- signature and kid ---------------------------------------------------------------------------------------

async def test_a_signature_by_another_key_or_a_changed_payload_is_refused() -> None:
    await refused(mint(RSA_OTHER, kid="rsa-1"), "signature")
    header, _, signature = mint().split(".")
    other = b64(json.dumps({"iss": ISS, "sub": "admin", "aud": "coffer", "exp": NOW + 300}).encode())
    await refused(f"{header}.{other}.{signature}", "signature")


@pytest.mark.parametrize("token", ["", "a.b", "not.a.jwt", "x" * 10, "..", "a.b.c.d"])
async def test_what_is_not_a_jwt_is_refused_as_a_bad_signature(token: str) -> None:
    await refused(token, "signature")


async def test_an_oversized_token_is_refused_before_any_work() -> None:
    src = source()
    await refused(mint(padding="x" * MAX_TOKEN), "signature", src=src)
    assert src.fetches == 0


async def test_a_critical_header_extension_is_refused() -> None:
    await refused(mint(headers={"crit": ["exp"]}), "signature")
    await refused(mint(headers={"b64": False}), "signature")  # RFC 7797's unencoded payload: never understood


async def test_only_the_compact_base64url_form_is_read() -> None:
    header, body, signature = mint().split(".")
    for token in (f"{header}=.{body}.{signature}", f"{header}.{body}.{signature}==", f"{header}.{body}+.{signature}",
                  f"{header}.{body}.{signature[:-1]}/", f"{header} .{body}.{signature}",
                  f"{b64(b'[1]')}.{body}.{signature}", f"{b64(b'not json')}.{body}.{signature}"):
        await refused(token, "signature")


async def test_an_ecdsa_signature_must_be_r_and_s_of_the_curves_size() -> None:
    """JWS carries ECDSA as ``r || s`` (RFC 7518 §3.4): the DER form, or one byte more or less, is refused."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    good = mint(P256, "ES256")
    header, body, signature = good.split(".")
    der = P256.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    await refused(f"{header}.{body}.{b64(der)}", "signature")
    raw = base64.urlsafe_b64decode(signature + "==")
    for changed in (raw + b"\0", raw[:-1], b"\0" + raw[:-1]):
        await refused(f"{header}.{body}.{b64(changed)}", "signature")
    r, s = decode_dss_signature(der)
    await login(f"{header}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")


async def test_an_unknown_kid_is_found_after_the_issuer_rotates_its_key() -> None:
    src = source(keys=[jwk(RSA, "rsa-1")], refetch_interval=60)
    assert (await login(mint(), src=src)).user == "workload"
    assert src.fetches == 1
    await refused(mint(RSA_OTHER, kid="rsa-2"), "signature", src=src)  # not published yet, and just fetched
    src.jwks = [jwk(RSA_OTHER, "rsa-2")]  # the issuer rotates
    await refused(mint(RSA_OTHER, kid="rsa-2"), "signature", src=src)  # within the minute: no fetch
    assert src.fetches == 1
    src.now += 61
    assert (await login(mint(RSA_OTHER, kid="rsa-2"), src=src)).user == "workload"
    assert src.fetches == 2
    await refused(mint(RSA, kid="rsa-1"), "signature", src=src)  # the retired key is gone with the new set


async def test_a_flood_of_made_up_kids_fetches_once_per_interval() -> None:
    src = source(refetch_interval=60)
    await login(mint(), src=src)
    for i in range(200):
        await refused(mint(kid=f"made-up-{i}"), "signature", src=src)
    assert src.fetches == 1
    await asyncio.gather(*(refused(mint(kid=f"concurrent-{i}"), "signature", src=src) for i in range(50)))
    assert src.fetches == 1
    src.now += 60
    await asyncio.gather(*(refused(mint(kid=f"later-{i}"), "signature", src=src) for i in range(50)))
    assert src.fetches == 2
    assert (await login(mint(), src=src)).user == "workload"  # known kids never fetch
    assert src.fetches == 2


# -- time ----------------------------------------------------------------------------------------------------

async def test_exp_and_nbf_hold_with_the_leeway() -> None:
    cfg = config(leeway="30s")
    assert (await login(mint(exp=NOW - 20), cfg=cfg)).user == "workload"
    await refused(mint(exp=NOW - 31), "expired", cfg=cfg)
    assert (await login(mint(nbf=NOW + 20), cfg=cfg)).user == "workload"
    await refused(mint(nbf=NOW + 31), "not_yet_valid", cfg=cfg)
    await refused(mint(iat=NOW + 31), "not_yet_valid", cfg=cfg)
    await refused(mint(exp=NOW - 1), "expired", cfg=config(leeway="0s"))


async def test_exp_is_required_and_numeric() -> None:
    await refused(mint(exp=None), "claims")
    await refused(mint(exp="tomorrow"), "claims")
    await refused(mint(exp=True), "claims")
    await refused(mint(nbf="soon"), "claims")


# -- issuer and audience -------------------------------------------------------------------------------------

async def test_the_issuer_must_be_the_methods_exactly() -> None:
    await refused(mint(iss="https://issuer.example/"), "issuer")
    await refused(mint(iss="https://evil.example"), "issuer")
    await refused(mint(iss=None), "issuer")
    payload = {"iss": [ISS], "sub": "workload", "aud": "coffer", "exp": NOW + 300}  # PyJWT's encode won't
    signed = jwt.PyJWS().encode(json.dumps(payload).encode(), RSA, algorithm="RS256", headers={"kid": "rsa-1"})
    await refused(signed, "issuer")


async def test_audience_the_roles_else_the_methods() -> None:
    assert (await login(mint(aud=["other", "coffer"]))).user == "workload"  # the method's
    await refused(mint(aud="other"), "audience")
    await refused(mint(aud=None), "audience")  # audiences bound: the token must name one
    await refused(mint(aud=[1, "coffer"]), "audience")
    rl = role(bound_audiences=["vault-like"])
    assert (await login(mint(aud="vault-like"), rl=rl)).user == "workload"
    await refused(mint(aud="coffer"), "audience", rl=rl)  # the role's replace the method's


async def test_an_audience_nobody_binds_is_refused() -> None:
    """As Vault's jwt auth: a token minted for some relying party doesn't log in where no audience is bound."""
    cfg = config(audiences=None)
    await refused(mint(aud="somebody-else"), "audience", cfg=cfg)
    assert (await login(mint(aud=None), cfg=cfg)).user == "workload"
    assert (await login(mint(aud=[]), cfg=cfg)).user == "workload"


# -- claims --------------------------------------------------------------------------------------------------

async def test_bound_subject_and_claims() -> None:
    rl = role(bound_subject="workload", bound_claims={"team": ["pay*", "ops"], "tier": ["1"], "on": ["true"]})
    assert (await login(mint(team=["web", "payments"], tier=1, on=True), rl=rl)).user == "workload"
    await refused(mint(sub="intruder", team="ops", tier=1, on=True), "claims", rl=rl)
    await refused(mint(team="web", tier=1, on=True), "claims", rl=rl)
    await refused(mint(tier=1, on=True), "claims", rl=rl)  # absent
    await refused(mint(team={"name": "ops"}, tier=1, on=True), "claims", rl=rl)  # not a string
    await refused(mint(team=["ops"] * 300, tier=1, on=True), "claims", rl=rl)  # too many values to match
    err = await refused(mint(team="secret-team-name", tier=1, on=True), "claims", rl=rl)
    assert "secret-team-name" not in err.message


async def test_user_and_groups_claims() -> None:
    rl = role(user_claim="email", groups_claim="groups")
    claims = await login(mint(email="a@example.com", groups=["dev", "ops", "dev"]), rl=rl)
    assert (claims.user, claims.groups) == ("a@example.com", ("dev", "ops"))
    assert (await login(mint(email="a@example.com", groups="dev"), rl=rl)).groups == ("dev",)
    assert (await login(mint(email="a@example.com"), rl=rl)).groups == ()
    await refused(mint(groups=["dev"]), "claims", rl=rl)  # no email
    await refused(mint(email=""), "claims", rl=rl)
    await refused(mint(email=42), "claims", rl=rl)
    await refused(mint(email="x" * 257), "claims", rl=rl)
    await refused(mint(email="a@example.com", groups=[1]), "claims", rl=rl)
    await refused(mint(email="a@example.com", groups=["g"] * 257), "claims", rl=rl)


def test_claim_names_starting_with_a_slash_are_json_pointers() -> None:
    claims = {"kubernetes.io": {"namespace": "prod", "a/b": {"c~d": "x"}}, "list": ["zero", "one"], "/x": 1}
    assert claim_at(claims, "/kubernetes.io/namespace") == "prod"
    assert claim_at(claims, "/kubernetes.io/a~1b/c~0d") == "x"
    assert claim_at(claims, "/list/1") == "one"
    assert claim_at(claims, "/list/01") is None and claim_at(claims, "/list/9") is None
    assert claim_at(claims, "kubernetes.io") == claims["kubernetes.io"]
    assert claim_at(claims, "/kubernetes.io/namespace/deeper") is None
    assert claim_at(claims, "/~1x") == 1


# -- recipes -------------------------------------------------------------------------------------------------

K8S_ISS = "https://kubernetes.default.svc.cluster.local"


def kubernetes_token(namespace: str, account: str, **extra: Any) -> str:
    return mint(P256, "ES256", **{"iss": K8S_ISS, "aud": ["coffer"],
                                  "sub": f"system:serviceaccount:{namespace}:{account}", **extra},
                **{"kubernetes.io": {"namespace": namespace,
                                     "serviceaccount": {"name": account, "uid": "5d4bc7a8-8f5c-4d7e-a0c1-1b2c3d4e5f60"},
                                     "pod": {"name": f"{account}-7d9f8", "uid": "0f1e2d3c-b4a5-4968-8776-655443322110"},
                                     "node": {"name": "node-1", "uid": "8a7b6c5d-4e3f-4210-9f8e-7d6c5b4a3928"}}})


async def test_recipe_kubernetes_service_account() -> None:
    cfg = JwtConfig(issuer=K8S_ISS, public_keys=[pem(P256)], audiences=["coffer"])
    src = KeySource(cfg, OutboundPolicy())
    by_subject = role(bound_subject="system:serviceaccount:payments:api")
    by_claims = role(bound_claims={"/kubernetes.io/namespace": ["payments"],
                                   "/kubernetes.io/serviceaccount/name": ["api", "worker-*"]})
    for rl in (by_subject, by_claims):
        claims = await login(kubernetes_token("payments", "api"), src=src, cfg=cfg, rl=rl)
        assert claims.user == "system:serviceaccount:payments:api"
        await refused(kubernetes_token("payments-dev", "api"), "claims", src=src, cfg=cfg, rl=rl)
        await refused(kubernetes_token("other", "api"), "claims", src=src, cfg=cfg, rl=rl)
    assert (await login(kubernetes_token("payments", "worker-3"), src=src, cfg=cfg, rl=by_claims)).user
    await refused(kubernetes_token("payments", "debug"), "claims", src=src, cfg=cfg, rl=by_claims)
    await refused(kubernetes_token("payments", "api", aud=["https://kubernetes.default.svc"]), "audience",
                  src=src, cfg=cfg, rl=by_claims)  # the default audience is the API server's, not ours


GH_ISS = "https://token.actions.githubusercontent.com"


def github_token(repository: str, ref: str, environment: str | None, **extra: Any) -> str:
    sub = f"repo:{repository}:environment:{environment}" if environment else f"repo:{repository}:ref:{ref}"
    return mint(RSA, "RS256", iss=GH_ISS, aud="https://github.com/acme", sub=sub, repository=repository,
                repository_owner=repository.split("/")[0], ref=ref, ref_type="branch", environment=environment,
                workflow="deploy", job_workflow_ref=f"{repository}/.github/workflows/deploy.yml@{ref}",
                event_name="push", run_id="1234567890", actor="octocat", **extra)


async def test_recipe_github_actions() -> None:
    cfg = JwtConfig(issuer=GH_ISS, jwks_url=f"{GH_ISS}/.well-known/jwks", audiences=["https://github.com/acme"])
    src = source(cfg, keys=[jwk(RSA, "rsa-1")])
    deploy = role(bound_subject="repo:acme/shop:environment:prod",
                  bound_claims={"repository": ["acme/shop"], "ref": ["refs/heads/main"], "environment": ["prod"]})
    assert (await login(github_token("acme/shop", "refs/heads/main", "prod"), src=src, cfg=cfg, rl=deploy)).user == \
        "repo:acme/shop:environment:prod"
    await refused(github_token("acme/shop", "refs/heads/main", "staging"), "claims", src=src, cfg=cfg, rl=deploy)
    await refused(github_token("acme/shop-fork", "refs/heads/main", "prod"), "claims", src=src, cfg=cfg, rl=deploy)
    await refused(github_token("acme/shop", "refs/heads/evil", "prod"), "claims", src=src, cfg=cfg, rl=deploy)
    any_branch = role(bound_claims={"repository": ["acme/*"], "ref": ["refs/heads/**"]}, user_claim="repository")
    claims = await login(github_token("acme/web", "refs/heads/feature/x", None), src=src, cfg=cfg, rl=any_branch)
    assert claims.user == "acme/web"
    await refused(github_token("acme/web", "refs/tags/v1", None), "claims", src=src, cfg=cfg, rl=any_branch)
    await refused(github_token("evil/web", "refs/heads/main", None), "claims", src=src, cfg=cfg, rl=any_branch)


GL_ISS = "https://gitlab.example.com"


def gitlab_token(project_path: str, ref: str, ref_type: str, **extra: Any) -> str:
    namespace = project_path.rsplit("/", 1)[0]
    claims = {"iss": GL_ISS, "aud": "https://coffer.example.com",
              "sub": f"project_path:{project_path}:ref_type:{ref_type}:ref:{ref}", "namespace_id": "42",
              "namespace_path": namespace, "project_id": "7", "project_path": project_path, "user_login": "dev",
              "pipeline_source": "push", "ref": ref, "ref_type": ref_type, "ref_protected": "true",
              "environment": "production"}
    return mint(ED, "EdDSA", **{**claims, **extra})


async def test_recipe_gitlab_ci() -> None:
    cfg = JwtConfig(issuer=GL_ISS, audiences=["https://coffer.example.com"], jwks_url=f"{GL_ISS}/oauth/discovery/keys")
    src = source(cfg, keys=[jwk(ED, "ed-1")])
    rl = role(bound_claims={"namespace_path": ["platform/**"], "ref": ["main"], "ref_type": ["branch"],
                            "ref_protected": ["true"]}, user_claim="project_path")
    claims = await login(gitlab_token("platform/infra/deployer", "main", "branch"), src=src, cfg=cfg, rl=rl)
    assert claims.user == "platform/infra/deployer"
    await refused(gitlab_token("platform/infra/deployer", "main", "tag"), "claims", src=src, cfg=cfg, rl=rl)
    await refused(gitlab_token("other/deployer", "main", "branch"), "claims", src=src, cfg=cfg, rl=rl)
    await refused(gitlab_token("platform/deployer", "main", "branch", ref_protected="false"), "claims",
                  src=src, cfg=cfg, rl=rl)


# -- models --------------------------------------------------------------------------------------------------

def test_config_model_bounds() -> None:
    assert config().leeway_seconds == 60 and not config().discovery
    assert JwtConfig(issuer=ISS).discovery
    for bad in ({"issuer": ISS, "extra": 1}, {"issuer": 7}, {"issuer": ISS, "audiences": ["a"] * 21},
                {"issuer": ISS, "public_keys": ["not a key"]}, {"issuer": "x" * 2049},
                {"issuer": ISS, "jwks_url": f"{ISS}/jwks", "public_keys": [pem(RSA)]},
                {"issuer": ISS, "public_keys": [pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))]},
                {"issuer": ISS, "public_keys": [pem(ec.generate_private_key(ec.SECP521R1()))]},
                {"issuer": "https://a.example\r\nX-Injected: 1"}):
        with pytest.raises(ValidationError):
            parse(JwtConfig, bad)
    with pytest.raises(InvalidDuration):
        parse(JwtConfig, {"issuer": ISS, "leeway": "11m"})
    with pytest.raises(InvalidDuration):
        parse(JwtConfig, {"issuer": ISS, "leeway": "soon"})


def test_role_model_bounds() -> None:
    assert role().ttl_seconds == 900 and role().user_claim == "sub"
    for bad in ({"scopes": ["root"]}, {}, {"scopes": [], "policies": ["Bad Name"]},
                {"scopes": [], "bound_claims": {f"c{i}": ["x"] for i in range(21)}},
                {"scopes": [], "bound_claims": {"c": ["x"] * 21}}, {"scopes": [], "bound_claims": {"c": []}},
                {"scopes": [], "bound_claims": {"x" * 129: ["x"]}}, {"scopes": [], "bound_claims": {"/a~2": ["x"]}},
                {"scopes": [], "user_claim": ""}, {"scopes": [], "policies": ["p"] * 51}, {"scopes": [], "x": 1}):
        with pytest.raises(ValidationError):
            parse(RoleBody, bad)
    with pytest.raises(InvalidGlob):
        parse(RoleBody, {"scopes": [], "bound_claims": {"ref": ["refs/**x"]}})
    with pytest.raises(InvalidDuration):
        parse(RoleBody, {"scopes": [], "ttl": "25h"})


def test_urls_must_be_https_unless_the_policy_allows_http() -> None:
    check_urls(JwtConfig(issuer="https://issuer.example"), OutboundPolicy())
    check_urls(JwtConfig(issuer="kubernetes/serviceaccount", public_keys=[pem(RSA)]), OutboundPolicy())
    for cfg, field in ((JwtConfig(issuer="http://issuer.example"), "config.issuer"),
                       (JwtConfig(issuer=ISS, jwks_url="http://issuer.example/jwks"), "config.jwks_url"),
                       (JwtConfig(issuer="not a url"), "config.issuer"),
                       (JwtConfig(issuer="https://user:pw@issuer.example"), "config.issuer")):
        with pytest.raises(InvalidConfig) as caught:
            check_urls(cfg, OutboundPolicy())
        assert caught.value.details["field"] == field
    check_urls(JwtConfig(issuer="http://issuer.example"), OutboundPolicy(allow_http=True))


async def test_verification_is_fast_enough_for_the_login_benchmark() -> None:
    src, cfg, rl, token = source(), config(), role(), mint()
    await login(token, src=src, cfg=cfg, rl=rl)
    started = time.perf_counter()
    for _ in range(200):
        await verify(token, src, cfg, rl, now=NOW)
    assert time.perf_counter() - started < 2.0
