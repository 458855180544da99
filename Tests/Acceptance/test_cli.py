"""The `coffer` client CLI (issue #3, item 1) end to end: the real binary against the real server.

Every command runs as a subprocess with a clean environment (no VAULT_*/COFFER_* from the
caller, HOME in a temp dir); every write is checked on the server with a second read over
the HTTP API (requests/hvac), not through the CLI that made it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
import uuid

import pytest
import requests

from conftest import PEER_BAO, coffer_bin, free_port, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="drives the coffer CLI binary")

DEAD_ADDR = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def clean_env(home, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("VAULT_") or k.startswith("COFFER_"))}
    env["HOME"] = str(home)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def run(args, *, env, input=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([coffer_bin(), *args], env=env, input=input, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(dev_server, home):
    """cli("kv", "get", ...) with COFFER_ADDR/COFFER_TOKEN set for the dev server."""
    def call(*args, token="root", input=None, **env_extra):
        env = clean_env(home, COFFER_ADDR=dev_server.url, COFFER_TOKEN=token, **env_extra)
        return run(list(args), env=env, input=input)
    return call


@pytest.fixture
def api(dev_server):
    """requests session with the root token: the independent check of what the CLI did."""
    s = dev_server.session("root")
    base = dev_server.url + "/v1/"

    class API:
        url = base

        def get(self, path, **kw):
            return s.get(base + path, **kw)

        def list(self, path):
            return s.get(base + path, params={"list": "true"})

        def post(self, path, body):
            return s.post(base + path, json=body)

        def delete(self, path):
            return s.delete(base + path)
    return API()


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def table(stdout: str) -> dict:
    """Parses a Key/Value table into a dict (values as printed)."""
    rows = {}
    lines = stdout.splitlines()
    for line in lines:
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] not in ("Key", "---"):
            rows[parts[0]] = parts[1].strip()
        elif len(parts) == 1 and parts[0] not in ("---",):
            rows.setdefault(parts[0], "")
    return rows


def make_token(api, policies=("default",)) -> str:
    r = api.post("auth/token/create", {"policies": list(policies)})
    assert r.status_code == 200, r.text
    return r.json()["auth"]["client_token"]


# ----------------------------------------------------------------------- flags and usage


def test_single_and_double_dash_flags_are_equivalent(cli):
    a = json.loads(ok(cli("status", "-format=json")).stdout)
    b = json.loads(ok(cli("status", "--format", "json")).stdout)
    c = json.loads(ok(cli("status", "-format", "json")).stdout)
    d = json.loads(ok(cli("status", "--format=json")).stdout)
    for x in (a, b, c, d):
        assert x["sealed"] is False and x["initialized"] is True
    assert ok(cli("status", "-field=sealed")).stdout == "false\n"


def test_server_subcommand_accepts_single_dash_flags(home, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [coffer_bin(), "server", "-dev", "-dev-root-token-id=tok-single",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(home),
        start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/v1/auth/token/lookup-self",
                                 headers={"X-Vault-Token": "tok-single"}, timeout=2)
                break
            except requests.RequestException:
                assert proc.poll() is None, "server exited"
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert r.status_code == 200
        assert r.json()["data"]["id"] == "tok-single"
    finally:
        proc.terminate()
        proc.wait(15)


def test_usage_errors_exit_2(cli):
    p = cli("no-such-command")
    assert p.returncode == 2, p
    assert p.stderr
    p = cli("read")  # missing PATH
    assert p.returncode == 2 and "Missing" in p.stderr
    p = cli("kv", "get")
    assert p.returncode == 2
    p = cli("token", "revoke")  # neither TOKEN nor -self
    assert p.returncode == 2
    p = cli("status", "-format=yaml")
    assert p.returncode == 2
    p = cli("status", "-no-such-flag")
    assert p.returncode == 2
    p = cli("--help")
    assert p.returncode == 0 and "kv" in p.stdout and "server" in p.stdout


def test_connection_error_exits_1(home):
    p = run(["status"], env=clean_env(home, COFFER_ADDR=DEAD_ADDR))
    assert p.returncode == 1
    assert p.stderr.startswith("Error checking seal status")
    p = run(["read", "secret/data/x"], env=clean_env(home, COFFER_ADDR=DEAD_ADDR, COFFER_TOKEN="root"))
    assert p.returncode == 1


def test_permission_denied_exits_1_with_vault_error_block(cli, api):
    weak = make_token(api)
    p = cli("read", "secret/data/anything", token=weak)
    assert p.returncode == 1, p
    assert "Code: 403. Errors:" in p.stderr
    assert "* permission denied" in p.stderr
    assert p.stdout == ""
    p = cli("kv", "put", "-mount=secret", "denied", "a=b", token=weak)
    assert p.returncode == 1 and "403" in p.stderr


def test_read_missing_path_exits_2(cli):
    p = cli("read", f"secret/data/{unique('missing')}")
    assert p.returncode == 2
    assert "No value found at secret/data/" in p.stderr
    p = cli("kv", "get", f"secret/{unique('missing')}")
    assert p.returncode == 2 and "No value found" in p.stderr
    p = cli("list", f"secret/metadata/{unique('missing')}")
    assert p.returncode == 2 and "No value found" in p.stderr


# ---------------------------------------------------------------- address/token precedence


def test_address_precedence_flag_then_coffer_then_vault(dev_server, home):
    good = dev_server.url
    # COFFER_ADDR beats VAULT_ADDR
    p = run(["status"], env=clean_env(home, COFFER_ADDR=good, VAULT_ADDR=DEAD_ADDR))
    assert p.returncode == 0, p.stderr
    p = run(["status"], env=clean_env(home, COFFER_ADDR=DEAD_ADDR, VAULT_ADDR=good))
    assert p.returncode == 1
    # VAULT_ADDR alone is used
    p = run(["status"], env=clean_env(home, VAULT_ADDR=good))
    assert p.returncode == 0, p.stderr
    # the flag beats both
    p = run(["status", f"-address={good}"], env=clean_env(home, COFFER_ADDR=DEAD_ADDR, VAULT_ADDR=DEAD_ADDR))
    assert p.returncode == 0, p.stderr
    p = run(["status", "-address", DEAD_ADDR], env=clean_env(home, COFFER_ADDR=good))
    assert p.returncode == 1
    # the default is https://127.0.0.1:8200 (nothing there in this test, or not ours)
    p = run(["status", "-format=json"], env=clean_env(home))
    assert p.returncode == 1 and "https://127.0.0.1:8200/v1/sys/seal-status" in p.stderr


def test_token_precedence_flag_then_coffer_then_vault_then_file(dev_server, home, api):
    addr = dev_server.url
    weak = make_token(api)

    def who(*extra, **env):
        p = run(["token", "lookup", "-field=id", *extra], env=clean_env(home, COFFER_ADDR=addr, **env))
        return p.returncode, p.stdout.strip()

    assert who(COFFER_TOKEN="root", VAULT_TOKEN=weak) == (0, "root")
    assert who(VAULT_TOKEN="root") == (0, "root")
    assert who(COFFER_TOKEN="bogus", VAULT_TOKEN="root")[0] == 1  # COFFER_TOKEN is used
    assert who("-token=root", COFFER_TOKEN="bogus", VAULT_TOKEN="bogus") == (0, "root")
    assert who(f"-token={weak}", COFFER_TOKEN="root") == (0, weak)
    # the token file is the last resort
    (home / ".coffer-token").write_text(weak + "\n")
    assert who() == (0, weak)
    assert who(VAULT_TOKEN="root") == (0, "root")


def test_namespace_header_is_sent(dev_server, home):
    # No namespaces yet (#4): only check that the flag/env are accepted and a root-level
    # call still works without them.
    p = run(["status"], env=clean_env(home, COFFER_ADDR=dev_server.url, COFFER_NAMESPACE=""))
    assert p.returncode == 0


# -------------------------------------------------------------------------------- login


def test_login_writes_token_file_0600(dev_server, home, api):
    tok = make_token(api, ("default",))
    env = clean_env(home, COFFER_ADDR=dev_server.url)
    p = ok(run(["login", tok], env=env))
    assert "Success! You are now authenticated" in p.stdout
    rows = table(p.stdout)
    assert rows["token"] == tok
    assert rows["token_policies"] == '["default"]'
    f = home / ".coffer-token"
    assert f.read_text().strip() == tok
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    # the stored token is used by later commands
    p = ok(run(["token", "lookup", "-field=id"], env=env))
    assert p.stdout.strip() == tok
    # a looser existing file is tightened; the token is read from stdin with "-"
    f.chmod(0o644)
    ok(run(["login", "-"], env=env, input="root\n"))
    assert f.read_text().strip() == "root"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    # a bad token is rejected and not stored
    p = run(["login", "hvs.notarealtoken0000000000"], env=env)
    assert p.returncode == 1 and "403" in p.stderr
    assert f.read_text().strip() == "root"
    # -field=token and -format=json
    assert ok(run(["login", "-field=token", tok], env=env)).stdout == tok + "\n"
    j = json.loads(ok(run(["login", "-format=json", "root"], env=env)).stdout)
    assert j["auth"]["client_token"] == "root"


def test_login_with_userpass_and_approle_and_unwrap(dev_server, home, api):
    """#17 item 9: `login -method=userpass` (password prompted), `-method=approle`, `-wrap-ttl`
    on any command, `unwrap`, and `token lookup` showing the entity and identity policies."""
    up, ar = unique("cup"), unique("car")
    assert api.post(f"sys/auth/{up}", {"type": "userpass"}).status_code == 204
    assert api.post(f"sys/auth/{ar}", {"type": "approle"}).status_code == 204
    assert api.post(f"auth/{up}/users/ivy", {"password": "s3cret", "token_policies": "default"}).status_code == 204
    env = clean_env(home, COFFER_ADDR=dev_server.url)
    # The password read from stdin when not on the command line (hidden on a terminal).
    p = ok(run(["login", "-method=userpass", f"-path={up}", "username=ivy"], env=env, input="s3cret\n"))
    assert "Success! You are now authenticated" in p.stdout
    tok = (home / ".coffer-token").read_text().strip()
    me = requests.get(dev_server.url + "/v1/auth/token/lookup-self", headers={"X-Vault-Token": tok}, timeout=10).json()["data"]
    assert me["display_name"] == f"{up}-ivy" and me["entity_id"]
    # The entity's policy shows in `token lookup`.
    assert api.post(f"identity/entity/id/{me['entity_id']}", {"policies": ["extra"]}).status_code == 204
    rows = table(ok(run(["token", "lookup"], env=env)).stdout)
    assert rows["entity_id"] == me["entity_id"] and "extra" in rows["identity_policies"]
    p = run(["login", "-method=userpass", f"-path={up}", "username=ivy", "password=wrong"], env=env)
    assert p.returncode == 1 and "invalid username or password" in p.stderr

    # AppRole: the secret id wrapped with -wrap-ttl, unwrapped once, then the login.
    assert api.post(f"auth/{ar}/role/build", {"token_policies": "default"}).status_code == 204
    role_id = api.get(f"auth/{ar}/role/build/role-id").json()["data"]["role_id"]
    root_env = clean_env(home, COFFER_ADDR=dev_server.url, COFFER_TOKEN="root")
    wrapped = ok(run(["write", "-wrap-ttl=60s", "-field=wrapping_token", "-f", f"auth/{ar}/role/build/secret-id"], env=root_env)).stdout.strip()
    assert wrapped and "secret_id" not in wrapped
    secret_id = ok(run(["unwrap", "-field=secret_id", wrapped], env=root_env)).stdout.strip()
    assert len(secret_id) == 36
    p = run(["unwrap", wrapped], env=root_env)
    assert p.returncode == 1 and "wrapping token is not valid or does not exist" in p.stderr
    p = ok(run(["login", "-method=approle", f"-path={ar}", "-no-store", "-field=token", f"role_id={role_id}", f"secret_id={secret_id}"], env=env))
    assert p.stdout.strip().startswith("hvs.")
    assert (home / ".coffer-token").read_text().strip() == tok  # -no-store kept the old one


@pytest.mark.skipif(not os.environ.get("COFFER_TEST_OIDC_URL"), reason="needs Ops/oidc-provider")
def test_login_with_oidc_jwt_and_ldap(dev_server, home, api, tmp_path):
    """#18 item 4: `login -method=oidc` (a loopback callback listener, as Vault's CLI),
    `-method=jwt role=R jwt=@file`, `-method=ldap username=U` (password prompted)."""
    oidc_url = os.environ["COFFER_TEST_OIDC_URL"]
    port = free_port()
    client_id, secret, user = unique("cli"), unique("sec"), unique("dana")
    redirect = f"http://localhost:{port}/oidc/callback"
    assert requests.post(f"{oidc_url}/admin/clients", json={"client_id": client_id, "client_secret": secret, "redirect_uris": [redirect]}, timeout=10).ok
    assert requests.post(f"{oidc_url}/admin/users", json={"username": user, "claims": {"email": f"{user}@example.com"}}, timeout=10).ok
    mount = unique("coidc")
    assert api.post(f"sys/auth/{mount}", {"type": "oidc"}).status_code == 204
    assert api.post(f"auth/{mount}/config", {"oidc_discovery_url": oidc_url, "oidc_client_id": client_id, "oidc_client_secret": secret,
                                            "default_role": "cli"}).status_code == 204
    assert api.post(f"auth/{mount}/role/cli", {"user_claim": "email", "allowed_redirect_uris": ["http://localhost:8250/oidc/callback"],
                                              "token_policies": "cli-pol"}).status_code == 204
    env = clean_env(home, COFFER_ADDR=dev_server.url)
    proc = subprocess.Popen([coffer_bin(), "login", "-method=oidc", f"-path={mount}", f"port={port}", "skip_browser=true"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.time() + 20
        while time.time() < deadline and url is None:
            line = proc.stderr.readline()
            if line.strip().startswith(oidc_url):
                url = line.strip()
        assert url, "the CLI printed the authorization URL"
        back = requests.get(url + f"&login_hint={user}", allow_redirects=False, timeout=10).headers["Location"]
        assert back.startswith(redirect)
        page = requests.get(back, timeout=20)  # the provider's redirect, delivered to the CLI's listener
        assert page.status_code == 200 and "You may close this window" in page.text
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Success! You are now authenticated" in out
    tok = (home / ".coffer-token").read_text().strip()
    me = requests.get(dev_server.url + "/v1/auth/token/lookup-self", headers={"X-Vault-Token": tok}, timeout=10).json()["data"]
    assert "cli-pol" in me["policies"] and me["meta"]["role"] == "cli"

    # jwt: a token minted by the provider, read from a file.
    jmount = unique("cjwt")
    assert api.post(f"sys/auth/{jmount}", {"type": "jwt"}).status_code == 204
    assert api.post(f"auth/{jmount}/config", {"jwks_url": f"{oidc_url}/.well-known/jwks.json"}).status_code == 204
    assert api.post(f"auth/{jmount}/role/ci", {"role_type": "jwt", "user_claim": "sub", "bound_audiences": "cli", "token_policies": "ci"}).status_code == 204
    minted = requests.post(f"{oidc_url}/admin/mint", json={"claims": {"sub": "pipeline", "aud": "cli"}}, timeout=10).json()["token"]
    f = tmp_path / "token.jwt"
    f.write_text(minted)
    p = ok(run(["login", "-method=jwt", f"-path={jmount}", "-field=token_policies", "role=ci", f"jwt=@{f}"], env=env))
    assert "ci" in p.stdout

    ldap_url = os.environ.get("COFFER_TEST_LDAP_URL")
    if ldap_url:
        lmount = unique("cldap")
        assert api.post(f"sys/auth/{lmount}", {"type": "ldap"}).status_code == 204
        assert api.post(f"auth/{lmount}/config", {"url": ldap_url, "userdn": "ou=users,dc=example,dc=com", "userattr": "uid"}).status_code == 204
        p = ok(run(["login", "-method=ldap", f"-path={lmount}", "username=alice"], env=env, input="alice-pw\n"))
        assert "Success! You are now authenticated" in p.stdout
        p = run(["login", "-method=ldap", f"-path={lmount}", "username=alice", "password=bad"], env=env)
        assert p.returncode == 1 and "failed to bind as user" in p.stderr


# ----------------------------------------------------------------------------- generic


def test_write_read_list_patch_delete(cli, api, tmp_path):
    name = unique("gen")
    path = f"secret/data/{name}"
    f = tmp_path / "cert.pem"
    f.write_text("-----BEGIN X-----\nline2\n")
    # write with k=v and k=@file; KV v2's data endpoint takes {"data": ...} so use the v1 mount below
    ok(cli("secrets", "enable", "-path=gen1", "-version=1", "kv"))
    p = ok(cli("write", f"gen1/{name}", "user=alice", f"cert=@{f}"))
    assert p.stdout.strip() == f"Success! Data written to: gen1/{name}"
    got = api.get(f"gen1/{name}").json()["data"]
    assert got == {"user": "alice", "cert": "-----BEGIN X-----\nline2\n"}

    # read: table, json, field
    p = ok(cli("read", f"gen1/{name}"))
    rows = table(p.stdout)
    assert rows["user"] == "alice"
    j = json.loads(ok(cli("read", "-format=json", f"gen1/{name}")).stdout)
    assert j["data"]["user"] == "alice" and "request_id" in j
    assert ok(cli("read", "-field=user", f"gen1/{name}")).stdout == "alice\n"
    p = cli("read", "-field=nope", f"gen1/{name}")
    assert p.returncode == 1 and "not present" in p.stderr

    # write - : a JSON object on stdin (KV v2 data endpoint, nested object)
    ok(cli("write", path, "-", input=json.dumps({"data": {"n": 1, "nested": {"x": "y"}}})))
    got = api.get(path).json()["data"]["data"]
    assert got == {"n": 1, "nested": {"x": "y"}}

    # patch: JSON merge patch on the KV v2 data endpoint
    ok(cli("patch", path, "-", input=json.dumps({"data": {"n": 2, "added": "z"}})))
    got = api.get(path).json()["data"]["data"]
    assert got == {"n": 2, "nested": {"x": "y"}, "added": "z"}
    p = cli("patch", f"gen1/{name}", "user=bob")  # KV v1 has no patch: 405 → exit 1
    assert p.returncode == 1 and "Code: 405" in p.stderr
    # list
    p = ok(cli("list", "gen1"))
    assert p.stdout.startswith("Keys\n----\n")
    assert name in p.stdout.splitlines()
    j = json.loads(ok(cli("list", "-format=json", "secret/metadata/")).stdout)
    assert name in j
    # delete
    p = ok(cli("delete", f"gen1/{name}"))
    assert "Success! Data deleted (if it existed) at: gen1/" in p.stdout
    assert api.get(f"gen1/{name}").status_code == 404
    p = cli("read", f"gen1/{name}")
    assert p.returncode == 2
    ok(cli("secrets", "disable", "gen1"))


def test_write_bad_pair_is_an_error(cli):
    p = cli("write", "secret/data/x", "novalue")
    assert p.returncode == 1 and "key/value" in p.stderr


def test_path_help(cli):
    p = ok(cli("path-help", "secret/data/foo"))
    assert p.stdout.strip()
    j = json.loads(ok(cli("path-help", "-format=json", "sys/mounts")).stdout)
    assert (j.get("data") or {}).get("help") or j.get("help")


# ---------------------------------------------------------------------------------- kv


def test_kv_v2_round_trip(cli, api):
    name = unique("kv")
    p = ok(cli("kv", "put", f"secret/{name}", "password=s3cr3t", "user=app"))
    assert "Secret Path" in p.stdout and f"secret/data/{name}" in p.stdout
    assert "Metadata" in p.stdout
    assert table(p.stdout)["version"] == "1"
    assert api.get(f"secret/data/{name}").json()["data"]["data"] == {"password": "s3cr3t", "user": "app"}

    p = ok(cli("kv", "get", f"secret/{name}"))
    out = p.stdout
    assert "=== Secret Path ===" in out
    assert "Metadata" in out and "=== Data ===" in out  # "Key    Value" is 12 wide: 3 each side
    assert out.index("Metadata") < out.index("= Data =")
    lines = out.splitlines()
    data_at = next(i for i, l in enumerate(lines) if l.startswith("=") and " Data " in l)
    rows = table("\n".join(lines[data_at + 1:]))
    assert rows == {"password": "s3cr3t", "user": "app"}
    assert ok(cli("kv", "get", "-field=password", f"secret/{name}")).stdout == "s3cr3t\n"
    j = json.loads(ok(cli("kv", "get", "-format=json", f"secret/{name}")).stdout)
    assert j["data"]["data"]["user"] == "app" and j["data"]["metadata"]["version"] == 1

    # -mount form, -cas
    p = ok(cli("kv", "put", "-mount=secret", "-cas=1", name, "password=two"))
    assert table(p.stdout)["version"] == "2"
    p = cli("kv", "put", "-mount=secret", "-cas=1", name, "password=three")
    assert p.returncode == 1 and "check-and-set" in p.stderr.lower() or "cas" in p.stderr.lower()
    assert api.get(f"secret/data/{name}").json()["data"]["data"] == {"password": "two"}

    # patch
    p = ok(cli("kv", "patch", f"secret/{name}", "extra=yes"))
    assert table(p.stdout)["version"] == "3"
    assert api.get(f"secret/data/{name}").json()["data"]["data"] == {"password": "two", "extra": "yes"}

    # -version
    assert ok(cli("kv", "get", "-version=1", "-field=password", f"secret/{name}")).stdout == "s3cr3t\n"

    # list
    p = ok(cli("kv", "list", "secret"))
    assert p.stdout.startswith("Keys\n----\n") and name in p.stdout.splitlines()
    assert name in json.loads(ok(cli("kv", "list", "-format=json", "-mount=secret", "")).stdout)

    # delete the latest, undelete it
    ok(cli("kv", "delete", f"secret/{name}"))
    assert api.get(f"secret/data/{name}").status_code == 404
    p = cli("kv", "get", f"secret/{name}")
    assert p.returncode == 2
    ok(cli("kv", "undelete", "-versions=3", f"secret/{name}"))
    assert api.get(f"secret/data/{name}").json()["data"]["data"]["extra"] == "yes"
    p = cli("kv", "undelete", f"secret/{name}")  # -versions is required
    assert p.returncode == 2

    # delete specific versions, destroy
    ok(cli("kv", "delete", "-versions=1", f"secret/{name}"))
    meta = api.get(f"secret/metadata/{name}").json()["data"]
    assert meta["versions"]["1"]["deletion_time"] != ""
    ok(cli("kv", "destroy", "-versions=2", f"secret/{name}"))
    meta = api.get(f"secret/metadata/{name}").json()["data"]
    assert meta["versions"]["2"]["destroyed"] is True

    # metadata get/put/delete
    p = ok(cli("kv", "metadata", "get", f"secret/{name}"))
    assert "Metadata Path" in p.stdout and "Version 3" in p.stdout
    ok(cli("kv", "metadata", "put", "-max-versions=7", "-custom-metadata=owner=team-a", f"secret/{name}"))
    meta = api.get(f"secret/metadata/{name}").json()["data"]
    assert meta["max_versions"] == 7 and meta["custom_metadata"] == {"owner": "team-a"}
    j = json.loads(ok(cli("kv", "metadata", "get", "-format=json", f"secret/{name}")).stdout)
    assert j["data"]["max_versions"] == 7
    ok(cli("kv", "metadata", "delete", f"secret/{name}"))
    assert api.get(f"secret/metadata/{name}").status_code == 404


def test_kv_v1_mount_detected(cli, api):
    mount = unique("kvone").replace("-", "")[:20]
    ok(cli("secrets", "enable", f"-path={mount}", "-version=1", "kv"))
    assert api.get(f"sys/mounts/{mount}").json()["data"]["options"]["version"] == "1"
    p = ok(cli("kv", "put", f"{mount}/app", "k=v"))
    assert f"Success! Data written to: {mount}/app" in p.stdout
    assert api.get(f"{mount}/app").json()["data"] == {"k": "v"}
    assert table(ok(cli("kv", "get", f"{mount}/app")).stdout)["k"] == "v"
    assert "app" in ok(cli("kv", "list", mount)).stdout.splitlines()
    ok(cli("kv", "delete", f"{mount}/app"))
    assert api.get(f"{mount}/app").status_code == 404
    ok(cli("secrets", "disable", mount))


# ------------------------------------------------------------------------------ policy


POLICY = """
# comment
path "secret/data/app/*" { capabilities = ["read", "list"] }
path "secret/metadata/app/*" {
    capabilities = ["list"]
}
"""


def test_policy_commands(cli, api, tmp_path):
    name = unique("pol")
    f = tmp_path / "p.hcl"
    f.write_text(POLICY)
    p = ok(cli("policy", "write", name, str(f)))
    assert p.stdout.strip() == f"Success! Uploaded policy: {name}"
    assert "secret/data/app/*" in api.get(f"sys/policies/acl/{name}").json()["data"]["policy"]
    assert ok(cli("policy", "read", name)).stdout.strip() == POLICY.strip()
    j = json.loads(ok(cli("policy", "read", "-format=json", name)).stdout)
    assert j["data"]["name"] == name
    assert name in ok(cli("policy", "list")).stdout.splitlines()
    assert name in json.loads(ok(cli("policy", "list", "-format=json")).stdout)
    # write from stdin
    ok(cli("policy", "write", name, "-", input='path "x/*" { capabilities = ["deny"] }\n'))
    assert "x/*" in api.get(f"sys/policies/acl/{name}").json()["data"]["policy"]
    # a bad policy is rejected by the server: exit 1
    bad = cli("policy", "write", name, "-", input='path "x" { capabilities = ["fly"] ')
    assert bad.returncode == 1
    ok(cli("policy", "delete", name))
    assert api.get(f"sys/policies/acl/{name}").status_code == 404
    p = cli("policy", "read", name)
    assert p.returncode == 2


def test_policy_fmt(cli, tmp_path):
    f = tmp_path / "fmt.hcl"
    f.write_text(POLICY)
    p = ok(cli("policy", "fmt", str(f)))
    assert "Success! Formatted policy" in p.stdout
    assert f.read_text() == (
        'path "secret/data/app/*" {\n  capabilities = ["read", "list"]\n}\n\n'
        'path "secret/metadata/app/*" {\n  capabilities = ["list"]\n}\n')
    # formatting is idempotent
    ok(cli("policy", "fmt", str(f)))
    assert f.read_text().startswith('path "secret/data/app/*" {\n')
    bad = tmp_path / "bad.hcl"
    bad.write_text('path "x" { capabilities = ["read"]')
    p = cli("policy", "fmt", str(bad))
    assert p.returncode == 1 and "Error parsing policy" in p.stderr
    assert bad.read_text() == 'path "x" { capabilities = ["read"]'


# ------------------------------------------------------------------------------- token


def test_token_create_lookup_renew_revoke(cli, api):
    p = ok(cli("token", "create", "-policy=default", "-policy=extra", "-ttl=1h",
               "-display-name=cli-test", "-num-uses=5", "-renewable=true",
               "-explicit-max-ttl=2h"))
    rows = table(p.stdout)
    tok = rows["token"]
    assert tok.startswith("hvs.")
    assert rows["token_duration"] == "1h"
    assert rows["token_policies"] == '["default" "extra"]'
    info = api.post("auth/token/lookup", {"token": tok}).json()["data"]
    assert sorted(info["policies"]) == ["default", "extra"]
    assert info["display_name"] == "token-cli-test"
    assert info["num_uses"] == 5 and info["explicit_max_ttl"] == 7200

    # -field=token prints only the token; -format=json the raw response
    t2 = ok(cli("token", "create", "-field=token", "-policy=default", "-orphan")).stdout
    assert t2.endswith("\n") and t2.count("\n") == 1
    t2 = t2.strip()
    assert api.post("auth/token/lookup", {"token": t2}).json()["data"]["orphan"] is True
    j = json.loads(ok(cli("token", "create", "-format=json", "-period=30m", "-policy=default")).stdout)
    assert j["auth"]["client_token"].startswith("hvs.")
    periodic = j["auth"]["client_token"]
    assert api.post("auth/token/lookup", {"token": periodic}).json()["data"]["period"] == 1800

    # lookup: self, by token, by accessor
    rows = table(ok(cli("token", "lookup")).stdout)
    assert rows["id"] == "root" and rows["policies"] == "[root]"
    rows = table(ok(cli("token", "lookup", tok)).stdout)
    assert rows["display_name"] == "token-cli-test"
    accessor = rows["accessor"]
    assert ok(cli("token", "lookup", "-accessor", "-field=display_name", accessor)).stdout == "token-cli-test\n"

    # renew (self with the token's own credentials, and by token)
    rows = table(ok(cli("token", "renew", "-increment=30m", tok)).stdout)
    assert rows["token"] == tok
    ok(cli("token", "renew", token=periodic))

    # capabilities
    assert ok(cli("token", "capabilities", "secret/data/x")).stdout.strip() == "root"
    caps = ok(cli("token", "capabilities", tok, "sys/mounts")).stdout.strip()
    assert caps == "deny"
    assert json.loads(ok(cli("token", "capabilities", "-format=json", "secret/data/x")).stdout) == ["root"]

    # revoke: by token, by accessor, -self, -mode=orphan
    ok(cli("token", "revoke", tok))
    assert api.post("auth/token/lookup", {"token": tok}).status_code in (400, 403, 404)
    victim = make_token(api)
    acc = api.post("auth/token/lookup", {"token": victim}).json()["data"]["accessor"]
    ok(cli("token", "revoke", "-accessor", acc))
    assert api.post("auth/token/lookup", {"token": victim}).status_code in (400, 403, 404)
    self_tok = make_token(api)
    p = ok(cli("token", "revoke", "-self", token=self_tok))
    assert "Revoked" in p.stdout
    assert api.post("auth/token/lookup", {"token": self_tok}).status_code in (400, 403, 404)
    parent = make_token(api, ("root",))
    r = requests.post(api.url + "auth/token/create", headers={"X-Vault-Token": parent},
                      json={"policies": ["default"]})
    child = r.json()["auth"]["client_token"]
    ok(cli("token", "revoke", "-mode=orphan", parent))
    assert api.post("auth/token/lookup", {"token": child}).status_code == 200
    assert api.post("auth/token/lookup", {"token": parent}).status_code in (400, 403, 404)


# ------------------------------------------------------------------------ secrets, auth


def test_secrets_enable_list_tune_move_disable(cli, api):
    path = unique("eng").replace("-", "")[:16]
    p = ok(cli("secrets", "enable", f"-path={path}", "-description=cli engine", "-version=2",
               "-default-lease-ttl=1h", "-max-lease-ttl=2h", "kv"))
    assert f"Success! Enabled the kv secrets engine at: {path}/" in p.stdout
    m = api.get(f"sys/mounts/{path}").json()["data"]
    assert m["type"] == "kv" and m["description"] == "cli engine"
    assert m["options"]["version"] == "2"
    assert m["config"]["default_lease_ttl"] == 3600 and m["config"]["max_lease_ttl"] == 7200

    p = ok(cli("secrets", "list"))
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["Path", "Type", "Accessor", "Description"]
    assert any(l.startswith(f"{path}/") and "cli engine" in l for l in lines)
    assert "Default TTL" in ok(cli("secrets", "list", "-detailed")).stdout
    assert f"{path}/" in json.loads(ok(cli("secrets", "list", "-format=json")).stdout)

    ok(cli("secrets", "tune", "-default-lease-ttl=30m", "-description=tuned", path))
    m = api.get(f"sys/mounts/{path}").json()["data"]
    assert m["config"]["default_lease_ttl"] == 1800 and m["description"] == "tuned"

    ok(cli("kv", "put", f"{path}/moved", "a=1"))
    dest = path + "x"
    p = ok(cli("secrets", "move", path, dest))
    assert "Success!" in p.stdout
    for _ in range(50):
        if api.get(f"sys/mounts/{dest}").status_code == 200:
            break
        time.sleep(0.1)
    assert api.get(f"{dest}/data/moved").json()["data"]["data"] == {"a": "1"}
    assert api.get(f"sys/mounts/{path}").status_code in (400, 404)

    ok(cli("secrets", "disable", dest))
    assert api.get(f"sys/mounts/{dest}").status_code in (400, 404)
    p = cli("secrets", "enable", "no-such-engine-type")
    assert p.returncode == 1


def test_auth_list_tune_enable_disable(cli, api):
    p = ok(cli("auth", "list"))
    assert p.stdout.splitlines()[0].split() == ["Path", "Type", "Accessor", "Description"]
    assert any(l.startswith("token/") for l in p.stdout.splitlines())
    assert "token/" in json.loads(ok(cli("auth", "list", "-format=json")).stdout)
    # Tuning the built-in token/ mount is not supported by the server yet (400 "no mount at
    # token/"): check that the CLI sends exactly what the API accepts or rejects.
    p = cli("auth", "tune", "-default-lease-ttl=2h", "-description=tokens", "token")
    direct = api.post("sys/auth/token/tune", {"default_lease_ttl": "2h", "description": "tokens"})
    if direct.status_code == 400:
        assert p.returncode == 1 and "Code: 400" in p.stderr and "no mount at token/" in p.stderr
    else:
        ok(p)
        m = api.get("sys/auth/token").json()["data"]
        assert m["config"]["default_lease_ttl"] == 7200
    # an auth method type that does not exist is a server error (exit 1); userpass is built
    p = cli("auth", "enable", "-path=ul", "no-such-method")
    assert p.returncode == 1 and "Error enabling" in p.stderr
    assert "Enabled userpass auth method at: ul/" in ok(cli("auth", "enable", "-path=ul", "userpass")).stdout
    assert "ul/" in api.get("sys/auth").json()["data"]
    ok(cli("auth", "disable", "ul"))
    p = ok(cli("auth", "disable", "not-there"))
    assert "Success!" in p.stdout


# ---------------------------------------------------------------- operator (TLS, sealed)


def test_operator_init_unseal_seal_rotate_over_tls(tls_server, home):
    srv = tls_server()
    ca = str(srv.ca_file)
    base = clean_env(home, COFFER_ADDR=srv.url)

    # without the CA the certificate is not trusted; -tls-skip-verify accepts it
    p = run(["status"], env=base)
    assert p.returncode == 1
    p = run(["status", "-tls-skip-verify", "-format=json"], env=base)
    assert p.returncode == 2  # not initialized: sealed
    assert json.loads(p.stdout)["initialized"] is False

    p = run(["operator", "init", "-key-shares=1", "-key-threshold=1", f"-ca-cert={ca}"], env=base)
    ok(p)
    lines = p.stdout.splitlines()
    key = next(l.split(": ", 1)[1] for l in lines if l.startswith("Unseal Key 1: "))
    root = next(l.split(": ", 1)[1] for l in lines if l.startswith("Initial Root Token: "))
    assert root.startswith("hvs.")
    assert not any(l.startswith("Unseal Key 2") for l in lines)

    env = clean_env(home, COFFER_ADDR=srv.url, COFFER_CACERT=ca, COFFER_TOKEN=root)
    p = run(["status"], env=env)
    assert p.returncode == 2
    assert table(p.stdout)["Sealed"] == "true"
    # a token-requiring call while sealed: 503 → exit 1
    p = run(["read", "sys/mounts"], env=env)
    assert p.returncode == 1 and "503" in p.stderr

    p = ok(run(["operator", "unseal", key], env=env))
    assert table(p.stdout)["Sealed"] == "false"
    ok(run(["status"], env=env))

    # VAULT_CACERT works too
    env_v = clean_env(home, VAULT_ADDR=srv.url, VAULT_CACERT=ca, VAULT_TOKEN=root)
    ok(run(["status"], env=env_v))

    # rotate + key-status
    p = ok(run(["operator", "key-status"], env=env))
    assert "Key Term" in p.stdout
    term1 = int(table(p.stdout.replace("Key Term", "KeyTerm")).get("KeyTerm"))
    p = ok(run(["operator", "rotate"], env=env))
    assert "Success! Rotated key" in p.stdout
    j = json.loads(ok(run(["operator", "key-status", "-format=json"], env=env)).stdout)
    assert j["data"]["term"] == term1 + 1
    r = requests.get(srv.url + "/v1/sys/key-status", headers={"X-Vault-Token": root}, verify=ca).json()
    assert r["data"]["term"] == term1 + 1

    # seal → status 2 → unseal from stdin → 0; -reset
    ok(run(["operator", "seal"], env=env))
    assert requests.get(srv.url + "/v1/sys/seal-status", verify=ca).json()["sealed"] is True
    assert run(["status"], env=env).returncode == 2
    ok(run(["operator", "unseal", "-reset"], env=env))
    p = ok(run(["operator", "unseal"], env=env, input=key + "\n"))
    assert run(["status"], env=env).returncode == 0
    assert requests.get(srv.url + "/v1/sys/seal-status", verify=ca).json()["sealed"] is False


def test_namespace_and_tenant_commands(cli, dev_server):
    ns = "cli" + uuid.uuid4().hex[:10]
    r = cli("namespace", "create", "-custom-metadata=plan=gold", ns)
    assert r.returncode == 0, r.stderr
    r = cli("namespace", "create", "child", COFFER_NAMESPACE=ns)
    assert r.returncode == 0, r.stderr
    assert f"{ns}/" in cli("namespace", "list").stdout
    assert "child/" in cli("namespace", "list", COFFER_NAMESPACE=ns).stdout
    looked = json.loads(cli("namespace", "lookup", "-format=json", ns).stdout)
    assert looked["data"]["custom_metadata"] == {"plan": "gold"} and looked["data"]["path"] == f"{ns}/"
    r = cli("namespace", "patch", "-custom-metadata=owner=ops", "-remove-custom-metadata=plan", ns)
    assert r.returncode == 0, r.stderr
    assert json.loads(cli("namespace", "lookup", "-format=json", ns).stdout)["data"]["custom_metadata"] == {"owner": "ops"}
    # Lock prints a key; everything below answers 503 until unlocked with it.
    key = cli("namespace", "lock", "-field=unlock_key", ns).stdout.strip()
    assert key and cli("namespace", "list", COFFER_NAMESPACE=ns).returncode == 1
    assert cli("namespace", "unlock", "-unlock-key=" + key, ns).returncode == 0
    assert cli("namespace", "list", COFFER_NAMESPACE=ns).returncode == 0
    # Delete is refused while a child exists, then works.
    r = cli("namespace", "delete", ns)
    assert r.returncode == 1 and "child" in r.stderr
    assert cli("namespace", "delete", "child", COFFER_NAMESPACE=ns).returncode == 0
    assert cli("namespace", "delete", ns).returncode == 0
    assert cli("namespace", "lookup", ns).returncode == 2

    t = "t" + uuid.uuid4().hex[:10]
    r = cli("tenant", "create", "-custom-metadata=plan=free", "-format=json", t)
    assert r.returncode == 0, r.stderr
    admin = json.loads(r.stdout)["auth"]["client_token"]
    assert t in cli("tenant", "list").stdout
    shown = json.loads(cli("tenant", "show", "-format=json", t).stdout)["data"]
    assert shown["custom_metadata"] == {"plan": "free"} and shown["namespace_path"] == f"{t}/"
    assert cli("tenant", "create", t).returncode == 1  # 409: exists
    assert cli("token", "lookup", token=admin, COFFER_NAMESPACE=t).returncode == 0
    assert cli("tenant", "delete", t).returncode == 0
    assert cli("tenant", "show", t).returncode == 2


def test_pki_issue_prints_certificate_key_and_chain(cli, api, tmp_path):
    """#20 item 5: `coffer write pki/issue/web common_name=…` prints the certificate, the key
    and the chain (and -format=json the envelope); openssl checks what was printed."""
    mount = unique("clipki")
    ok(cli("secrets", "enable", f"-path={mount}", "pki"))
    root = json.loads(ok(cli("write", "-format=json", f"{mount}/root/generate/internal", "common_name=CLI Root", "key_type=ec")).stdout)["data"]
    ok(cli("write", f"{mount}/roles/web", "allowed_domains=example.com", "allow_subdomains=true", "key_type=ec"))
    p = ok(cli("write", f"{mount}/issue/web", "common_name=a.example.com"))
    for key in ("certificate", "private_key", "private_key_type", "issuing_ca", "ca_chain", "serial_number", "expiration"):
        assert re.search(rf"^{key}\s", p.stdout, re.M), (key, p.stdout)
    assert "-----BEGIN EC PRIVATE KEY-----" in p.stdout
    leaf = json.loads(ok(cli("write", "-format=json", f"{mount}/issue/web", "common_name=b.example.com")).stdout)["data"]
    assert leaf["issuing_ca"] == root["certificate"]
    (tmp_path / "root.pem").write_text(root["certificate"] + "\n")
    (tmp_path / "leaf.pem").write_text(leaf["certificate"] + "\n")
    v = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "leaf.pem")], capture_output=True, text=True)
    assert v.stdout.strip().endswith(": OK"), v.stdout + v.stderr
    p = cli("write", f"{mount}/issue/web", "common_name=evil.org")
    assert p.returncode == 2 or p.returncode == 1
    assert "common name evil.org not allowed by this role" in p.stderr
    ok(cli("secrets", "disable", mount))
