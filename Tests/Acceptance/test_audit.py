"""Audit devices end to end (issue #7): hvac's audit calls, HMAC'd entries with no plaintext
secret or token anywhere (file, socket capture, syslog capture, server log), sys/audit-hash
finding entries, `coffer audit verify` on an untouched and on tampered logs, blocking when
no device accepts an entry, recovery, and a device filtered to one tenant."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import PEER_BAO, api_call as call, _base_tmp, coffer_bin, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="hash chains and filters are Coffer's")


def entries(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verify(*files, head=None):
    argv = [coffer_bin(), "audit", "verify", *map(str, files)] + (["--head", head] if head else [])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


class Capture:
    """A TCP or unix-datagram listener that keeps everything it receives."""

    def __init__(self, kind: str, path: Path | None = None):
        self.data = bytearray()
        self.kind = kind
        if kind == "tcp":
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(8)
            self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conns = self.conns = []
        while not self.stop:
            try:
                if self.kind == "tcp":
                    c, _ = self.sock.accept()
                    c.settimeout(0.2)
                    conns.append(c)
                else:
                    self.data += self.sock.recv(65536) + b"\n"
            except OSError:
                pass
            for c in list(conns):
                try:
                    chunk = c.recv(65536)
                    if chunk:
                        self.data += chunk
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.thread.join(2)
        for c in getattr(self, "conns", []):
            c.close()
        self.sock.close()


def test_hvac_audit_calls_and_nothing_leaks(dev_server, root_client):
    tmp = _base_tmp()
    log = tmp / "audit.log"
    tcp = Capture("tcp")
    sys_sock = Capture("unix", tmp / "syslog.sock")
    try:
        root_client.sys.enable_audit_device(device_type="file", path="file", options={"file_path": str(log)})
        root_client.sys.enable_audit_device(device_type="socket", path="sock",
                                            options={"address": tcp.address, "socket_type": "tcp"})
        root_client.sys.enable_audit_device(device_type="syslog", path="syslog",
                                            options={"tag": "coffer-test", "socket_path": sys_sock.address})
        listed = root_client.sys.list_enabled_audit_devices()["data"]
        assert set(listed) >= {"file/", "sock/", "syslog/"} and listed["file/"]["type"] == "file"

        secret = unique("secret-value")
        password = unique("pw")
        root_client.secrets.kv.v2.create_or_update_secret(path="audited", secret={"api_key": secret, "password": password})
        assert root_client.secrets.kv.v2.read_secret_version(path="audited")["data"]["data"]["api_key"] == secret
        child = root_client.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
        requests.get(f"{dev_server.url}/v1/secret/data/audited", headers={"X-Vault-Token": child}, timeout=10)  # 403
        time.sleep(0.5)

        hashed = root_client.sys.calculate_hash(path="file", input_to_hash=secret)["data"]["hash"]
        assert hashed.startswith("hmac-sha256:")
        text = log.read_text()
        assert hashed in text, "the hash of a known value finds its entries"
        captures = {"file": text, "socket": tcp.data.decode(errors="replace"),
                    "syslog": sys_sock.data.decode(errors="replace"), "server log": dev_server.log_text()}
        # Each device has its own salt: its own hash finds the value in its own capture.
        assert "coffer-test" in captures["syslog"] and hashed not in captures["socket"]
        assert root_client.sys.calculate_hash(path="sock", input_to_hash=secret)["data"]["hash"] in captures["socket"]
        assert root_client.sys.calculate_hash(path="syslog", input_to_hash=secret)["data"]["hash"] in captures["syslog"]
        for where, content in captures.items():
            for plain in (secret, password, child, "hvs."):
                assert plain not in content, f"{plain[:12]}… in the {where}"
        # The dev root token is the word "root" (also the root namespace's id and policy name):
        # check that every token field is an HMAC instead.
        for e in entries(log):
            for tok in (e.get("request", {}).get("client_token"), (e.get("auth") or {}).get("client_token"),
                        (e.get("response", {}).get("auth") or {}).get("client_token")):
                assert tok in (None, "") or tok.startswith("hmac-sha256:"), tok
        # Vault's shape: request and response entries, namespace, hmac'd token, the 403 has its error.
        es = entries(log)
        kinds = {e["type"] for e in es}
        assert {"request", "response"} <= kinds
        req = next(e for e in es if e["type"] == "request" and e["request"]["path"] == "secret/data/audited")
        assert req["request"]["namespace"] == {"id": "root"} and req["request"]["client_token"].startswith("hmac-sha256:")
        assert req["request"]["mount_type"] == "kv" and req["chain"]["seq"] >= 1
        assert any(e.get("error") == "permission denied" for e in es)

        assert verify(log).stdout.startswith("ok, ")
        root_client.sys.disable_audit_device(path="sock")
        root_client.sys.disable_audit_device(path="syslog")
        assert set(root_client.sys.list_enabled_audit_devices()["data"]) == {"file/"}
    finally:
        for p in ("file", "sock", "syslog"):
            call(dev_server, "DELETE", f"sys/audit/{p}")
        tcp.close()
        sys_sock.close()


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap", "truncate"])
def test_verify_detects_tampering(dev_server, tamper):
    tmp = _base_tmp()
    log = tmp / "audit.log"
    assert call(dev_server, "PUT", "sys/audit/tamper", body={"type": "file", "options": {"file_path": str(log)}}).status_code == 204
    try:
        for i in range(5):
            call(dev_server, "POST", f"secret/data/t{i}", body={"data": {"v": str(i)}})
    finally:
        call(dev_server, "DELETE", "sys/audit/tamper")
    assert verify(log).returncode == 0
    lines = log.read_text().splitlines(keepends=True)
    bad = tmp / "bad.log"
    if tamper == "edit":
        lines[4] = lines[4].replace('"update"', '"read"') if '"update"' in lines[4] else lines[4].replace('"request"', '"response"')
    elif tamper == "delete":
        del lines[4]
    elif tamper == "swap":
        lines[3], lines[4] = lines[4], lines[3]
    else:
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    bad.write_text("".join(lines))
    r = verify(bad)
    assert r.returncode != 0 and ":" in r.stderr, (tamper, r.stdout, r.stderr)


def test_blocking_when_no_device_accepts_and_recovery(dev_server):
    tmp = _base_tmp()
    d = tmp / "only"
    d.mkdir()
    path = f"blk{unique('')[:6]}"
    assert call(dev_server, "PUT", f"sys/audit/{path}", body={"type": "file", "options": {"file_path": str(d / "a.log")}}).status_code == 204
    try:
        shutil.rmtree(d)  # the only device can no longer write
        key = unique("k")
        r = call(dev_server, "POST", f"secret/data/{key}", body={"data": {"v": "1"}})
        assert r.status_code >= 500 and "audit" in " ".join(r.json()["errors"]), r.text
        d.mkdir()  # back: it recovers (a failed device retries at most once per second)...
        time.sleep(1.2)
        # ...and the refused write never happened.
        assert call(dev_server, "GET", f"secret/data/{key}").status_code == 404
        # With a second, healthy device, losing the first no longer blocks anything.
        healthy = tmp / "healthy.log"
        assert call(dev_server, "PUT", "sys/audit/second", body={"type": "file", "options": {"file_path": str(healthy)}}).status_code == 204
        shutil.rmtree(d)
        r = call(dev_server, "POST", f"secret/data/{key}-2", body={"data": {"v": "2"}})
        assert r.status_code == 200, r.text
        assert f"secret/data/{key}-2" in healthy.read_text()
        d.mkdir()
        time.sleep(1.2)  # a failed device retries at most once per second
        assert call(dev_server, "GET", f"secret/data/{key}-2").status_code == 200
        assert f"secret/data/{key}-2" in (d / "a.log").read_text()
        assert verify(healthy).returncode == 0
    finally:
        call(dev_server, "DELETE", f"sys/audit/{path}")
        call(dev_server, "DELETE", "sys/audit/second")


def test_socket_peer_down_is_a_failing_device_and_recovers(dev_server):
    tcp = Capture("tcp")
    port = tcp.address.rsplit(":", 1)[1]
    assert call(dev_server, "PUT", "sys/audit/peer", body={"type": "socket", "options": {"address": tcp.address, "write_timeout": "1s"}}).status_code == 204
    try:
        assert call(dev_server, "GET", "sys/mounts").status_code == 200
        tcp.close()  # the peer goes away: the only device fails
        time.sleep(0.3)
        codes = [call(dev_server, "GET", "sys/mounts").status_code for _ in range(3)]
        assert all(c >= 500 for c in codes[1:]), codes
        back = socket.socket()
        back.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        back.bind(("127.0.0.1", int(port)))
        back.listen(64)
        deadline = time.monotonic() + 10
        while call(dev_server, "GET", "sys/mounts").status_code != 200:
            assert time.monotonic() < deadline, "the socket device did not recover"
            time.sleep(0.5)
        # Disabling needs a working device too (the request is audited first, as in Vault).
        assert call(dev_server, "DELETE", "sys/audit/peer").status_code == 204
        back.close()
    finally:
        call(dev_server, "DELETE", "sys/audit/peer")


def test_filter_sends_one_tenant_only(dev_server, root_client):
    tmp = _base_tmp()
    log = tmp / "acme.log"
    a, b = (unique(p).replace("-", "")[:12] for p in ("fa", "fb"))
    for n in (a, b):
        root_client.sys.create_namespace(path=n)
    r = call(dev_server, "PUT", "sys/audit/tenant-a", body={"type": "file", "options": {
        "file_path": str(log), "filter": f'namespace == "{a}/"'}})
    assert r.status_code == 204, r.text
    try:
        for n in (a, b, a):
            call(dev_server, "GET", "sys/mounts", ns=n)
        bad = call(dev_server, "PUT", "sys/audit/broken", body={"type": "file", "options": {
            "file_path": str(tmp / "x.log"), "filter": 'namespace ==== "x"'}})
        assert bad.status_code == 400
    finally:
        call(dev_server, "DELETE", "sys/audit/tenant-a")
    es = [e for e in entries(log) if e["type"] in ("request", "response")]
    assert len(es) == 4 and {e["request"]["namespace"]["path"] for e in es} == {f"{a}/"}


def test_rate_limit_audit_logging(dev_server, root_client):
    """`enable_rate_limit_audit_logging`: throttled requests appear in the audit log."""
    tmp = _base_tmp()
    log = tmp / "rl.log"
    ns = unique("rl").replace("-", "")[:12]
    root_client.sys.create_namespace(path=ns)
    assert call(dev_server, "PUT", "sys/audit/rl", body={"type": "file", "options": {"file_path": str(log)}}).status_code == 204
    try:
        root_client.sys.create_or_update_quota(name="rl-test", rate=1, path=f"{ns}/", interval="1h")
        for flag in (False, True):
            call(dev_server, "POST", "sys/quotas/config", body={"enable_rate_limit_audit_logging": flag})
            codes = [call(dev_server, "GET", "sys/mounts", ns=ns).status_code for _ in range(2)]
            assert codes[-1] == 429
        refused = [e for e in entries(log) if "rate limit quota exceeded" in (e.get("error") or "")]
        assert len(refused) == 2, refused  # only the two requests refused while the flag was on
        assert all(e["request"]["namespace"]["path"] == f"{ns}/" for e in refused)
    finally:
        call(dev_server, "POST", "sys/quotas/config", body={"enable_rate_limit_audit_logging": False})
        root_client.sys.delete_quota(name="rl-test")
        call(dev_server, "DELETE", "sys/audit/rl")
