"""Per-tenant usage metering (issue #5): requests by class, errors, throttled requests and
bytes per namespace, flushed into hourly buckets that survive a restart; sys/usage as JSON
and CSV with hour/day/month rows; tenant admins see their own subtree only; Prometheus
carries per-namespace series for the top N namespaces plus "other"."""

from __future__ import annotations

import csv
import io
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import PEER_BAO, ServerProcess, _base_tmp, coffer_bin, free_port, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="usage metering is a Coffer API")

FLUSH = 1  # usage_flush_interval in these tests, seconds


class Node:
    """A Coffer server on SQLite (initialised with one key share), restartable."""

    def __init__(self, extra: str = ""):
        self.tmp = _base_tmp()
        port = free_port()
        cfg = self.tmp / "coffer.hcl"
        cfg.write_text(f'''
storage "sqlite" {{
  path = "{self.tmp}/coffer.db"
}}
allow_plaintext_api = true
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_disable = true
}}
usage_flush_interval = "{FLUSH}s"
usage_metrics_top_namespaces = 2
{extra}
''')
        self.srv = ServerProcess("coffer-usage", [coffer_bin(), "server", "--config", str(cfg)], port, self.tmp).start()
        init = requests.put(f"{self.srv.url}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30).json()
        self.key, self.root = init["keys"][0], init["root_token"]
        self.unseal()

    def unseal(self):
        r = requests.put(f"{self.srv.url}/v1/sys/unseal", json={"key": self.key}, timeout=30)
        assert r.json()["sealed"] is False

    def call(self, method, path, token=None, ns=None, body=None, params=None):
        h = {"X-Vault-Token": token or self.root}
        if ns:
            h["X-Vault-Namespace"] = ns
        return requests.request(method, f"{self.srv.url}/v1/{path}", json=body, params=params, headers=h, timeout=30)


@pytest.fixture(scope="module")
def node():
    n = Node()
    yield n
    n.srv.dispose()


def usage(node, token=None, ns=None, **params):
    r = node.call("GET", "sys/usage", token=token, ns=ns, params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def row_for(data, namespace):
    rows = [r for r in data["rows"] if r["namespace"] == namespace]
    assert len(rows) == 1, data["rows"]
    return rows[0]


def test_requests_are_metered_by_class_and_survive_a_restart(node):
    t = unique("u").replace("-", "")[:14]
    assert node.call("POST", f"sys/namespaces/{t}").status_code == 200
    assert node.call("POST", f"sys/namespaces/{t}/child").status_code == 200
    ok = lambda r: r.status_code < 300 or pytest.fail(r.text)
    ok(node.call("POST", "sys/mounts/kv", ns=t, body={"type": "kv", "options": {"version": "2"}}))   # write 1
    for i in range(3):
        ok(node.call("POST", f"kv/data/s{i}", ns=t, body={"data": {"v": "x" * 100}}))             # write 2..4
    for i in range(4):
        ok(node.call("GET", "kv/data/s0", ns=t))                                                  # read 1..4
    ok(node.call("LIST", "kv/metadata", ns=t))                                                    # list 1
    ok(node.call("DELETE", "kv/data/s2", ns=t))                                                   # delete 1
    bad = node.call("POST", "kv/data/s9", ns=t, body={"data": "not-a-map"})                      # write 5, error 1
    assert bad.status_code == 400
    for _ in range(2):
        ok(node.call("GET", "sys/mounts", ns=f"{t}/child"))                                       # child: read 1..2
    # Throttled requests count too.
    ok(node.call("POST", "sys/quotas/rate-limit/one", ns=f"{t}/child", body={"rate": 1, "interval": "1h"}))  # child write 1
    codes = [node.call("GET", "sys/mounts", ns=f"{t}/child").status_code for _ in range(3)]       # child read 3..5
    assert codes == [200, 429, 429]

    time.sleep(FLUSH * 2.5)  # flushed to storage
    node.srv.restart()
    node.unseal()

    data = usage(node, namespace=t, granularity="hour")
    assert data["namespace"] == f"{t}/" and data["granularity"] == "hour"
    mine = row_for(data, f"{t}/")
    assert mine["requests"] == {"read": 4, "write": 5, "list": 1, "delete": 1, "login": 0, "crypto": 0, "credential": 0, "certificate": 0}
    assert mine["errors"] == 1 and mine["throttled"] == 0
    assert mine["bytes_in"] > 300 and mine["bytes_out"] > 300
    assert mine["stored_objects"] >= 4 and mine["stored_bytes"] > 300 and mine["tokens"] == 0
    child = row_for(data, f"{t}/child/")
    assert child["requests"]["read"] == 5 and child["requests"]["write"] == 1 and child["throttled"] == 2
    assert data["totals"]["requests_total"] == 11 + 6 and data["totals"]["throttled"] == 2
    # Without descendants, and in day/month rows (the same counts, one row each).
    only = usage(node, namespace=t, include_descendants="false", granularity="month")
    assert [r["namespace"] for r in only["rows"]] == [f"{t}/"]
    assert only["rows"][0]["requests_total"] == 11
    day = usage(node, namespace=t, granularity="day")
    assert day["totals"]["requests_total"] == 17 and day["rows"][0]["period_start"].endswith("T00:00:00Z")
    # A period before any of it: nothing.
    old = usage(node, namespace=t, start="2020-01-01T00:00:00Z", end="2020-02-01T00:00:00Z")
    assert old["rows"] == [] and old["totals"]["requests_total"] == 0


def test_csv_format_and_bad_queries(node):
    t = unique("c").replace("-", "")[:14]
    node.call("POST", f"sys/namespaces/{t}")
    for _ in range(3):
        node.call("GET", "sys/mounts", ns=t)
    r = node.call("GET", "sys/usage", params={"namespace": t, "format": "csv", "granularity": "month"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1 and rows[0]["namespace"] == f"{t}/" and rows[0]["requests_read"] == "3"
    # The CSV says what the JSON says.
    js = usage(node, namespace=t, granularity="month")["rows"]
    assert len(js) == 1
    for key in ("requests_total", "errors", "throttled", "bytes_in"):
        assert rows[0][key] == str(js[0][key]), key
    for cls, n in js[0]["requests"].items():
        assert rows[0][f"requests_{cls}"] == str(n)
    for params, fragment in [({"granularity": "week"}, "granularity"), ({"format": "xml"}, "format"),
                             ({"start": "yesterday"}, "RFC 3339"),
                             ({"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "before"),
                             ({"namespace": "../etc"}, "invalid namespace")]:
        r = node.call("GET", "sys/usage", params={"namespace": t, **params})
        assert r.status_code == 400 and fragment in r.text, (params, r.text)
    assert node.call("GET", "sys/usage", params={"namespace": "no-such-tenant"}).status_code == 404


def test_tenant_admin_sees_own_subtree_only_and_tenant_shows_this_month(node):
    a, b = (unique(p).replace("-", "")[:14] for p in ("ta", "tb"))
    admin_a = node.call("PUT", f"sys/tenants/{a}", body={}).json()["auth"]["client_token"]
    node.call("PUT", f"sys/tenants/{b}", body={})
    for _ in range(2):
        assert node.call("GET", "sys/mounts", token=admin_a, ns=a).status_code == 200
    own = usage(node, token=admin_a, ns=a)
    assert own["namespace"] == f"{a}/" and own["totals"]["requests"]["read"] >= 2
    # Not the sibling, not the root.
    assert node.call("GET", "sys/usage", token=admin_a, ns=b).status_code == 403
    assert node.call("GET", "sys/usage", token=admin_a).status_code == 403
    assert node.call("GET", "sys/usage", token=admin_a, ns=a, params={"namespace": "../"}).status_code == 400
    shown = node.call("GET", f"sys/tenants/{a}").json()["data"]
    assert shown["usage_this_month"]["requests"]["read"] >= 2


def test_prometheus_has_top_namespaces_and_other(node):
    names = [unique("p").replace("-", "")[:14] for _ in range(4)]
    for i, n in enumerate(names):
        node.call("POST", f"sys/namespaces/{n}")
        for _ in range(50 + 10 * i):  # the last two are the busiest of all namespaces here
            node.call("GET", "sys/mounts", ns=n)
    r = requests.get(f"{node.srv.url}/v1/sys/metrics", params={"format": "prometheus"},
                     headers={"X-Vault-Token": node.root}, timeout=30)
    assert r.status_code == 200
    series = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if s.name == "coffer_namespace_requests_total":
                series[(s.labels["namespace"], s.labels["class"])] = s.value
    spaces = {ns for ns, _ in series}
    assert f"{names[3]}/" in spaces and f"{names[2]}/" in spaces
    assert f"{names[0]}/" not in spaces and "other" in spaces
    assert len(spaces) == 3  # top 2 + other: bounded however many namespaces exist
    assert series[(f"{names[3]}/", "read")] == 80


def test_failed_logins_and_lockouts_are_metered(node):
    """#17 item 4: the user lockout is counted in the tenant's usage: each login refused for
    wrong credentials, and each alias that it locked."""
    t = unique("l").replace("-", "")[:14]
    assert node.call("POST", f"sys/namespaces/{t}").status_code == 200
    assert node.call("POST", "sys/auth/userpass", ns=t, body={"type": "userpass"}).status_code == 204
    node.call("POST", "sys/auth/userpass/tune", ns=t, body={"user_lockout_config": {"lockout_threshold": 3}})
    assert node.call("POST", "auth/userpass/users/max", ns=t, body={"password": "right"}).status_code == 204
    codes = [node.call("POST", "auth/userpass/login/max", ns=t, body={"password": "wrong"}).status_code for _ in range(4)]
    assert codes == [400, 400, 400, 403]  # the 4th is refused by the lock, before the password is checked
    time.sleep(FLUSH * 2.5)
    mine = row_for(usage(node, namespace=t, granularity="day"), f"{t}/")
    assert mine["failed_logins"] == 3 and mine["lockouts"] == 1 and mine["requests"]["login"] == 4
    csv = node.call("GET", "sys/usage", params={"namespace": t, "format": "csv", "granularity": "month"}).text
    header, row = csv.splitlines()[0].split(","), csv.splitlines()[1].split(",")
    assert row[header.index("failed_logins")] == "3" and row[header.index("lockouts")] == "1"
