"""Storage snapshots (issue #8, part 3): `sys/storage/snapshot[-force]` and
`coffer operator snapshot save|restore`, on real servers.

A snapshot is every physical key and value, still encrypted, so a restored node is unsealed
with the unseal keys of the cluster the snapshot came from and serves that cluster's data
to that cluster's tokens. SQLite servers run with TLS (the `tls_server` factory); the etcd
variant needs COFFER_TEST_ETCD_ADDR (Ops/etcd start DIR) or COFFER_TEST_ETCD_ADDRS.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import hvac
import pytest
import requests

from conftest import PEER_BAO, ServerProcess, _base_tmp, coffer_bin, free_port, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="Coffer's own snapshot format and CLI")

MAGIC = b"COFSNAP\n"
ETCD_ADDR = os.environ.get("COFFER_TEST_ETCD_ADDR") or os.environ.get("COFFER_TEST_ETCD_ADDRS", "")


# ----------------------------------------------------------------------------- helpers


def init_and_unseal(srv, shares=3, threshold=2):
    """sys/init + unseal; returns (keys, root_token)."""
    c = srv.client()
    resp = c.sys.initialize(shares, threshold)
    keys, root = resp["keys"], resp["root_token"]
    unseal(srv, keys[:threshold])
    return keys, root


def unseal(srv, keys):
    c = srv.client()
    for k in keys:
        r = c.sys.submit_unseal_key(k)
    assert r["sealed"] is False, r
    assert c.sys.is_sealed() is False


def sealed(srv) -> bool:
    return srv.client().sys.read_seal_status()["sealed"]


def put_secret(c, path, value):
    c.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": value}, mount_point="kv")


def get_secret(c, path):
    return c.secrets.kv.v2.read_secret_version(
        path=path, mount_point="kv", raise_on_deleted_version=True)["data"]["data"]["v"]


def snapshot_url(srv, force=False):
    return f"{srv.url}/v1/sys/storage/snapshot{'-force' if force else ''}"


def api_save(srv, token) -> bytes:
    r = requests.get(snapshot_url(srv), headers={"X-Vault-Token": token}, verify=srv.verify, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.content.startswith(MAGIC)
    return r.content


def api_restore(srv, token, data: bytes, force=False) -> requests.Response:
    return requests.post(snapshot_url(srv, force), data=data, verify=srv.verify, timeout=120,
                         headers={"X-Vault-Token": token, "Content-Type": "application/octet-stream"})


def cli(srv, token, *args, tmp: Path) -> subprocess.CompletedProcess:
    """The coffer CLI with a clean environment pointed at `srv`."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("VAULT_") or k.startswith("COFFER_"))}
    env.update(HOME=str(tmp), VAULT_ADDR=srv.url, VAULT_TOKEN=token)
    if srv.ca_file:
        env["VAULT_CACERT"] = str(srv.ca_file)
    return subprocess.run([coffer_bin(), *args], env=env, capture_output=True, text=True, timeout=120)


def fill(srv, root) -> dict:
    """KV v2 secrets and a policy; returns {path: value}."""
    c = srv.client(root)
    c.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    secrets = {f"app/{i}": unique("snap") for i in range(20)}
    for path, value in secrets.items():
        put_secret(c, path, value)
    c.sys.create_or_update_acl_policy("snap-readers", 'path "kv/data/app/*" { capabilities = ["read"] }')
    return secrets


def assert_serves(srv, root, secrets):
    c = srv.client(root)
    for path, value in secrets.items():
        assert get_secret(c, path) == value, path
    assert "kv/data/app/*" in c.sys.read_acl_policy("snap-readers")["data"]["policy"]


# ------------------------------------------------------------------------------- tests


def test_sqlite_save_and_restore_with_cli_and_api(tls_server, tmp_path):
    src = tls_server()
    keys, root = init_and_unseal(src)
    secrets = fill(src, root)

    # CLI save: an atomically written file, mode 0600, that the server can take back.
    path = tmp_path / "cluster.snap"
    p = cli(src, root, "operator", "snapshot", "save", str(path), tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Success!" in p.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cli_bytes = path.read_bytes()
    assert cli_bytes.startswith(MAGIC)
    assert not [f for f in tmp_path.iterdir() if ".tmp-" in f.name], "temporary file left behind"
    # Still encrypted: no plaintext value, no root token in the file.
    for value in secrets.values():
        assert value.encode() not in cli_bytes
    assert root.encode() not in cli_bytes

    # API save.
    api_bytes = api_save(src, root)
    assert abs(len(api_bytes) - len(cli_bytes)) < 4096

    # A fresh, initialized server of its own.
    dst = tls_server()
    dst_keys, dst_root = init_and_unseal(dst)
    dc = dst.client(dst_root)
    dc.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    put_secret(dc, "own", "dst-data")

    # A corrupt file is refused with 400, and the server still serves its own data.
    bad = bytearray(api_bytes)
    bad[len(bad) // 2] ^= 0x40
    r = api_restore(dst, dst_root, bytes(bad), force=True)
    assert r.status_code == 400, r.text
    assert "snapshot is corrupt: checksum mismatch" in r.json()["errors"][0]
    r = api_restore(dst, dst_root, b"PK\x03\x04 not a snapshot", force=True)
    assert r.status_code == 400 and "not a Coffer snapshot" in r.json()["errors"][0], r.text
    assert api_restore(dst, dst_root, api_bytes[:-100], force=True).status_code == 400
    assert sealed(dst) is False
    assert get_secret(dc, "own") == "dst-data"

    # The CLI checks the file before sending it.
    bad_file = tmp_path / "bad.snap"
    bad_file.write_bytes(bytes(bad))
    p = cli(dst, dst_root, "operator", "snapshot", "restore", "-force", str(bad_file), tmp=tmp_path)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr, p.stderr

    # Another cluster's snapshot is refused without -force.
    p = cli(dst, dst_root, "operator", "snapshot", "restore", str(path), tmp=tmp_path)
    assert p.returncode == 1
    assert "snapshot is from a different cluster" in p.stderr, p.stderr
    assert get_secret(dc, "own") == "dst-data"

    # With -force: restored, sealed; the ORIGINAL keys unseal it; the original root token
    # reads the original secrets; the node's own token and data are gone.
    p = cli(dst, dst_root, "operator", "snapshot", "restore", "-force", str(path), tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sealed(dst) is True
    with pytest.raises(hvac.exceptions.InvalidRequest):
        dst.client().sys.submit_unseal_key(dst_keys[0])
        dst.client().sys.submit_unseal_key(dst_keys[1])
    dst.client().sys.submit_unseal_key(reset=True)
    unseal(dst, keys[1:3])
    assert_serves(dst, root, secrets)
    with pytest.raises(hvac.exceptions.InvalidPath):
        get_secret(dst.client(root), "own")
    with pytest.raises(hvac.exceptions.Forbidden):
        get_secret(dst.client(dst_root), "app/0")

    # The restore is durable: after a restart the same keys unseal the same data.
    dst.restart()
    unseal(dst, keys[:2])
    assert_serves(dst, root, secrets)

    # Same cluster, through the API, without force: what was written after the snapshot is gone.
    sc = src.client(root)
    put_secret(sc, "app/0", "changed-later")
    put_secret(sc, "later", "gone")
    r = api_restore(src, root, api_bytes)
    assert r.status_code == 204, r.text
    assert sealed(src) is True
    unseal(src, keys[:2])
    assert_serves(src, root, secrets)
    with pytest.raises(hvac.exceptions.InvalidPath):
        get_secret(sc, "later")


def test_snapshot_endpoints_are_root_only(tls_server, tmp_path):
    srv = tls_server()
    _, root = init_and_unseal(srv, 1, 1)
    c = srv.client(root)
    c.sys.create_or_update_acl_policy("everything", 'path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }')
    almighty = c.auth.token.create(policies=["everything"])["auth"]["client_token"]
    audit_log = tmp_path / "audit.log"
    c.sys.enable_audit_device(device_type="file", path="file", options={"file_path": str(audit_log)})
    snap = api_save(srv, root)
    for token in [None, "hvs.not-a-token", almighty]:
        h = {"X-Vault-Token": token} if token else {}
        r = requests.get(snapshot_url(srv), headers=h, verify=srv.verify, timeout=30)
        assert r.status_code == 403, (token, r.status_code, r.text)
        assert r.json() == {"errors": ["permission denied"]}
        r = requests.post(snapshot_url(srv), data=snap, headers=h, verify=srv.verify, timeout=30)
        assert r.status_code == 403, (token, r.status_code, r.text)
    # Audited like any request: a request and a response entry for the download, and
    # both entries, with the error, for a refusal.
    entries = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
    snaps = [(e["type"], e.get("error", "")) for e in entries
             if e.get("request", {}).get("path") == "sys/storage/snapshot"]
    assert ("request", "") in snaps and ("response", "") in snaps, snaps
    assert ("response", "permission denied") in snaps, snaps
    assert root not in audit_log.read_text(), "raw token in the audit log"
    # Root namespace only.
    r = requests.get(snapshot_url(srv), headers={"X-Vault-Token": root, "X-Vault-Namespace": "tenant1"},
                     verify=srv.verify, timeout=30)
    assert r.status_code == 400 and "root namespace" in r.json()["errors"][0], r.text
    # Verbs: no DELETE, no GET on -force.
    r = requests.delete(snapshot_url(srv), headers={"X-Vault-Token": root}, verify=srv.verify, timeout=30)
    assert r.status_code == 405
    r = requests.get(snapshot_url(srv, force=True), headers={"X-Vault-Token": root}, verify=srv.verify, timeout=30)
    assert r.status_code == 405
    # The CLI with a non-root token: Vault's error block, exit 1, no file.
    out = tmp_path / "x.snap"
    p = cli(srv, almighty, "operator", "snapshot", "save", str(out), tmp=tmp_path)
    assert p.returncode == 1 and "permission denied" in p.stderr and "Code: 403" in p.stderr, p.stderr
    assert not out.exists()
    # Sealed: 503.
    c.sys.seal()
    r = requests.get(snapshot_url(srv), headers={"X-Vault-Token": root}, verify=srv.verify, timeout=30)
    assert r.status_code == 503


# ------------------------------------------------------------------------- etcd variant


class EtcdServer(ServerProcess):
    """`coffer server` on etcd under a prefix of its own (plain HTTP on loopback)."""

    def __init__(self, workdir: Path, prefix: str):
        port = free_port()
        cfg = workdir / "coffer-etcd.hcl"
        cfg.write_text(f"""\
storage "etcd" {{
  address = "{ETCD_ADDR}"
  path    = "{prefix}"
}}
allow_plaintext_api = true
listener "tcp" {{
  address     = "127.0.0.1:{port}"
  tls_disable = true
}}
cluster_name = "snapshot-acceptance"
""")
        super().__init__("coffer-etcd", [coffer_bin(), "server", "--config", str(cfg)], port, workdir)


@pytest.fixture
def etcd_server():
    if not ETCD_ADDR:
        pytest.skip("needs COFFER_TEST_ETCD_ADDR (Ops/etcd start DIR)")
    made = []

    def make() -> EtcdServer:
        srv = EtcdServer(_base_tmp(), f"/coffer-snap-{uuid.uuid4().hex[:8]}/")
        made.append(srv)
        return srv.start()

    yield make
    for srv in made:
        srv.dispose()


def test_etcd_to_sqlite_and_back(etcd_server, tls_server, tmp_path):
    src = etcd_server()
    keys, root = init_and_unseal(src)
    secrets = fill(src, root)
    snap = api_save(src, root)

    # etcd -> SQLite.
    mid = tls_server()
    _, mid_root = init_and_unseal(mid)
    r = api_restore(mid, mid_root, snap, force=True)
    assert r.status_code == 204, r.text
    unseal(mid, keys[:2])
    assert_serves(mid, root, secrets)
    secrets["app/extra"] = unique("extra")
    put_secret(mid.client(root), "app/extra", secrets["app/extra"])

    # SQLite -> a fresh etcd server, through the CLI.
    path = tmp_path / "from-sqlite.snap"
    p = cli(mid, root, "operator", "snapshot", "save", str(path), tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    dst = etcd_server()
    _, dst_root = init_and_unseal(dst)
    p = cli(dst, dst_root, "operator", "snapshot", "restore", "-force", str(path), tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sealed(dst) is True
    unseal(dst, keys[1:])
    assert_serves(dst, root, secrets)
