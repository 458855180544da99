"""Read-check-write races outside KV (#25): tokens, leases, token roles, quotas.

Each test races real HTTP requests against the `coffer` binary and checks the state that
is left: a revoked token stays revoked whatever renewals were in flight, no child token
or database user outlives the revocation or unmount it raced (checked in PostgreSQL), and
concurrent partial updates of one record all land.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
import requests

from conftest import api_call, unique
from test_database import PG_ADDR, pg_role_exists, setup_pg_mount

ROUNDS = 6


def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=n)


def _wait_for(count, lock, items, what: str, timeout: float = 30.0):
    """Until `items` holds `count` entries (the racing threads are producing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            if len(items) >= count:
                return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} {what} after {timeout} s")


def _token(srv, **body) -> dict:
    r = api_call(srv, "POST", "auth/token/create", body=body)
    assert r.status_code == 200, r.text
    return r.json()["auth"]


def test_a_revoked_token_stays_revoked_whatever_renewals_raced_it(dev_server):
    for _ in range(ROUNDS):
        auth = _token(dev_server, policies=["default"], ttl="1h", period="1h")
        token, accessor = auth["client_token"], auth["accessor"]
        stop = threading.Event()

        def renew_loop():
            n = 0
            while not stop.is_set() and n < 200:
                api_call(dev_server, "POST", "auth/token/renew-self", token=token, body={"increment": "1h"})
                n += 1

        with _pool(6) as pool:
            renewers = [pool.submit(renew_loop) for _ in range(5)]
            try:
                r = api_call(dev_server, "POST", "auth/token/revoke", body={"token": token})
            finally:
                stop.set()
            assert r.status_code == 204, r.text
            for f in renewers:
                f.result()
        # Gone for good: by id, by accessor, and for any request.
        assert api_call(dev_server, "GET", "auth/token/lookup-self", token=token).status_code == 403
        assert api_call(dev_server, "POST", "auth/token/lookup", body={"token": token}).status_code in (400, 403)
        assert api_call(dev_server, "POST", "auth/token/lookup-accessor", body={"accessor": accessor}).status_code == 400
        assert api_call(dev_server, "POST", "auth/token/renew-self", token=token).status_code == 403


def test_no_child_token_outlives_the_revocation_of_its_parent(dev_server):
    for _ in range(ROUNDS):
        parent = _token(dev_server, policies=["root"], ttl="1h")["client_token"]
        children: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def spawn():
            while not stop.is_set():
                r = api_call(dev_server, "POST", "auth/token/create", token=parent, body={"policies": ["default"], "ttl": "1h"})
                if r.status_code != 200:
                    return
                with lock:
                    children.append(r.json()["auth"]["client_token"])

        with _pool(5) as pool:
            spawners = [pool.submit(spawn) for _ in range(4)]
            try:
                # Let some children exist before the revocation starts.
                _wait_for(8, lock, children, "children")
                r = api_call(dev_server, "POST", "auth/token/revoke", body={"token": parent})
            finally:
                stop.set()
            assert r.status_code == 204, r.text
            for f in spawners:
                f.result()
        assert children
        alive = [c for c in children if api_call(dev_server, "GET", "auth/token/lookup-self", token=c).status_code == 200]
        assert alive == [], f"{len(alive)} of {len(children)} children outlived their revoked parent"


@pytest.mark.skipif(not PG_ADDR, reason="COFFER_TEST_PG_ADDR not set (Ops/test starts PostgreSQL)")
def test_no_database_user_outlives_an_unmount_that_raced_its_issue(root_client, dev_server):
    mount, role = setup_pg_mount(root_client)
    users: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def issue():
        while not stop.is_set():
            r = api_call(dev_server, "GET", f"{mount}/creds/{role}")
            if r.status_code == 200:
                with lock:
                    users.append(r.json()["data"]["username"])
            elif r.status_code in (400, 404, 503):
                if stop.is_set():
                    return
            else:
                raise AssertionError(f"creds answered {r.status_code}: {r.text}")

    with _pool(5) as pool:
        issuers = [pool.submit(issue) for _ in range(4)]
        try:
            _wait_for(6, lock, users, "database users")
            r = api_call(dev_server, "DELETE", f"sys/mounts/{mount}")
        finally:
            stop.set()
        for f in issuers:
            f.result()
    # An unmount whose revocations the database refused says so (and keeps the mount, its
    # users and their leases); asked again once the requests are over, it succeeds.
    for _ in range(20):
        if r.status_code == 204:
            break
        assert r.status_code == 400 and "could not be revoked" in r.text, r.text
        time.sleep(1)
        r = api_call(dev_server, "DELETE", f"sys/mounts/{mount}")
    assert r.status_code == 204, r.text
    assert users
    left = [u for u in users if pg_role_exists(u)]
    assert left == [], f"{len(left)} of {len(users)} database users outlived the unmount"


def test_concurrent_partial_updates_of_a_token_role_all_land(dev_server):
    fields = {
        "allowed_policies": ["p1"], "disallowed_policies": ["p2"], "orphan": True, "token_period": 600,
        "renewable": False, "token_explicit_max_ttl": 7200, "path_suffix": "sfx", "token_ttl": 300, "token_max_ttl": 900,
    }
    for _ in range(ROUNDS):
        name = unique("role")
        with _pool(len(fields)) as pool:
            for f in [pool.submit(api_call, dev_server, "POST", f"auth/token/roles/{name}", body={k: v}) for k, v in fields.items()]:
                assert f.result().status_code == 204
        d = api_call(dev_server, "GET", f"auth/token/roles/{name}").json()["data"]
        assert d["allowed_policies"] == ["p1"] and d["disallowed_policies"] == ["p2"]
        assert d["orphan"] is True and d["renewable"] is False and d["path_suffix"] == "sfx"
        assert d["token_period"] == 600 and d["token_explicit_max_ttl"] == 7200
        assert d["token_ttl"] == 300 and d["token_max_ttl"] == 900


def test_concurrent_partial_updates_of_a_quota_all_land(dev_server):
    for _ in range(ROUNDS):
        name = unique("q")
        assert api_call(dev_server, "POST", f"sys/quotas/rate-limit/{name}", body={"rate": 1000}).status_code == 204
        changes = [{"interval": "7s"}, {"block_interval": "9s"}, {"rate": 555}, {"group_by": "none"}]
        with _pool(len(changes)) as pool:
            for f in [pool.submit(api_call, dev_server, "POST", f"sys/quotas/rate-limit/{name}", body=c) for c in changes]:
                assert f.result().status_code == 204
        d = api_call(dev_server, "GET", f"sys/quotas/rate-limit/{name}").json()["data"]
        assert (d["interval"], d["block_interval"], d["rate"], d["group_by"]) == (7, 9, 555, "none")
        api_call(dev_server, "DELETE", f"sys/quotas/rate-limit/{name}")
    # sys/quotas/config: two fields set at once by two callers both stay.
    for _ in range(ROUNDS):
        with _pool(2) as pool:
            a = pool.submit(api_call, dev_server, "POST", "sys/quotas/config", body={"enable_rate_limit_response_headers": True})
            b = pool.submit(api_call, dev_server, "POST", "sys/quotas/config", body={"rate_limit_exempt_paths": ["sys/x/"]})
            assert a.result().status_code == 204 and b.result().status_code == 204
        d = api_call(dev_server, "GET", "sys/quotas/config").json()["data"]
        assert d["enable_rate_limit_response_headers"] is True and d["rate_limit_exempt_paths"] == ["sys/x/"]
        api_call(dev_server, "POST", "sys/quotas/config", body={"enable_rate_limit_response_headers": False, "rate_limit_exempt_paths": []})
