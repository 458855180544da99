"""Response wrapping and the cubbyhole (issue #17 item 7) through hvac against the real
binary: X-Vault-Wrap-TTL on any request, sys/wrapping/wrap|unwrap|lookup|rewrap, a wrapping
token that works once, each token's private cubbyhole gone with the token, and the CI/CD
flow of the design seed (a trusted orchestrator hands a pipeline a wrapped secret id)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import hvac
import pytest
import requests

from conftest import PEER_BAO, api_call, unique

INVALID = "wrapping token is not valid or does not exist"


def test_wrap_a_read_then_unwrap_once(dev_server, root_client):
    path = unique("wrapped")
    root_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"pw": "s3cr3t"})
    r = api_call(dev_server, "GET", f"secret/data/{path}", headers={"X-Vault-Wrap-TTL": "2m"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"] is None and body["auth"] is None
    info = body["wrap_info"]
    assert info["ttl"] == 120 and info["creation_path"] == f"secret/data/{path}" and info["token"]
    assert "s3cr3t" not in r.text

    look = api_call(dev_server, "POST", "sys/wrapping/lookup", token=None, body={"token": info["token"]})
    assert look.status_code == 200 and look.json()["data"]["creation_path"] == f"secret/data/{path}"
    assert look.json()["data"]["creation_ttl"] == 120

    unwrapped = dev_server.client(info["token"]).sys.unwrap()
    assert unwrapped["data"]["data"] == {"pw": "s3cr3t"}
    # A second unwrap, either way, is Vault's 400; the lookup too.
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        dev_server.client(info["token"]).sys.unwrap()
    assert e.value.errors == [INVALID]
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root_client.sys.unwrap(token=info["token"])
    assert e.value.errors == [INVALID]
    r = api_call(dev_server, "POST", "sys/wrapping/lookup", token=None, body={"token": info["token"]})
    assert r.status_code == 400 and r.json()["errors"] == [INVALID]


def test_wrap_arbitrary_data_rewrap_and_expiry(dev_server, root_client):
    wrapped = root_client.sys.wrap(payload={"k": "v", "n": 3}, ttl=60)
    token = wrapped["wrap_info"]["token"]
    re = api_call(dev_server, "POST", "sys/wrapping/rewrap", body={"token": token})
    assert re.status_code == 200, re.text
    new = re.json()["wrap_info"]["token"]
    assert new != token and re.json()["wrap_info"]["ttl"] == 60
    assert api_call(dev_server, "POST", "sys/wrapping/unwrap", body={"token": token}).status_code == 400
    assert root_client.sys.unwrap(token=new)["data"] == {"k": "v", "n": 3}

    # sys/wrapping/wrap without a wrap TTL, or with a bad one, is refused.
    r = api_call(dev_server, "POST", "sys/wrapping/wrap", body={"k": "v"})
    assert r.status_code == 400, r.text
    r = api_call(dev_server, "POST", "sys/wrapping/wrap", body={"k": "v"}, headers={"X-Vault-Wrap-TTL": "soon"})
    assert r.status_code == 400, r.text

    short = root_client.sys.wrap(payload={"k": "v"}, ttl=1)["wrap_info"]["token"]
    time.sleep(2.2)
    r = api_call(dev_server, "POST", "sys/wrapping/unwrap", body={"token": short})
    assert r.status_code == 400 and r.json()["errors"] == [INVALID]


def test_concurrent_unwraps_get_the_secret_once(dev_server, root_client):
    token = root_client.sys.wrap(payload={"once": "only"}, ttl=60)["wrap_info"]["token"]

    def unwrap(_):
        return requests.post(f"{dev_server.url}/v1/sys/wrapping/unwrap", json={"token": token},
                             headers={"X-Vault-Token": "root"}, timeout=30)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(unwrap, range(12)))
    ok = [a for a in answers if a.status_code == 200]
    assert len(ok) == 1 and ok[0].json()["data"] == {"once": "only"}, [a.status_code for a in answers]
    assert all(a.status_code == 400 for a in answers if a.status_code != 200)


def test_cubbyhole_is_private_and_goes_with_its_token(dev_server, root_client):
    a = root_client.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    b = root_client.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    assert api_call(dev_server, "POST", "cubbyhole/notes", token=a, body={"text": "a's"}).status_code == 204
    assert api_call(dev_server, "GET", "cubbyhole/notes", token=a).json()["data"] == {"text": "a's"}
    assert api_call(dev_server, "LIST", "cubbyhole", token=a).json()["data"]["keys"] == ["notes"]
    # Another token, even root, sees nothing of it.
    assert api_call(dev_server, "GET", "cubbyhole/notes", token=b).status_code == 404
    assert api_call(dev_server, "GET", "cubbyhole/notes").status_code == 404
    assert "cubbyhole/" in root_client.sys.list_mounted_secrets_engines()["data"]
    r = api_call(dev_server, "DELETE", "sys/mounts/cubbyhole")
    assert r.status_code == 400
    # Revoked: its cubbyhole is gone (a token with its id would find nothing).
    root_client.auth.token.revoke(a)
    assert api_call(dev_server, "GET", "cubbyhole/notes", token=a).status_code == 403


def test_cicd_flow_with_a_wrapped_secret_id(dev_server, root_client, tmp_path):
    """The design seed's CI/CD path: an operator makes a role; a trusted orchestrator fetches
    the role id and a secret id wrapped for 60 s; the pipeline unwraps it, logs in and reads
    its secret; a second unwrap fails; the audit log shows every step, HMAC'd."""
    log = tmp_path / "audit.log"
    dev = unique("cicd-audit")
    if not PEER_BAO:  # OpenBao 2.7 enables audit devices only from its configuration
        root_client.sys.enable_audit_device(device_type="file", path=dev, options={"file_path": str(log)})
    try:
        mp, app = unique("approle"), unique("app")
        root_client.sys.enable_auth_method(method_type="approle", path=mp)
        root_client.secrets.kv.v2.create_or_update_secret(path=f"{app}/db", secret={"password": "pipeline-pw"})
        root_client.sys.create_or_update_policy(name=f"{app}-read", policy=f'path "secret/data/{app}/*" {{ capabilities = ["read"] }}')
        root_client.auth.approle.create_or_update_approle("deploy", token_policies=[f"{app}-read"], token_ttl="10m",
                                                          secret_id_num_uses=1, mount_point=mp)
        orchestrator_policy = f'''
path "auth/{mp}/role/deploy/role-id" {{ capabilities = ["read"] }}
path "auth/{mp}/role/deploy/secret-id" {{ capabilities = ["update"] }}
'''
        root_client.sys.create_or_update_policy(name=f"{app}-orchestrator", policy=orchestrator_policy)
        orch_token = root_client.auth.token.create(policies=[f"{app}-orchestrator"], ttl="10m")["auth"]["client_token"]
        orch = dev_server.client(orch_token)

        role_id = orch.auth.approle.read_role_id("deploy", mount_point=mp)["data"]["role_id"]
        wrapped = orch.auth.approle.generate_secret_id("deploy", mount_point=mp, wrap_ttl="60s")
        wrap_token = wrapped["wrap_info"]["token"]
        assert wrapped["data"] is None and wrapped["wrap_info"]["ttl"] == 60
        # The orchestrator cannot log in or read the secret itself.
        with pytest.raises(hvac.exceptions.Forbidden):
            orch.secrets.kv.v2.read_secret_version(path=f"{app}/db", raise_on_deleted_version=True)

        pipeline = dev_server.client()
        secret_id = dev_server.client(wrap_token).sys.unwrap()["data"]["secret_id"]
        login = pipeline.auth.approle.login(role_id, secret_id, mount_point=mp)
        pipeline.token = login["auth"]["client_token"]
        read = pipeline.secrets.kv.v2.read_secret_version(path=f"{app}/db", raise_on_deleted_version=True)
        assert read["data"]["data"] == {"password": "pipeline-pw"}
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            dev_server.client(wrap_token).sys.unwrap()
        assert e.value.errors == [INVALID]
        # The one-use secret id is spent.
        with pytest.raises(hvac.exceptions.InvalidRequest):
            dev_server.client().auth.approle.login(role_id, secret_id, mount_point=mp, use_token=False)
    finally:
        if not PEER_BAO:
            root_client.sys.disable_audit_device(dev)
    if PEER_BAO:
        return
    raw = log.read_text()
    for secret in (secret_id, wrap_token, login["auth"]["client_token"], "pipeline-pw", orch_token):
        assert secret not in raw
    entries = [json.loads(line) for line in raw.splitlines() if line.strip()]
    paths = [e["request"]["path"] for e in entries if e.get("type") == "response"]
    for step in (f"auth/{mp}/role/deploy/role-id", f"auth/{mp}/role/deploy/secret-id", "sys/wrapping/unwrap",
                 f"auth/{mp}/login", f"secret/data/{app}/db"):
        assert step in paths, (step, paths)
    # The wrapped secret id is audited as Vault audits it: its wrap_info, the token HMAC'd.
    minted = [e for e in entries if e.get("type") == "response" and e["request"]["path"] == f"auth/{mp}/role/deploy/secret-id"]
    assert minted and minted[-1]["response"]["wrap_info"]["token"].startswith("hmac-sha256:")
    assert minted[-1]["response"]["wrap_info"]["ttl"] == 60 and not minted[-1]["response"].get("data")
    # The response of the pipeline's read is audited, its secret HMAC'd.
    reads = [e for e in entries if e.get("type") == "response" and e["request"]["path"] == f"secret/data/{app}/db"
             and e["response"].get("data")]
    assert reads and reads[-1]["response"]["data"]["data"]["password"].startswith("hmac-sha256:")
