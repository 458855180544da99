"""ACL policies and the token store, through hvac 2.4.0 against the dev server."""

from __future__ import annotations

import time

import hvac
import pytest

from conftest import unique


def kv_write(client, path, value):
    return client.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": value})


def kv_read(client, path):
    return client.secrets.kv.v2.read_secret_version(
        path=path, raise_on_deleted_version=True)["data"]["data"]["v"]


def works(client) -> bool:
    """Is the client's token alive? (lookup-self is in the default policy)"""
    try:
        client.auth.token.lookup_self()
        return True
    except hvac.exceptions.Forbidden:
        return False


@pytest.fixture(scope="module")
def app(dev_server):
    """A policy `app-<uuid>` granting create/read/update on secret/data/<prefix>/*,
    list on secret/metadata/<prefix>/*, and token creation."""
    root = dev_server.client("root")
    name = unique("app")
    prefix = unique("pfx")
    rules = f"""
# application policy
path "secret/data/{prefix}/*" {{
  capabilities = ["create", "read", "update"]
}}
path "secret/metadata/{prefix}/*" {{
  capabilities = ["list"]
}}
path "secret/data/{prefix}/private/*" {{
  capabilities = ["deny"]
}}
path "auth/token/create" {{
  capabilities = ["create", "update"]
}}
"""
    root.sys.create_or_update_policy(name=name, policy=rules)
    return {"name": name, "prefix": prefix, "rules": rules}


def new_token(root, **kw):
    resp = root.auth.token.create(**kw)
    return resp["auth"]


# ---------------------------------------------------------------------------- policy


def test_policy_write_read_list(root_client, app, dev_server):
    got = root_client.sys.read_policy(name=app["name"])
    assert got["data"]["rules"] == app["rules"]
    assert got["data"]["name"] == app["name"]
    # the newer sys/policies/acl endpoint answers with "policy"
    raw = dev_server.session("root").get(f"{dev_server.url}/v1/sys/policies/acl/{app['name']}")
    assert raw.status_code == 200
    assert raw.json()["data"]["policy"] == app["rules"]
    listed = root_client.sys.list_policies()["data"]["policies"]
    assert {"root", "default", app["name"]} <= set(listed)
    acl = dev_server.session("root").request("LIST", f"{dev_server.url}/v1/sys/policies/acl")
    assert app["name"] in acl.json()["data"]["keys"]


def test_policy_update_and_delete(root_client):
    name = unique("tmp")
    root_client.sys.create_or_update_policy(name=name, policy='path "a/*" { capabilities = ["read"] }')
    root_client.sys.create_or_update_policy(name=name, policy='path "b/*" { capabilities = ["list"] }')
    assert '"b/*"' in root_client.sys.read_policy(name=name)["data"]["rules"]
    root_client.sys.delete_policy(name=name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root_client.sys.read_policy(name=name)
    assert name not in root_client.sys.list_policies()["data"]["policies"]


def test_json_policy_text_is_accepted(root_client, dev_server):
    name = unique("jsonpol")
    pfx = unique("jp")
    text = '{"path": {"secret/data/%s/*": {"capabilities": ["read", "create", "update"]}}}' % pfx
    root_client.sys.create_or_update_policy(name=name, policy=text)
    tok = new_token(root_client, policies=[name], ttl="1h")["client_token"]
    c = dev_server.client(tok)
    kv_write(c, f"{pfx}/x", "ok")
    assert kv_read(c, f"{pfx}/x") == "ok"


def test_builtin_policies_cannot_be_deleted(root_client):
    for name in ("root", "default"):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root_client.sys.delete_policy(name=name)
    assert {"root", "default"} <= set(root_client.sys.list_policies()["data"]["policies"])


# ---------------------------------------------------------------------- enforcement


def test_allowed_and_denied_paths(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="1h")
    assert set(auth["policies"]) == {app["name"], "default"}
    c = dev_server.client(auth["client_token"])
    pfx = app["prefix"]

    value = unique()
    kv_write(c, f"{pfx}/db", value)
    assert kv_read(c, f"{pfx}/db") == value
    assert kv_read(root_client, f"{pfx}/db") == value  # really written
    assert c.secrets.kv.v2.list_secrets(path=pfx)["data"]["keys"] == ["db"]

    other = unique("other")
    kv_write(root_client, other, "secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_read(c, other)
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_write(c, other, "overwrite")
    assert kv_read(root_client, other) == "secret"  # unchanged
    # an explicit deny beats the broader glob
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_write(c, f"{pfx}/private/x", "no")
    # no delete capability
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{pfx}/db")
    assert kv_read(root_client, f"{pfx}/db") == value
    # sys/ is not granted
    with pytest.raises(hvac.exceptions.Forbidden):
        c.sys.create_or_update_policy(name=unique("evil"), policy='path "*" { capabilities = ["sudo"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        c.sys.list_mounted_secrets_engines()


def test_capabilities(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="1h")
    c = dev_server.client(auth["client_token"])
    pfx = app["prefix"]
    allowed, denied, private = f"secret/data/{pfx}/x", "secret/data/elsewhere", \
        f"secret/data/{pfx}/private/y"

    resp = c.sys.get_capabilities(paths=[allowed, denied, private])
    assert sorted(resp["data"][allowed]) == ["create", "read", "update"]
    assert resp["data"][denied] == ["deny"]
    assert resp["data"][private] == ["deny"]
    # single path: Vault adds a "capabilities" key too
    one = c.sys.get_capabilities(paths=[allowed])
    assert sorted(one["data"]["capabilities"]) == ["create", "read", "update"]

    by_token = root_client.sys.get_capabilities(paths=[allowed], token=auth["client_token"])
    assert sorted(by_token["data"][allowed]) == ["create", "read", "update"]
    by_accessor = root_client.sys.get_capabilities(paths=[allowed], accessor=auth["accessor"])
    assert sorted(by_accessor["data"][allowed]) == ["create", "read", "update"]
    assert root_client.sys.get_capabilities(paths=[denied])["data"][denied] == ["root"]


# ----------------------------------------------------------------------------- tokens


def test_lookup_and_lookup_self(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="1h",
                     meta={"team": "a"}, display_name="svc")
    c = dev_server.client(auth["client_token"])
    me = c.auth.token.lookup_self()["data"]
    assert me["id"] == auth["client_token"]
    assert me["accessor"] == auth["accessor"]
    assert set(me["policies"]) == {app["name"], "default"}
    assert me["meta"] == {"team": "a"}
    assert me["display_name"] == "token-svc"
    assert me["orphan"] is False
    assert 3500 < me["ttl"] <= 3600 and me["creation_ttl"] == 3600
    assert me["renewable"] is True
    other = root_client.auth.token.lookup(auth["client_token"])["data"]
    assert other["accessor"] == auth["accessor"]
    root = root_client.auth.token.lookup_self()["data"]
    assert root["policies"] == ["root"] and root["ttl"] == 0


def test_renew_and_renew_self(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="10m")
    c = dev_server.client(auth["client_token"])
    r = c.auth.token.renew_self(increment="1h")
    assert r["auth"]["lease_duration"] == 3600
    assert 3500 < c.auth.token.lookup_self()["data"]["ttl"] <= 3600
    r = root_client.auth.token.renew(auth["client_token"], increment="20m")
    assert r["auth"]["lease_duration"] == 1200
    assert c.auth.token.lookup_self()["data"]["ttl"] <= 1200


def test_non_renewable_token(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="10m", renewable=False)
    c = dev_server.client(auth["client_token"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.auth.token.renew_self(increment="1h")


def test_explicit_max_ttl(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="1h", explicit_max_ttl="30m")
    info = root_client.auth.token.lookup(auth["client_token"])["data"]
    assert info["explicit_max_ttl"] == 1800
    assert info["ttl"] <= 1800
    r = root_client.auth.token.renew(auth["client_token"], increment="2h")
    assert r["auth"]["lease_duration"] <= 1800
    assert r["warnings"]  # Vault warns the TTL was capped
    assert root_client.auth.token.lookup(auth["client_token"])["data"]["ttl"] <= 1800


def test_revoke_and_revoke_self(root_client, app, dev_server):
    a = new_token(root_client, policies=[app["name"]], ttl="1h")["client_token"]
    b = new_token(root_client, policies=[app["name"]], ttl="1h")["client_token"]
    ca, cb = dev_server.client(a), dev_server.client(b)
    assert works(ca) and works(cb)
    root_client.auth.token.revoke(a)
    assert not works(ca)
    with pytest.raises(hvac.exceptions.Forbidden):
        root_client.auth.token.lookup(a)  # Vault: 403 "bad token"
    cb.auth.token.revoke_self()
    assert not works(cb)


def test_child_revoked_with_parent_orphan_survives(root_client, app, dev_server):
    parent = new_token(root_client, policies=[app["name"]], ttl="1h")["client_token"]
    pc = dev_server.client(parent)
    child = pc.auth.token.create(policies=[app["name"]], ttl="30m")["auth"]["client_token"]
    grandchild = dev_server.client(child).auth.token.create(
        policies=[app["name"]], ttl="10m")["auth"]["client_token"]
    orphan_auth = root_client.auth.token.create(policies=[app["name"]], ttl="1h", no_parent=True)
    orphan = orphan_auth["auth"]["client_token"]
    assert orphan_auth["auth"]["orphan"] is True
    orphan2 = root_client.auth.token.create_orphan(policies=[app["name"]], ttl="1h")
    assert orphan2["auth"]["orphan"] is True
    assert root_client.auth.token.lookup(child)["data"]["orphan"] is False

    # a child cannot get policies its parent lacks, and a non-root parent cannot make orphans
    with pytest.raises(hvac.exceptions.InvalidRequest):
        pc.auth.token.create(policies=["root"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        pc.auth.token.create(policies=[app["name"]], no_parent=True)

    root_client.auth.token.revoke(parent)
    for tok in (parent, child, grandchild):
        assert not works(dev_server.client(tok)), "token should be revoked with its parent"
    assert works(dev_server.client(orphan))
    assert works(dev_server.client(orphan2["auth"]["client_token"]))


def test_revoke_orphan_keeps_children(root_client, app, dev_server):
    parent = new_token(root_client, policies=[app["name"]], ttl="1h")["client_token"]
    child = dev_server.client(parent).auth.token.create(
        policies=[app["name"]], ttl="30m")["auth"]["client_token"]
    root_client.auth.token.revoke_and_orphan_children(parent)
    assert not works(dev_server.client(parent))
    cc = dev_server.client(child)
    assert works(cc)
    assert cc.auth.token.lookup_self()["data"]["orphan"] is True


def test_accessor_lookup_and_revoke(root_client, app, dev_server):
    auth = new_token(root_client, policies=[app["name"]], ttl="1h")
    acc = auth["accessor"]
    assert acc and acc != auth["client_token"]
    assert acc in root_client.auth.token.list_accessors()["data"]["keys"]
    info = root_client.auth.token.lookup_accessor(acc)["data"]
    assert info["id"] == ""  # never reveals the token
    assert info["accessor"] == acc
    assert set(info["policies"]) == {app["name"], "default"}
    root_client.auth.token.revoke_accessor(acc)
    assert not works(dev_server.client(auth["client_token"]))
    with pytest.raises(hvac.exceptions.InvalidRequest):  # Vault: 400 "invalid accessor"
        root_client.auth.token.lookup_accessor(acc)
    assert acc not in root_client.auth.token.list_accessors()["data"]["keys"]


def test_token_roles_crud_and_create_with_role(root_client, app, dev_server):
    role = unique("role")
    root_client.auth.token.create_or_update_role(
        role, allowed_policies=[app["name"]], orphan=True, renewable=True,
        token_explicit_max_ttl="2h")
    got = root_client.auth.token.read_role(role)["data"]
    assert got["allowed_policies"] == [app["name"]]
    assert got["orphan"] is True
    assert got["token_explicit_max_ttl"] == 7200
    assert role in root_client.auth.token.list_roles()["data"]["keys"]

    resp = root_client.auth.token.create(role_name=role, policies=[app["name"]], ttl="3h")
    auth = resp["auth"]
    assert app["name"] in auth["policies"]
    assert auth["orphan"] is True
    # the role's token_explicit_max_ttl caps the TTL (with a warning); Vault's lookup
    # still shows explicit_max_ttl 0 for such a token
    assert auth["lease_duration"] == 7200
    assert resp["warnings"]
    info = root_client.auth.token.lookup(auth["client_token"])["data"]
    assert info["role"] == role
    assert info["path"] == f"auth/token/create/{role}"
    assert info["creation_ttl"] == 7200
    # the role limits policies
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root_client.auth.token.create(role_name=role, policies=[unique("not-allowed")])

    root_client.auth.token.create_or_update_role(role, allowed_policies=[app["name"]],
                                                 orphan=False)
    assert root_client.auth.token.read_role(role)["data"]["orphan"] is False

    root_client.auth.token.delete_role(role)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root_client.auth.token.read_role(role)
    try:
        keys = root_client.auth.token.list_roles()["data"]["keys"]
    except hvac.exceptions.InvalidPath:  # no roles left: LIST is a 404
        keys = []
    assert role not in keys
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root_client.auth.token.create(role_name=role)


def test_num_uses_one(root_client, app, dev_server):
    path = f"{app['prefix']}/once"
    kv_write(root_client, path, "v")
    auth = new_token(root_client, policies=[app["name"]], ttl="1h", num_uses=1)
    c = dev_server.client(auth["client_token"])
    assert kv_read(c, path) == "v"
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_read(c, path)


def test_num_uses_counts_down(root_client, app, dev_server):
    path = f"{app['prefix']}/thrice"
    kv_write(root_client, path, "v")
    auth = new_token(root_client, policies=[app["name"]], ttl="1h", num_uses=3)
    c = dev_server.client(auth["client_token"])
    assert kv_read(c, path) == "v"
    assert root_client.auth.token.lookup(auth["client_token"])["data"]["num_uses"] == 2
    assert kv_read(c, path) == "v"
    assert kv_read(c, path) == "v"
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_read(c, path)


def test_token_expires_at_ttl(root_client, app, dev_server):
    path = f"{app['prefix']}/short"
    kv_write(root_client, path, "v")
    auth = new_token(root_client, policies=[app["name"]], ttl="2s")
    c = dev_server.client(auth["client_token"])
    assert kv_read(c, path) == "v"
    time.sleep(3)
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_read(c, path)


def test_bearer_header_is_accepted(root_client, app, dev_server):
    import requests
    auth = new_token(root_client, policies=[app["name"]], ttl="1h")
    r = requests.get(f"{dev_server.url}/v1/auth/token/lookup-self",
                     headers={"Authorization": f"Bearer {auth['client_token']}"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["accessor"] == auth["accessor"]
    r = requests.get(f"{dev_server.url}/v1/auth/token/lookup-self")
    assert r.status_code == 403
