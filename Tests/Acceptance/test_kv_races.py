"""Concurrent writers to one KV v2 key, on SQLite and on etcd (#25, the lost-write race).

Every writer's 200 must be its own version: the versions answered are distinct, and
`current_version` equals the number of writes that were acknowledged. With `cas`, exactly
one of N concurrent `cas=0` creates succeeds, and of N writers that all read version v and
send `cas=v`, exactly one wins. Patch (read-merge-write) and metadata changes keep every
acknowledged change too.
"""

import concurrent.futures
import os
import uuid

import pytest
import requests

from conftest import ServerProcess, _base_tmp, coffer_bin, free_port

ETCD_ADDRS = os.environ.get("COFFER_TEST_ETCD_ADDRS", "")

WRITERS = 16
WRITES_EACH = 30


class Node:
    """An initialised, unsealed Coffer on the given storage stanza."""

    def __init__(self, storage: str):
        self.tmp = _base_tmp()
        port = free_port()
        cfg = self.tmp / "coffer.hcl"
        cfg.write_text(f"""
{storage.format(tmp=self.tmp)}
allow_plaintext_api = true
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_disable = true
}}
""")
        self.srv = ServerProcess("coffer-races", [coffer_bin(), "server", "--config", str(cfg)], port, self.tmp).start()
        init = requests.put(f"{self.srv.url}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30).json()
        self.root = init["root_token"]
        r = requests.put(f"{self.srv.url}/v1/sys/unseal", json={"key": init["keys"][0]}, timeout=30)
        assert r.json()["sealed"] is False
        self.session = requests.Session()
        self.call("POST", "sys/mounts/kv", body={"type": "kv", "options": {"version": "2"}}).raise_for_status()

    def call(self, method, path, body=None, headers=None):
        h = {"X-Vault-Token": self.root, **(headers or {})}
        return requests.request(method, f"{self.srv.url}/v1/{path}", json=body, headers=h, timeout=60)


SQLITE = 'storage "sqlite" {{\n  path = "{tmp}/coffer.db"\n}}'
ETCD = 'storage "etcd" {{\n  address = "' + ETCD_ADDRS + '"\n  path = "/coffer-races-' + uuid.uuid4().hex[:8] + '/"\n}}'


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def node(request):
    if request.param == "etcd" and not ETCD_ADDRS:
        pytest.skip("needs COFFER_TEST_ETCD_ADDRS (Ops/etcd start-cluster)")
    n = Node(SQLITE if request.param == "sqlite" else ETCD)
    yield n
    n.srv.dispose()


def run_parallel(n, fn):
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def test_concurrent_writers_each_get_their_own_version(node):
    key = "race-" + uuid.uuid4().hex[:8]

    def writer(w):
        out = []
        for i in range(WRITES_EACH):
            r = node.call("POST", f"kv/data/{key}", body={"data": {"w": w, "i": i}})
            out.append((r.status_code, r.json()["data"]["version"] if r.status_code == 200 else r.text))
        return out

    results = [x for chunk in run_parallel(WRITERS, writer) for x in chunk]
    ok = [v for code, v in results if code == 200]
    assert len(ok) == WRITERS * WRITES_EACH, [x for x in results if x[0] != 200][:5]
    assert len(set(ok)) == len(ok), "two acknowledged writes answered the same version"
    meta = node.call("GET", f"kv/metadata/{key}").json()["data"]
    assert meta["current_version"] == len(ok)
    # Every version kept (the newest 10) holds what its writer sent.
    assert sorted(int(v) for v in meta["versions"]) == list(range(len(ok) - 9, len(ok) + 1))


def test_exactly_one_of_concurrent_cas_zero_creates_succeeds(node):
    key = "cas0-" + uuid.uuid4().hex[:8]
    codes = run_parallel(24, lambda w: node.call("POST", f"kv/data/{key}", body={"options": {"cas": 0}, "data": {"w": w}}).status_code)
    assert codes.count(200) == 1, codes
    assert codes.count(400) == 23, codes
    meta = node.call("GET", f"kv/metadata/{key}").json()["data"]
    assert meta["current_version"] == 1


def test_exactly_one_of_concurrent_cas_updates_of_one_version_wins(node):
    key = "casv-" + uuid.uuid4().hex[:8]
    for i in range(3):
        assert node.call("POST", f"kv/data/{key}", body={"data": {"i": i}}).status_code == 200
    codes = run_parallel(24, lambda w: node.call("POST", f"kv/data/{key}", body={"options": {"cas": 3}, "data": {"w": w}}).status_code)
    assert codes.count(200) == 1, codes
    assert node.call("GET", f"kv/metadata/{key}").json()["data"]["current_version"] == 4


def test_concurrent_patches_keep_every_field(node):
    key = "patch-" + uuid.uuid4().hex[:8]
    assert node.call("POST", f"kv/data/{key}", body={"data": {"base": 1}}).status_code == 200
    hdr = {"Content-Type": "application/merge-patch+json"}
    codes = run_parallel(20, lambda w: node.call("PATCH", f"kv/data/{key}", body={"data": {f"f{w}": w}}, headers=hdr).status_code)
    assert codes == [200] * 20, codes
    data = node.call("GET", f"kv/data/{key}").json()["data"]
    assert data["data"] == {"base": 1, **{f"f{w}": w for w in range(20)}}
    assert data["metadata"]["version"] == 21


def test_concurrent_custom_metadata_patches_keep_every_key(node):
    key = "meta-" + uuid.uuid4().hex[:8]
    assert node.call("POST", f"kv/data/{key}", body={"data": {"a": 1}}).status_code == 200
    hdr = {"Content-Type": "application/merge-patch+json"}
    codes = run_parallel(20, lambda w: node.call("PATCH", f"kv/metadata/{key}", body={"custom_metadata": {f"k{w}": str(w)}}, headers=hdr).status_code)
    assert codes == [204] * 20, codes
    meta = node.call("GET", f"kv/metadata/{key}").json()["data"]
    assert meta["custom_metadata"] == {f"k{w}": str(w) for w in range(20)}


def test_writes_racing_deletes_and_destroys_stay_consistent(node):
    key = "mix-" + uuid.uuid4().hex[:8]
    assert node.call("POST", f"kv/data/{key}", body={"data": {"i": 0}}).status_code == 200

    def worker(w):
        if w % 3 == 0:
            return ("destroy", node.call("POST", f"kv/destroy/{key}", body={"versions": [1]}).status_code)
        if w % 3 == 1:
            return ("delete", node.call("POST", f"kv/delete/{key}", body={"versions": [1]}).status_code)
        r = node.call("POST", f"kv/data/{key}", body={"data": {"w": w}})
        return ("write", r.status_code)

    results = run_parallel(27, worker)  # 9 writes: with version 1, 10 versions, none pruned
    writes = [c for kind, c in results if kind == "write"]
    assert all(c in (200, 204) for _, c in results), results
    meta = node.call("GET", f"kv/metadata/{key}").json()["data"]
    assert meta["current_version"] == 1 + len(writes)
    assert meta["versions"]["1"]["destroyed"] is True
    assert node.call("GET", f"kv/data/{key}?version=1").status_code == 404
