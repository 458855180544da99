"""Kubernetes auth (issue #18) through hvac against the real binary. No API server runs
here, so the test harness serves the TokenReview API on loopback the way the real one
answers (authentication.k8s.io/v1: status.authenticated, status.user.username/uid,
status.audiences; 401 for a reviewer it does not know), verifying each token with its own
signing keys. Service-account JWTs are real ES256/RS256 tokens made with `cryptography`,
in both the legacy (secret) and the projected claim layouts; the `pem_keys` path verifies
them locally."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import hvac
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import PEER_BAO, api_call, free_port, unique

# OpenBao reads the pod's own CA and token from /var/run/secrets unless told not to, which
# needs a CA: these tests are Coffer's (no API server runs here to compare with).
pytestmark = pytest.mark.skipif(PEER_BAO, reason="no Kubernetes API server for OpenBao to read its local CA from")

REVIEWER = "reviewer-" + uuid.uuid4().hex
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def cert_pem(private) -> str:
    """A self-signed certificate for the key: pem_keys takes certificates too (hvac only sends those)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sa-signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(private, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def sa_token(ns, name, uid=None, aud=("coffer",), key=EC_KEY, alg="ES256", projected=True, ttl=600, iss="https://kubernetes.default.svc"):
    now = int(time.time())
    uid = uid or str(uuid.uuid4())
    if projected:
        claims = {"iss": iss, "sub": f"system:serviceaccount:{ns}:{name}", "aud": list(aud), "iat": now, "nbf": now, "exp": now + ttl,
                  "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}, "pod": {"name": "p", "uid": "x"}}}
    else:
        claims = {"iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{ns}:{name}",
                  "kubernetes.io/serviceaccount/namespace": ns, "kubernetes.io/serviceaccount/secret.name": f"{name}-token-abcde",
                  "kubernetes.io/serviceaccount/service-account.name": name, "kubernetes.io/serviceaccount/service-account.uid": uid}
    return pyjwt.encode(claims, key, algorithm=alg, headers={"kid": "k1"}), uid


class TokenReviewAPI:
    """POST /apis/authentication.k8s.io/v1/tokenreviews, answered as the API server does."""

    def __init__(self):
        self.revoked: set[str] = set()
        self.calls = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the API server

            def log_message(self, *a):
                pass

            def do_POST(self):
                api.calls += 1
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    return self.answer(404, {"kind": "Status", "status": "Failure", "code": 404})
                bearer = self.headers.get("Authorization", "")
                token = body.get("spec", {}).get("token", "")
                if bearer not in (f"Bearer {REVIEWER}", f"Bearer {token}"):
                    return self.answer(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
                wanted = body.get("spec", {}).get("audiences") or []
                status = {"authenticated": False, "error": "invalid bearer token"}
                for key in (EC_KEY, RSA_KEY):
                    try:
                        claims = pyjwt.decode(token, key.public_key(), algorithms=["ES256", "RS256"], options={"verify_aud": False})
                    except Exception:  # a wrong signature, or a key of the other type
                        continue
                    k = claims.get("kubernetes.io", {})
                    ns, sa = k.get("namespace"), k.get("serviceaccount", {})
                    if sa.get("uid") in api.revoked:
                        break
                    auds = [a for a in claims.get("aud", []) if not wanted or a in wanted]
                    status = {"authenticated": True, "audiences": auds,
                              "user": {"username": f"system:serviceaccount:{ns}:{sa.get('name')}", "uid": sa.get("uid"),
                                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]}}
                    break
                self.answer(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": body.get("spec"), "status": status})

            def answer(self, code, doc):
                raw = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def k8s_api():
    api = TokenReviewAPI()
    yield api
    api.server.shutdown()


def errors(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


def test_token_review_login_bindings_and_refusals(dev_server, root_client, k8s_api):
    path = unique("k8s")
    root_client.sys.enable_auth_method(method_type="kubernetes", path=path)
    k8s = root_client.auth.kubernetes
    k8s.configure(kubernetes_host=k8s_api.url, token_reviewer_jwt=REVIEWER, mount_point=path)
    cfg = k8s.read_config(mount_point=path)
    assert cfg["kubernetes_host"] == k8s_api.url and cfg["token_reviewer_jwt_set"] is True and "token_reviewer_jwt" not in cfg
    k8s.create_role("apps", bound_service_account_names=["app-*"], bound_service_account_namespaces=["prod", "stag*"],
                    audience="coffer", policies=["k8s-app"], mount_point=path)
    role = k8s.read_role("apps", mount_point=path)
    assert role["bound_service_account_names"] == ["app-*"] and role["audience"] == "coffer" and role["alias_name_source"] == "serviceaccount_uid"
    assert k8s.list_roles(mount_point=path)["keys"] == ["apps"]

    tok, uid = sa_token("staging", "app-web")
    before = k8s_api.calls
    auth = k8s.login("apps", tok, mount_point=path, use_token=False)["auth"]
    assert k8s_api.calls == before + 1, "the cluster was asked"
    assert auth["policies"] == ["default", "k8s-app"]
    assert auth["metadata"] == {"role": "apps", "service_account_name": "app-web", "service_account_namespace": "staging",
                                "service_account_uid": uid, "service_account_secret_name": ""}
    entity = root_client.secrets.identity.read_entity(auth["entity_id"])["data"]
    assert entity["aliases"][0]["name"] == uid
    look = dev_server.client(auth["client_token"]).auth.token.lookup_self()["data"]
    assert look["display_name"].endswith("staging-app-web")

    def refused(token, why, code=403):
        r = api_call(dev_server, "POST", f"auth/{path}/login", token=None, body={"role": "apps", "jwt": token})
        assert r.status_code == code and why in " ".join(r.json()["errors"]), r.text

    refused(sa_token("prod", "db")[0], "service account name not authorized")
    refused(sa_token("dev", "app-web")[0], "namespace not authorized")
    refused(sa_token("prod", "app-web", aud=("other",))[0], "aud")
    refused(sa_token("prod", "app-web", ttl=-60)[0], "expired")
    revoked, ruid = sa_token("prod", "app-api")
    k8s_api.revoked.add(ruid)
    refused(revoked, "lookup failed")
    forged = sa_token("prod", "app-api", key=ec.generate_private_key(ec.SECP256R1()))[0]
    refused(forged, "lookup failed")
    r = api_call(dev_server, "POST", f"auth/{path}/login", token=None, body={"role": "nope", "jwt": tok})
    assert r.status_code == 400 and 'invalid role name "nope"' in r.json()["errors"][0]
    # A reviewer token the cluster does not know: 401 from the API, a 403 here.
    k8s.configure(kubernetes_host=k8s_api.url, token_reviewer_jwt="stale", mount_point=path)
    refused(tok, "service account unauthorized")
    # Without a reviewer JWT the token itself is the bearer (as in Vault).
    k8s.configure(kubernetes_host=k8s_api.url, mount_point=path)
    assert k8s.login("apps", tok, mount_point=path, use_token=False)["auth"]["client_token"]
    # An API server that is down is a 503, not a hang.
    k8s.configure(kubernetes_host=f"http://127.0.0.1:{free_port()}", token_reviewer_jwt=REVIEWER, mount_point=path)
    r = api_call(dev_server, "POST", f"auth/{path}/login", token=None, body={"role": "apps", "jwt": tok})
    assert r.status_code == 503 and "lookup failed" in r.json()["errors"][0], r.text
    # Bad roles and configurations change nothing.
    for body, why in [
        ({"bound_service_account_namespaces": ["x"]}, '"bound_service_account_names" can not be empty'),
        ({"bound_service_account_names": ["a"]}, '"bound_service_account_namespaces" can not be empty'),
        ({"bound_service_account_names": ["*", "a"], "bound_service_account_namespaces": ["x"]}, 'can not mix "*" with values'),
        ({"bound_service_account_names": ["a"], "bound_service_account_namespaces": ["x"], "alias_name_source": "pod"}, "invalid alias_name_source"),
    ]:
        r = api_call(dev_server, "POST", f"auth/{path}/role/bad", body=body)
        assert r.status_code == 400 and why in r.json()["errors"][0], (body, r.text)
    assert api_call(dev_server, "POST", f"auth/{path}/config", body={"kubernetes_host": ""}).status_code == 400
    assert api_call(dev_server, "POST", f"auth/{path}/config", body={"kubernetes_host": k8s_api.url, "pem_keys": ["junk"]}).status_code == 400


def test_local_verification_with_pem_keys(dev_server, root_client):
    path = unique("k8s")
    root_client.sys.enable_auth_method(method_type="kubernetes", path=path)
    k8s = root_client.auth.kubernetes
    # The API host is unreachable: only local verification can let these logins through.
    # A certificate (through hvac, which sends only those) and a bare public key (raw API).
    k8s.configure(kubernetes_host=f"http://127.0.0.1:{free_port()}", pem_keys=[cert_pem(EC_KEY)], mount_point=path)
    assert k8s.read_config(mount_point=path)["pem_keys"][0].startswith("-----BEGIN CERTIFICATE-----")
    r = api_call(dev_server, "POST", f"auth/{path}/config", body={"kubernetes_host": f"http://127.0.0.1:{free_port()}", "pem_keys": [cert_pem(EC_KEY), pem(RSA_KEY)]})
    assert r.status_code == 204, r.text
    k8s.create_role("all", bound_service_account_names=["*"], bound_service_account_namespaces=["*"],
                    alias_name_source="serviceaccount_name", policies=["p"], mount_point=path)
    for key, alg, projected in [(EC_KEY, "ES256", True), (RSA_KEY, "RS256", True), (RSA_KEY, "RS256", False)]:
        tok, uid = sa_token("ops", "runner", key=key, alg=alg, projected=projected)
        auth = k8s.login("all", tok, mount_point=path, use_token=False)["auth"]
        assert auth["metadata"]["service_account_uid"] == uid and auth["policies"] == ["default", "p"], alg
        assert root_client.secrets.identity.read_entity(auth["entity_id"])["data"]["aliases"][0]["name"] == "ops/runner"
    assert auth["metadata"]["service_account_secret_name"] == "runner-token-abcde"  # the legacy layout names its secret
    forged = sa_token("ops", "runner", key=ec.generate_private_key(ec.SECP256R1()))[0]
    r = api_call(dev_server, "POST", f"auth/{path}/login", token=None, body={"role": "all", "jwt": forged})
    assert r.status_code == 403
    # Issuer validation, when turned on.
    api_call(dev_server, "POST", f"auth/{path}/config", body={"kubernetes_host": "http://127.0.0.1:1", "pem_keys": [pem(EC_KEY)],
                                                              "issuer": "https://kubernetes.default.svc", "disable_iss_validation": False})
    assert k8s.login("all", sa_token("a", "b")[0], mount_point=path, use_token=False)["auth"]["client_token"]
    r = api_call(dev_server, "POST", f"auth/{path}/login", token=None, body={"role": "all", "jwt": sa_token("a", "b", iss="https://evil")[0]})
    assert r.status_code == 403 and "issuer" in r.json()["errors"][0]


@pytest.mark.skipif(PEER_BAO, reason="Coffer's tenants and outbound policy")
def test_tenants_are_isolated(dev_server, root_client, k8s_api):
    ta, tb = unique("ka").replace("-", "")[:12], unique("kb").replace("-", "")[:12]
    clients = {}
    for t, ns in ((ta, "team-a"), (tb, "team-b")):
        assert api_call(dev_server, "POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=dev_server.url, token="root", namespace=t)
        c.sys.enable_auth_method(method_type="kubernetes", path="kubernetes")
        c.auth.kubernetes.configure(kubernetes_host="https://k8s.example.invalid", pem_keys=[cert_pem(EC_KEY)])
        c.auth.kubernetes.create_role("r", bound_service_account_names=["*"], bound_service_account_namespaces=[ns])
        clients[t] = c
    tok = sa_token("team-a", "svc")[0]
    assert clients[ta].auth.kubernetes.login("r", tok, use_token=False)["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden) as ex:
        clients[tb].auth.kubernetes.login("r", tok, use_token=False)
    assert "namespace not authorized" in errors(ex)
    # A tenant's TokenReview call to the node's loopback is refused by the outbound policy.
    clients[ta].auth.kubernetes.configure(kubernetes_host=k8s_api.url, token_reviewer_jwt=REVIEWER)
    r = api_call(dev_server, "POST", "auth/kubernetes/login", ns=ta, token=None, body={"role": "r", "jwt": tok})
    assert r.status_code == 400 and "not allowed from this namespace" in r.json()["errors"][0], r.text
