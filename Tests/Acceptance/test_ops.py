"""Operator-facing surface (issue #3): OpenAPI, path help, metrics, logs, graceful shutdown.

Runs the real binary. The OpenAPI document is validated with openapi-spec-validator, the
metrics with prometheus_client's own text parser.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from conftest import PEER_BAO, ServerProcess, _base_tmp, coffer_bin, free_port, unique

pytestmark = pytest.mark.skipif(PEER_BAO, reason="Coffer-specific operator endpoints")


def fill(template: str) -> str:
    """A concrete path for an OpenAPI path template."""
    out = []
    for seg in template.split("/"):
        out.append("x" if seg.startswith("{") else seg)
    return "/".join(out)


def test_openapi_document_validates_and_every_path_answers(dev_server):
    s = dev_server.session("root")
    root = dev_server.url + "/v1"
    s.post(f"{root}/sys/mounts/kv1", json={"type": "kv", "options": {"version": "1"}}).raise_for_status()
    r = s.get(f"{root}/sys/internal/specs/openapi")
    assert r.status_code == 200, r.text
    doc = r.json()
    validate(doc)  # raises on an invalid OpenAPI 3 document
    paths = doc["paths"]
    # Every mounted engine and the core endpoints are covered.
    for expected in ["/secret/data/{path}", "/secret/metadata/{path}", "/secret/config", "/kv1/{path}",
                     "/auth/token/create", "/auth/token/lookup-self", "/sys/mounts/{path}",
                     "/sys/policies/acl/{name}", "/sys/seal-status", "/sys/health", "/sys/metrics"]:
        assert expected in paths, expected
    # Typed request bodies come from the route declarations.
    create = paths["/auth/token/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["properties"]["num_uses"]["type"] == "integer"
    assert create["properties"]["policies"]["type"] == "array"
    # Every documented path answers (help) with something other than 404.
    for template in paths:
        resp = s.get(f"{root}{fill(template)}", params={"help": "1"})
        assert resp.status_code != 404, (template, resp.status_code, resp.text[:200])
        assert resp.status_code == 200, (template, resp.status_code, resp.text[:200])
        assert resp.json().get("help"), template


def test_path_help_on_a_mount_lists_its_paths(dev_server):
    s = dev_server.session("root")
    r = s.get(f"{dev_server.url}/v1/secret/", params={"help": "1"})
    assert r.status_code == 200, r.text
    assert "data/*path" in r.json()["help"]


def _metrics(dev_server, token="root"):
    s = dev_server.session(token)
    return s.get(f"{dev_server.url}/v1/sys/metrics", params={"format": "prometheus"})


def _sample(text: str, name: str, **labels) -> float:
    total = 0.0
    found = False
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
                found = True
    return total if found else -1.0


def test_metrics_parse_and_count_requests(dev_server):
    r = _metrics(dev_server)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(r.text)}
    for name in ["coffer_requests", "coffer_request_duration_seconds", "coffer_core_unsealed",
                 "coffer_token_count", "coffer_build_info", "coffer_storage_operation_duration_seconds"]:
        assert name in families, (name, sorted(families))
    before = _sample(r.text, "coffer_requests_total", operation="read", mount_type="kv", code="200")
    s = dev_server.session("root")
    path = unique("m")
    s.post(f"{dev_server.url}/v1/secret/data/{path}", json={"data": {"a": "1"}}).raise_for_status()
    for _ in range(3):
        s.get(f"{dev_server.url}/v1/secret/data/{path}").raise_for_status()
    after_text = _metrics(dev_server).text
    after = _sample(after_text, "coffer_requests_total", operation="read", mount_type="kv", code="200")
    assert after - max(before, 0) == 3, (before, after)
    assert _sample(after_text, "coffer_core_unsealed") == 1
    assert _sample(after_text, "coffer_token_count") >= 1
    # No path, token or secret value ever appears in the exposition (the dev root token is
    # "root", which is also the root namespace's label value in the per-namespace series).
    assert path not in after_text
    assert "root" not in after_text.replace("coffer_", "").replace('namespace="root"', "")


def test_metrics_need_a_token_with_read_on_sys_metrics(dev_server):
    s = dev_server.session()
    assert s.get(f"{dev_server.url}/v1/sys/metrics", params={"format": "prometheus"}).status_code == 403
    root = dev_server.client("root")
    root.sys.create_or_update_policy(name="metrics-reader", policy='path "sys/metrics" { capabilities = ["read"] }')
    reader = root.auth.token.create(policies=["metrics-reader"], ttl="1h")["auth"]["client_token"]
    other = root.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    assert _metrics(dev_server, reader).status_code == 200
    assert _metrics(dev_server, other).status_code == 403
    # Without format=prometheus: Vault's JSON shape.
    j = dev_server.session(reader).get(f"{dev_server.url}/v1/sys/metrics").json()
    assert {"Gauges", "Counters", "Samples"} <= set(j)


def _start_config(tmp: Path, extra_listener: str = "", top: str = "") -> ServerProcess:
    port = free_port()
    cfg = tmp / "c.hcl"
    cfg.write_text(f"""
storage "sqlite" {{ path = "{tmp / 'c.db'}" }}
allow_plaintext_api = true
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_disable = true
  {extra_listener}
}}
{top}
""")
    return ServerProcess("coffer-ops", [coffer_bin(), "server", "--config", str(cfg)], port, tmp).start()


def test_unauthenticated_metrics_access_and_json_logs():
    tmp = _base_tmp()
    srv = _start_config(tmp, extra_listener="telemetry { unauthenticated_metrics_access = true }",
                        top='log_format = "json"\nlog_level = "debug"')
    try:
        r = requests.get(f"{srv.url}/v1/sys/metrics", params={"format": "prometheus"})
        assert r.status_code == 200, r.text
        assert _sample(r.text, "coffer_core_unsealed") == 0  # not initialized yet
        requests.get(f"{srv.url}/v1/sys/health")
        time.sleep(0.3)
        lines = [l for l in srv.log_text().splitlines() if l.startswith("{")]
        assert lines, srv.log_tail()
        entries = [json.loads(l) for l in lines]
        assert all("@level" in e and "@message" in e for e in entries)
        reqs = [e for e in entries if e["@message"] == "request"]
        assert reqs and all("request.id" in e for e in reqs)
    finally:
        srv.dispose()


def test_sigterm_lets_in_flight_requests_finish_and_releases_the_port():
    tmp = _base_tmp()
    srv = _start_config(tmp)
    try:
        init = requests.put(f"{srv.url}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        requests.put(f"{srv.url}/v1/sys/unseal", json={"key": init["keys"][0]}).raise_for_status()
        token = init["root_token"]
        # A request whose body arrives slowly is in flight when SIGTERM comes.
        body = json.dumps({"policy": 'path "x/*" { capabilities = ["read"] }'}).encode()
        result: dict = {}

        def slow_request():
            sock = socket.create_connection(("127.0.0.1", srv.port))
            head = (f"PUT /v1/sys/policies/acl/inflight HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            sock.sendall(head + body[:10])
            time.sleep(1.5)
            sock.sendall(body[10:])
            result["response"] = sock.recv(4096).decode(errors="replace")
            sock.close()

        t = threading.Thread(target=slow_request)
        t.start()
        time.sleep(0.5)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(timeout=15)
        assert result.get("response", "").startswith("HTTP/1.1 204"), result
        code = srv.proc.wait(timeout=15)
        assert code == 0, srv.log_tail()
        # The port is released: we can listen on it ourselves (SO_REUSEADDR, as any server
        # would, since our own client connection leaves a TIME_WAIT entry behind).
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", srv.port))
            s.listen()
        # And the in-flight write really happened.
        srv.start()
        requests.put(f"{srv.url}/v1/sys/unseal", json={"key": init["keys"][0]}).raise_for_status()
        r = requests.get(f"{srv.url}/v1/sys/policies/acl/inflight", headers={"X-Vault-Token": token})
        assert r.status_code == 200 and "x/*" in r.json()["data"]["policy"]
    finally:
        srv.dispose()
