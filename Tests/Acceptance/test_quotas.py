"""Rate-limit quotas end to end (issue #5): Vault's sys/quotas API through hvac, 429 with
Retry-After and X-RateLimit-* headers, precedence (most specific wins, additive quotas on
top), tenants that can only tighten what the operator set, X-Forwarded-For from trusted
proxies only, and buckets shared through a real Redis by two Coffer nodes, with the
configured behaviour when Redis goes away (fail open / fail closed) and recovery after."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import PEER_BAO, api_call as call, REPO_ROOT, ServerProcess, _base_tmp, coffer_bin, free_port, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="quotas are an Enterprise feature in Vault; not in OpenBao's dev server")


def name() -> str:
    return unique("q").replace("-", "")[:16]


def admitted(srv, n, path, **kw):
    """Sends n requests; returns the status codes."""
    return [call(srv, "GET", path, **kw).status_code for _ in range(n)]


# ----------------------------------------------------------------------------- in process


def test_hvac_quota_crud_and_config(dev_server, root_client):
    q = name()
    ns = name()
    root_client.sys.create_namespace(path=ns)
    root_client.sys.create_or_update_quota(name=q, rate=123.5, path=f"{ns}/", interval="2s", block_interval="10s")
    got = root_client.sys.read_quota(name=q)["data"]
    assert got["path"] == f"{ns}/" and got["rate"] == 123.5 and got["interval"] == 2 and got["block_interval"] == 10
    assert got["type"] == "rate-limit" and got["inheritable"] is True  # a root quota on a namespace inherits
    assert q in root_client.sys.list_quotas()["data"]["keys"]
    # Update keeps what is not sent.
    root_client.sys.create_or_update_quota(name=q, rate=7)
    got = root_client.sys.read_quota(name=q)["data"]
    assert got["rate"] == 7 and got["interval"] == 2 and got["path"] == f"{ns}/"
    root_client.sys.delete_quota(name=q)
    assert call(dev_server, "GET", f"sys/quotas/rate-limit/{q}").status_code == 404

    r = call(dev_server, "POST", "sys/quotas/config", body={"enable_rate_limit_response_headers": True,
                                                             "rate_limit_exempt_paths": ["sys/mounts"]})
    assert r.status_code == 204, r.text
    cfg = call(dev_server, "GET", "sys/quotas/config").json()["data"]
    assert cfg["enable_rate_limit_response_headers"] is True and cfg["rate_limit_exempt_paths"] == ["sys/mounts"]
    assert "sys/health" in cfg["absolute_rate_limit_exempt_paths"]


@pytest.mark.parametrize("body, fragment", [
    ({"rate": 0}, "rate must be positive"),
    ({"rate": -1}, "rate must be positive"),
    ({"rate": "lots"}, "rate must be positive"),
    ({"rate": 1, "path": "nosuchmount/x"}, "invalid mount path"),
    ({"rate": 1, "path": "../x"}, "invalid quota path"),
    ({"rate": 1, "interval": "forever"}, "invalid duration"),
    ({"rate": 1, "group_by": "moon"}, "group_by"),
    ({"rate": 1, "path": "secret/", "inheritable": True}, "inheritable"),
    ({"rate": 1, "type": "lease-count-ish"}, "unsupported quota type"),
])
def test_bad_quota_input_is_a_400_and_creates_nothing(dev_server, body, fragment):
    q = name()
    r = call(dev_server, "POST", f"sys/quotas/rate-limit/{q}", body=body)
    assert r.status_code == 400, r.text
    assert fragment in " ".join(r.json()["errors"])
    assert call(dev_server, "GET", f"sys/quotas/rate-limit/{q}").status_code == 404


def test_throttled_request_gets_429_retry_after_and_headers(dev_server, root_client):
    ns = name()
    root_client.sys.create_namespace(path=ns)
    call(dev_server, "POST", "sys/quotas/config", body={"enable_rate_limit_response_headers": True,
                                                         "rate_limit_exempt_paths": []})
    q = name()
    root_client.sys.create_or_update_quota(name=q, rate=3, path=f"{ns}/", interval="30s")
    codes = []
    for _ in range(3):
        r = call(dev_server, "GET", "sys/mounts", ns=ns)
        codes.append(r.status_code)
        assert r.headers["X-RateLimit-Limit"] == "3"
    assert codes == [200, 200, 200]
    r = call(dev_server, "GET", "sys/mounts", ns=ns)
    assert r.status_code == 429
    assert r.json()["errors"] == ['request path "sys/mounts": rate limit quota exceeded']
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["X-RateLimit-Remaining"] == "0"
    # Another namespace, and the root namespace, are not affected.
    other = name()
    root_client.sys.create_namespace(path=other)
    assert admitted(dev_server, 5, "sys/mounts", ns=other) == [200] * 5
    assert call(dev_server, "GET", f"{ns}/sys/mounts").status_code == 429  # path-prefix form, same namespace
    root_client.sys.delete_quota(name=q)
    assert call(dev_server, "GET", "sys/mounts", ns=ns).status_code == 200


def test_most_specific_wins_and_additive_applies_on_top(dev_server, root_client):
    call(dev_server, "POST", "sys/quotas/config", body={"rate_limit_exempt_paths": []})
    ns = name()
    root_client.sys.create_namespace(path=ns)
    call(dev_server, "POST", "sys/mounts/secret", ns=ns, body={"type": "kv", "options": {"version": "2"}})
    call(dev_server, "POST", "secret/data/x", ns=ns, body={"data": {"a": 1}})
    q_ns, q_mount = name(), name()
    root_client.sys.create_or_update_quota(name=q_ns, rate=2, path=f"{ns}/", interval="60s")
    root_client.sys.create_or_update_quota(name=q_mount, rate=50, path=f"{ns}/secret/", interval="60s")
    # KV reads meet the mount quota (more specific than the namespace's): 6 pass.
    assert admitted(dev_server, 6, "secret/data/x", ns=ns) == [200] * 6
    # Other paths of the namespace meet the namespace quota: 2 pass.
    assert admitted(dev_server, 3, "sys/mounts", ns=ns) == [200, 200, 429]
    # An additive quota (a daily cap beside the per-minute rate) applies in addition.
    q_cap = name()
    r = call(dev_server, "POST", f"sys/quotas/rate-limit/{q_cap}",
             body={"rate": 4, "interval": "24h", "path": f"{ns}/secret/", "additive": True})
    assert r.status_code == 204, r.text
    assert admitted(dev_server, 6, "secret/data/x", ns=ns) == [200] * 4 + [429] * 2
    for q in (q_ns, q_mount, q_cap):
        root_client.sys.delete_quota(name=q)


def test_block_interval_keeps_refusing(dev_server, root_client):
    ns = name()
    root_client.sys.create_namespace(path=ns)
    q = name()
    root_client.sys.create_or_update_quota(name=q, rate=2, path=f"{ns}/", interval="1s", block_interval="30s")
    assert admitted(dev_server, 3, "sys/mounts", ns=ns) == [200, 200, 429]
    time.sleep(1.5)  # the bucket has refilled, but the block lasts 30 s
    r = call(dev_server, "GET", "sys/mounts", ns=ns)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 20
    root_client.sys.delete_quota(name=q)


def test_tenant_quotas_can_only_be_tightened(dev_server, root_client):
    tenant = name()
    r = call(dev_server, "PUT", f"sys/tenants/{tenant}", body={
        "custom_metadata": {"plan": "free"},
        "quotas": [{"name": "plan", "rate": 5, "interval": "60s", "group_by": "none"}]})
    assert r.status_code == 200, r.text
    admin = r.json()["auth"]["client_token"]
    shown = call(dev_server, "GET", f"sys/tenants/{tenant}").json()["data"]
    assert [q["name"] for q in shown["quotas"]] == ["plan"] and shown["quotas"][0]["managed"] is True
    # The tenant admin sees the managed quota but cannot change or delete it...
    assert call(dev_server, "GET", "sys/quotas/rate-limit/plan", token=admin, ns=tenant).json()["data"]["rate"] == 5
    r = call(dev_server, "POST", "sys/quotas/rate-limit/plan", token=admin, ns=tenant, body={"rate": 10000})
    assert r.status_code == 403 and "managed by the parent" in r.text
    assert call(dev_server, "DELETE", "sys/quotas/rate-limit/plan", token=admin, ns=tenant).status_code == 403
    # ...and a wide quota of its own does not widen it: 5 requests in all (6 were made so far: 3 above).
    r = call(dev_server, "POST", "sys/quotas/rate-limit/mine", token=admin, ns=tenant, body={"rate": 10000, "path": ""})
    assert r.status_code == 204, r.text
    codes = admitted(dev_server, 4, "sys/mounts", token=admin, ns=tenant)
    assert codes.count(200) == 1 and codes[1:] == [429] * 3  # 4 of the 5 tokens went to the calls above
    # A tighter one of its own does apply (checked in a fresh tenant).
    t2 = name()
    r = call(dev_server, "PUT", f"sys/tenants/{t2}", body={"quotas": {"rate_limit": [{"rate": 100, "interval": "60s"}]}})
    admin2 = r.json()["auth"]["client_token"]
    call(dev_server, "POST", "sys/quotas/rate-limit/tight", token=admin2, ns=t2, body={"rate": 2, "interval": "60s"})
    assert admitted(dev_server, 3, "sys/mounts", token=admin2, ns=t2) == [200, 200, 429]
    # Bad tenant quotas: 400, and no tenant is left behind.
    t3 = name()
    r = call(dev_server, "PUT", f"sys/tenants/{t3}", body={"quotas": [{"rate": 0}]})
    assert r.status_code == 400
    assert call(dev_server, "GET", f"sys/tenants/{t3}").status_code == 404
    assert call(dev_server, "GET", f"sys/namespaces/{t3}").status_code == 404


# ----------------------------------------------------------------- configured servers


def config_server(tmp: Path, config: str, name: str = "coffer-quota") -> ServerProcess:
    cfg = tmp / f"{name}.hcl"
    cfg.write_text(config)
    port = free_port()
    argv = [coffer_bin(), "server", "--dev", "--dev-root-token-id", "root", "--dev-listen-address",
            f"127.0.0.1:{port}", "--config", str(cfg)]
    return ServerProcess(name, argv, port, tmp).start()


@pytest.fixture
def private_redis():
    """A Redis of this test's own (started by Ops/redis), so it can be killed and restarted
    on the same port; the run's shared one (COFFER_TEST_REDIS_ADDR) stays up."""
    d = _base_tmp()
    out = subprocess.run([str(REPO_ROOT / "Ops/redis"), "start", str(d)], capture_output=True, text=True, check=True)
    addr = out.stdout.strip().split("=", 1)[1]
    yield addr, d
    subprocess.run([str(REPO_ROOT / "Ops/redis"), "stop", str(d)], capture_output=True)


def redis_cli(addr, *args):
    host, port = addr.rsplit(":", 1)
    return subprocess.run(["redis-cli", "-h", host, "-p", port, *args], capture_output=True, text=True, timeout=10)


def test_x_forwarded_for_only_from_trusted_proxies():
    tmp = _base_tmp()
    trusted = config_server(tmp, 'allow_plaintext_api = true\nlistener "tcp" {\n  address = "127.0.0.1:0"\n  tls_disable = true\n'
                                 '  x_forwarded_for_authorized_addrs = "127.0.0.0/8"\n}\n', "coffer-xff")
    untrusted = config_server(tmp, 'allow_plaintext_api = true\nlistener "tcp" {\n  address = "127.0.0.1:0"\n  tls_disable = true\n'
                                   '  x_forwarded_for_authorized_addrs = "10.0.0.0/8"\n}\n', "coffer-noxff")
    try:
        for srv in (trusted, untrusted):
            call(srv, "POST", "sys/quotas/rate-limit/per-ip", body={"rate": 2, "interval": "60s", "group_by": "ip"})
        # Through a trusted proxy, two clients have a bucket each.
        a = [call(trusted, "GET", "sys/mounts", headers={"X-Forwarded-For": "203.0.113.7"}).status_code for _ in range(3)]
        b = [call(trusted, "GET", "sys/mounts", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}).status_code for _ in range(2)]
        assert a == [200, 200, 429] and b == [200, 200]
        # From an untrusted peer the header is ignored: one bucket for the peer address.
        c = [call(untrusted, "GET", "sys/mounts", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(3)]
        assert c == [200, 200, 429]
    finally:
        trusted.dispose()
        untrusted.dispose()


def test_redis_buckets_are_shared_by_nodes_and_outages_follow_failure_mode(private_redis):
    addr, redis_dir = private_redis
    tmp = _base_tmp()
    stanza = lambda mode: (f'quota_store "redis" {{\n  address = "{addr}"\n  timeout = "1s"\n'
                           f'  failure_mode = "{mode}"\n}}\n')
    a = config_server(tmp, stanza("open"), "coffer-a")
    b = config_server(tmp, stanza("closed"), "coffer-b")
    try:
        for srv in (a, b):  # the same quota on both nodes: the same bucket in Redis
            assert call(srv, "POST", "sys/quotas/config", body={"enable_rate_limit_response_headers": True}).status_code == 204
            r = call(srv, "POST", "sys/quotas/rate-limit/shared", body={"rate": 10, "interval": "1s", "group_by": "none"})
            assert r.status_code == 204, r.text
        time.sleep(1.2)  # the bucket is full again after the set-up requests
        # A burst of 40 split across both nodes: 10 pass (plus what refills during the burst).
        from concurrent.futures import ThreadPoolExecutor
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: call((a, b)[i % 2], "GET", "sys/mounts"), range(40)))
        burst = time.monotonic() - t0
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(ok) + len(refused) == 40
        assert 10 <= len(ok) <= 10 + int(burst * 10) + 1, (len(ok), burst)
        assert {r.request.url.split("/v1")[0] for r in ok} == {a.url, b.url}  # both nodes admitted some
        for r in refused:
            assert r.json()["errors"] == ['request path "sys/mounts": rate limit quota exceeded']
            assert 1 <= int(r.headers["Retry-After"]) <= 1
            assert r.headers["X-RateLimit-Limit"] == "10" and r.headers["X-RateLimit-Remaining"] == "0"
        assert redis_cli(addr, "EXISTS", "coffer:rl:root/q/shared/*").stdout.strip() == "1"

        def outage_checks(kind):
            t0 = time.monotonic()
            ra = call(a, "GET", "sys/mounts")
            rb = call(b, "GET", "sys/mounts")
            assert time.monotonic() - t0 < 10, f"{kind}: an outage must not hang requests"
            assert ra.status_code == 200, (kind, ra.text)
            assert rb.status_code == 503 and "quota store unavailable" in " ".join(rb.json()["errors"]), (kind, rb.text)
            assert addr not in rb.text
            assert call(b, "GET", "sys/health").status_code == 200  # exempt paths never reach the store

        def enforced_again():
            deadline = time.monotonic() + 15
            while True:
                codes = [call(b, "GET", "sys/mounts").status_code for _ in range(12)]
                if 503 not in codes or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert 429 in codes and 503 not in codes, codes

        # Redis frozen (connections hang), then thawed.
        pid = redis_cli(addr, "INFO", "server").stdout.split("process_id:")[1].split()[0]
        subprocess.run(["kill", "-STOP", pid], check=True)
        try:
            outage_checks("frozen")
        finally:
            subprocess.run(["kill", "-CONT", pid], check=True)
        enforced_again()
        # Redis killed (connections refused), then started again on the same port.
        subprocess.run(["kill", "-9", pid], check=True)
        time.sleep(0.3)
        outage_checks("killed")
        port = addr.rsplit(":", 1)[1]
        subprocess.run([str(REPO_ROOT / "Ops/redis"), "stop", str(redis_dir)], capture_output=True)
        subprocess.run([str(REPO_ROOT / "Ops/redis"), "start", str(redis_dir), port], capture_output=True, check=True)
        enforced_again()
        assert "rate limit quota store unavailable" in a.log_text()
        for srv in (a, b):
            assert srv.running, "a Redis outage never crashes a node"
    finally:
        a.dispose()
        b.dispose()


def test_exempt_paths_are_never_limited(dev_server, root_client):
    q, ns = name(), name()
    root_client.sys.create_namespace(path=ns)
    call(dev_server, "POST", "sys/quotas/config", body={"rate_limit_exempt_paths": ["sys/policies/"]})
    root_client.sys.create_or_update_quota(name=q, rate=1, path=f"{ns}/", interval="60s")
    try:
        assert admitted(dev_server, 4, "sys/policies/acl", ns=ns) == [200] * 4
        assert admitted(dev_server, 2, "sys/mounts", ns=ns) == [200, 429]
    finally:
        call(dev_server, "POST", "sys/quotas/config", body={"rate_limit_exempt_paths": []})
        root_client.sys.delete_quota(name=q)


def test_high_rate_quota_is_held_within_one_percent(dev_server, root_client):
    """Rates of 1,000+ per interval are drawn from the bucket in batches (1% at a time): the
    quota still admits no more than its rate (a batch unspent within its hold, at most 1 s,
    is lost, so slightly fewer can pass on a slow machine)."""
    q, ns = name(), name()
    root_client.sys.create_namespace(path=ns)
    root_client.sys.create_or_update_quota(name=q, rate=1000, path=f"{ns}/", interval="1h")
    from concurrent.futures import ThreadPoolExecutor
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: call(dev_server, "GET", "sys/mounts", ns=ns).status_code, range(1050)))
    refill = int((time.monotonic() - t0) * 1000 / 3600) + 1  # the bucket refills 1000 per hour meanwhile
    assert set(codes) == {200, 429}
    assert 960 <= codes.count(200) <= 1000 + refill, (codes.count(200), refill)
    root_client.sys.delete_quota(name=q)
