"""JWT/OIDC auth (issue #18) through hvac against the real binary and a real OpenID Connect
provider process (Ops/oidc_provider.py, started by Ops/test): static PEM keys, a JWKS URL
with rotation and caching, OIDC discovery over TLS with a private CA, the authorization-
code flow with PKCE and single-use state, form_post, groups claims as external groups,
Coffer's own identity tokens as the issuer, tenant isolation and the tenant outbound policy.
Every token here is signed with the `cryptography` package or by the provider, never by
Coffer's code (except the identity-token case, which is the point of it)."""

from __future__ import annotations

import base64
import json
import os
import time
from urllib.parse import parse_qs, urlsplit

import hvac
import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import PEER_BAO, api_call, unique

OIDC_URL = os.environ.get("COFFER_TEST_OIDC_URL", "")
OIDC_TLS_URL = os.environ.get("COFFER_TEST_OIDC_TLS_URL", "")
OIDC_CA = os.environ.get("COFFER_TEST_OIDC_CA", "")
needs_oidc = pytest.mark.skipif(not OIDC_URL, reason="COFFER_TEST_OIDC_URL is not set (Ops/test starts Ops/oidc-provider)")


def pem(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(private, alg, claims, headers=None, ttl=300):
    now = int(time.time())
    body = {"iat": now, "exp": now + ttl, **claims}
    return pyjwt.encode(body, private, algorithm=alg, headers=headers)


def errors(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


def enable_jwt(client, path=None, method="jwt"):
    path = path or unique("jwt")
    client.sys.enable_auth_method(method_type=method, path=path)
    return path


def accessor(client, path):
    return client.sys.list_auth_methods()["data"][f"{path}/"]["accessor"]


def admin(path, body):
    r = requests.post(f"{OIDC_URL}/admin/{path}", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_static_keys_login_claims_and_refusals(dev_server, root_client):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    path = enable_jwt(root_client)
    jwt_api = root_client.auth.jwt
    jwt_api.configure(jwt_validation_pubkeys=[pem(ec_key), pem(rsa_key), pem(ed_key)], bound_issuer="https://issuer.example", path=path)
    cfg = jwt_api.read_config(path=path)["data"]
    assert len(cfg["jwt_validation_pubkeys"]) == 3 and cfg["bound_issuer"] == "https://issuer.example"
    jwt_api.create_role(
        "ci", user_claim="sub", allowed_redirect_uris=[], role_type="jwt", bound_audiences=["coffer"],
        bound_claims={"project": ["alpha", "beta"], "/ci/branch": "main"}, claim_mappings={"email": "mail"},
        token_policies=["ci-read"], token_ttl="10m", path=path)
    role = jwt_api.read_role("ci", path=path)["data"]
    assert role["role_type"] == "jwt" and role["bound_audiences"] == ["coffer"] and role["token_policies"] == ["ci-read"]
    assert role["claim_mappings"] == {"email": "mail"} and role["token_ttl"] == 600 and role["expiration_leeway"] == 0
    assert jwt_api.list_roles(path=path)["data"]["keys"] == ["ci"]

    good = {"iss": "https://issuer.example", "sub": "build-7", "aud": ["coffer", "other"], "project": "beta",
            "ci": {"branch": "main"}, "email": "b7@example.com"}
    for key, alg in [(ec_key, "ES256"), (rsa_key, "RS256"), (rsa_key, "PS256"), (ed_key, "EdDSA")]:
        r = jwt_api.jwt_login("ci", sign(key, alg, good), use_token=False, path=path)["auth"]
        assert r["policies"] == ["ci-read", "default"] and r["lease_duration"] == 600, alg
        assert r["metadata"] == {"mail": "b7@example.com", "role": "ci"}
    token = r["client_token"]
    look = dev_server.client(token).auth.token.lookup_self()["data"]
    assert look["display_name"].endswith("build-7") and look["entity_id"]
    alias = root_client.secrets.identity.read_entity(look["entity_id"])["data"]["aliases"][0]
    assert alias["name"] == "build-7" and alias["mount_accessor"] == accessor(root_client, path)

    def refused(token_text, why, role_name="ci"):
        with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
            jwt_api.jwt_login(role_name, token_text, use_token=False, path=path)
        # OpenBao answers every signature refusal alike; Coffer names a refused algorithm.
        assert why in errors(ex) or (PEER_BAO and "validated the token signature" in errors(ex)), errors(ex)

    refused(sign(ec_key, "ES256", good, ttl=-400), "token is expired")
    refused(sign(ec_key, "ES256", {**good, "aud": "someone-else"}), "invalid audience")
    refused(sign(ec_key, "ES256", {**good, "iss": "https://evil.example"}), "invalid issuer")
    refused(sign(ec_key, "ES256", {**good, "project": "gamma"}), 'claim "project" does not match')
    refused(sign(ec_key, "ES256", {**good, "ci": {"branch": "dev"}}), 'claim "/ci/branch" does not match')
    refused(sign(ec_key, "ES256", {k: v for k, v in good.items() if k != "sub"}), 'claim "sub" not found')
    refused(sign(ec.generate_private_key(ec.SECP256R1()), "ES256", good), "no known key successfully validated the token signature")
    # alg "none", and HS256 keyed with the public key (the classic confusion), are never accepted.
    refused(pyjwt.encode({**good, "exp": int(time.time()) + 60}, None, algorithm="none"), "unsupported signing algorithm")
    hs = base64.urlsafe_b64encode
    header = hs(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    payload = hs(json.dumps({**good, "exp": int(time.time()) + 60}).encode()).rstrip(b"=").decode()
    import hashlib
    import hmac
    sig = hs(hmac.new(pem(rsa_key).encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    refused(f"{header}.{payload}.{sig}", "unsupported signing algorithm")
    # A signature flipped by one byte.
    t = sign(ec_key, "ES256", good)
    h, p, s = t.split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=="))
    raw[5] ^= 1
    refused(f"{h}.{p}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}", "validated the token signature")
    refused("not-a-jwt", "three")
    refused(sign(ec_key, "ES256", good), 'role "nope" could not be found', role_name="nope")

    # Only the algorithms configured are accepted; a role with no audiences refuses tokens that carry one.
    jwt_api.configure(jwt_validation_pubkeys=[pem(ec_key), pem(rsa_key)], jwt_supported_algs=["ES256"], path=path)
    refused(sign(rsa_key, "RS256", {**good, "iss": "x"}), "token signed with unexpected algorithm")
    jwt_api.create_role("noaud", user_claim="sub", allowed_redirect_uris=[], role_type="jwt", bound_subject="build-7", path=path)
    refused(sign(ec_key, "ES256", good), "audience claim found in JWT but no audiences bound to the role", role_name="noaud")
    ok = jwt_api.jwt_login("noaud", sign(ec_key, "ES256", {k: v for k, v in good.items() if k != "aud"}), use_token=False, path=path)
    assert ok["auth"]["client_token"]

    # Bad configurations and roles are refused with Vault's texts and change nothing.
    bad_cfg = [
        ({"jwks_url": f"{OIDC_URL or 'http://127.0.0.1:1'}/x", "jwt_validation_pubkeys": [pem(ec_key)]}, "exactly one of"),
        ({"jwt_validation_pubkeys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]}, "error parsing public key"),
        ({"oidc_discovery_url": "https://x.example/.well-known/openid-configuration"}, ".well-known"),
        ({"jwt_validation_pubkeys": [pem(ec_key)], "oidc_client_id": "a"}, "both 'oidc_client_id' and 'oidc_client_secret'"),
        ({"jwt_validation_pubkeys": [pem(ec_key)], "jwt_supported_algs": ["HS256"]}, "invalid jwt_supported_algs"),
    ]
    for body, why in bad_cfg:
        r = api_call(dev_server, "POST", f"auth/{path}/config", body=body)
        assert r.status_code == 400 and why in " ".join(r.json()["errors"]), (body, r.text)
    assert jwt_api.read_config(path=path)["data"]["jwt_supported_algs"] == ["ES256"]
    for body, why in [
        ({"role_type": "jwt", "bound_audiences": ["a"]}, "a user claim must be defined"),
        ({"role_type": "jwt", "user_claim": "sub"}, "must have at least one bound constraint"),
        ({"user_claim": "sub"}, "'allowed_redirect_uris' must be set"),
        ({"role_type": "x", "user_claim": "sub"}, "invalid 'role_type'"),
        ({"role_type": "jwt", "user_claim": "sub", "bound_subject": "s", "bound_claims_type": "regex"}, "invalid 'bound_claims_type'"),
        ({"role_type": "jwt", "user_claim": "sub", "bound_subject": "s", "claim_mappings": {"a": "role"}}, "reserved"),
        ({"role_type": "jwt", "user_claim": "sub", "bound_subject": "s", "expiration_leeway": "soon"}, "invalid duration"),
    ]:
        r = api_call(dev_server, "POST", f"auth/{path}/role/broken", body=body)
        assert r.status_code == 400 and why in " ".join(r.json()["errors"]), (body, r.text)
    assert api_call(dev_server, "GET", f"auth/{path}/role/broken").status_code == 404


def test_failed_logins_are_audited(dev_server, root_client, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = enable_jwt(root_client)
    log = tmp_path / "audit.log"
    dev = unique("aud")
    root_client.sys.enable_audit_device("file", path=dev, options={"file_path": str(log)})
    try:
        root_client.auth.jwt.configure(jwt_validation_pubkeys=[pem(key)], path=path)
        root_client.auth.jwt.create_role("r", user_claim="sub", allowed_redirect_uris=[], role_type="jwt", bound_audiences=["x"], path=path)
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root_client.auth.jwt.jwt_login("r", sign(key, "ES256", {"sub": "u", "aud": "y"}), use_token=False, path=path)
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        failed = [e for e in entries if e["type"] == "response" and e["request"]["path"] == f"auth/{path}/login"]
        assert failed and "invalid audience" in failed[-1]["error"]
        # The token itself never appears in the audit log in clear.
        assert "eyJ" not in log.read_text()
    finally:
        root_client.sys.disable_audit_device(dev)


@needs_oidc
def test_jwks_url_cache_rotation_and_unknown_kid(dev_server, root_client):
    path = enable_jwt(root_client)
    jwt_api = root_client.auth.jwt
    jwt_api.configure(jwks_url=f"{OIDC_URL}/.well-known/jwks.json", bound_issuer=OIDC_URL, path=path)
    jwt_api.create_role("svc", user_claim="sub", allowed_redirect_uris=[], role_type="jwt", bound_audiences=["coffer"],
                        token_policies=["svc"], path=path)
    requests.delete(f"{OIDC_URL}/admin/requests", timeout=10)

    def mint(**kw):
        return admin("mint", {"claims": {"sub": "worker", "aud": "coffer"}, **kw})["token"]

    def jwks_fetches():
        return requests.get(f"{OIDC_URL}/admin/requests", timeout=10).json().get("/.well-known/jwks.json", 0)

    for _ in range(3):
        assert jwt_api.jwt_login("svc", mint(), use_token=False, path=path)["auth"]["policies"] == ["default", "svc"]
    assert jwt_api.jwt_login("svc", mint(alg="ES256"), use_token=False, path=path)["auth"]["client_token"]
    assert jwks_fetches() == 1, "the key set is cached between logins"
    new_kid = admin("rotate", {})["kid"]
    tok = mint()
    assert pyjwt.get_unverified_header(tok)["kid"] == new_kid
    assert jwt_api.jwt_login("svc", tok, use_token=False, path=path)["auth"]["client_token"]
    assert jwks_fetches() == 2, "an unknown kid refetches the key set once"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        jwt_api.jwt_login("svc", mint(kid="no-such-kid"), use_token=False, path=path)
    assert "error verifying token signature" in errors(ex)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        jwt_api.jwt_login("svc", mint(issuer="https://other.example"), use_token=False, path=path)
    assert "invalid issuer" in errors(ex)
    # An unreachable JWKS URL is refused at configuration time, as in Vault.
    r = api_call(dev_server, "POST", f"auth/{path}/config", body={"jwks_url": "http://127.0.0.1:9/jwks"})
    assert r.status_code == 400 and "error checking jwks URL" in r.json()["errors"][0]
    assert jwt_api.read_config(path=path)["data"]["jwks_url"].startswith(OIDC_URL)


@needs_oidc
def test_groups_claim_maps_provider_groups_to_policies(dev_server, root_client):
    path = enable_jwt(root_client)
    jwt_api = root_client.auth.jwt
    jwt_api.configure(jwks_url=f"{OIDC_URL}/.well-known/jwks.json", path=path)
    jwt_api.create_role("dev", user_claim="email", groups_claim="groups", allowed_redirect_uris=[], role_type="jwt",
                        bound_audiences=["coffer"], path=path)
    group = unique("admins")
    ident = root_client.secrets.identity
    gid = ident.create_or_update_group(name=group, group_type="external", policies=["idp-admins"])["data"]["id"]
    ident.create_or_update_group_alias(name="platform-admins", mount_accessor=accessor(root_client, path), canonical_id=gid)
    email = unique("u") + "@example.com"

    def login(groups):
        tok = admin("mint", {"claims": {"sub": "x", "email": email, "aud": "coffer", "groups": groups}})["token"]
        return jwt_api.jwt_login("dev", tok, use_token=False, path=path)["auth"]

    a = login(["platform-admins", "readers"])
    assert "idp-admins" in a["identity_policies"] and "idp-admins" in a["policies"]
    members = ident.read_group(gid)["data"]["member_entity_ids"]
    assert a["entity_id"] in members
    b = login(["readers"])
    assert b["entity_id"] == a["entity_id"]
    assert "idp-admins" not in (b.get("identity_policies") or [])
    assert a["entity_id"] not in (ident.read_group(gid)["data"]["member_entity_ids"] or [])
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        jwt_api.jwt_login("dev", admin("mint", {"claims": {"sub": "x", "email": email, "aud": "coffer"}})["token"], use_token=False, path=path)
    assert '"groups" claim not found' in errors(ex)


@needs_oidc
def test_discovery_over_tls_needs_the_ca(dev_server, root_client):
    path = enable_jwt(root_client)
    r = api_call(dev_server, "POST", f"auth/{path}/config", body={"oidc_discovery_url": OIDC_TLS_URL})
    assert r.status_code == 400 and "error checking oidc discovery URL" in r.json()["errors"][0], r.text
    ca = open(OIDC_CA).read()
    root_client.auth.jwt.configure(oidc_discovery_url=OIDC_TLS_URL, oidc_discovery_ca_pem=ca, path=path)
    cfg = root_client.auth.jwt.read_config(path=path)["data"]
    assert cfg["status"] == "valid" and cfg["oidc_discovery_url"] == OIDC_TLS_URL
    root_client.auth.jwt.create_role("r", user_claim="sub", allowed_redirect_uris=[], role_type="jwt", bound_audiences=["c"], path=path)
    tok = requests.post(f"{OIDC_TLS_URL}/admin/mint", json={"claims": {"sub": "tls-user", "aud": "c"}}, verify=OIDC_CA, timeout=10).json()["token"]
    assert pyjwt.decode(tok, options={"verify_signature": False})["iss"] == OIDC_TLS_URL
    assert root_client.auth.jwt.jwt_login("r", tok, use_token=False, path=path)["auth"]["client_token"]


def start_flow(root_client, path, role="web", redirect="http://127.0.0.1:8250/oidc/callback"):
    r = root_client.auth.oidc.oidc_authorization_url_request(role=role, redirect_uri=redirect, path=path)
    return r["data"]["auth_url"]


@needs_oidc
def test_authorization_code_flow_with_pkce(dev_server, root_client):
    client_id, secret = unique("client"), unique("secret")
    redirect = "http://127.0.0.1:8250/oidc/callback"
    admin("clients", {"client_id": client_id, "client_secret": secret, "redirect_uris": [redirect]})
    user = unique("alice")
    admin("users", {"username": user, "claims": {"email": f"{user}@example.com", "groups": ["eng"]}})
    path = enable_jwt(root_client, method="oidc")
    oidc = root_client.auth.oidc
    oidc.configure(oidc_discovery_url=OIDC_URL, oidc_client_id=client_id, oidc_client_secret=secret, default_role="web", path=path)
    cfg = oidc.read_config(path=path)["data"]
    assert "oidc_client_secret" not in cfg and cfg["oidc_client_id"] == client_id and cfg["namespace_in_state"] is True
    oidc.create_role("web", user_claim="email", allowed_redirect_uris=[redirect], oidc_scopes=["profile"],
                     claim_mappings={"email": "email"}, token_policies=["web"], path=path)

    url = start_flow(root_client, path)
    q = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{OIDC_URL}/authorize?")
    assert q["client_id"] == [client_id] and q["code_challenge_method"] == ["S256"] and q["response_type"] == ["code"]
    assert q["scope"] == ["openid profile"] and q["redirect_uri"] == [redirect] and q["nonce"] and q["state"]
    resp = requests.get(url + f"&login_hint={user}", allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text
    back = parse_qs(urlsplit(resp.headers["Location"]).query)
    state, code = back["state"][0], back["code"][0]
    done = oidc.oidc_callback(state=state, nonce=q["nonce"][0], code=code, path=path)
    auth = done["auth"]
    assert auth["policies"] == ["default", "web"] and auth["metadata"] == {"email": f"{user}@example.com", "role": "web"}
    assert dev_server.client(auth["client_token"]).auth.token.lookup_self()["data"]["meta"]["email"] == f"{user}@example.com"
    # The state is good once: a replay is refused before the provider is asked again.
    r = api_call(dev_server, "GET", f"auth/{path}/oidc/callback?state={state}&code={code}", token=None)
    assert r.status_code == 400 and "Expired or missing OAuth state" in r.json()["errors"][0]
    # A made-up state, a redirect URI the role does not allow, a provider error, a stolen code.
    r = api_call(dev_server, "GET", f"auth/{path}/oidc/callback?state=forged&code=x", token=None)
    assert r.status_code == 400
    assert start_flow(root_client, path, redirect="https://evil.example/cb") == ""
    url = start_flow(root_client, path)
    st = parse_qs(urlsplit(url).query)["state"][0]
    r = api_call(dev_server, "GET", f"auth/{path}/oidc/callback?state={st}&error=access_denied", token=None)
    assert r.status_code == 400 and "access_denied" in r.json()["errors"][0]
    url = start_flow(root_client, path)
    st = parse_qs(urlsplit(url).query)["state"][0]
    r = api_call(dev_server, "GET", f"auth/{path}/oidc/callback?state={st}&code=not-a-real-code", token=None)
    assert r.status_code == 400 and "Error exchanging oidc code" in r.json()["errors"][0] and "invalid_grant" in r.json()["errors"][0]
    # An unknown user at the provider comes back as access_denied.
    url = start_flow(root_client, path)
    resp = requests.get(url + "&login_hint=nobody", allow_redirects=False, timeout=10)
    back = parse_qs(urlsplit(resp.headers["Location"]).query)
    r = api_call(dev_server, "GET", f"auth/{path}/oidc/callback?state={back['state'][0]}&error={back['error'][0]}", token=None)
    assert r.status_code == 400 and "access_denied" in r.json()["errors"][0]
    # A JWT login against an oidc role is refused.
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        oidc.jwt_login("web", "x.y.z", use_token=False, path=path)
    assert "role with oidc role_type is not allowed" in errors(ex)


@needs_oidc
def test_form_post_implicit_flow(dev_server, root_client):
    client_id, secret = unique("client"), unique("secret")
    path = unique("oidcfp")
    redirect = f"{dev_server.url}/v1/auth/{path}/oidc/callback"
    admin("clients", {"client_id": client_id, "client_secret": secret, "redirect_uris": [redirect]})
    user = unique("bob")
    admin("users", {"username": user, "claims": {}})
    root_client.sys.enable_auth_method(method_type="oidc", path=path)
    oidc = root_client.auth.oidc
    oidc.configure(oidc_discovery_url=OIDC_URL, oidc_client_id=client_id, oidc_client_secret=secret,
                   oidc_response_mode="form_post", oidc_response_types=["id_token"], path=path)
    oidc.create_role("r", user_claim="sub", allowed_redirect_uris=[redirect], path=path)
    url = start_flow(root_client, path, role="r", redirect=redirect)
    q = parse_qs(urlsplit(url).query)
    assert q["response_type"] == ["id_token"] and q["response_mode"] == ["form_post"] and "code_challenge" not in q
    page = requests.get(url + f"&login_hint={user}", timeout=10)
    fields = dict(__import__("re").findall(r'name="([a-z_]+)" value="([^"]*)"', page.text))
    assert "id_token" in fields and "state" in fields, page.text
    posted = requests.post(redirect, data=fields, timeout=10)
    assert posted.status_code == 200 and posted.headers["Content-Type"].startswith("text/html")
    r = api_call(dev_server, "GET", f"auth/{path}/oidc/callback?state={fields['state']}&code=no_code", token=None)
    assert r.status_code == 200, r.text
    assert r.json()["auth"]["metadata"] == {"role": "r"} and r.json()["auth"]["client_token"]


def test_identity_tokens_of_coffer_log_in_through_jwks(dev_server, root_client):
    """Coffer's own identity/oidc tokens (#17) as the JWT issuer: the JWKS Coffer publishes
    verifies them, as any relying party would."""
    ident = root_client.secrets.identity
    key, role = unique("k"), unique("r")
    ident.create_named_key(key, algorithm="ES256", allowed_client_ids=["*"])
    root_client.write(f"identity/oidc/role/{role}", key=key)
    client_id = root_client.read(f"identity/oidc/role/{role}")["data"]["client_id"]
    path = enable_jwt(root_client)
    root_client.auth.jwt.configure(jwks_url=f"{dev_server.url}/v1/identity/oidc/.well-known/keys", path=path)
    root_client.auth.jwt.create_role("wl", user_claim="sub", allowed_redirect_uris=[], role_type="jwt",
                                     bound_audiences=[client_id], token_policies=["workload"], path=path)
    # A userpass user's identity token logs it in through the JWT method.
    up = unique("up")
    root_client.sys.enable_auth_method(method_type="userpass", path=up)
    root_client.sys.create_or_update_policy("id-token", 'path "identity/oidc/token/*" { capabilities = ["read"] }')
    root_client.auth.userpass.create_or_update_user("w1", password="pw", policies=["id-token"], mount_point=up)
    user_token = root_client.auth.userpass.login("w1", "pw", mount_point=up, use_token=False)["auth"]
    idt = dev_server.client(user_token["client_token"]).read(f"identity/oidc/token/{role}")["data"]["token"]
    auth = root_client.auth.jwt.jwt_login("wl", idt, use_token=False, path=path)["auth"]
    assert "workload" in auth["policies"]
    assert pyjwt.decode(idt, options={"verify_signature": False})["sub"] == user_token["entity_id"]


@pytest.mark.skipif(PEER_BAO, reason="Coffer's tenants and outbound policy")
def test_tenants_are_isolated_and_cannot_fetch_from_loopback(dev_server, root_client):
    key = ec.generate_private_key(ec.SECP256R1())
    a, b = unique("ta").replace("-", "")[:12], unique("tb").replace("-", "")[:12]
    for t in (a, b):
        assert api_call(dev_server, "POST", f"sys/namespaces/{t}").status_code == 200
    ca = hvac.Client(url=dev_server.url, token="root", namespace=a)
    cb = hvac.Client(url=dev_server.url, token="root", namespace=b)
    for c, aud in ((ca, "tenant-a"), (cb, "tenant-b")):
        c.sys.enable_auth_method(method_type="jwt", path="jwt")
        c.auth.jwt.configure(jwt_validation_pubkeys=[pem(key)], path="jwt")
        c.auth.jwt.create_role("r", user_claim="sub", allowed_redirect_uris=[], role_type="jwt", bound_audiences=[aud], path="jwt")
    tok = sign(key, "ES256", {"sub": "svc", "aud": "tenant-a"})
    got = ca.auth.jwt.jwt_login("r", tok, use_token=False, path="jwt")["auth"]
    assert got["client_token"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        cb.auth.jwt.jwt_login("r", tok, use_token=False, path="jwt")
    assert "invalid audience" in errors(ex)
    # A tenant's JWKS or discovery URL on the node's loopback is refused (no SSRF).
    r = api_call(dev_server, "POST", "auth/jwt/config", ns=a, body={"jwks_url": f"{OIDC_URL or 'http://127.0.0.1:9'}/.well-known/jwks.json"})
    assert r.status_code == 400 and "not allowed from this namespace" in r.json()["errors"][0], r.text
    r = api_call(dev_server, "POST", "auth/jwt/config", ns=a, body={"oidc_discovery_url": "http://169.254.169.254"})
    assert r.status_code == 400 and "not allowed from this namespace" in r.json()["errors"][0], r.text


@needs_oidc
@pytest.mark.skipif(PEER_BAO, reason="Coffer's tenants and outbound policy")
def test_tenant_oidc_flow_carries_its_namespace_in_the_state():
    """A tenant's OIDC login with one redirect URI for every namespace: auth_url takes the
    namespace off the redirect URI and puts it in the state; the provider's redirect (with no
    namespace header) reaches the tenant's mount. The operator allows the loopback provider."""
    from test_usage import Node
    node = Node(extra='database_allowed_hosts = ["127.0.0.1"]')
    try:
        t = unique("oi").replace("-", "")[:12]
        assert node.call("POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=node.srv.url, token=node.root, namespace=t)
        client_id, secret, user = unique("c"), unique("s"), unique("u")
        redirect = "http://127.0.0.1:8250/oidc/callback"
        admin("clients", {"client_id": client_id, "client_secret": secret, "redirect_uris": [redirect]})
        admin("users", {"username": user, "claims": {}})
        c.sys.enable_auth_method(method_type="oidc", path="oidc")
        c.auth.oidc.configure(oidc_discovery_url=OIDC_URL, oidc_client_id=client_id, oidc_client_secret=secret, path="oidc")
        c.auth.oidc.create_role("r", user_claim="sub", allowed_redirect_uris=[redirect], token_policies=["tenant-web"], path="oidc")
        url = c.auth.oidc.oidc_authorization_url_request(role="r", redirect_uri=f"{redirect}?namespace={t}", path="oidc")["data"]["auth_url"]
        q = parse_qs(urlsplit(url).query)
        assert q["redirect_uri"] == [redirect] and q["state"][0].endswith(f",ns={t}")
        back = requests.get(url + f"&login_hint={user}", allow_redirects=False, timeout=10).headers["Location"]
        b = parse_qs(urlsplit(back).query)
        r = requests.get(f"{node.srv.url}/v1/auth/oidc/oidc/callback", params={"state": b["state"][0], "code": b["code"][0]}, timeout=30)
        assert r.status_code == 200, r.text
        tok = r.json()["auth"]["client_token"]
        look = requests.get(f"{node.srv.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": tok, "X-Vault-Namespace": t}, timeout=10).json()["data"]
        assert "tenant-web" in look["policies"] and look["namespace_path"] == f"{t}/"
    finally:
        node.srv.dispose()
