"""Issue #26: the security review's confirmed findings, one test each, through the real
binary. Each test failed on the code before the fix (the finding's number in its name).
"""
from __future__ import annotations

import concurrent.futures
import time
import uuid

import pytest
import requests

from conftest import PEER_BAO, ServerProcess, _base_tmp, api_call as call, coffer_bin, free_port, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="Coffer's fixes; several differ from Vault's stock behaviour")


def name(prefix="s"):
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def alive(srv):
    assert srv.running, "the server died\n" + srv.log_tail()
    assert requests.get(srv.url + "/v1/sys/health", timeout=10).status_code == 200


def token_with(srv, policy_hcl, ns=None, **extra):
    pol = name("p")
    r = call(srv, "PUT", f"sys/policies/acl/{pol}", ns=ns, body={"policy": policy_hcl})
    assert r.status_code == 204, r.text
    r = call(srv, "POST", "auth/token/create", ns=ns, body={"policies": [pol], **extra})
    assert r.status_code == 200, r.text
    return r.json()["auth"]["client_token"], pol


def started_config_server(label, storage, top=""):
    """A non-dev server from a config (plain HTTP, opted in), initialized and unsealed:
    answers (server, unseal key, root token)."""
    tmp = _base_tmp()
    port = free_port()
    cfg = tmp / "c.hcl"
    cfg.write_text(f'{storage}\nallow_plaintext_api = true\n{top}\n'
                   f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n')
    srv = ServerProcess(label, [coffer_bin(), "server", "--config", str(cfg)], port, tmp).start()
    init = requests.put(f"{srv.url}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30).json()
    key, root = init["keys"][0], init["root_token"]
    requests.put(f"{srv.url}/v1/sys/unseal", json={"key": key}, timeout=30)
    return srv, key, root


# ------------------------------------------------------------------ 1: one spelling per path


def test_26_1_empty_and_dot_segments_cannot_bypass_a_deny(dev_server):
    mount = name("kv")
    assert call(dev_server, "POST", f"sys/mounts/{mount}", body={"type": "kv", "options": {"version": "2"}}).status_code == 204
    assert call(dev_server, "PUT", f"{mount}/data/admin/db", body={"data": {"pw": "s3cret-admin"}}).status_code == 200
    token, _ = token_with(dev_server, f'''
path "{mount}/*" {{ capabilities = ["create", "read", "update", "list"] }}
path "{mount}/data/admin/*" {{ capabilities = ["deny"] }}
''')
    assert call(dev_server, "GET", f"{mount}/data/admin/db", token=token).status_code == 403
    for variant in [f"{mount}//data/admin/db", f"{mount}/./data/admin/db", f"{mount}/data//admin/db",
                    f"{mount}/data/admin/../admin/db", f"{mount}%2F%2Fdata%2Fadmin%2Fdb", f"{mount}/data/admin/./db"]:
        r = call(dev_server, "GET", variant, token=token)
        assert r.status_code in (400, 403), (variant, r.status_code, r.text)
        assert "s3cret-admin" not in r.text
        w = call(dev_server, "PUT", variant, token=token, body={"data": {"pw": "overwritten"}})
        assert w.status_code in (400, 403), (variant, w.status_code, w.text)
    # Nothing was overwritten, and the refusal names the problem.
    assert call(dev_server, "GET", f"{mount}/data/admin/db").json()["data"]["data"]["pw"] == "s3cret-admin"
    r = call(dev_server, "GET", f"{mount}//data/admin/db")
    assert r.status_code == 400 and "empty" in r.json()["errors"][0]
    # A trailing slash (a folder, for LIST) is still fine.
    assert call(dev_server, "LIST", f"{mount}/metadata/admin/").status_code == 200


def test_26_12_acl_globs_compare_bytes(dev_server):
    """`deny admin*` must cover `admin\u0301…`: storage files it below `admin`."""
    mount = name("kv")
    call(dev_server, "POST", f"sys/mounts/{mount}", body={"type": "kv", "options": {"version": "1"}})
    token, _ = token_with(dev_server, f'''
path "{mount}/*" {{ capabilities = ["create", "read", "update"] }}
path "{mount}/admin*" {{ capabilities = ["deny"] }}
''')
    r = call(dev_server, "PUT", f"{mount}/admin\u0301x", token=token, body={"v": "1"})
    assert r.status_code == 403, r.text
    assert call(dev_server, "PUT", f"{mount}/other", token=token, body={"v": "1"}).status_code == 204


# -------------------------------------------------------- 2: validation only after the ACL


def test_26_2_fields_are_validated_after_authorization(dev_server):
    r = call(dev_server, "POST", "auth/token/create", body={"policies": ["default"]})
    weak = r.json()["auth"]["client_token"]
    r = call(dev_server, "PUT", "auth/token/roles/x", token=weak, body={"path_suffix": 1e300, "period": "1e300s"})
    assert r.status_code == 403, r.text
    alive(dev_server)
    # The root token gets a clear 400 for the bad duration, not a crash.
    r = call(dev_server, "PUT", "auth/token/roles/x", body={"period": 1e300})
    assert r.status_code == 400 and "duration" in r.text
    r = call(dev_server, "PUT", "auth/token/roles/x", body={"path_suffix": 2 ** 70})
    assert r.status_code == 204, r.text
    alive(dev_server)


# ----------------------------------------------------------------- 3: token-role escalation


def test_26_3_role_without_allowed_policies_grants_only_the_callers_policies(dev_server):
    role = name("r")
    assert call(dev_server, "PUT", f"auth/token/roles/{role}", body={}).status_code == 204
    call(dev_server, "PUT", "sys/policies/acl/admin26", body={"policy": 'path "*" { capabilities = ["sudo", "read", "update", "create", "delete", "list"] }'})
    token, pol = token_with(dev_server, f'path "auth/token/create/{role}" {{ capabilities = ["update"] }}')
    r = call(dev_server, "POST", f"auth/token/create/{role}", token=token, body={"policies": ["admin26"]})
    assert r.status_code == 400 and "subset" in r.text, r.text
    # Its own policies are fine, and are what it gets by default.
    r = call(dev_server, "POST", f"auth/token/create/{role}", token=token, body={})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["auth"]["policies"]) == sorted(["default", pol])


# --------------------------------------------------- 4: tenant-admin values that trapped


def test_26_4_tenant_admin_values_out_of_range_are_400_and_the_node_lives(dev_server):
    tenant = name("t")
    r = call(dev_server, "PUT", f"sys/tenants/{tenant}", body={})
    assert r.status_code == 200, r.text
    admin = r.json()["auth"]["client_token"]
    policy = 'length = 20\nrule "charset" {\n  charset = "abc"\n  min-chars = 9223372036854775807\n}\nrule "charset" {\n  charset = "xyz"\n  min-chars = 9223372036854775807\n}\n'
    r = call(dev_server, "PUT", "sys/policies/password/big", token=admin, ns=tenant, body={"policy": policy})
    assert r.status_code == 400, r.text
    alive(dev_server)
    assert call(dev_server, "POST", "sys/mounts/kvt", token=admin, ns=tenant, body={"type": "kv"}).status_code == 204
    r = call(dev_server, "POST", "sys/mounts/kvt/tune", token=admin, ns=tenant, body={"default_lease_ttl": 1e300})
    assert r.status_code == 400, r.text
    alive(dev_server)
    r = call(dev_server, "POST", "sys/quotas/rate-limit/huge", token=admin, ns=tenant, body={"rate": 1e300})
    assert r.status_code == 400, r.text
    r = call(dev_server, "POST", "sys/quotas/rate-limit/huge", token=admin, ns=tenant, body={"rate": "1e300"})
    assert r.status_code == 400, r.text
    r = call(dev_server, "POST", "sys/quotas/rate-limit/huge", token=admin, ns=tenant, body={"rate": "inf"})
    assert r.status_code == 400, r.text
    alive(dev_server)
    # Requests into the namespace still work (no stored bad quota faults them).
    assert call(dev_server, "GET", "sys/mounts", token=admin, ns=tenant).status_code == 200


def test_26_5_username_template_growth_is_bounded(dev_server):
    mount = name("db")
    assert call(dev_server, "POST", f"sys/mounts/{mount}", body={"type": "database"}).status_code == 204
    inner = '"x"'
    for _ in range(8):
        inner = f'(replace "" "0123456789" {inner})'
    r = call(dev_server, "POST", f"{mount}/config/pg", body={
        "plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/db",
        "username": "u", "password": "p", "verify_connection": False, "allowed_roles": "*",
        "username_template": "{{ " + inner + " }}"})
    assert r.status_code == 400 and "longer than" in r.text, r.text
    r = call(dev_server, "POST", f"{mount}/config/pg", body={
        "plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/db",
        "username": "u", "password": "p", "verify_connection": False,
        "username_template": "{{ hex (hex (hex (hex (hex (hex (hex (hex (hex (hex (hex \"abcdef\"))))))))))}}"})
    assert r.status_code == 400, r.text
    alive(dev_server)


# ------------------------------------------------------------- 6: token lifetimes

def test_26_6_period_needs_sudo_and_children_die_with_their_parent(dev_server):
    token, _ = token_with(dev_server, 'path "auth/token/create" { capabilities = ["update"] }', ttl="4s", renewable=False)
    r = call(dev_server, "POST", "auth/token/create", token=token, body={"period": "8760h", "policies": ["default"]})
    assert r.status_code == 400 and "sudo" in r.text, r.text
    # A plain child, looked up later by accessor with the root token only: the parent is
    # never presented again, its expiry alone must revoke the child.
    r = call(dev_server, "POST", "auth/token/create", token=token, body={"policies": ["default"], "ttl": "1h"})
    assert r.status_code == 200, r.text
    child = r.json()["auth"]
    assert child["lease_duration"] <= 4
    parent_accessor = call(dev_server, "GET", "auth/token/lookup-self", token=token).json()["data"]["accessor"]
    # The child cannot renew itself past its parent's end either.
    r = call(dev_server, "POST", "auth/token/renew-self", token=child["client_token"], body={"increment": "1h"})
    assert r.status_code == 200 and r.json()["auth"]["lease_duration"] <= 4, r.text
    # `LIST auth/token/accessors` reads the stored tokens without looking them up (a lookup
    # would revoke an expired token itself): only the schedule can remove them.
    assert child["accessor"] in call(dev_server, "LIST", "auth/token/accessors").json()["data"]["keys"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listed = call(dev_server, "LIST", "auth/token/accessors").json()["data"]["keys"]
        if child["accessor"] not in listed and parent_accessor not in listed:
            break
        time.sleep(0.5)
    assert child["accessor"] not in listed, "the child outlived its parent"
    assert parent_accessor not in listed, "the parent was not revoked at its expiry"


def test_26_6_expired_token_is_revoked_on_schedule_after_a_restart():
    """The schedule lives in storage: a token that expires while the server is down is
    revoked at the next start, without being presented."""
    srv, key, root = started_config_server("coffer-expiry", f'storage "sqlite" {{ path = "{_base_tmp() / "c.db"}" }}')
    try:
        r = call(srv, "POST", "auth/token/create", token=root, body={"policies": ["default"], "ttl": "3s"})
        accessor = r.json()["auth"]["accessor"]
        assert accessor in call(srv, "LIST", "auth/token/accessors", token=root).json()["data"]["keys"]
        srv.stop()
        time.sleep(4)
        srv.start()
        requests.put(f"{srv.url}/v1/sys/unseal", json={"key": key}, timeout=30)
        deadline = time.monotonic() + 15
        # `auth/token/accessors` lists stored tokens without looking them up.
        while time.monotonic() < deadline:
            listed = call(srv, "LIST", "auth/token/accessors", token=root).json()["data"]["keys"]
            if accessor not in listed:
                break
            time.sleep(0.5)
        assert accessor not in listed
    finally:
        srv.dispose()


# ----------------------------------------------------------------- 7: managed quotas


def test_26_7_managed_tenant_quota_covers_child_namespaces(dev_server):
    tenant = name("t")
    r = call(dev_server, "PUT", f"sys/tenants/{tenant}", body={"quotas": [{"name": "plan", "rate": 3, "interval": "60s", "group_by": "none"}]})
    assert r.status_code == 200, r.text
    admin = r.json()["auth"]["client_token"]
    assert call(dev_server, "POST", "sys/namespaces/team", token=admin, ns=tenant).status_code == 200
    codes = [call(dev_server, "GET", "sys/mounts", token=admin, ns=f"{tenant}/team").status_code for _ in range(5)]
    assert codes.count(200) <= 2 and codes[-1] == 429, codes


# ------------------------------------------------------------------- 8: num_uses race


def test_26_8_a_one_use_token_serves_exactly_one_of_40_concurrent_requests(dev_server):
    r = call(dev_server, "POST", "auth/token/create", body={"policies": ["default"], "num_uses": 1})
    token = r.json()["auth"]["client_token"]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda _: call(dev_server, "GET", "auth/token/lookup-self", token=token).status_code, range(40)))
    assert codes.count(200) == 1, codes
    r = call(dev_server, "POST", "auth/token/create", body={"policies": ["default"], "num_uses": 5})
    token = r.json()["auth"]["client_token"]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda _: call(dev_server, "GET", "auth/token/lookup-self", token=token).status_code, range(40)))
    assert codes.count(200) == 5, codes


# ---------------------------------------------------------------- 9: reserved names


@pytest.mark.parametrize("reserved", ["cubbyhole", "sys", "auth", "identity"])
def test_26_9_reserved_names_are_refused_at_depth_two(dev_server, reserved):
    parent = name("n")
    assert call(dev_server, "POST", f"sys/namespaces/{parent}").status_code == 200
    r = call(dev_server, "POST", f"sys/namespaces/{reserved}", ns=parent)
    assert r.status_code == 400 and "reserved" in r.text, r.text
    r = call(dev_server, "POST", f"sys/namespaces/{parent}/{reserved}")
    assert r.status_code == 400, r.text


# --------------------------------------------------------- 11: plaintext API needs opt-in


def test_26_11_non_dev_server_without_tls_refuses_to_start_unless_opted_in():
    tmp = _base_tmp()
    port = free_port()
    cfg = tmp / "c.hcl"
    cfg.write_text(f'storage "inmem" {{}}\nlistener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n')
    import subprocess
    p = subprocess.run([coffer_bin(), "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "allow_plaintext_api" in p.stderr, p.stderr
    cfg.write_text("allow_plaintext_api = true\n" + cfg.read_text())
    srv = ServerProcess("coffer-plain", [coffer_bin(), "server", "--config", str(cfg)], port, tmp).start()
    try:
        assert "without TLS" in srv.log_text()
    finally:
        srv.dispose()


# ------------------------------------------------------------- 12: the OpenAPI document


def test_26_12_openapi_document_needs_a_token(dev_server):
    r = requests.get(f"{dev_server.url}/v1/sys/internal/specs/openapi", timeout=10)
    assert r.status_code == 403
    assert "secret/" not in r.text
    assert call(dev_server, "GET", "sys/internal/specs/openapi").status_code == 200


# ------------------------------------------------- 10: tenant databases can't probe the node


def _db_config(srv, mount, url, ns=None, verify=True):
    return call(srv, "POST", f"{mount}/config/pg", ns=ns, body={
        "plugin_name": "postgresql-database-plugin", "connection_url": url,
        "username": "u", "password": "secret-pw-1", "verify_connection": verify, "allowed_roles": "*"})


def test_26_10_tenant_database_connections_are_limited_to_allowed_hosts(dev_server):
    tenant = name("t")
    assert call(dev_server, "POST", f"sys/namespaces/{tenant}").status_code == 200
    assert call(dev_server, "POST", "sys/mounts/db", ns=tenant, body={"type": "database"}).status_code == 204
    refusals = set()
    # Loopback (open and closed ports alike), link-local metadata, a unix socket: one answer.
    for url in ["postgresql://{{username}}:{{password}}@127.0.0.1:%d/db" % dev_server.port,
                "postgresql://{{username}}:{{password}}@127.0.0.1:1/db",
                "postgresql://{{username}}:{{password}}@localhost:5432/db",
                "postgresql://{{username}}:{{password}}@169.254.169.254:5432/db",
                "postgresql://{{username}}:{{password}}@[::1]:5432/db",
                "host=/var/run/postgresql user={{username}} password={{password}}",
                "postgresql://{{username}}:{{password}}@127.0.0.1:1,10.1.2.3:5432/db"]:
        r = _db_config(dev_server, "db", url, ns=tenant)
        assert r.status_code == 400, (url, r.status_code, r.text)
        refusals.add(r.json()["errors"][0])
        assert "secret-pw-1" not in r.text
    assert len(refusals) == 1 and "not allowed from this namespace" in refusals.pop()
    # Saved without verification, the connection is still refused when it is used.
    r = _db_config(dev_server, "db", "postgresql://{{username}}:{{password}}@127.0.0.1:1/db", ns=tenant, verify=False)
    assert r.status_code == 204, r.text
    r = call(dev_server, "POST", "db/rotate-root/pg", ns=tenant)
    assert r.status_code == 400 and "not allowed from this namespace" in r.text, r.text
    # The root namespace (the operator's) is not limited: a closed port is just unavailable.
    assert call(dev_server, "POST", "sys/mounts/db26", body={"type": "database"}).status_code == 204
    r = _db_config(dev_server, "db26", "postgresql://{{username}}:{{password}}@127.0.0.1:1/db")
    assert r.status_code != 400 or "not allowed" not in r.text, r.text
    alive(dev_server)


def test_26_10_an_operator_allowed_host_is_reachable_from_a_tenant():
    srv, _, root = started_config_server("coffer-dbhosts", 'storage "inmem" {}', 'database_allowed_hosts = ["127.0.0.1"]')
    try:
        tenant = name("t")
        assert call(srv, "POST", f"sys/namespaces/{tenant}", token=root).status_code == 200
        assert call(srv, "POST", "sys/mounts/db", token=root, ns=tenant, body={"type": "database"}).status_code == 204
        def cfg_with(url):
            return call(srv, "POST", "db/config/pg", token=root, ns=tenant, body={
                "plugin_name": "postgresql-database-plugin", "connection_url": url,
                "username": "u", "password": "p", "verify_connection": True})
        # Allowed: the connection is attempted (and fails: nothing listens on port 1), with one
        # uniform text that does not say why.
        r = cfg_with("postgresql://{{username}}:{{password}}@127.0.0.1:1/db")
        assert "not allowed" not in r.text and "Connection refused" not in r.text, r.text
        assert "cannot connect to the database" in r.text, r.text
        # Anything not listed is refused.
        r = cfg_with("postgresql://{{username}}:{{password}}@10.1.2.3:5432/db")
        assert r.status_code == 400 and "not allowed from this namespace" in r.text, r.text
    finally:
        srv.dispose()


# ------------------------------------------------------------- suspected items, confirmed


def test_gateway_endpoints_spend_token_uses_and_leases_listing_needs_sudo(dev_server):
    """sys/metrics and sys/step-down spend a use like any request; LIST sys/leases/lookup/
    and GET sys/leases need sudo, as in Vault."""
    token, _ = token_with(dev_server, 'path "sys/metrics" { capabilities = ["read"] }', num_uses=1)
    assert call(dev_server, "GET", "sys/metrics", token=token).status_code == 200
    assert call(dev_server, "GET", "sys/metrics", token=token).status_code == 403
    plain, _ = token_with(dev_server, 'path "sys/leases*" { capabilities = ["read", "list", "update"] }')
    assert call(dev_server, "LIST", "sys/leases/lookup/", token=plain).status_code == 403
    assert call(dev_server, "GET", "sys/leases", token=plain).status_code == 403
    sudo, _ = token_with(dev_server, 'path "sys/leases*" { capabilities = ["read", "list", "update", "sudo"] }')
    assert call(dev_server, "GET", "sys/leases", token=sudo).status_code == 200


def test_mount_metadata_is_bounded(dev_server):
    """A tenant admin cannot grow the mount table (loaded with every namespace) without
    limit: description and options are bounded; listing_visibility is checked."""
    mount = name("kv")
    assert call(dev_server, "POST", f"sys/mounts/{mount}", body={"type": "kv", "description": "x" * 20000}).status_code == 400
    assert call(dev_server, "POST", f"sys/mounts/{mount}", body={"type": "kv"}).status_code == 204
    r = call(dev_server, "POST", f"sys/mounts/{mount}/tune", body={"description": "y" * (1 << 20)})
    assert r.status_code == 400 and "longer than" in r.text, r.text
    r = call(dev_server, "POST", f"sys/mounts/{mount}/tune", body={"options": {f"k{i}": "v" for i in range(100)}})
    assert r.status_code == 400, r.text
    assert call(dev_server, "POST", f"sys/mounts/{mount}/tune", body={"listing_visibility": "bogus"}).status_code == 400
    assert call(dev_server, "POST", f"sys/mounts/{mount}/tune", body={"description": "fine", "listing_visibility": "hidden"}).status_code == 204
    assert call(dev_server, "GET", f"sys/mounts/{mount}/tune").json()["data"]["description"] == "fine"


def test_custom_token_ids_must_be_usable(dev_server):
    for bad in ["a\u0000b", "x" * 70000, "has space", "tab\there"]:
        r = call(dev_server, "POST", "auth/token/create", body={"id": bad, "policies": ["default"]})
        assert r.status_code == 400, (bad[:20], r.text)
    good = name("id")
    r = call(dev_server, "POST", "auth/token/create", body={"id": good, "policies": ["default"]})
    assert r.status_code == 200 and r.json()["auth"]["client_token"] == good
    assert call(dev_server, "GET", "auth/token/lookup-self", token=good).status_code == 200


# ------------------------------------------------------ #16.1: the traps the fuzz run found


@pytest.mark.parametrize("value", [2 ** 70, -(2 ** 70), 1e308, -1e308, 1.5e19])
def test_16_1_a_huge_number_in_a_string_field_does_not_kill_the_server(dev_server, value):
    """`POST sys/mounts/x {"type": "kv", "description": 2**70}` stopped the process (SIGILL)."""
    mount = name("kv")
    r = call(dev_server, "POST", f"sys/mounts/{mount}", body={"type": "kv", "description": value})
    assert r.status_code == 204, r.text
    alive(dev_server)
    assert call(dev_server, "GET", f"sys/mounts/{mount}").status_code == 200


def test_16_1_numbers_beyond_a_double_are_a_400(dev_server):
    r = requests.post(f"{dev_server.url}/v1/sys/mounts/{name('kv')}", data='{"type": "kv", "description": 1e400}',
                      headers={"X-Vault-Token": "root", "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "number" in r.text, r.text
    alive(dev_server)
