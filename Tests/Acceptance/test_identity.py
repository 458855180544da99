"""The identity store (issue #17): entities, aliases, groups, group aliases, lookups and
merges through hvac against the real binary; logins that find or make their entity; the
policies of an entity's groups (nested too) granting access to its existing tokens at once
and no longer once it leaves; disabled entities; tenant isolation of entities and groups."""

from __future__ import annotations

import hvac
import pytest

from conftest import PEER_BAO, api_call, unique


def error_text(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


def auth_accessor(client, path):
    return client.sys.list_auth_methods()["data"][f"{path}/"]["accessor"]


def userpass(client, *users):
    path = unique("up")
    client.sys.enable_auth_method(method_type="userpass", path=path)
    for u in users:
        client.auth.userpass.create_or_update_user(u, password="pw-" + u, mount_point=path)
    return path, auth_accessor(client, path)


def test_entity_crud_list_and_names(dev_server, root_client):
    ident = root_client.secrets.identity
    name = unique("ent")
    created = ident.create_or_update_entity(name=name, metadata={"team": "ops"}, policies=["B", "a", "a"])["data"]
    eid = created["id"]
    assert created["name"] == name and created["aliases"] is None
    e = ident.read_entity(eid)["data"]
    assert e["name"] == name and e["policies"] == ["a", "b"] and e["metadata"] == {"team": "ops"}
    assert e["disabled"] is False and e["aliases"] == [] and e["group_ids"] == [] and e["namespace_id"] == "root"
    assert e["creation_time"].endswith("Z") and e["merged_entity_ids"] is None

    # By name: the same entity, case-insensitively; a POST of a taken name updates it (204).
    assert ident.read_entity_by_name(name.upper())["data"]["id"] == eid
    r = ident.create_or_update_entity(name=name, policies=["c"])
    assert r.status_code == 204
    assert ident.read_entity(eid)["data"]["policies"] == ["c"]
    r = ident.create_or_update_entity_by_name(name=name, disabled=True)
    assert r.status_code == 204 and ident.read_entity(eid)["data"]["disabled"] is True
    assert ident.read_entity(eid)["data"]["metadata"] == {"team": "ops"}  # fields not sent are kept

    other = ident.create_or_update_entity(name=unique("ent2"))["data"]["id"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.update_entity(entity_id=other, name=name)
    assert error_text(ex) == "entity name is already in use"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.update_entity(entity_id="no-such-id", name="x")
    assert error_text(ex) == "entity not found from id"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_entity(name=unique("ent3"), policies=["root"])
    assert error_text(ex) == "policies cannot contain root"
    # Vault and OpenBao answer a 500 for metadata out of its limits; Coffer a 400, same text.
    with pytest.raises(hvac.exceptions.InternalServerError if PEER_BAO else hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_entity(name=unique("ent3"), metadata={"vault-x": "1"})
    assert 'key prefix "vault-" is reserved for internal use' in error_text(ex)

    listed = ident.list_entities()["data"]
    assert eid in listed["keys"] and other in listed["keys"] and listed["key_info"][eid]["name"] == name
    assert name in ident.list_entities_by_name()["data"]["keys"]

    # A generated name when none is given.
    anon = api_call(dev_server, "POST", "identity/entity", body={}).json()["data"]
    # Vault's form; OpenBao adds the namespace id (`entity_1a2b3c4d.root`).
    assert anon["name"].startswith("entity_") and len(anon["name"].split(".")[0]) == len("entity_") + 8

    ident.delete_entity(other)
    with pytest.raises(hvac.exceptions.InvalidPath):
        ident.read_entity(other)
    assert ident.delete_entity(other).status_code == 204  # unknown: still a 204
    ident.delete_entity_by_name(name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        ident.read_entity(eid)
    r = api_call(dev_server, "POST", "identity/entity/batch-delete", body={"entity_ids": [anon["id"], "nope"]})
    assert r.status_code == 204
    with pytest.raises(hvac.exceptions.InvalidPath):
        ident.read_entity(anon["id"])


def test_entity_aliases(dev_server, root_client):
    ident = root_client.secrets.identity
    path, acc = userpass(root_client)
    path2, acc2 = userpass(root_client)
    eid = ident.create_or_update_entity(name=unique("ea"))["data"]["id"]
    a = ident.create_or_update_entity_alias(name="Bob", canonical_id=eid, mount_accessor=acc)["data"]
    assert a["canonical_id"] == eid
    alias = ident.read_entity_alias(a["id"])["data"]
    assert alias["name"] == "Bob" and alias["mount_accessor"] == acc and alias["mount_type"] == "userpass"
    assert alias["mount_path"] == f"auth/{path}/" and alias["namespace_id"] == "root" and alias["local"] is False
    e = ident.read_entity(eid)["data"]
    assert [x["id"] for x in e["aliases"]] == [a["id"]] and e["aliases"][0]["mount_type"] == "userpass"

    # One alias per mount on an entity; (mount, name) names one alias.
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_entity_alias(name="other", canonical_id=eid, mount_accessor=acc)
    assert error_text(ex) == "Alias already exists for requested entity and mount accessor"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_entity_alias(name="x", canonical_id=eid, mount_accessor="auth_userpass_nope")
    assert error_text(ex) == 'invalid mount accessor "auth_userpass_nope"'
    again = api_call(dev_server, "POST", "identity/entity-alias", body={"name": "Bob", "mount_accessor": acc})
    assert again.status_code == 204  # the same alias, nothing changed

    # Without canonical_id a new alias makes a new entity.
    solo = api_call(dev_server, "POST", "identity/entity-alias", body={"name": "carol", "mount_accessor": acc2}).json()["data"]
    assert solo["canonical_id"] != eid and ident.read_entity(solo["canonical_id"])["data"]["name"].startswith("entity_")

    # Moving an alias onto an entity, renaming it.
    moved = ident.update_entity_alias(alias_id=solo["id"], name="carol2", canonical_id=eid, mount_accessor=acc2)["data"]
    assert moved["canonical_id"] == eid
    assert sorted(x["name"] for x in ident.read_entity(eid)["data"]["aliases"]) == ["Bob", "carol2"]
    listed = ident.list_entity_aliases()["data"]
    assert a["id"] in listed["keys"] and listed["key_info"][a["id"]]["canonical_id"] == eid

    ident.delete_entity_alias(a["id"])
    with pytest.raises(hvac.exceptions.InvalidPath):
        ident.read_entity_alias(a["id"])
    assert [x["name"] for x in ident.read_entity(eid)["data"]["aliases"]] == ["carol2"]


def test_login_finds_or_makes_its_entity(dev_server, root_client):
    ident = root_client.secrets.identity
    path, acc = userpass(root_client, "dora")
    maker = unique("maker")
    root_client.sys.create_or_update_policy(maker, 'path "auth/token/create" { capabilities = ["update"] }')
    root_client.auth.userpass.create_or_update_user("dora", password="pw-dora", policies=[maker], mount_point=path)
    login = root_client.auth.userpass.login("dora", "pw-dora", mount_point=path, use_token=False)["auth"]
    eid = login["entity_id"]
    assert eid
    found = ident.lookup_entity(alias_name="dora", alias_mount_accessor=acc)["data"]
    assert found["id"] == eid and found["aliases"][0]["name"] == "dora" and found["aliases"][0]["mount_path"] == f"auth/{path}/"
    again = root_client.auth.userpass.login("DORA", "pw-dora", mount_point=path, use_token=False)["auth"]
    assert again["entity_id"] == eid
    me = dev_server.client(login["client_token"]).auth.token.lookup_self()["data"]
    assert me["entity_id"] == eid and "identity_policies" not in me

    # A child token carries its parent's entity; an orphan does not.
    child = dev_server.client(login["client_token"]).auth.token.create(policies=["default"])["auth"]
    assert child["entity_id"] == eid

    # AppRole: the alias is the role id, with the role's name as metadata.
    root_client.sys.enable_auth_method(method_type="approle", path=(ap := unique("ar")))
    root_client.auth.approle.create_or_update_approle("svc", token_policies=["p"], mount_point=ap)
    rid = root_client.auth.approle.read_role_id("svc", mount_point=ap)["data"]["role_id"]
    sid = root_client.auth.approle.generate_secret_id("svc", mount_point=ap)["data"]["secret_id"]
    al = root_client.auth.approle.login(rid, sid, mount_point=ap, use_token=False)["auth"]
    ent = ident.read_entity(al["entity_id"])["data"]
    assert ent["aliases"][0]["name"] == rid and ent["aliases"][0]["metadata"]["role_name"] == "svc"

    # A disabled entity: its tokens are refused (not revoked), its logins too.
    ident.update_entity(entity_id=eid, disabled=True)
    assert api_call(dev_server, "GET", "auth/token/lookup-self", token=login["client_token"]).status_code == 403
    r = api_call(dev_server, "POST", f"auth/{path}/login/dora", token=None, body={"password": "pw-dora"})
    assert r.status_code == 403 and r.json()["errors"] == ["permission denied"]
    ident.update_entity(entity_id=eid, disabled=False)
    assert api_call(dev_server, "GET", "auth/token/lookup-self", token=login["client_token"]).status_code == 200
    # A deleted entity: the same refusal.
    ident.delete_entity(eid)
    assert api_call(dev_server, "GET", "auth/token/lookup-self", token=login["client_token"]).status_code == 403


def test_group_policies_grant_and_stop_granting_at_once(dev_server, root_client):
    ident = root_client.secrets.identity
    kv = unique("kvp")
    root_client.sys.enable_secrets_engine("kv", path=kv, options={"version": "1"})
    root_client.secrets.kv.v1.create_or_update_secret("s", {"v": "1"}, mount_point=kv)
    pol = unique("pol")
    root_client.sys.create_or_update_policy(pol, f'path "{kv}/s" {{ capabilities = ["read"] }}')
    path, acc = userpass(root_client, "eve")
    login = root_client.auth.userpass.login("eve", "pw-eve", mount_point=path, use_token=False)["auth"]
    tok, eid = login["client_token"], login["entity_id"]
    read = lambda: api_call(dev_server, "GET", f"{kv}/s", token=tok).status_code  # noqa: E731
    assert read() == 403

    # A group naming the entity brings its policy to the existing token.
    g = ident.create_or_update_group(name=unique("grp"), policies=[pol], member_entity_ids=[eid])["data"]
    assert read() == 200
    me = dev_server.client(tok).auth.token.lookup_self()["data"]
    assert me["identity_policies"] == [pol] and pol not in me["policies"]
    caps = api_call(dev_server, "POST", "sys/capabilities-self", token=tok, body={"paths": [f"{kv}/s"]}).json()
    assert caps["capabilities"] == ["read"]
    ent = ident.read_entity(eid)["data"]
    assert ent["direct_group_ids"] == [g["id"]] and ent["group_ids"] == [g["id"]]

    # Out of the group: refused again, at once.
    ident.update_group(group_id=g["id"], name=ident.read_group(g["id"])["data"]["name"], member_entity_ids=[])
    assert read() == 403

    # Nested: the policy sits on a parent group; the entity is in the child.
    child = ident.create_or_update_group(name=unique("child"), member_entity_ids=[eid])["data"]
    parent = ident.create_or_update_group(name=unique("parent"), policies=[pol], member_group_ids=[child["id"]])["data"]
    assert read() == 200
    ent = ident.read_entity(eid)["data"]
    assert ent["direct_group_ids"] == [child["id"]] and ent["inherited_group_ids"] == [parent["id"]]
    assert ident.read_group(child["id"])["data"]["parent_group_ids"] == [parent["id"]]
    assert ident.read_group(parent["id"])["data"]["member_group_ids"] == [child["id"]]
    # A loop is refused.
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.update_group(group_id=child["id"], name=ident.read_group(child["id"])["data"]["name"], member_group_ids=[parent["id"]])
    assert error_text(ex) == f'cyclic relationship detected for member group ID "{parent["id"]}"'
    # The entity's own policies apply too; a new login shows them.
    ident.delete_group(parent["id"])
    assert read() == 403
    ident.update_entity(entity_id=eid, policies=[pol])
    assert read() == 200
    again = root_client.auth.userpass.login("eve", "pw-eve", mount_point=path, use_token=False)["auth"]
    assert again["identity_policies"] == [pol] and pol in again["policies"] and pol not in again["token_policies"]


def test_groups_and_group_aliases(dev_server, root_client):
    ident = root_client.secrets.identity
    path, acc = userpass(root_client)
    name = unique("g")
    g = ident.create_or_update_group(name=name, policies=["x"], metadata={"k": "v"})["data"]
    got = ident.read_group(g["id"])["data"]
    assert got["type"] == "internal" and got["policies"] == ["x"] and got["alias"] == {} and got["modify_index"] == 1
    assert ident.read_group_by_name(name)["data"]["id"] == g["id"]
    assert ident.create_or_update_group(name=name, policies=["y"]).status_code == 204  # by name: an update
    assert ident.read_group(g["id"])["data"]["policies"] == ["y"]
    assert name in ident.list_groups_by_name()["data"]["keys"]
    assert ident.list_groups()["data"]["key_info"][g["id"]]["name"] == name
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.update_group(group_id=g["id"], name=name, group_type="external")
    assert error_text(ex) == "group type cannot be changed"
    with pytest.raises(hvac.exceptions.InternalServerError if PEER_BAO else hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_group(name=unique("g"), member_entity_ids=["no-such-entity"])
    assert "invalid entity ID" in error_text(ex)

    # External groups: members only through logins; an alias names the group on a mount.
    ext = ident.create_or_update_group(name=unique("ext"), group_type="external", policies=["z"])["data"]
    r = api_call(dev_server, "POST", "identity/group", body={"id": ext["id"], "member_entity_ids": ["a"]})
    assert r.status_code == 400 and r.json()["errors"] == ["member entities can't be set manually for external groups"]
    ga = ident.create_or_update_group_alias(name="admins", mount_accessor=acc, canonical_id=ext["id"])["data"]
    assert ga["canonical_id"] == ext["id"]
    alias = ident.read_group_alias(ga["id"])["data"]
    assert alias["name"] == "admins" and alias["mount_path"] == f"auth/{path}/" and alias["mount_type"] == "userpass"
    assert ident.read_group(ext["id"])["data"]["alias"]["id"] == ga["id"]
    assert ident.lookup_group(alias_name="admins", alias_mount_accessor=acc)["data"]["id"] == ext["id"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_group_alias(name="admins", mount_accessor=acc)
    assert error_text(ex) == "combination of mount and group alias name is already in use"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_group_alias(name="devs", mount_accessor=acc, canonical_id=g["id"])
    assert error_text(ex) == "alias can't be set on an internal group"
    fresh = ident.create_or_update_group_alias(name="devs", mount_accessor=acc)["data"]  # makes an external group
    assert ident.read_group(fresh["canonical_id"])["data"]["type"] == "external"
    assert ga["id"] in ident.list_group_aliases()["data"]["keys"]
    ident.delete_group_alias(ga["id"])
    assert ident.read_group(ext["id"])["data"]["alias"] == {}

    ident.delete_group_by_name(name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        ident.read_group(g["id"])


def test_lookups(dev_server, root_client):
    ident = root_client.secrets.identity
    srv = dev_server
    name = unique("lk")
    eid = ident.create_or_update_entity(name=name)["data"]["id"]
    assert ident.lookup_entity(name=name)["data"]["id"] == eid
    assert ident.lookup_entity(entity_id=eid)["data"]["name"] == name
    r = api_call(srv, "POST", "identity/lookup/entity", body={"name": "nobody-" + name})
    assert r.status_code == 204
    r = api_call(srv, "POST", "identity/lookup/entity", body={})
    assert r.status_code == 400 and r.json()["errors"] == ["query parameter not supplied"]
    r = api_call(srv, "POST", "identity/lookup/entity", body={"name": name, "id": eid})
    assert r.status_code == 400 and r.json()["errors"] == ["query parameter conflict; please supply distinct set of query parameters"]
    r = api_call(srv, "POST", "identity/lookup/group", body={"alias_name": "x"})
    assert r.status_code == 400 and r.json()["errors"] == ["both 'alias_name' and 'alias_mount_accessor' needs to be set"]


def test_merge_keeps_aliases_and_tokens(dev_server, root_client):
    ident = root_client.secrets.identity
    p1, a1 = userpass(root_client, "fay")
    p2, a2 = userpass(root_client, "fay")
    t1 = root_client.auth.userpass.login("fay", "pw-fay", mount_point=p1, use_token=False)["auth"]
    t2 = root_client.auth.userpass.login("fay", "pw-fay", mount_point=p2, use_token=False)["auth"]
    assert t1["entity_id"] != t2["entity_id"]
    g = ident.create_or_update_group(name=unique("mg"), member_entity_ids=[t2["entity_id"]])["data"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.merge_entities(from_entity_ids=[t1["entity_id"]], to_entity_id=t1["entity_id"])
    assert error_text(ex) == "to_entity_id should not be present in from_entity_ids"
    r = ident.merge_entities(from_entity_ids=[t2["entity_id"]], to_entity_id=t1["entity_id"])
    assert r.status_code == 204
    merged = ident.read_entity(t1["entity_id"])["data"]
    assert sorted(a["mount_accessor"] for a in merged["aliases"]) == sorted([a1, a2])
    assert merged["merged_entity_ids"] == [t2["entity_id"]] and merged["direct_group_ids"] == [g["id"]]
    moved = [a for a in merged["aliases"] if a["mount_accessor"] == a2][0]
    assert moved["merged_from_canonical_ids"] == [t2["entity_id"]]
    with pytest.raises(hvac.exceptions.InvalidPath):
        ident.read_entity(t2["entity_id"])
    # The merged entity's token still works; a new login on either mount finds the survivor.
    assert api_call(dev_server, "GET", "auth/token/lookup-self", token=t2["client_token"]).status_code == 200
    again = root_client.auth.userpass.login("fay", "pw-fay", mount_point=p2, use_token=False)["auth"]
    assert again["entity_id"] == t1["entity_id"]

    # Two aliases on one mount: refused unless one is named to keep.
    p3, a3 = userpass(root_client, "gus", "hal")
    e_gus = root_client.auth.userpass.login("gus", "pw-gus", mount_point=p3, use_token=False)["auth"]["entity_id"]
    e_hal = root_client.auth.userpass.login("hal", "pw-hal", mount_point=p3, use_token=False)["auth"]["entity_id"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.merge_entities(from_entity_ids=[e_hal], to_entity_id=e_gus)
    assert "have aliases with the same mount accessor" in error_text(ex)
    keep = ident.read_entity(e_hal)["data"]["aliases"][0]["id"]
    ident.merge_entities(from_entity_ids=[e_hal], to_entity_id=e_gus, conflicting_alias_ids_to_keep=[keep])
    kept = [a["id"] for a in ident.read_entity(e_gus)["data"]["aliases"]]
    # OpenBao drops the losing alias from its index but still lists it in the entity.
    assert kept == [keep] or (PEER_BAO and keep in kept)


def test_tenants_have_their_own_identities(dev_server):
    a, b = unique("ia").replace("-", "")[:12], unique("ib").replace("-", "")[:12]
    for t in (a, b):
        assert api_call(dev_server, "POST", f"sys/namespaces/{t}").status_code == 200
        assert api_call(dev_server, "POST", "sys/auth/userpass", ns=t, body={"type": "userpass"}).status_code == 204
        assert api_call(dev_server, "POST", "auth/userpass/users/sam", ns=t, body={"password": "pw"}).status_code == 204
    la = api_call(dev_server, "POST", "auth/userpass/login/sam", token=None, ns=a, body={"password": "pw"}).json()["auth"]
    lb = api_call(dev_server, "POST", "auth/userpass/login/sam", token=None, ns=b, body={"password": "pw"}).json()["auth"]
    assert la["entity_id"] and lb["entity_id"] and la["entity_id"] != lb["entity_id"]
    assert api_call(dev_server, "GET", f"identity/entity/id/{la['entity_id']}", ns=a).status_code == 200
    assert api_call(dev_server, "GET", f"identity/entity/id/{la['entity_id']}", ns=b).status_code == 404
    assert api_call(dev_server, "GET", f"identity/entity/id/{la['entity_id']}").status_code == 404
    g = api_call(dev_server, "POST", "identity/group", ns=a, body={"name": "ops", "member_entity_ids": [la["entity_id"]]}).json()["data"]
    assert api_call(dev_server, "GET", f"identity/group/id/{g['id']}", ns=b).status_code in (403, 404)
    # B cannot put A's entity in its groups.
    r = api_call(dev_server, "POST", "identity/group", ns=b, body={"name": "ops", "member_entity_ids": [la["entity_id"]]})
    assert r.status_code in (400, 500) and "invalid entity ID" in r.json()["errors"][0]
    ids = api_call(dev_server, "LIST", "identity/entity/id", ns=b).json()["data"]["keys"]
    assert ids == [lb["entity_id"]]


def test_bad_input_changes_nothing(dev_server, root_client):
    srv = dev_server
    for path, body in (
        ("identity/entity", {"metadata": "not-a-map"}),
        ("identity/entity", {"policies": {"a": 1}}),
        ("identity/entity", {"disabled": "maybe"}),
        ("identity/entity/merge", {"to_entity_id": "x"}),
        ("identity/entity/batch-delete", {}),
        ("identity/entity-alias", {"name": "x"}),
        ("identity/entity-alias", {"id": "nope", "name": "x"}),
        ("identity/group", {"type": "weird"}),
        ("identity/group", {"name": "selfish", "member_group_ids": ["nope"]}),
        ("identity/group-alias", {"name": "x"}),
        ("identity/group-alias", {"name": "x", "mount_accessor": "nope"}),
    ):
        r = api_call(srv, "POST", path, body=body)
        assert 400 <= r.status_code < 500 or (PEER_BAO and r.status_code == 500), (path, body, r.status_code, r.text)
        assert r.json()["errors"], (path, body)
    assert api_call(srv, "POST", "identity/lookup/group", body={"name": "selfish"}).status_code == 204


# ----------------------------------------------------------------------------- identity tokens


def approle_login_with_entity(root_client, dev_server):
    """An AppRole login (so the token has an entity) with a policy that may mint tokens."""
    path = unique("oar")
    root_client.sys.enable_auth_method(method_type="approle", path=path)
    pol = unique("mint")
    root_client.sys.create_or_update_policy(pol, 'path "identity/oidc/token/*" { capabilities = ["read"] }')
    root_client.auth.approle.create_or_update_approle("minter", token_policies=[pol], mount_point=path)
    rid = root_client.auth.approle.read_role_id("minter", mount_point=path)["data"]["role_id"]
    sid = root_client.auth.approle.generate_secret_id("minter", mount_point=path)["data"]["secret_id"]
    auth = root_client.auth.approle.login(rid, sid, mount_point=path, use_token=False)["auth"]
    return dev_server.client(auth["client_token"]), auth["entity_id"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_identity_tokens_verify_against_the_jwks(dev_server, root_client, algorithm):
    """#17 item 6: a role's signed ID token for the calling entity, verified here with PyJWT
    against the published JWKS and discovery document (not with Coffer's own code)."""
    import jwt  # PyJWT

    ident = root_client.secrets.identity
    key, role = unique("key"), unique("role")
    assert ident.create_named_key(key, algorithm=algorithm).status_code == 204
    assert ident.read_named_key(key)["data"] == {"algorithm": algorithm, "allowed_client_ids": [], "rotation_period": 86400, "verification_ttl": 86400}
    r = ident.create_or_update_role(role, key=key, ttl="1h",
                                    template='{"entity_name": {{identity.entity.name}}, "groups": {{identity.entity.groups.names}}, "meta": {{identity.entity.metadata}}, "nbf": {{time.now}}}')
    assert r.status_code == 204
    cid = ident.read_role(role)["data"]["client_id"]
    assert len(cid) == 26 and role in ident.list_roles()["data"]["keys"] and key in ident.list_named_keys()["data"]["keys"]
    minter, eid = approle_login_with_entity(root_client, dev_server)
    ident.update_entity(entity_id=eid, metadata={"team": "ops"})
    gname = unique("tg")
    ident.create_or_update_group(name=gname, member_entity_ids=[eid])

    # The key does not yet allow the role's client id.
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        minter.secrets.identity.generate_signed_id_token(role)
    assert error_text(ex) == f'the key "{key}" does not list the client ID of the role "{role}" as an allowed client ID'
    ident.create_named_key(key, algorithm=algorithm, allowed_client_ids=[cid])
    out = minter.secrets.identity.generate_signed_id_token(role)["data"]
    assert out["client_id"] == cid and out["ttl"] == 3600
    token = out["token"]

    disc = requests_get(dev_server, "identity/oidc/.well-known/openid-configuration")
    assert disc["issuer"].endswith("/v1/identity/oidc") and disc["jwks_uri"] == disc["issuer"] + "/.well-known/keys"
    assert algorithm in disc["id_token_signing_alg_values_supported"]
    jwks = jwt.PyJWKSet.from_dict(requests_get(dev_server, "identity/oidc/.well-known/keys"))
    kid = jwt.get_unverified_header(token)["kid"]
    signing = [k for k in jwks.keys if k.key_id == kid][0]
    claims = jwt.decode(token, signing.key, algorithms=[algorithm], audience=cid, issuer=disc["issuer"])
    assert claims["sub"] == eid and claims["namespace"] == "root" and claims["exp"] - claims["iat"] == 3600
    assert claims["entity_name"] == ident.read_entity(eid)["data"]["name"] and claims["groups"] == [gname]
    assert claims["meta"] == {"team": "ops"}
    # A flipped signature byte does not verify.
    head, body, sig = token.split(".")
    forged = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, signing.key, algorithms=[algorithm], audience=cid)

    # Introspection: Vault's bare {"active": ...}.
    assert ident.introspect_signed_id_token(token, client_id=cid) == {"active": True}
    bad = ident.introspect_signed_id_token(forged, client_id=cid)
    assert bad["active"] is False and bad["error"]
    assert ident.introspect_signed_id_token(token, client_id="someone-else")["active"] is False

    # Rotation: a new key signs; the old one still verifies (in the JWKS) until verification_ttl.
    r = api_call(dev_server, "POST", f"identity/oidc/key/{key}/rotate", body={"verification_ttl": "1h"})
    assert r.status_code == 204
    kids = {k["kid"] for k in requests_get(dev_server, "identity/oidc/.well-known/keys")["keys"]}
    assert kid in kids
    fresh = minter.secrets.identity.generate_signed_id_token(role)["data"]["token"]
    assert jwt.get_unverified_header(fresh)["kid"] != kid and jwt.get_unverified_header(fresh)["kid"] in kids
    assert ident.introspect_signed_id_token(token, client_id=cid)["active"] is True

    # A disabled entity's tokens no longer introspect as active; a key in use cannot go.
    ident.update_entity(entity_id=eid, disabled=True)
    assert ident.introspect_signed_id_token(fresh)["active"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.delete_named_key(key)
    assert f"currently referenced by these roles: {role}" in error_text(ex)
    ident.delete_role(role)
    assert ident.delete_named_key(key).status_code == 204


def requests_get(srv, path):
    r = api_call(srv, "GET", path, token=None)
    assert r.status_code == 200, r.text
    return r.json()


def test_identity_token_failures_and_config(dev_server, root_client):
    ident = root_client.secrets.identity
    assert ident.configure_tokens_backend(issuer="").status_code == 204
    r = ident.configure_tokens_backend(issuer="https://issuer.example:8200")
    assert len(r["warnings"]) >= 1
    assert ident.read_tokens_backend_configuration()["data"]["issuer"] == "https://issuer.example:8200"
    assert requests_get(dev_server, "identity/oidc/.well-known/openid-configuration")["issuer"] == "https://issuer.example:8200/v1/identity/oidc"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.configure_tokens_backend(issuer="https://issuer.example:8200/path?x=1")
    assert "invalid issuer" in error_text(ex)
    ident.configure_tokens_backend(issuer="")

    key = unique("k")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        ident.create_named_key(key, algorithm="HS256")
    ident.create_named_key(key, allowed_client_ids=["*"])
    for template, text in (('{"sub": "x"}', 'top level key "sub" not allowed. Restricted keys: iat, aud, exp'), ("[1]", "error parsing template"),
                           ('{"a": {{identity.entity.nope}}}', "no value could be found for one of the template directives")):
        with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
            ident.create_or_update_role(unique("r"), key=key, template=template)
        assert text in error_text(ex)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.create_or_update_role(unique("r"), key=key, ttl="48h")
    assert "cannot be longer than the verification_ttl" in error_text(ex)
    role = unique("r")
    ident.create_or_update_role(role, key=key)
    # The root token has no entity.
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.generate_signed_id_token(role)
    assert error_text(ex) == "no entity associated with the request's token"
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        ident.generate_signed_id_token("no-such-role")
    assert error_text(ex) == 'role "no-such-role" not found'
    bad = ident.introspect_signed_id_token("not.a.jwt")
    assert bad["active"] is False
