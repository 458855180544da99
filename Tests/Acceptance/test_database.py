"""Issue #6: the lease manager and dynamic database credentials, end to end.

Every test drives the real `coffer` binary over HTTP (hvac where hvac has the call) and
checks the effect in the real database: PostgreSQL and MariaDB started once per run by
Ops/postgres and Ops/mariadb (Ops/test exports COFFER_TEST_PG_* and COFFER_TEST_MYSQL_*).
Users are checked in pg_roles / mysql.user and by logging in with the issued password.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import hvac
import pytest

from conftest import REPO_ROOT, api_call, unique

PG_ADDR = os.environ.get("COFFER_TEST_PG_ADDR", "")
PG_USER = os.environ.get("COFFER_TEST_PG_USER", "")
PG_PASSWORD = os.environ.get("COFFER_TEST_PG_PASSWORD", "")
PG_DB = os.environ.get("COFFER_TEST_PG_DB", "postgres")
MY_ADDR = os.environ.get("COFFER_TEST_MYSQL_ADDR", "")
MY_USER = os.environ.get("COFFER_TEST_MYSQL_USER", "")
MY_PASSWORD = os.environ.get("COFFER_TEST_MYSQL_PASSWORD", "")

needs_pg = pytest.mark.skipif(not PG_ADDR, reason="COFFER_TEST_PG_ADDR not set (Ops/test starts PostgreSQL)")
needs_my = pytest.mark.skipif(not MY_ADDR, reason="COFFER_TEST_MYSQL_ADDR not set (Ops/test starts MariaDB)")


# ------------------------------------------------------------------ database helpers


def psql(sql: str, user: str = PG_USER, password: str = PG_PASSWORD, addr: str = PG_ADDR) -> subprocess.CompletedProcess:
    host, port = addr.rsplit(":", 1)
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(
        ["psql", "-h", host, "-p", port, "-U", user, "-d", PG_DB, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=env, capture_output=True, text=True, timeout=30)


def pg_root(sql: str, addr: str = PG_ADDR, password: str = PG_PASSWORD) -> str:
    r = psql(sql, addr=addr, password=password)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def pg_role_exists(name: str, addr: str = PG_ADDR, password: str = PG_PASSWORD) -> bool:
    return pg_root(f"SELECT count(*) FROM pg_roles WHERE rolname = '{name}'", addr, password) == "1"


def pg_roles_like(prefix: str) -> set[str]:
    out = pg_root(f"SELECT rolname FROM pg_roles WHERE rolname LIKE '{prefix}%'")
    return {line for line in out.splitlines() if line}


def mysql(sql: str, user: str = MY_USER, password: str = MY_PASSWORD) -> subprocess.CompletedProcess:
    host, port = MY_ADDR.rsplit(":", 1)
    client = shutil.which("mariadb") or "mysql"
    env = {**os.environ, "MYSQL_PWD": password}
    return subprocess.run([client, "-h", host, "-P", port, "-u", user, "--connect-timeout=5", "-N", "-B", "-e", sql],
                          env=env, capture_output=True, text=True, timeout=30)


def my_root(sql: str) -> str:
    r = mysql(sql)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def my_user_exists(name: str) -> bool:
    return my_root(f"SELECT count(*) FROM mysql.user WHERE User = '{name}'") != "0"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pg_url(addr: str = PG_ADDR) -> str:
    return f"postgresql://{{{{username}}}}:{{{{password}}}}@{addr}/{PG_DB}?sslmode=disable"


PG_CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT SELECT ON coffer_probe TO \"{{name}}\";",
]


def setup_pg_mount(client: hvac.Client, ttl: str = "1h", max_ttl: str = "24h", addr: str = PG_ADDR,
                   password: str = PG_PASSWORD) -> tuple[str, str]:
    """A database mount with a PostgreSQL config and a role; answers (mount, role)."""
    mount = unique("db")
    client.sys.enable_secrets_engine("database", path=mount)
    pg_root("CREATE TABLE IF NOT EXISTS coffer_probe (n int); INSERT INTO coffer_probe SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM coffer_probe)",
            addr, password)
    client.secrets.database.configure(
        name="pg", plugin_name="postgresql-database-plugin", allowed_roles=["*"], mount_point=mount,
        connection_url=pg_url(addr), username=PG_USER, password=password)
    client.secrets.database.create_role(
        name="app", db_name="pg", creation_statements=PG_CREATE, default_ttl=ttl, max_ttl=max_ttl, mount_point=mount)
    return mount, "app"


# ------------------------------------------------------------------ PostgreSQL


@needs_pg
def test_pg_creds_create_a_real_user_and_revoke_drops_it(root_client):
    mount, role = setup_pg_mount(root_client)
    creds = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)
    user, password = creds["data"]["username"], creds["data"]["password"]
    assert creds["lease_id"].startswith(f"{mount}/creds/{role}/")
    assert creds["renewable"] is True and 0 < creds["lease_duration"] <= 3600
    assert len(user) <= 63 and user.startswith("v-")
    assert pg_role_exists(user)
    login = psql("SELECT count(*) FROM coffer_probe", user=user, password=password)
    assert login.returncode == 0 and login.stdout.strip() == "1", login.stderr
    assert psql("SELECT 1", user=user, password=password + "x").returncode != 0, "a wrong password must not log in"
    # The stored config never returns the password.
    cfg = root_client.secrets.database.read_connection(name="pg", mount_point=mount)
    assert PG_PASSWORD not in str(cfg)
    lease = root_client.sys.read_lease(creds["lease_id"])
    assert lease["data"]["id"] == creds["lease_id"] and lease["data"]["renewable"] is True
    assert creds["lease_id"].rsplit("/", 1)[1] in root_client.sys.list_leases(f"{mount}/creds/{role}")["data"]["keys"]
    root_client.sys.revoke_lease(creds["lease_id"])
    assert not pg_role_exists(user)
    assert psql("SELECT 1", user=user, password=password).returncode != 0
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root_client.sys.read_lease(creds["lease_id"])


@needs_pg
def test_pg_short_ttl_user_is_dropped_after_expiry(root_client):
    mount, role = setup_pg_mount(root_client, ttl="2s", max_ttl="10s")
    creds = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)
    user = creds["data"]["username"]
    assert creds["lease_duration"] == 2
    assert pg_role_exists(user)
    wait_until(lambda: not pg_role_exists(user), 15, "the expired lease's user to be dropped")


@needs_pg
def test_pg_renew_extends_up_to_max_ttl(root_client):
    mount, role = setup_pg_mount(root_client, ttl="5s", max_ttl="20s")
    creds = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)
    renewed = root_client.sys.renew_lease(creds["lease_id"], increment=10)
    assert renewed["lease_id"] == creds["lease_id"] and 8 <= renewed["lease_duration"] <= 10
    capped = root_client.sys.renew_lease(creds["lease_id"], increment=3600)
    assert 15 <= capped["lease_duration"] <= 20, capped
    assert capped["warnings"], "a capped renewal says so"
    assert 15 <= root_client.sys.read_lease(creds["lease_id"])["data"]["ttl"] <= 20
    root_client.sys.revoke_lease(creds["lease_id"])


@needs_pg
def test_pg_revoke_prefix_drops_every_user(root_client):
    mount, role = setup_pg_mount(root_client)
    users = [root_client.secrets.database.generate_credentials(name=role, mount_point=mount)["data"]["username"] for _ in range(3)]
    assert all(pg_role_exists(u) for u in users)
    root_client.sys.revoke_prefix(f"{mount}/creds/{role}")
    assert not any(pg_role_exists(u) for u in users)
    with pytest.raises(hvac.exceptions.InvalidPath):  # an empty LIST is a 404, as in Vault
        root_client.sys.list_leases(f"{mount}/creds/{role}")


@needs_pg
def test_revoking_the_token_drops_its_users(root_client, dev_server):
    mount, role = setup_pg_mount(root_client)
    child = root_client.auth.token.create(policies=["root"], ttl="1h")["auth"]["client_token"]
    c = dev_server.client(child)
    users = [c.secrets.database.generate_credentials(name=role, mount_point=mount)["data"]["username"] for _ in range(2)]
    mine = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)["data"]["username"]
    assert all(pg_role_exists(u) for u in users + [mine])
    root_client.auth.token.revoke(child)
    assert not any(pg_role_exists(u) for u in users)
    assert pg_role_exists(mine), "another token's lease is untouched"


@needs_pg
def test_pg_bad_sql_is_a_clear_4xx_and_leaves_nothing(root_client):
    mount, _ = setup_pg_mount(root_client)
    root_client.secrets.database.create_role(
        name="broken", db_name="pg", mount_point=mount,
        creation_statements=["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';", "GRANT SELECT ON no_such_table_xyz TO \"{{name}}\";"])
    before = pg_roles_like("v-")
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root_client.secrets.database.generate_credentials(name="broken", mount_point=mount)
    assert "no_such_table_xyz" in str(e.value)
    assert PG_PASSWORD not in str(e.value)
    assert pg_roles_like("v-") == before, "the failed creation left a user behind"
    with pytest.raises(hvac.exceptions.InvalidPath):
        root_client.sys.list_leases(f"{mount}/creds/broken")


def setup_pg_static_role(client: hvac.Client, role: str, rotation_period: int) -> tuple[str, str, dict]:
    """A mount with a static role over a new PostgreSQL login user whose password starts as
    'initial-Passw0rd'; answers (mount, user, the credentials after creation's rotation)."""
    mount, _ = setup_pg_mount(client)
    name = unique(role).replace("-", "_")
    pg_root(f"CREATE ROLE {name} WITH LOGIN PASSWORD 'initial-Passw0rd'")
    client.secrets.database.create_static_role(
        name=role, db_name="pg", username=name, rotation_period=rotation_period, mount_point=mount,
        rotation_statements=["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';"])
    return mount, name, client.secrets.database.get_static_credentials(name=role, mount_point=mount)["data"]


@needs_pg
def test_pg_static_role_rotation_changes_the_password(root_client):
    mount, name, first = setup_pg_static_role(root_client, "svc", rotation_period=3600)
    assert first["username"] == name and first["password"] != "initial-Passw0rd"
    assert psql("SELECT 1", user=name, password="initial-Passw0rd").returncode != 0, "creating the static role rotates at once"
    assert psql("SELECT 1", user=name, password=first["password"]).returncode == 0
    root_client.secrets.database.rotate_static_role_credentials(name="svc", mount_point=mount)
    second = root_client.secrets.database.get_static_credentials(name="svc", mount_point=mount)["data"]
    assert second["password"] != first["password"]
    assert psql("SELECT 1", user=name, password=first["password"]).returncode != 0, "the old password stops working"
    assert psql("SELECT 1", user=name, password=second["password"]).returncode == 0
    assert second["password"] not in str(root_client.secrets.database.read_static_role(name="svc", mount_point=mount))


@needs_pg
def test_pg_static_role_is_rotated_on_schedule(root_client):
    """#25: the core runs the engine's periodic work; a 5 s rotation_period rotates the
    password without any request asking for it."""
    mount, name, first = setup_pg_static_role(root_client, "sched", rotation_period=5)
    assert first["ttl"] <= 5

    def rotated():
        now = root_client.secrets.database.get_static_credentials(name="sched", mount_point=mount)["data"]
        return now if now["password"] != first["password"] else None

    later = wait_until(rotated, 30, "a scheduled rotation")
    assert psql("SELECT 1", user=name, password=later["password"]).returncode == 0
    assert psql("SELECT 1", user=name, password=first["password"]).returncode != 0
    root_client.secrets.database.delete_static_role(name="sched", mount_point=mount)


@needs_pg
def test_pg_rotate_root_changes_the_root_password_and_coffer_keeps_working(root_client, dev_server):
    admin = unique("admin").replace("-", "_")
    pg_root(f"CREATE ROLE {admin} WITH LOGIN SUPERUSER PASSWORD 'Admin-initial-1'")
    mount = unique("db")
    root_client.sys.enable_secrets_engine("database", path=mount)
    root_client.secrets.database.configure(
        name="pg", plugin_name="postgresql-database-plugin", allowed_roles=["app"], mount_point=mount,
        connection_url=pg_url(), username=admin, password="Admin-initial-1")
    root_client.secrets.database.create_role(name="app", db_name="pg", creation_statements=PG_CREATE, mount_point=mount)
    resp = root_client.secrets.database.rotate_root_credentials(name="pg", mount_point=mount)
    assert "Admin-initial-1" not in str(resp)
    assert psql("SELECT 1", user=admin, password="Admin-initial-1").returncode != 0, "the old root password stops working"
    creds = root_client.secrets.database.generate_credentials(name="app", mount_point=mount)
    assert pg_role_exists(creds["data"]["username"])
    root_client.sys.revoke_lease(creds["lease_id"])
    assert not pg_role_exists(creds["data"]["username"])
    # A role outside allowed_roles is refused.
    r = api_call(dev_server, "POST", f"{mount}/roles/other",
                 body={"db_name": "pg", "creation_statements": PG_CREATE})
    assert r.status_code == 400 and "allowed" in r.text


@needs_pg
def test_lease_count_quota_refuses_the_next_creds_and_creates_nothing(root_client, dev_server):
    mount, role = setup_pg_mount(root_client)
    q = unique("lq")
    r = api_call(dev_server, "POST", f"sys/quotas/lease-count/{q}", body={"path": f"{mount}/", "max_leases": 2})
    assert r.status_code in (200, 204), r.text
    try:
        ok = [root_client.secrets.database.generate_credentials(name=role, mount_point=mount) for _ in range(2)]
        before = pg_roles_like("v-")
        r = api_call(dev_server, "GET", f"{mount}/creds/{role}")
        assert r.status_code == 429 and "lease count quota" in r.text
        assert pg_roles_like("v-") == before, "a refused request created a user"
        got = api_call(dev_server, "GET", f"sys/quotas/lease-count/{q}").json()["data"]
        assert got["max_leases"] == 2 and got["counter"] == 2 and got["type"] == "lease-count"
        root_client.sys.revoke_lease(ok[0]["lease_id"])
        third = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)
        assert pg_role_exists(third["data"]["username"]), "room freed by a revoke can be used"
    finally:
        api_call(dev_server, "DELETE", f"sys/quotas/lease-count/{q}")
        root_client.sys.revoke_prefix(mount)
    bad = api_call(dev_server, "POST", f"sys/quotas/lease-count/{q}", body={"path": f"{mount}/", "max_leases": 0})
    assert bad.status_code == 400


@needs_pg
def test_bad_input_to_the_engine_and_lease_endpoints_is_a_clear_4xx(root_client, dev_server):
    mount, _ = setup_pg_mount(root_client)
    s = dev_server
    for method, path, body in [
        ("POST", f"{mount}/config/x", {"plugin_name": "no-such-plugin", "connection_url": "x"}),
        ("POST", f"{mount}/config/x", {"plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://u:p@127.0.0.1:1/db", "username": "u", "password": "p"}),
        ("POST", f"{mount}/roles/r", {"db_name": "missing", "creation_statements": ["x"]}),
        ("POST", f"{mount}/roles/r", {"db_name": "pg"}),
        ("PUT", "sys/leases/lookup", {"lease_id": ""}),
        ("PUT", "sys/leases/lookup", {"lease_id": "../../etc"}),
        ("PUT", "sys/leases/renew", {"lease_id": f"{mount}/creds/app/nope"}),
        ("PUT", "sys/leases/revoke", {"lease_id": "x/y/z"}),
    ]:
        r = api_call(s, method, path, body=body)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.json()["errors"], (path, r.text)
    assert api_call(s, "GET", f"{mount}/creds/nope").status_code in (400, 404)


# ------------------------------------------------------------------ restart and outages


def _init_unseal(srv) -> str:
    c = srv.client()
    resp = c.sys.initialize(1, 1)
    c.sys.submit_unseal_key(resp["keys"][0])
    srv.keys, srv.root = resp["keys"], resp["root_token"]
    return resp["root_token"]


def _unseal(srv):
    srv.client().sys.submit_unseal_key(srv.keys[0])


@needs_pg
def test_leases_survive_a_restart_and_still_expire(tls_server):
    srv = tls_server()
    c = srv.client(_init_unseal(srv))
    mount, role = setup_pg_mount(c, ttl="6s", max_ttl="1h")
    long = c.secrets.database.generate_credentials(name=role, mount_point=mount)
    c.secrets.database.create_role(name="quick", db_name="pg", creation_statements=PG_CREATE, default_ttl="3s", mount_point=mount)
    quick = c.secrets.database.generate_credentials(name="quick", mount_point=mount)
    srv.kill9()  # a crash: nothing is flushed on the way out
    time.sleep(4)  # the quick lease is overdue while the server is down
    assert pg_role_exists(quick["data"]["username"]), "nothing revokes while Coffer is down"
    srv.start()
    _unseal(srv)
    c = srv.client(srv.root)
    wait_until(lambda: not pg_role_exists(quick["data"]["username"]), 15, "the overdue lease to be revoked after the restart")
    assert c.sys.read_lease(long["lease_id"])["data"]["id"] == long["lease_id"], "live leases are restored"
    wait_until(lambda: not pg_role_exists(long["data"]["username"]), 20, "the restored lease to expire")


@needs_pg
def test_revocation_retries_while_the_database_is_down(root_client, tmp_path):
    own = tmp_path / "pg"
    out = subprocess.run([str(REPO_ROOT / "Ops" / "postgres"), "start", str(own)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in (own / "postgres.env").read_text().split() if "=" in line)
    addr, password = env["COFFER_TEST_PG_ADDR"], env["COFFER_TEST_PG_PASSWORD"]
    try:
        mount, role = setup_pg_mount(root_client, ttl="1h", addr=addr, password=password)
        creds = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)
        user = creds["data"]["username"]
        assert pg_role_exists(user, addr, password)
        subprocess.run([str(REPO_ROOT / "Ops" / "postgres"), "stop", str(own)], check=True, capture_output=True, timeout=60)
        t0 = time.monotonic()
        with pytest.raises(hvac.exceptions.VaultError) as e:
            root_client.sys.revoke_lease(creds["lease_id"])
        assert time.monotonic() - t0 < 30, "a down database gives an error, not a hang"
        assert password not in str(e.value)
        info = root_client.sys.read_lease(creds["lease_id"])["data"]
        assert info["revoke_attempts"] >= 1 and info["revocation_error"]
        port = addr.rsplit(":", 1)[1]
        out = subprocess.run([str(REPO_ROOT / "Ops" / "postgres"), "start", str(own), port], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        password = dict(line.split("=", 1) for line in (own / "postgres.env").read_text().split() if "=" in line)["COFFER_TEST_PG_PASSWORD"]
        # The restarted server got a fresh root password from the script: tell Coffer.
        root_client.secrets.database.configure(
            name="pg", plugin_name="postgresql-database-plugin", allowed_roles=["*"], mount_point=mount,
            connection_url=pg_url(addr), username=PG_USER, password=password)
        wait_until(lambda: not pg_role_exists(user, addr, password), 30, "the retried revocation to drop the user")
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root_client.sys.read_lease(creds["lease_id"])
    finally:
        subprocess.run([str(REPO_ROOT / "Ops" / "postgres"), "stop", str(own)], capture_output=True, timeout=60)


# ------------------------------------------------------------------ MariaDB


@needs_my
def test_mysql_creds_create_a_real_user_and_revoke_drops_it(root_client):
    mount = unique("my")
    root_client.sys.enable_secrets_engine("database", path=mount)
    my_root("CREATE DATABASE IF NOT EXISTS coffer_probe; CREATE TABLE IF NOT EXISTS coffer_probe.t (n int); "
            "INSERT INTO coffer_probe.t SELECT 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM coffer_probe.t)")
    root_client.secrets.database.configure(
        name="my", plugin_name="mysql-database-plugin", allowed_roles=["app"], mount_point=mount,
        connection_url=f"{{{{username}}}}:{{{{password}}}}@tcp({MY_ADDR})/", username=MY_USER, password=MY_PASSWORD)
    root_client.secrets.database.create_role(
        name="app", db_name="my", mount_point=mount, default_ttl="1h", max_ttl="2h",
        creation_statements=["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';", "GRANT SELECT ON coffer_probe.* TO '{{name}}'@'%';"])
    creds = root_client.secrets.database.generate_credentials(name="app", mount_point=mount)
    user, password = creds["data"]["username"], creds["data"]["password"]
    assert len(user) <= 32
    assert my_user_exists(user)
    login = mysql("SELECT count(*) FROM coffer_probe.t", user=user, password=password)
    assert login.returncode == 0 and login.stdout.strip() == "1", login.stderr
    assert mysql("SELECT 1", user=user, password=password + "x").returncode != 0
    renewed = root_client.sys.renew_lease(creds["lease_id"], increment=60)
    assert 50 <= renewed["lease_duration"] <= 60
    root_client.sys.revoke_lease(creds["lease_id"])
    assert not my_user_exists(user)
    assert mysql("SELECT 1", user=user, password=password).returncode != 0


@needs_pg
def test_leases_and_credential_requests_are_metered_per_namespace():
    from test_usage import FLUSH, Node, row_for, usage
    # A tenant namespace reaches the loopback database only when the operator allows it.
    node = Node(extra=f'database_allowed_hosts = ["{PG_ADDR.rsplit(":", 1)[0]}"]')
    try:
        t = unique("dbu").replace("-", "")[:14]
        assert node.call("POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=node.srv.url, token=node.root, namespace=t)
        mount, role = setup_pg_mount(c)
        leases = [c.secrets.database.generate_credentials(name=role, mount_point=mount)["lease_id"] for _ in range(2)]
        assert all(lease.endswith(".") is False and "." in lease.rsplit("/", 1)[1] for lease in leases), "namespaced lease ids carry the namespace id"
        time.sleep(FLUSH * 2.5)
        mine = row_for(usage(node, namespace=t, granularity="hour"), f"{t}/")
        assert mine["requests"]["credential"] == 2 and mine["leases"] == 2, mine
        c.sys.revoke_prefix(mount)
    finally:
        node.srv.dispose()


@needs_pg
def test_password_policy_shapes_issued_passwords(root_client, dev_server):
    """sys/policies/password (hvac 2.4 has no calls for it: raw API) and password_policy."""
    name = unique("pp")
    policy = 'length = 32\nrule "charset" {\n  charset = "abcdefghijklmnopqrstuvwxyz"\n  min-chars = 1\n}\nrule "charset" {\n  charset = "0123456789"\n  min-chars = 6\n}\n'
    assert api_call(dev_server, "PUT", f"sys/policies/password/{name}", body={"policy": policy}).status_code == 204
    assert api_call(dev_server, "GET", f"sys/policies/password/{name}").json()["data"]["policy"] == policy
    bad = api_call(dev_server, "PUT", f"sys/policies/password/{name}x", body={"policy": "length = 2"})
    assert bad.status_code == 400 and bad.json()["errors"]
    sample = api_call(dev_server, "GET", f"sys/policies/password/{name}/generate").json()["data"]["password"]
    assert len(sample) == 32 and sum(ch.isdigit() for ch in sample) >= 6 and sample.isalnum() and sample == sample.lower()
    mount, role = setup_pg_mount(root_client)
    cfg = root_client.secrets.database.read_connection(name="pg", mount_point=mount)["data"]
    root_client.secrets.database.configure(
        name="pg", plugin_name="postgresql-database-plugin", allowed_roles=["*"], mount_point=mount,
        connection_url=pg_url(), username=PG_USER, password=PG_PASSWORD, password_policy=name)
    assert cfg["password_policy"] == ""
    creds = root_client.secrets.database.generate_credentials(name=role, mount_point=mount)["data"]
    pw = creds["password"]
    assert len(pw) == 32 and sum(ch.isdigit() for ch in pw) >= 6 and pw.isalnum() and pw == pw.lower()
    assert psql("SELECT 1", user=creds["username"], password=pw).returncode == 0
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root_client.secrets.database.configure(
            name="pg2", plugin_name="postgresql-database-plugin", allowed_roles=["*"], mount_point=mount,
            connection_url=pg_url(), username=PG_USER, password=PG_PASSWORD, password_policy="no-such-policy")
    root_client.sys.revoke_prefix(mount)
    assert api_call(dev_server, "DELETE", f"sys/policies/password/{name}").status_code == 204
    assert api_call(dev_server, "GET", f"sys/policies/password/{name}/generate").status_code == 400


@needs_pg
def test_pg_user_of_an_expired_token_is_dropped_at_the_tokens_expiry(dev_server, root_client):
    """#26 (suspected, confirmed and fixed): a token's leases are revoked when the token
    expires, whether or not it is ever presented again."""
    mount, role = setup_pg_mount(root_client)
    token = root_client.auth.token.create(policies=["root"], ttl="4s", renewable=False)["auth"]["client_token"]
    short = hvac.Client(url=dev_server.url, token=token, timeout=30)
    creds = short.secrets.database.generate_credentials(name=role, mount_point=mount)
    user = creds["data"]["username"]
    assert pg_role_exists(user) and creds["lease_duration"] > 60
    # The token is never used again; its expiry alone must drop the user.
    wait_until(lambda: not pg_role_exists(user), 20, "the PostgreSQL role of the expired token's lease to be dropped")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root_client.sys.read_lease(creds["lease_id"])


def _root_credential_count(dev_server) -> int:
    r = api_call(dev_server, "GET", "sys/usage?granularity=month")
    assert r.status_code == 200, r.text
    rows = [row for row in r.json()["data"]["rows"] if row["namespace"] == "root"]
    return sum(row["requests"]["credential"] for row in rows)


@needs_pg
def test_creds_are_metered_as_credentials_by_the_routes_declaration(root_client, dev_server):
    """#25: the engine's route declares `creds/:name` and `static-creds/:name` reads as the
    `credential` billing class; a role read stays a `read`."""
    mount, role = setup_pg_mount(root_client)
    before = _root_credential_count(dev_server)
    for _ in range(2):
        root_client.secrets.database.generate_credentials(name=role, mount_point=mount)
    root_client.secrets.database.read_role(name=role, mount_point=mount)
    assert _root_credential_count(dev_server) == before + 2


@needs_pg
def test_pg_user_of_a_batch_token_ends_by_the_tokens_expiry(dev_server, root_client):
    """#17: a lease made with a batch token (which nothing can link the lease to) is capped
    at the token's remaining TTL, so the user is dropped by then, as in Vault."""
    mount, role = setup_pg_mount(root_client)
    pol = unique("dbcreds")
    root_client.sys.create_or_update_policy(pol, f'path "{mount}/creds/*" {{ capabilities = ["read"] }}')
    r = api_call(dev_server, "POST", "auth/token/create", body={"type": "batch", "policies": [pol], "ttl": "5s"})
    assert r.status_code == 200, r.text
    batch = hvac.Client(url=dev_server.url, token=r.json()["auth"]["client_token"], timeout=30)
    creds = batch.secrets.database.generate_credentials(name=role, mount_point=mount)
    user = creds["data"]["username"]
    assert pg_role_exists(user) and 0 < creds["lease_duration"] <= 5
    renewed = root_client.sys.renew_lease(creds["lease_id"], increment=3600)
    assert renewed["lease_duration"] <= 5  # not past the token's end
    wait_until(lambda: not pg_role_exists(user), 20, "the PostgreSQL role of the batch token's lease to be dropped")
