"""Bad input gets a 4xx with a clear JSON error, changes nothing, and the server lives.

Raw `requests` against the dev server. Every error response must carry
`Content-Type: application/json` and `{"errors": [...]}`; Coffer additionally promises a
non-empty message everywhere (Vault itself answers some 404/405s with `"errors": []`, see
`expect_error(..., vault_may_be_empty=True)`, and Coffer matches Vault there: a read of
something that does not exist is not bad input, and clients key on the empty list).
"""

from __future__ import annotations

import json

import pytest

from conftest import PEER_BAO, unique


def expect_error(resp, status: int, *, contains: str | None = None,
                 vault_may_be_empty: bool = False) -> list[str]:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/json", ctype
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), body
    errors = body["errors"]
    assert all(isinstance(e, str) for e in errors), errors
    if not vault_may_be_empty:
        assert errors and all(e.strip() for e in errors), \
            f"expected a non-empty error message, got {body}"
    if contains is not None:
        assert any(contains in e for e in errors), (contains, errors)
    return errors


@pytest.fixture
def http(dev_server):
    s = dev_server.session("root")
    s.base = dev_server.url + "/v1/"
    yield s
    s.close()


def url(http, path: str) -> str:
    return http.base + path


# ------------------------------------------------------------------ malformed bodies


def test_malformed_json_is_400_and_writes_nothing(http):
    path = f"secret/data/bad-{unique('json')}"
    r = http.put(url(http, path), data='{"data": {"a": "b"',
                 headers={"Content-Type": "application/json"})
    expect_error(r, 400)
    assert http.get(url(http, path)).status_code == 404  # nothing was written


def test_json_array_instead_of_object_is_400(http):
    path = f"secret/data/bad-{unique('arr')}"
    expect_error(http.put(url(http, path), data="[1, 2]"), 400)
    assert http.get(url(http, path)).status_code == 404


def test_kv_data_of_wrong_type_is_400(http):
    path = f"secret/data/bad-{unique('type')}"
    expect_error(http.put(url(http, path), json={"data": "not-an-object"}), 400,
                 contains="data")
    assert http.get(url(http, path)).status_code == 404


def test_metadata_max_versions_not_an_int_is_400_and_unchanged(http):
    name = unique("meta")
    assert http.put(url(http, f"secret/data/{name}"), json={"data": {"k": "v"}}).ok
    before = http.get(url(http, f"secret/metadata/{name}")).json()["data"]["max_versions"]
    expect_error(http.put(url(http, f"secret/metadata/{name}"),
                          json={"max_versions": "abc"}), 400, contains="max_versions")
    after = http.get(url(http, f"secret/metadata/{name}")).json()["data"]["max_versions"]
    assert after == before


@pytest.mark.parametrize("body,field", [
    ({"num_uses": "abc"}, "num_uses"),
    ({"no_parent": "maybe"}, "no_parent"),
    ({"policies": {"a": 1}}, "policies"),
    ({"ttl": "abc"}, None),  # Vault: `time: invalid duration "abc"`
])
def test_token_create_wrong_field_types_are_400(http, body, field):
    # Note: Vault converts weakly: {"policies": 5} or [1, 2] is accepted (policy "5").
    accessors_before = set(http.request("LIST", url(http, "auth/token/accessors"))
                           .json()["data"]["keys"])
    errors = expect_error(http.post(url(http, "auth/token/create"), json=body), 400)
    if field:
        assert any(field in e for e in errors), errors
    accessors_after = set(http.request("LIST", url(http, "auth/token/accessors"))
                          .json()["data"]["keys"])
    assert accessors_after == accessors_before, "a token was created anyway"


# ----------------------------------------------------------------- paths and methods


def test_unknown_mount_is_404(http):
    errors = expect_error(http.get(url(http, f"nope-{unique('m')}/foo")), 404)
    assert any("no handler for route" in e for e in errors), errors


def test_unknown_sys_path_is_404(http):
    expect_error(http.get(url(http, "sys/definitely-not-a-path")), 404,
                 contains="unsupported path")


@pytest.mark.parametrize("method,path", [
    ("DELETE", "sys/seal-status"),
    ("PUT", "sys/health"),
])
def test_unsupported_method_on_http_handlers_is_405(http, method, path):
    # Vault answers these two with `{"errors": []}`; Coffer gives a message.
    expect_error(http.request(method, url(http, path)), 405, vault_may_be_empty=True)


def test_unsupported_operation_on_logical_path_is_405(http):
    expect_error(http.put(url(http, "sys/key-status"), json={}), 405,
                 contains="unsupported operation")


def test_body_over_32_mib_is_413_and_writes_nothing(http):
    name = unique("big")
    body = json.dumps({"data": {"v": "x" * (33 * 1024 * 1024)}})
    r = http.put(url(http, f"secret/data/{name}"), data=body,
                 headers={"Content-Type": "application/json"})
    expect_error(r, 413)
    assert http.get(url(http, f"secret/data/{name}")).status_code == 404


def test_body_under_the_limit_is_accepted(http):
    name = unique("mid")
    value = "y" * (1024 * 1024)
    assert http.put(url(http, f"secret/data/{name}"), json={"data": {"v": value}}).ok
    assert http.get(url(http, f"secret/data/{name}")).json()["data"]["data"]["v"] == value


# ------------------------------------------------------------------------- policies


@pytest.mark.parametrize("text", [
    'path "secret/*" { capabilities = ["read" ',            # unterminated list
    'garbage',                                               # not HCL
    'path "secret/*" { capabilities = ["fly"] }',           # unknown capability
    'path "secret/*" { capabilites = ["read"] }',           # misspelled key
])
def test_bad_policy_syntax_is_400_and_not_created(http, text):
    name = unique("badpol")
    expect_error(http.put(url(http, f"sys/policies/acl/{name}"), json={"policy": text}),
                 400, contains="failed to parse policy")
    expect_error(http.get(url(http, f"sys/policies/acl/{name}")), 404,
                 vault_may_be_empty=True)
    listed = http.request("LIST", url(http, "sys/policies/acl")).json()["data"]["keys"]
    assert name not in listed


def test_empty_policy_is_400(http):
    name = unique("emptypol")
    expect_error(http.put(url(http, f"sys/policies/acl/{name}"), json={"policy": ""}), 400,
                 contains="'policy' parameter not supplied or empty")


# --------------------------------------------------------------------------- alive


def test_zz_server_still_healthy_after_bad_input(http, dev_server):
    assert dev_server.running
    r = http.get(url(http, "sys/health"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["initialized"] is True and body["sealed"] is False
    # and it still does real work
    name = unique("alive")
    value = unique()
    assert http.put(url(http, f"secret/data/{name}"), json={"data": {"v": value}}).ok
    assert http.get(url(http, f"secret/data/{name}")).json()["data"]["data"]["v"] == value
