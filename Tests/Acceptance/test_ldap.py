"""LDAP auth (issue #18) through hvac against the real binary and a real OpenLDAP slapd
(Ops/slapd, started by Ops/test, with a small test directory): service-account search and
direct binds, groups from the directory (groupOfNames and posixGroup) mapped to policies and
to external identity groups, StartTLS and ldaps with the test CA, wrong passwords, unknown
users, LDAP filter metacharacters in a username, a directory that is down, lockout, and the
tenant outbound policy."""

from __future__ import annotations

import os
import socket
import time

import hvac
import pytest

from conftest import PEER_BAO, api_call, free_port, unique

URL = os.environ.get("COFFER_TEST_LDAP_URL", "")
LDAPS_URL = os.environ.get("COFFER_TEST_LDAPS_URL", "")
CA = os.environ.get("COFFER_TEST_LDAP_CA", "")
BINDDN = os.environ.get("COFFER_TEST_LDAP_BINDDN", "")
BINDPASS = os.environ.get("COFFER_TEST_LDAP_BINDPASS", "")
pytestmark = pytest.mark.skipif(not URL, reason="COFFER_TEST_LDAP_URL is not set (Ops/test starts Ops/slapd)")

USERS = "ou=users,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"


def errors(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


def enable(client, **config):
    path = unique("ldap")
    client.sys.enable_auth_method(method_type="ldap", path=path)
    base = dict(url=URL, userdn=USERS, userattr="uid", groupdn=GROUPS, mount_point=path)
    base.update(config)
    client.auth.ldap.configure(**base)
    return path


def test_search_bind_groups_policies_and_identity(dev_server, root_client):
    path = enable(root_client, binddn=BINDDN, bindpass=BINDPASS, token_policies=["ldap-base"])
    ldap = root_client.auth.ldap
    cfg = ldap.read_configuration(mount_point=path)["data"]
    assert cfg["url"] == URL and cfg["binddn"] == BINDDN and "bindpass" not in cfg and cfg["userattr"] == "uid"
    assert cfg["groupfilter"].startswith("(|(memberUid=") and cfg["deny_null_bind"] is True and cfg["token_policies"] == ["ldap-base"]
    ldap.create_or_update_group("engineers", policies=["eng"], mount_point=path)
    ldap.create_or_update_group("ops", policies=["ops"], mount_point=path)
    ldap.create_or_update_user("carol", policies=["carol-own"], groups=["extra"], mount_point=path)
    ldap.create_or_update_group("extra", policies=["extra-pol"], mount_point=path)
    assert ldap.read_group("engineers", mount_point=path)["data"]["policies"] == ["eng"]
    assert ldap.read_user("carol", mount_point=path)["data"] == {"groups": "extra", "policies": ["carol-own"]}
    assert sorted(ldap.list_groups(mount_point=path)["data"]["keys"]) == ["engineers", "extra", "ops"]

    alice = ldap.login("alice", "alice-pw", mount_point=path, use_token=False)
    auth = alice["auth"]
    assert set(auth["policies"]) == {"default", "ldap-base", "eng"}, auth
    assert auth["metadata"] == {"username": "alice"}
    carol = ldap.login("Carol", "carol-pw", mount_point=path, use_token=False)["auth"]
    assert set(carol["policies"]) == {"default", "ldap-base", "eng", "carol-own", "extra-pol"} and carol["metadata"]["username"] == "carol"
    bob = ldap.login("bob", "bob-pw", mount_point=path, use_token=False)
    assert set(bob["auth"]["policies"]) == {"default", "ldap-base", "ops"}  # posixGroup memberUid
    # The entity alias is the user's userattr value from the directory; groups are group aliases.
    ident = root_client.secrets.identity
    gid = ident.create_or_update_group(name=unique("g"), group_type="external", policies=["from-ldap-admins"])["data"]["id"]
    acc = root_client.sys.list_auth_methods()["data"][f"{path}/"]["accessor"]
    ident.create_or_update_group_alias(name="admins", mount_accessor=acc, canonical_id=gid)
    again = ldap.login("alice", "alice-pw", mount_point=path, use_token=False)["auth"]
    assert "from-ldap-admins" in again["identity_policies"]
    entity = ident.read_entity(again["entity_id"])["data"]
    assert entity["aliases"][0]["name"] == "alice" and entity["aliases"][0]["mount_accessor"] == acc
    assert again["entity_id"] in ident.read_group(gid)["data"]["member_entity_ids"]
    # The token works and carries what the login said.
    look = dev_server.client(again["client_token"]).auth.token.lookup_self()["data"]
    assert look["meta"] == {"username": "alice"} and look["path"] == f"auth/{path}/login/alice"


def test_wrong_password_unknown_user_and_injection(dev_server, root_client):
    path = enable(root_client, binddn=BINDDN, bindpass=BINDPASS)
    ldap = root_client.auth.ldap
    for user, pw in [("alice", "wrong"), ("nobody", "x"), ("*", "alice-pw"), ("alice)(uid=*", "alice-pw"), ("*user", "star-pw")]:
        with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
            ldap.login(user, pw, mount_point=path, use_token=False)
        assert "ldap operation failed: failed to bind as user" in errors(ex), (user, errors(ex))
    # The user whose name holds a '*' logs in as itself only (its '*' is escaped in the filter).
    assert ldap.login("star*user", "star-pw", mount_point=path, use_token=False)["auth"]["metadata"] == {"username": "star*user"}
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ldap.login("alice", "", mount_point=path, use_token=False)
    assert "password cannot be of zero length" in errors(ex)


def test_direct_bind_without_a_service_account(dev_server, root_client):
    path = enable(root_client)
    ldap = root_client.auth.ldap
    auth = ldap.login("alice", "alice-pw", mount_point=path, use_token=False)["auth"]
    assert auth["metadata"] == {"username": "alice"}
    # Without a search, Vault's alias is the bind DN.
    alias = root_client.secrets.identity.read_entity(auth["entity_id"])["data"]["aliases"][0]["name"]
    assert alias == f"uid=alice,{USERS}"
    with pytest.raises(hvac.exceptions.InvalidRequest):
        ldap.login("alice", "nope", mount_point=path, use_token=False)
    # username_as_alias makes the alias the username.
    root_client.auth.ldap.configure(url=URL, userdn=USERS, userattr="uid", groupdn=GROUPS, username_as_alias=True, mount_point=path)
    auth = ldap.login("bob", "bob-pw", mount_point=path, use_token=False)["auth"]
    assert root_client.secrets.identity.read_entity(auth["entity_id"])["data"]["aliases"][0]["name"] == "bob"


def test_starttls_and_ldaps_need_the_ca(dev_server, root_client):
    ca = open(CA).read()
    path = enable(root_client, binddn=BINDDN, bindpass=BINDPASS, starttls=True, certificate=ca)
    assert root_client.auth.ldap.login("alice", "alice-pw", mount_point=path, use_token=False)["auth"]["client_token"]
    path2 = enable(root_client, url=LDAPS_URL, binddn=BINDDN, bindpass=BINDPASS, certificate=ca)
    assert root_client.auth.ldap.login("bob", "bob-pw", mount_point=path2, use_token=False)["auth"]["client_token"]
    # Without the CA the server's certificate is not trusted: the directory cannot be reached.
    path3 = enable(root_client, url=LDAPS_URL, binddn=BINDDN, bindpass=BINDPASS)
    r = api_call(dev_server, "POST", f"auth/{path3}/login/bob", body={"password": "bob-pw"})
    assert r.status_code in (400, 503) and r.json()["errors"], r.text
    bad = api_call(dev_server, "POST", f"auth/{path3}/config", body={"certificate": "not a pem"})
    assert bad.status_code == 400 and "failed to parse server tls cert" in bad.json()["errors"][0]


def test_directory_down_answers_503_quickly(dev_server, root_client):
    # A port nobody listens on, then one that accepts and never answers.
    dead = f"ldap://127.0.0.1:{free_port()}"
    path = enable(root_client, url=dead, binddn=BINDDN, bindpass=BINDPASS, connection_timeout="2s", request_timeout="2s")
    r = api_call(dev_server, "POST", f"auth/{path}/login/alice", body={"password": "alice-pw"})
    assert r.status_code == 503 and "failed to connect to LDAP server" in r.json()["errors"][0], r.text
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        root_client.auth.ldap.configure(url=f"ldap://127.0.0.1:{silent.getsockname()[1]}", userdn=USERS, userattr="uid",
                                        binddn=BINDDN, bindpass=BINDPASS, connection_timeout="2s", request_timeout="2s", mount_point=path)
        t0 = time.monotonic()
        r = api_call(dev_server, "POST", f"auth/{path}/login/alice", body={"password": "alice-pw"})
        assert r.status_code == 503, r.text
        assert time.monotonic() - t0 < 15, "bounded by the request timeout, not hung"
    finally:
        silent.close()
    # Several URLs: the first is down, the second answers.
    root_client.auth.ldap.configure(url=f"{dead},{URL}", userdn=USERS, userattr="uid", binddn=BINDDN, bindpass=BINDPASS,
                                    connection_timeout="2s", mount_point=path)
    assert root_client.auth.ldap.login("alice", "alice-pw", mount_point=path, use_token=False)["auth"]["client_token"]
    # The server keeps serving everyone else.
    assert root_client.sys.read_health_status(method="GET")["initialized"] is True


@pytest.mark.skipif(PEER_BAO, reason="Coffer's lockout metering and tenants")
def test_lockout_and_tenant_outbound_policy(dev_server, root_client):
    path = enable(root_client, binddn=BINDDN, bindpass=BINDPASS)
    api_call(dev_server, "POST", f"sys/auth/{path}/tune",
             body={"user_lockout_config": {"lockout_threshold": "2", "lockout_duration": "30s"}})
    for _ in range(2):
        r = api_call(dev_server, "POST", f"auth/{path}/login/bob", body={"password": "wrong"})
        assert r.status_code == 400
    r = api_call(dev_server, "POST", f"auth/{path}/login/bob", body={"password": "bob-pw"})
    assert r.status_code == 403 and r.json()["errors"], "locked out: even the right password is refused (Vault's 403)"
    assert root_client.auth.ldap.login("alice", "alice-pw", mount_point=path, use_token=False)["auth"]["client_token"]
    # A tenant's directory on the node's loopback is refused by the operator's outbound policy.
    t = unique("tl").replace("-", "")[:12]
    assert api_call(dev_server, "POST", f"sys/namespaces/{t}").status_code == 200
    c = hvac.Client(url=dev_server.url, token="root", namespace=t)
    c.sys.enable_auth_method(method_type="ldap", path="ldap")
    c.auth.ldap.configure(url=URL, userdn=USERS, userattr="uid", mount_point="ldap")
    r = api_call(dev_server, "POST", "auth/ldap/login/alice", ns=t, body={"password": "alice-pw"})
    assert r.status_code == 400 and "not allowed from this namespace" in r.json()["errors"][0], r.text
