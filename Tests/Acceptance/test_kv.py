"""KV v2 (at secret/ on the dev server) and KV v1, driven through hvac 2.4.0.

Every test works under its own random path, so tests don't depend on each other.
"""

from __future__ import annotations

import hvac
import pytest

from conftest import unique


def read(client, path, version=None, mount="secret"):
    return client.secrets.kv.v2.read_secret_version(
        path=path, version=version, mount_point=mount, raise_on_deleted_version=True)


def read_raw(dev_server, path, version=None, mount="secret"):
    """GET /v1/<mount>/data/<path> without hvac: (status, json)."""
    params = {"version": version} if version is not None else None
    r = dev_server.session("root").get(f"{dev_server.url}/v1/{mount}/data/{path}",
                                       params=params)
    return r.status_code, (r.json() if r.content else None)


def metadata(client, path, mount="secret"):
    return client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)["data"]


@pytest.fixture
def kv(root_client):
    return root_client.secrets.kv.v2


# ------------------------------------------------------------------- create / read


def test_write_read_and_envelope(root_client, kv, dev_server):
    path = unique("kv")
    secret = {"user": unique(), "pass": unique(), "nested": {"n": 1, "l": [1, "two"]}}
    resp = kv.create_or_update_secret(path=path, secret=secret)
    assert resp["data"]["version"] == 1
    assert resp["data"]["destroyed"] is False
    assert resp["data"]["deletion_time"] == ""
    assert resp["data"]["created_time"]

    got = read(root_client, path)
    assert got["data"]["data"] == secret
    assert got["data"]["metadata"]["version"] == 1

    # Vault's full response envelope, from the raw HTTP answer
    status, body = read_raw(dev_server, path)
    assert status == 200
    for key in ("request_id", "lease_id", "renewable", "lease_duration", "data",
                "wrap_info", "warnings", "auth"):
        assert key in body, f"envelope lacks {key}: {sorted(body)}"
    assert body["request_id"] and body["lease_id"] == "" and body["auth"] is None
    assert body["data"]["data"] == secret


def test_versions_and_read_specific_version(root_client, kv):
    path = unique("ver")
    values = [unique() for _ in range(3)]
    for i, v in enumerate(values, start=1):
        assert kv.create_or_update_secret(path=path, secret={"v": v})["data"]["version"] == i
    assert read(root_client, path)["data"]["data"] == {"v": values[-1]}
    for i, v in enumerate(values, start=1):
        got = read(root_client, path, version=i)
        assert got["data"]["data"] == {"v": v}
        assert got["data"]["metadata"]["version"] == i
    md = metadata(root_client, path)
    assert md["current_version"] == 3
    assert sorted(md["versions"]) == ["1", "2", "3"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path, version=4)


def test_read_missing_is_404(root_client):
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, unique("missing"))


# ------------------------------------------------------------------------------- cas


def test_check_and_set(root_client, kv):
    path = unique("cas")
    # cas=0: create only if absent
    assert kv.create_or_update_secret(path=path, secret={"v": "1"}, cas=0)["data"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        kv.create_or_update_secret(path=path, secret={"v": "x"}, cas=0)
    assert "check-and-set parameter did not match the current version" in str(e.value)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret(path=path, secret={"v": "x"}, cas=5)
    assert read(root_client, path)["data"]["data"] == {"v": "1"}  # unchanged
    assert kv.create_or_update_secret(path=path, secret={"v": "2"}, cas=1)["data"]["version"] == 2
    assert read(root_client, path)["data"]["data"] == {"v": "2"}


def test_cas_required_by_metadata(root_client, kv):
    path = unique("casreq")
    kv.create_or_update_secret(path=path, secret={"v": "1"})
    kv.update_metadata(path=path, cas_required=True)
    assert metadata(root_client, path)["cas_required"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        kv.create_or_update_secret(path=path, secret={"v": "2"})
    assert "check-and-set parameter required for this call" in str(e.value)
    assert read(root_client, path)["data"]["data"] == {"v": "1"}
    kv.create_or_update_secret(path=path, secret={"v": "2"}, cas=1)
    assert read(root_client, path)["data"]["data"] == {"v": "2"}


# ----------------------------------------------------------------------------- patch


def test_patch_with_hvac(root_client, kv):
    path = unique("patch")
    kv.create_or_update_secret(path=path, secret={"a": "1", "b": "2"})
    resp = kv.patch(path=path, secret={"b": "20", "c": "3"})
    assert resp["data"]["version"] == 2
    assert read(root_client, path)["data"]["data"] == {"a": "1", "b": "20", "c": "3"}


def test_patch_json_merge_patch_over_http(dev_server, root_client, kv):
    path = unique("mpatch")
    kv.create_or_update_secret(path=path, secret={"a": "1", "n": {"x": "1", "y": "2"}})
    s = dev_server.session("root")
    url = f"{dev_server.url}/v1/secret/data/{path}"
    # RFC 7386: null removes a key, objects merge recursively
    r = s.patch(url, json={"data": {"a": None, "n": {"y": "3"}, "z": "9"}},
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["version"] == 2
    assert read(root_client, path)["data"]["data"] == {"n": {"x": "1", "y": "3"}, "z": "9"}
    # Vault insists on the merge-patch content type
    r = s.patch(url, json={"data": {"q": "1"}})
    assert r.status_code == 415, r.text
    assert r.json()["errors"]
    # patching a secret that doesn't exist is a 404
    r = s.patch(f"{dev_server.url}/v1/secret/data/{unique('nopatch')}", json={"data": {"a": "1"}},
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 404


# ---------------------------------------------------------- delete / undelete / destroy


def test_delete_latest_undelete_destroy(dev_server, root_client, kv):
    path = unique("del")
    v1, v2 = unique(), unique()
    kv.create_or_update_secret(path=path, secret={"v": v1})
    kv.create_or_update_secret(path=path, secret={"v": v2})

    kv.delete_latest_version_of_secret(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path)
    status, body = read_raw(dev_server, path)  # Vault: 404 that still carries metadata
    assert status == 404
    assert body["data"]["data"] is None
    assert body["data"]["metadata"]["version"] == 2
    assert body["data"]["metadata"]["deletion_time"] != ""
    assert read(root_client, path, version=1)["data"]["data"] == {"v": v1}  # untouched
    assert metadata(root_client, path)["versions"]["2"]["deletion_time"] != ""

    kv.undelete_secret_versions(path=path, versions=[2])
    assert read(root_client, path)["data"]["data"] == {"v": v2}
    assert metadata(root_client, path)["versions"]["2"]["deletion_time"] == ""

    kv.delete_secret_versions(path=path, versions=[1])
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path, version=1)

    kv.destroy_secret_versions(path=path, versions=[1, 2])
    for v in (1, 2):
        status, body = read_raw(dev_server, path, version=v)
        assert status == 404
        assert body["data"]["data"] is None
        assert body["data"]["metadata"]["destroyed"] is True
    md = metadata(root_client, path)
    assert md["versions"]["1"]["destroyed"] is True
    assert md["versions"]["2"]["destroyed"] is True
    # destroyed data cannot come back
    kv.undelete_secret_versions(path=path, versions=[1, 2])
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path, version=2)


# -------------------------------------------------------------------------- metadata


def test_metadata_read_update(root_client, kv):
    path = unique("md")
    kv.create_or_update_secret(path=path, secret={"v": "1"})
    md = metadata(root_client, path)
    assert md["current_version"] == 1 and md["max_versions"] == 0
    assert md["cas_required"] is False
    assert md["delete_version_after"] == "0s"
    assert md["created_time"] and md["updated_time"]

    kv.update_metadata(path=path, max_versions=2, cas_required=False,
                       custom_metadata={"owner": "team-a", "env": "test"},
                       delete_version_after="1h")
    md = metadata(root_client, path)
    assert md["max_versions"] == 2
    assert md["custom_metadata"] == {"owner": "team-a", "env": "test"}
    assert md["delete_version_after"] == "1h0m0s"  # Go duration formatting
    # custom_metadata is echoed in the data read's metadata too
    assert read(root_client, path)["data"]["metadata"]["custom_metadata"] == \
        {"owner": "team-a", "env": "test"}

    # max_versions=2 prunes old versions on the next writes
    kv.create_or_update_secret(path=path, secret={"v": "2"})
    kv.create_or_update_secret(path=path, secret={"v": "3"})
    md = metadata(root_client, path)
    assert md["current_version"] == 3
    assert sorted(md["versions"]) == ["2", "3"]
    assert md["oldest_version"] == 2
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path, version=1)
    assert read(root_client, path, version=2)["data"]["data"] == {"v": "2"}


def test_metadata_for_missing_path_is_404(root_client):
    with pytest.raises(hvac.exceptions.InvalidPath):
        metadata(root_client, unique("nomd"))


def test_delete_metadata_and_all_versions(root_client, kv):
    path = unique("delall")
    kv.create_or_update_secret(path=path, secret={"v": "1"})
    kv.create_or_update_secret(path=path, secret={"v": "2"})
    kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root_client, path, version=1)
    with pytest.raises(hvac.exceptions.InvalidPath):
        metadata(root_client, path)
    # the path starts over at version 1
    assert kv.create_or_update_secret(path=path, secret={"v": "3"})["data"]["version"] == 1


# ------------------------------------------------------------------------------ list


def test_list_secrets(root_client, kv):
    base = unique("dir")
    for p in ("a", "b", "sub/c", "sub/deeper/d"):
        kv.create_or_update_secret(path=f"{base}/{p}", secret={"p": p})
    keys = kv.list_secrets(path=base)["data"]["keys"]
    assert sorted(keys) == ["a", "b", "sub/"]
    assert sorted(kv.list_secrets(path=f"{base}/sub")["data"]["keys"]) == ["c", "deeper/"]
    # soft-deleted secrets are still listed (metadata remains); fully deleted ones aren't
    kv.delete_latest_version_of_secret(path=f"{base}/a")
    kv.delete_metadata_and_all_versions(path=f"{base}/b")
    assert sorted(kv.list_secrets(path=base)["data"]["keys"]) == ["a", "sub/"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.list_secrets(path=unique("emptydir"))


def test_list_verb_and_query_parameter_agree(dev_server, kv):
    base = unique("lst")
    kv.create_or_update_secret(path=f"{base}/x", secret={"a": "1"})
    s = dev_server.session("root")
    r1 = s.request("LIST", f"{dev_server.url}/v1/secret/metadata/{base}")
    r2 = s.get(f"{dev_server.url}/v1/secret/metadata/{base}", params={"list": "true"})
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["data"]["keys"] == r2.json()["data"]["keys"] == ["x"]


# --------------------------------------------------------------------------- subkeys


def test_subkeys(dev_server, kv):
    path = unique("sub")
    kv.create_or_update_secret(path=path, secret={"a": "1", "n": {"b": "2", "c": [1, 2]}})
    kv.create_or_update_secret(path=path, secret={"only": "x"})
    resp = kv._adapter.get(f"/v1/secret/subkeys/{path}")
    assert resp["data"]["subkeys"] == {"only": None}
    assert resp["data"]["metadata"]["version"] == 2
    resp = kv._adapter.get(f"/v1/secret/subkeys/{path}", params={"version": 1})
    assert resp["data"]["subkeys"] == {"a": None, "n": {"b": None, "c": None}}
    resp = kv._adapter.get(f"/v1/secret/subkeys/{path}", params={"version": 1, "depth": 1})
    assert resp["data"]["subkeys"] == {"a": None, "n": None}
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv._adapter.get(f"/v1/secret/subkeys/{unique('nosub')}")


def test_subkeys_via_client_adapter(root_client, kv):
    path = unique("sub2")
    kv.create_or_update_secret(path=path, secret={"k": {"deep": "v"}})
    resp = root_client.adapter.get(f"/v1/secret/subkeys/{path}")
    assert resp["data"]["subkeys"] == {"k": {"deep": None}}


# ---------------------------------------------------------------------------- config


@pytest.fixture
def kv2_mount(root_client):
    mount = unique("kvcfg")
    root_client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    yield mount
    root_client.sys.disable_secrets_engine(mount)


def test_config_read_write(root_client, kv2_mount):
    kv = root_client.secrets.kv.v2
    cfg = kv.read_configuration(mount_point=kv2_mount)["data"]
    assert cfg["max_versions"] == 0 and cfg["cas_required"] is False
    assert cfg["delete_version_after"] == "0s"

    kv.configure(max_versions=3, cas_required=True, delete_version_after="2h",
                 mount_point=kv2_mount)
    cfg = kv.read_configuration(mount_point=kv2_mount)["data"]
    assert cfg["max_versions"] == 3
    assert cfg["cas_required"] is True
    assert cfg["delete_version_after"] == "2h0m0s"

    # the mount-wide cas_required applies to writes
    path = unique("cfg")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret(path=path, secret={"v": "1"}, mount_point=kv2_mount)
    kv.create_or_update_secret(path=path, secret={"v": "1"}, cas=0, mount_point=kv2_mount)
    # the mount-wide max_versions applies too
    for i in range(2, 6):
        kv.create_or_update_secret(path=path, secret={"v": str(i)}, cas=i - 1,
                                   mount_point=kv2_mount)
    md = metadata(root_client, path, mount=kv2_mount)
    assert md["current_version"] == 5
    assert sorted(md["versions"]) == ["3", "4", "5"]


# ----------------------------------------------------------------------------- KV v1


@pytest.fixture
def kv1_mount(root_client):
    mount = unique("kv1")
    root_client.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    mounts = root_client.sys.list_mounted_secrets_engines()["data"]
    assert mounts[f"{mount}/"]["type"] == "kv"
    assert mounts[f"{mount}/"]["options"]["version"] == "1"
    yield mount
    root_client.sys.disable_secrets_engine(mount)


def test_kv_v1(root_client, kv1_mount):
    kv = root_client.secrets.kv.v1
    a, b = unique(), unique()
    kv.create_or_update_secret(path="app/a", secret={"v": a}, mount_point=kv1_mount)
    kv.create_or_update_secret(path="app/b", secret={"v": b}, mount_point=kv1_mount)
    kv.create_or_update_secret(path="app/dir/c", secret={"v": "c"}, mount_point=kv1_mount)
    got = kv.read_secret(path="app/a", mount_point=kv1_mount)
    assert got["data"] == {"v": a}
    assert "metadata" not in got["data"]  # v1 has no versions envelope
    # overwrite replaces the whole secret
    kv.create_or_update_secret(path="app/a", secret={"w": "2"}, mount_point=kv1_mount)
    assert kv.read_secret(path="app/a", mount_point=kv1_mount)["data"] == {"w": "2"}
    keys = kv.list_secrets(path="app", mount_point=kv1_mount)["data"]["keys"]
    assert sorted(keys) == ["a", "b", "dir/"]
    kv.delete_secret(path="app/a", mount_point=kv1_mount)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret(path="app/a", mount_point=kv1_mount)
    assert sorted(kv.list_secrets(path="app", mount_point=kv1_mount)["data"]["keys"]) == \
        ["b", "dir/"]
    assert kv.read_secret(path="app/b", mount_point=kv1_mount)["data"] == {"v": b}
