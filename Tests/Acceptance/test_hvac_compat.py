"""Small mismatches Vault clients trip over (issue #16, items 5 and 6), through hvac 2.4.0
against the real binary; each expectation was checked against OpenBao 2.7.2
(`ACCEPTANCE_PEER_BAO=1` runs the hvac cases against `bao server -dev`).

- `sys/audit-hash/<missing device>`: 400 with Vault's words `unknown audit backend`, which
  clients match.
- `LIST auth/token/roles` with no roles: 404 (Vault answers an empty list with 404).
- hvac's legacy generic-secret calls on a KV v1 mount at `secret/` (its own integration
  suite's `test_generic_secret_backend`, `test_list_directory`, `test_read_nonexistent_key`):
  `client.list` sends `GET ...?list=True`, and Vault reads `list` with Go's
  `strconv.ParseBool` (1 t T TRUE true True; 0 f F FALSE false False; anything else 400).
  A KV v1 write stores the body as sent, a key named `path` included.
- `coffer read sys/leader` (fields at the top level, no `data`) prints a table.
"""

from __future__ import annotations

import json
import os
import subprocess

import hvac
import pytest
import requests

from conftest import PEER_BAO, coffer_bin, unique


@pytest.fixture(scope="module")
def client(dev_server) -> hvac.Client:
    """Root client, with `secret/` remounted as KV version 1 the way hvac's own integration
    suite sets it up (`options=dict(version=1)`: an integer)."""
    c = dev_server.client("root")
    c.sys.disable_secrets_engine("secret")
    c.sys.enable_secrets_engine(backend_type="kv", path="secret", options=dict(version=1))
    return c


# ------------------------------------------------------------------------ sys/audit-hash


def test_audit_hash_of_missing_device_says_unknown_audit_backend(client, dev_server):
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        client.sys.calculate_hash(path="no-such-device", input_to_hash="x")
    assert 'unknown audit backend "no-such-device/"' in str(e.value)
    r = requests.post(f"{dev_server.url}/v1/sys/audit-hash/no-such-device",
                      headers={"X-Vault-Token": "root"}, json={"input": "x"}, timeout=30)
    assert r.status_code == 400
    assert r.json() == {"errors": ['unknown audit backend "no-such-device/"']}


# ------------------------------------------------------------------- auth/token/roles


def test_list_token_roles_without_roles_is_404(client, dev_server):
    # hvac turns the 404 into InvalidPath; a 200 with empty keys would be returned instead.
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.auth.token.list_roles()
    for method, params in (("LIST", None), ("GET", {"list": "true"})):
        r = requests.request(method, f"{dev_server.url}/v1/auth/token/roles", params=params,
                             headers={"X-Vault-Token": "root"}, timeout=30)
        assert r.status_code == 404, (method, r.status_code, r.text)
        assert r.json() == {"errors": []}


def test_list_token_roles_after_creating_one(client):
    name = unique("role")
    client.auth.token.create_or_update_role(name)
    try:
        assert client.auth.token.list_roles()["data"]["keys"] == [name]
    finally:
        client.auth.token.delete_role(name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.auth.token.list_roles()


# ------------------------------------------------ hvac's legacy generic-secret calls


def test_generic_secret_write_read_delete(client):
    # hvac: tests/integration_tests/v1/test_integration.py::test_generic_secret_backend
    client.write("secret/foo", zap="zip")
    result = client.read("secret/foo")
    assert result["data"] == {"zap": "zip"}
    assert result["lease_id"] == "" and result["renewable"] is False
    client.delete("secret/foo")
    assert client.read("secret/foo") is None


def test_generic_secret_list_directory(client):
    # hvac: test_list_directory. client.list sends GET /v1/secret/test-list?list=True.
    client.write("secret/test-list/bar/foo", value="bar")
    client.write("secret/test-list/foo", value="bar")
    try:
        result = client.list("secret/test-list")
        assert result is not None, "client.list (GET ?list=True) answered 404"
        assert result["data"]["keys"] == ["bar/", "foo"]
        assert client.list("secret/test-list/bar")["data"]["keys"] == ["foo"]
        assert client.list("secret/test-list/nothing-here") is None
    finally:
        client.delete("secret/test-list/bar/foo")
        client.delete("secret/test-list/foo")
    assert client.list("secret/test-list") is None


def test_read_nonexistent_key(client):
    # hvac: test_read_nonexistent_key
    assert not client.read("secret/I/dont/exist")


@pytest.mark.parametrize("spelling", ["1", "t", "T", "TRUE", "true", "True"])
def test_list_query_parameter_accepts_go_true_spellings(client, dev_server, spelling):
    path = unique("bools")
    client.write(f"secret/{path}/k", value="v")
    r = requests.get(f"{dev_server.url}/v1/secret/{path}", params={"list": spelling},
                     headers={"X-Vault-Token": "root"}, timeout=30)
    assert r.status_code == 200, (spelling, r.status_code, r.text)
    assert r.json()["data"]["keys"] == ["k"]


@pytest.mark.parametrize("spelling", ["0", "f", "F", "FALSE", "false", "False"])
def test_list_query_parameter_false_spellings_read(client, dev_server, spelling):
    path = unique("bools")
    client.write(f"secret/{path}", value="v")
    r = requests.get(f"{dev_server.url}/v1/secret/{path}", params={"list": spelling},
                     headers={"X-Vault-Token": "root"}, timeout=30)
    assert r.status_code == 200, (spelling, r.status_code, r.text)
    assert r.json()["data"] == {"value": "v"}


@pytest.mark.parametrize("spelling", ["yes", "garbage", "2"])
def test_list_query_parameter_that_is_no_bool_is_400(client, dev_server, spelling):
    r = requests.get(f"{dev_server.url}/v1/secret/anything", params={"list": spelling},
                     headers={"X-Vault-Token": "root"}, timeout=30)
    assert r.status_code == 400, (spelling, r.status_code, r.text)


def test_kv_v1_write_keeps_a_body_key_named_path(client):
    # write_data is hvac's way to send keys write() reserves ("path", "wrap_ttl").
    client.write_data("secret/reserved-names", data={"path": "x", "wrap_ttl": "y", "a": 1})
    assert client.read("secret/reserved-names")["data"] == {"path": "x", "wrap_ttl": "y", "a": 1}
    client.delete("secret/reserved-names")


# ---------------------------------------------------------------- CLI: top-level fields


def _cli(dev_server, tmp_path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("VAULT_") or k.startswith("COFFER_"))}
    env.update(HOME=str(tmp_path), COFFER_ADDR=dev_server.url, COFFER_TOKEN="root")
    return subprocess.run([coffer_bin(), *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(PEER_BAO, reason="drives the coffer CLI binary")
def test_cli_read_prints_top_level_fields_as_a_table(dev_server, tmp_path):
    raw = requests.get(f"{dev_server.url}/v1/sys/leader", timeout=30).json()
    assert "data" not in raw and "ha_enabled" in raw  # Vault's legacy shape: no envelope

    p = _cli(dev_server, tmp_path, "read", "sys/leader")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] and lines[0].split() == ["Key", "Value"] and lines[1].split() == ["---", "-----"]
    rows = dict(line.split(None, 1) for line in lines[2:] if len(line.split(None, 1)) == 2)
    assert set(rows) == set(raw), (raw, p.stdout)  # every field, none of the envelope's
    assert rows["ha_enabled"] == ("true" if raw["ha_enabled"] else "false")
    assert "request_id" not in rows and "data" not in rows

    p = _cli(dev_server, tmp_path, "read", "-field=ha_enabled", "sys/leader")
    assert p.returncode == 0 and p.stdout.strip() == str(raw["ha_enabled"]).lower()

    p = _cli(dev_server, tmp_path, "read", "-format=json", "sys/leader")
    assert p.returncode == 0 and json.loads(p.stdout)["ha_enabled"] == raw["ha_enabled"]


@pytest.mark.skipif(PEER_BAO, reason="drives the coffer CLI binary")
def test_cli_read_of_a_data_response_is_unchanged(client, dev_server, tmp_path):
    client.write("secret/cli-shape", zap="zip")
    p = _cli(dev_server, tmp_path, "read", "secret/cli-shape")
    assert p.returncode == 0, p.stderr
    rows = dict(line.split(None, 1) for line in p.stdout.splitlines()[2:])
    assert rows == {"refresh_interval": "768h", "zap": "zip"}, p.stdout
