"""Namespaces end to end through hvac (issue #4, first slice): create/list, a client with
`namespace=` doing KV and policy work, isolation between tenants, delete = crypto-shred."""

from __future__ import annotations

import hvac
import pytest
import requests

from conftest import PEER_BAO, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="namespaces are not in OpenBao's dev server")


def ns_client(dev_server, token: str, namespace: str) -> hvac.Client:
    return hvac.Client(url=dev_server.url, token=token, namespace=namespace, timeout=30)


def test_create_list_and_work_inside_a_namespace(dev_server, root_client):
    name = unique("t").replace("-", "")[:20]
    root_client.sys.create_namespace(path=name)
    # custom_metadata is updated with PATCH (JSON merge patch), as in Vault's API.
    r = requests.patch(f"{dev_server.url}/v1/sys/namespaces/{name}", json={"custom_metadata": {"plan": "gold", "x": "1"}},
                       headers={"X-Vault-Token": "root", "Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    r = requests.patch(f"{dev_server.url}/v1/sys/namespaces/{name}", json={"custom_metadata": {"x": None}},
                       headers={"X-Vault-Token": "root", "Content-Type": "application/merge-patch+json"})
    assert r.json()["data"]["custom_metadata"] == {"plan": "gold"}
    listed = root_client.sys.list_namespaces()["data"]
    assert f"{name}/" in listed["keys"]
    assert listed["key_info"][f"{name}/"]["custom_metadata"] == {"plan": "gold"}

    admin = ns_client(dev_server, "root", name)
    admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    admin.secrets.kv.v2.create_or_update_secret(path="app", secret={"tenant": name})
    admin.sys.create_or_update_policy(name="reader", policy='path "secret/data/*" { capabilities = ["read"] }')
    assert "reader" in admin.sys.list_policies()["data"]["policies"]
    tok = admin.auth.token.create(policies=["reader"], ttl="1h")["auth"]["client_token"]
    assert tok.endswith("." + listed["key_info"][f"{name}/"]["id"])

    tenant = ns_client(dev_server, tok, name)
    assert tenant.secrets.kv.v2.read_secret_version(path="app")["data"]["data"] == {"tenant": name}
    with pytest.raises(hvac.exceptions.Forbidden):
        tenant.secrets.kv.v2.create_or_update_secret(path="app", secret={"x": "y"})
    # The tenant's policy, mount and secret are invisible from the root namespace.
    assert "reader" not in root_client.sys.list_policies()["data"]["policies"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        root_client.secrets.kv.v2.read_secret_version(path="app")
    # The tenant token is worthless outside its namespace.
    with pytest.raises(hvac.exceptions.Forbidden):
        dev_server.client(tok).secrets.kv.v2.read_secret_version(path="app")
    # Path-prefix addressing reaches the same namespace.
    r = requests.get(f"{dev_server.url}/v1/{name}/secret/data/app", headers={"X-Vault-Token": tok})
    assert r.status_code == 200 and r.json()["data"]["data"] == {"tenant": name}


def test_sibling_tenants_are_isolated(dev_server, root_client):
    a, b = unique("a").replace("-", "")[:16], unique("b").replace("-", "")[:16]
    tokens = {}
    for ns in (a, b):
        root_client.sys.create_namespace(path=ns)
        c = ns_client(dev_server, "root", ns)
        c.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        c.secrets.kv.v2.create_or_update_secret(path="x", secret={"owner": ns})
        c.sys.create_or_update_policy(name="all", policy='path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }')
        tokens[ns] = c.auth.token.create(policies=["all"], ttl="1h")["auth"]["client_token"]
    # A's all-powerful token, aimed at B by header, by prefix, and by both.
    for headers, path in [({"X-Vault-Namespace": b}, "secret/data/x"), ({}, f"{b}/secret/data/x"),
                          ({"X-Vault-Namespace": a}, f"../{b}/secret/data/x"),
                          ({"X-Vault-Namespace": b}, "sys/mounts")]:
        r = requests.get(f"{dev_server.url}/v1/{path}", headers={"X-Vault-Token": tokens[a], **headers})
        assert r.status_code in (400, 403, 404), (headers, path, r.status_code, r.text)
        assert b not in r.text or r.status_code != 200
    mounts = ns_client(dev_server, tokens[a], a).sys.list_mounted_secrets_engines()["data"]
    assert sorted(mounts) == ["cubbyhole/", "identity/", "secret/", "sys/"]


def test_delete_shreds_and_recreate_is_empty(dev_server, root_client):
    name = unique("d").replace("-", "")[:20]
    root_client.sys.create_namespace(path=name)
    c = ns_client(dev_server, "root", name)
    c.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    c.secrets.kv.v2.create_or_update_secret(path="gone", secret={"v": "1"})
    tok = c.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    c.sys.create_namespace(path="child")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root_client.sys.delete_namespace(path=name)  # has a child
    c.sys.delete_namespace(path="child")
    root_client.sys.delete_namespace(path=name)
    assert f"{name}/" not in (root_client.sys.list_namespaces()["data"]["keys"])
    r = requests.get(f"{dev_server.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": tok, "X-Vault-Namespace": name})
    assert r.status_code in (403, 404)
    root_client.sys.create_namespace(path=name)
    fresh = ns_client(dev_server, "root", name)
    assert sorted(fresh.sys.list_mounted_secrets_engines()["data"]) == ["cubbyhole/", "identity/", "sys/"]


def test_one_call_tenant_provisioning(dev_server, root_client):
    name = unique("tenant").replace("-", "")[:24]
    url = f"{dev_server.url}/v1/sys/tenants/{name}"
    root = {"X-Vault-Token": "root"}
    r = requests.put(url, headers=root, json={"custom_metadata": {"plan": "gold", "owner": "ops@acme"}})
    assert r.status_code == 200, r.text
    body = r.json()
    admin_token = body["auth"]["client_token"]
    assert body["auth"]["orphan"] is True and body["auth"]["renewable"] is True
    assert "tenant-admin" in body["auth"]["policies"]
    assert body["data"]["namespace_path"] == f"{name}/"
    # Idempotency: a second PUT is refused and changes nothing (the admin token still works).
    again = requests.put(url, headers=root, json={"custom_metadata": {"plan": "free"}})
    assert again.status_code == 409, again.text
    assert again.json()["errors"]
    # The admin token has full control inside the tenant...
    admin = ns_client(dev_server, admin_token, name)
    admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    admin.secrets.kv.v2.create_or_update_secret(path="db", secret={"pw": "x"})
    admin.sys.create_or_update_policy(name="app", policy='path "secret/data/*" { capabilities = ["read"] }')
    # ...and nothing outside it.
    with pytest.raises(hvac.exceptions.Forbidden):
        dev_server.client(admin_token).sys.list_mounted_secrets_engines()
    other = unique("other").replace("-", "")[:24]
    root_client.sys.create_namespace(path=other)
    with pytest.raises(hvac.exceptions.Forbidden):
        ns_client(dev_server, admin_token, other).sys.list_mounted_secrets_engines()
    # GET shows the summary, LIST the tenant.
    info = requests.get(url, headers=root).json()["data"]
    assert info["custom_metadata"] == {"plan": "gold", "owner": "ops@acme"}
    assert "secret/" in info["mounts"] and info["policies_count"] >= 3
    assert info["locked"] is False
    listed = requests.request("LIST", f"{dev_server.url}/v1/sys/tenants", headers=root).json()["data"]["keys"]
    assert name in listed
    # A tenant admin cannot provision tenants.
    denied = requests.put(f"{dev_server.url}/v1/sys/tenants/{name}x", headers={"X-Vault-Token": admin_token})
    assert denied.status_code == 403
    # DELETE deprovisions: namespace shredded, token dead, name free again.
    assert requests.delete(url, headers=root).status_code == 204
    assert f"{name}/" not in root_client.sys.list_namespaces()["data"]["keys"]
    dead = requests.get(f"{dev_server.url}/v1/{name}/auth/token/lookup-self", headers={"X-Vault-Token": admin_token})
    assert dead.status_code in (403, 404)
    assert requests.put(url, headers=root, json={}).status_code == 200


def test_tenant_bad_input_changes_nothing(dev_server):
    root = {"X-Vault-Token": "root"}
    for name, body in [("bad..name", {}), ("sys", {}), ("ok" + unique("").replace("-", "")[:8], {"admin_policy": "path {"}),
                       ("ok2" + unique("").replace("-", "")[:8], {"quotas": "lots"})]:
        r = requests.put(f"{dev_server.url}/v1/sys/tenants/{name}", headers=root, json=body)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["errors"]
        assert requests.get(f"{dev_server.url}/v1/sys/tenants/{name}", headers=root).status_code == 404
        listed = requests.request("LIST", f"{dev_server.url}/v1/sys/namespaces", headers=root)
        assert listed.status_code == 404 or f"{name}/" not in listed.json()["data"]["keys"]


def test_api_lock_and_unlock(dev_server, root_client):
    name = unique("lk").replace("-", "")[:20]
    root_client.sys.create_namespace(path=name)
    c = ns_client(dev_server, "root", name)
    c.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    c.secrets.kv.v2.create_or_update_secret(path="x", secret={"v": "1"})
    c.sys.create_namespace(path="child")
    c.sys.create_or_update_policy(name="all", policy='path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }')
    admin = c.auth.token.create(policies=["all"], ttl="1h")["auth"]["client_token"]
    root = {"X-Vault-Token": "root"}
    # Lock from the parent (root) with the sub-path: returns an unlock key.
    r = requests.post(f"{dev_server.url}/v1/sys/namespaces/api-lock/lock/{name}", headers=root)
    assert r.status_code == 200, r.text
    key = r.json()["data"]["unlock_key"]
    assert key
    # Everything at or below the namespace answers 503, for every token.
    for hdrs, path in [({"X-Vault-Namespace": name}, "secret/data/x"), ({}, f"{name}/secret/data/x"),
                       ({"X-Vault-Namespace": f"{name}/child"}, "sys/mounts")]:
        resp = requests.get(f"{dev_server.url}/v1/{path}", headers={**root, **hdrs})
        assert resp.status_code == 503, (path, resp.text)
        assert "locked" in resp.json()["errors"][0]
    # The root namespace is unaffected.
    assert requests.get(f"{dev_server.url}/v1/sys/mounts", headers=root).status_code == 200
    # A wrong key does not unlock; the right key does (from inside the locked namespace).
    bad = requests.post(f"{dev_server.url}/v1/sys/namespaces/api-lock/unlock",
                        headers={"X-Vault-Token": admin, "X-Vault-Namespace": name}, json={"unlock_key": "nope"})
    assert bad.status_code == 400
    good = requests.post(f"{dev_server.url}/v1/sys/namespaces/api-lock/unlock",
                         headers={"X-Vault-Token": admin, "X-Vault-Namespace": name}, json={"unlock_key": key})
    assert good.status_code == 204, good.text
    assert c.secrets.kv.v2.read_secret_version(path="x")["data"]["data"] == {"v": "1"}
    # A root token unlocks without the key.
    key2 = requests.post(f"{dev_server.url}/v1/sys/namespaces/api-lock/lock/{name}", headers=root).json()["data"]["unlock_key"]
    assert key2 != key
    assert requests.post(f"{dev_server.url}/v1/sys/namespaces/api-lock/unlock/{name}", headers=root).status_code == 204
    assert c.secrets.kv.v2.read_secret_version(path="x")["data"]["data"] == {"v": "1"}


def test_capabilities_self_of_an_ancestor_token_in_a_child(dev_server, root_client):
    """A root-namespace token whose policy grants paths inside a tenant: the tenant's
    sys/capabilities-self reports what that token can really do there (its own namespace's
    policy on the prefixed path), the same as the request path enforces."""
    name = unique("cap").replace("-", "")[:20]
    root_client.sys.create_namespace(path=name)
    admin = ns_client(dev_server, "root", name)
    admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    admin.secrets.kv.v2.create_or_update_secret(path="app", secret={"v": "1"})
    # A same-named policy inside the tenant grants more; it must not be the one consulted.
    admin.sys.create_or_update_policy(name="ops", policy='path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }')
    # (As in Vault, the root namespace's default policy covers only its own sys/capabilities-self:
    # calling the tenant's needs a grant on the prefixed path.)
    root_client.sys.create_or_update_policy(
        name="ops", policy=f'path "{name}/secret/data/*" {{ capabilities = ["read"] }}\n'
                           f'path "{name}/sys/capabilities-self" {{ capabilities = ["update"] }}')
    tok = root_client.auth.token.create(policies=["ops"], ttl="1h")["auth"]["client_token"]

    in_tenant = ns_client(dev_server, tok, name)
    data = in_tenant.adapter.post("/v1/sys/capabilities-self", json={"paths": ["secret/data/app", "/secret/metadata/app"]})["data"]
    assert data["secret/data/app"] == ["read"]
    assert data["/secret/metadata/app"] == ["deny"]
    # What the request path does agrees.
    assert in_tenant.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)["data"]["data"] == {"v": "1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        in_tenant.secrets.kv.v2.create_or_update_secret(path="app", secret={"v": "2"})
    # Through the path prefix instead of the header: the same answer.
    r = requests.post(f"{dev_server.url}/v1/{name}/sys/capabilities-self", json={"path": "secret/data/app"},
                      headers={"X-Vault-Token": tok})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["capabilities"] == ["read"]


def test_child_token_made_by_an_ancestor_token_dies_with_it(dev_server, root_client):
    """A token created inside a tenant by a token of the root namespace is that token's
    child: revoking the parent revokes it; revoke-orphan leaves it, as an orphan."""
    name = unique("tok").replace("-", "")[:20]
    root_client.sys.create_namespace(path=name)

    def parent_and_child():
        parent = root_client.auth.token.create(policies=["root"], ttl="1h")["auth"]["client_token"]
        child = ns_client(dev_server, parent, name).auth.token.create(policies=["default"], ttl="30m")["auth"]["client_token"]
        info = ns_client(dev_server, child, name).auth.token.lookup_self()["data"]
        assert info["orphan"] is False
        return parent, child

    parent, child = parent_and_child()
    root_client.auth.token.revoke(parent)
    with pytest.raises(hvac.exceptions.Forbidden):
        ns_client(dev_server, child, name).auth.token.lookup_self()

    parent, child = parent_and_child()
    root_client.auth.token.revoke_and_orphan_children(parent)
    info = ns_client(dev_server, child, name).auth.token.lookup_self()["data"]
    assert info["orphan"] is True
    with pytest.raises(hvac.exceptions.Forbidden):
        ns_client(dev_server, parent, "").auth.token.lookup_self()

    # A child revoked first leaves nothing behind that trips the parent's revocation.
    parent, child = parent_and_child()
    ns_client(dev_server, child, name).auth.token.revoke_self()
    root_client.auth.token.revoke(parent)
    with pytest.raises(hvac.exceptions.Forbidden):
        ns_client(dev_server, parent, "").auth.token.lookup_self()

    # An explicit orphan made in the tenant is not linked.
    parent = root_client.auth.token.create(policies=["root"], ttl="1h")["auth"]["client_token"]
    orphan = ns_client(dev_server, parent, name).auth.token.create_orphan(policies=["default"], ttl="30m")["auth"]["client_token"]
    root_client.auth.token.revoke(parent)
    assert ns_client(dev_server, orphan, name).auth.token.lookup_self()["data"]["orphan"] is True


def test_default_policy_of_a_new_namespace(dev_server, root_client):
    """A new namespace has Vault's stock `default` policy (not stored until changed): listed,
    readable, in force for its tokens, updatable (then the update is what applies) and never
    deletable; another namespace keeps the stock one."""
    a, b = (unique(p).replace("-", "")[:20] for p in ("pa", "pb"))
    root_client.sys.create_namespace(path=a)
    root_client.sys.create_namespace(path=b)
    admin = ns_client(dev_server, "root", a)
    assert "default" in admin.sys.list_policies()["data"]["policies"]
    stock = admin.sys.read_policy(name="default")["data"]["rules"]
    assert 'path "auth/token/lookup-self"' in stock
    tok = admin.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    caps = requests.post(f"{dev_server.url}/v1/sys/capabilities-self", json={"paths": ["auth/token/lookup-self", "secret/data/x"]},
                         headers={"X-Vault-Token": tok, "X-Vault-Namespace": a}).json()
    assert caps["auth/token/lookup-self"] == ["read"] and caps["secret/data/x"] == ["deny"]

    changed = 'path "secret/data/*" { capabilities = ["read"] }\npath "sys/capabilities-self" { capabilities = ["update"] }'
    admin.sys.create_or_update_policy(name="default", policy=changed)
    assert admin.sys.read_policy(name="default")["data"]["rules"] == changed
    caps = requests.post(f"{dev_server.url}/v1/sys/capabilities-self", json={"paths": ["auth/token/lookup-self", "secret/data/x"]},
                         headers={"X-Vault-Token": tok, "X-Vault-Namespace": a}).json()
    assert caps["secret/data/x"] == ["read"] and caps["auth/token/lookup-self"] == ["deny"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        admin.sys.delete_policy(name="default")
    assert admin.sys.list_policies()["data"]["policies"].count("default") == 1
    assert ns_client(dev_server, "root", b).sys.read_policy(name="default")["data"]["rules"] == stock
