"""A real server: TLS listener, SQLite storage, Shamir seal 5/3, restarts and kill -9.

Each test gets its own fresh server + data dir (the `tls_server` factory). At the end,
the raw bytes of every storage file (the database, its -wal and -shm) are scanned for
every plaintext value written, the root token and the unseal keys: none may appear.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time

import hvac
import pytest
import requests

from conftest import unique


# ----------------------------------------------------------------------------- helpers


def health_status(srv) -> int:
    return requests.get(srv.url + "/v1/sys/health", verify=srv.verify, timeout=10).status_code


def initialize(srv):
    """sys/init 5/3 through hvac; checks the answer's shape; returns (keys, root_token)."""
    c = srv.client()
    assert c.sys.is_initialized() is False
    resp = c.sys.initialize(5, 3)
    keys, keys_b64, root = resp["keys"], resp["keys_base64"], resp["root_token"]
    assert len(keys) == 5 and len(keys_b64) == 5
    assert len(set(keys)) == 5, "shares must differ"
    for hex_key, b64_key in zip(keys, keys_b64):
        raw = bytes.fromhex(hex_key)
        assert base64.b64decode(b64_key) == raw, "keys_base64 must encode the same bytes"
        assert 16 <= len(raw) <= 33
    assert isinstance(root, str) and len(root) >= 20
    assert c.sys.is_initialized() is True
    return keys, root, keys_b64


def unseal(srv, keys):
    """Submit keys one by one, checking progress 1, 2, ... then unsealed."""
    c = srv.client()
    status = c.sys.read_seal_status()
    assert status["sealed"] is True and status["progress"] == 0
    threshold = status["t"]
    nonce = None
    for i, key in enumerate(keys[:threshold], start=1):
        r = c.sys.submit_unseal_key(key)
        if i < threshold:
            assert r["sealed"] is True
            assert r["progress"] == i
            assert r["t"] == threshold and r["n"] == 5
            assert r["nonce"], "an unseal attempt in progress has a nonce"
            if nonce is not None:
                assert r["nonce"] == nonce, "nonce stays the same during one attempt"
            nonce = r["nonce"]
        else:
            assert r["sealed"] is False
            assert r["progress"] == 0
    assert c.sys.is_sealed() is False
    if srv.peer:  # OpenBao on raft is a standby (429) until it elects itself leader
        deadline = time.monotonic() + 30
        while health_status(srv) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)


def storage_bytes(srv) -> dict:
    files = srv.storage_files()
    assert files, f"no storage files in {srv.data_dir}"
    return {p.name: p.read_bytes() for p in files}


def assert_no_plaintext(srv, values, root_token, keys):
    """Scan the raw bytes of every file of the server's storage."""
    blobs = storage_bytes(srv)
    if not srv.peer:
        db = srv.db_path
        assert db.name in blobs, f"{db} was not created (files: {sorted(blobs)})"
        head = blobs[db.name][:100]
        assert head.startswith(b"SQLite format 3\x00"), "not an SQLite database"
        assert head[18] == 2 and head[19] == 2, "database is not in WAL mode"
    needles = {f"value {v!r}": v.encode() for v in values}
    needles["root token"] = root_token.encode()
    for i, k in enumerate(keys):
        needles[f"unseal key {i} (hex)"] = k.encode()
        needles[f"unseal key {i} (raw)"] = bytes.fromhex(k)
        needles[f"unseal key {i} (base64)"] = base64.b64encode(bytes.fromhex(k))
    leaks = [f"{what} in {name}" for name, blob in blobs.items()
             for what, needle in needles.items() if needle in blob]
    assert not leaks, "plaintext found in storage: " + "; ".join(leaks[:10])


def assert_rows_in_db(srv, at_least: int):
    """The data really lives in the configured SQLite file (call with the server down)."""
    if srv.peer:
        return
    con = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")]
        rows = sum(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)
    finally:
        con.close()
    assert rows >= at_least, f"only {rows} rows in {srv.db_path} (tables {tables})"


def graceful_stop(srv):
    code = srv.stop()
    assert not srv.last_stop_needed_sigkill, "SIGTERM did not stop the server within 10 s"
    assert code == 0, f"exit code {code} after SIGTERM"


def kv_put(c, path, value, mount="kv"):
    return c.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": value},
                                                   mount_point=mount)


def kv_get(c, path, mount="kv"):
    return c.secrets.kv.v2.read_secret_version(
        path=path, mount_point=mount, raise_on_deleted_version=True)["data"]["data"]["v"]


def enable_kv2(c, path="kv"):
    c.sys.enable_secrets_engine("kv", path=path, options={"version": "2"})
    assert f"{path}/" in c.sys.list_mounted_secrets_engines()["data"]


# ------------------------------------------------------------------------------- tests


def test_init_unseal_and_bad_unseal_keys(tls_server):
    srv = tls_server()
    c = srv.client()
    assert health_status(srv) == 501  # not initialized
    status = c.sys.read_seal_status()
    assert status["initialized"] is False and status["sealed"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest):  # unseal before init
        c.sys.submit_unseal_key("00" * 33)

    keys, root, keys_b64 = initialize(srv)
    assert health_status(srv) == 503  # sealed
    status = c.sys.read_seal_status()
    assert status["sealed"] is True and status["t"] == 3 and status["n"] == 5
    assert status["progress"] == 0
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:  # init twice
        c.sys.initialize(5, 3)
    assert "already initialized" in str(e.value)

    # one good key, then bad ones: 400 and the progress doesn't move
    assert c.sys.submit_unseal_key(keys[0])["progress"] == 1
    bad_keys = ["not a key!", "abcdef0123", keys[1] + "00", "", base64.b64encode(b"x" * 40).decode()]
    for bad in bad_keys:
        with pytest.raises(hvac.exceptions.InvalidRequest):
            c.sys.submit_unseal_key(bad)
        assert c.sys.read_seal_status()["progress"] == 1, f"progress moved after {bad!r}"
    # the same share twice doesn't count twice
    assert c.sys.submit_unseal_key(keys[0])["progress"] == 1
    # reset forgets the submitted shares
    r = c.sys.submit_unseal_key(reset=True)
    assert r["progress"] == 0 and r["sealed"] is True
    assert c.sys.read_seal_status()["progress"] == 0

    # any 3 of the 5 shares unseal (here: the last three, in base64)
    unseal(srv, keys_b64[2:])
    assert health_status(srv) == 200
    rc = srv.client(root)
    assert rc.is_authenticated()
    assert rc.auth.token.lookup_self()["data"]["policies"] == ["root"]
    health = requests.get(srv.url + "/v1/sys/health", verify=srv.verify).json()
    assert health["initialized"] is True and health["sealed"] is False
    assert health["cluster_name"] == "acceptance"
    leader = rc.sys.read_leader_status()
    assert "ha_enabled" in leader
    # plain HTTP to the TLS listener does not work
    try:
        r = requests.get(srv.url.replace("https://", "http://") + "/v1/sys/health", timeout=5)
        assert r.status_code == 400, r.status_code  # Vault: 400 "Client sent an HTTP request
    except requests.RequestException:                #  to an HTTPS server"; or a reset
        pass
    graceful_stop(srv)
    assert_no_plaintext(srv, [], root, keys)


def test_kv_seal_restart_rotate_and_no_plaintext_at_rest(tls_server):
    srv = tls_server()
    keys, root, _ = initialize(srv)
    unseal(srv, keys)
    c = srv.client(root)
    enable_kv2(c)
    written = {}

    def put(path):
        value = unique()
        kv_put(c, path, value)
        written[path] = value
        return value

    for i in range(5):
        put(f"app/s{i}")
    put("app/multi")
    put("app/multi")  # version 2
    for path, value in written.items():
        assert kv_get(c, path) == value

    # seal -> 503 everywhere that needs the barrier -> unseal -> works again
    c.sys.seal()
    assert c.sys.is_sealed() is True
    assert health_status(srv) == 503
    with pytest.raises(hvac.exceptions.VaultDown):
        kv_get(c, "app/s0")
    with pytest.raises(hvac.exceptions.VaultDown):
        kv_put(c, "app/while-sealed", unique())
    r = requests.get(srv.url + "/v1/kv/data/app/s0", verify=srv.verify,
                     headers={"X-Vault-Token": root})
    assert r.status_code == 503 and r.json()["errors"]
    unseal(srv, keys[1:4])
    for path, value in written.items():
        assert kv_get(c, path) == value

    # restart: comes back sealed, unseal, same data
    graceful_stop(srv)
    srv.start()
    assert srv.client().sys.is_sealed() is True
    with pytest.raises(hvac.exceptions.VaultDown):
        kv_get(c, "app/s0")
    unseal(srv, keys)
    for path, value in written.items():
        assert kv_get(c, path) == value
    assert c.secrets.kv.v2.read_secret_metadata(path="app/multi", mount_point="kv")[
        "data"]["current_version"] == 2
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv_get(c, "app/while-sealed")

    # rotate: term 2, old data readable, new data written under the new term
    before = c.sys.get_encryption_key_status()["data"]
    assert before["term"] == 1
    c.sys.rotate_encryption_key()
    after = c.sys.get_encryption_key_status()["data"]
    assert after["term"] == 2
    assert after["install_time"] != before["install_time"]
    for path, value in written.items():
        assert kv_get(c, path) == value
    put("app/after-rotate")
    assert kv_get(c, "app/after-rotate") == written["app/after-rotate"]

    # and all of it survives another restart
    graceful_stop(srv)
    srv.start()
    unseal(srv, keys[::2])
    assert c.sys.get_encryption_key_status()["data"]["term"] == 2
    for path, value in written.items():
        assert kv_get(c, path) == value

    # tokens survive restarts too (stored hashed, see the scan below)
    tok = c.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    graceful_stop(srv)
    assert_no_plaintext(srv, list(written.values()) + [tok], root, keys)
    srv.start()
    unseal(srv, keys)
    assert srv.client(tok).auth.token.lookup_self()["data"]["id"] == tok
    graceful_stop(srv)
    assert_no_plaintext(srv, list(written.values()) + [tok], root, keys)
    assert_rows_in_db(srv, at_least=len(written))


def test_kill9_during_write_loop_keeps_every_acknowledged_write(tls_server):
    srv = tls_server()
    keys, root, _ = initialize(srv)
    unseal(srv, keys)
    enable_kv2(srv.client(root))

    acked: dict[str, str] = {}
    attempted: dict[str, str] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        c = srv.client(root)  # its own connection pool
        i = 0
        while not stop.is_set():
            path, value = f"loop/k{i}", unique()
            attempted[path] = value
            try:
                kv_put(c, path, value)
            except Exception as e:  # the server died under us: expected
                errors.append(e)
                return
            acked[path] = value
            i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 200 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.01)
    assert t.is_alive(), f"writer stopped early: {errors}"
    assert acked, "no write was acknowledged before the kill"
    srv.kill9()
    t.join(30)
    stop.set()
    assert not t.is_alive()
    n_acked = len(acked)

    # nothing leaks into the files even mid-flight (the WAL is still there now)
    assert_no_plaintext(srv, list(attempted.values()), root, keys)

    srv.start()
    assert srv.client().sys.is_sealed() is True
    unseal(srv, keys)
    c = srv.client(root)
    missing = [p for p in acked if _read_or_none(c, p) != acked[p]]
    assert not missing, f"{len(missing)} of {n_acked} acknowledged writes lost: {missing[:5]}"
    # the write in flight at the kill is either fully there or absent
    for path in set(attempted) - set(acked):
        assert _read_or_none(c, path) in (None, attempted[path])
    # the server keeps working after recovery
    kv_put(c, "loop/after", "after")
    assert kv_get(c, "loop/after") == "after"
    graceful_stop(srv)
    assert_no_plaintext(srv, list(attempted.values()), root, keys)
    assert_rows_in_db(srv, at_least=n_acked)


def _read_or_none(c, path):
    try:
        return kv_get(c, path)
    except hvac.exceptions.InvalidPath:
        return None
