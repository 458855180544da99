"""Key ceremonies and the HSM seal, on real servers (TLS + sqlite) and a real SoftHSM2 token.

- Shamir: `sys/rekey/*` through hvac (with verification: the new shares only count once a
  quorum of them came back), then the old shares no longer unseal and the new ones do,
  across a restart; `sys/generate-root/*` through hvac with a generated OTP, decoded by
  `coffer operator generate-root -decode` (the command hvac's own suite runs) and used.
- `seal "pkcs11"` on a token made by Ops/softhsm: init returns recovery shares and the
  node unseals itself, a restart unseals by itself, `sys/seal` holds until a quorum of
  recovery shares, recovery-key rekey, generate-root from recovery shares, RSA-OAEP; a
  wrong PIN or missing key: sealed with a clear status and no crash; a missing module: a
  clear error at start.
"""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import hvac
import pytest
import requests

from conftest import PEER_BAO, REPO_ROOT, TLSServer, _base_tmp, coffer_bin

pytestmark = pytest.mark.skipif(PEER_BAO, reason="Coffer servers with sqlite storage and a seal stanza")

HAVE_SOFTHSM = shutil.which("softhsm2-util") is not None


def status(srv) -> dict:
    return requests.get(srv.url + "/v1/sys/seal-status", verify=srv.verify, timeout=10).json()


def wait_unsealed(srv, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    s = status(srv)
    while s.get("sealed", True) and time.monotonic() < deadline:
        time.sleep(0.2)
        s = status(srv)
    return s


def errors_of(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


def kv_roundtrip(c: hvac.Client, value: str):
    if "kv/" not in c.sys.list_mounted_secrets_engines()["data"]:
        c.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    c.secrets.kv.v2.create_or_update_secret("seal/check", secret={"v": value}, mount_point="kv")


def kv_read(c: hvac.Client) -> str:
    return c.secrets.kv.v2.read_secret_version("seal/check", mount_point="kv", raise_on_deleted_version=True)["data"]["data"]["v"]


def init_shamir(srv, shares=5, threshold=3):
    c = srv.client()
    r = c.sys.initialize(shares, threshold)
    c.sys.submit_unseal_keys(r["keys"][:threshold])
    assert c.sys.is_sealed() is False
    return r["keys"], r["root_token"]


def decode_with_cli(srv, encoded, otp) -> str:
    out = subprocess.run([coffer_bin(), "operator", "generate-root", "-decode", encoded, "-otp", otp],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# ------------------------------------------------------------------------------ Shamir


def test_rekey_with_verification_replaces_the_unseal_keys(tls_server):
    srv = tls_server()
    old, root = init_shamir(srv)
    c = srv.client(root)
    kv_roundtrip(c, "before-rekey")

    anon = srv.client()
    progress = anon.sys.read_rekey_progress()
    assert progress["started"] is False and progress["required"] == 3

    started = anon.sys.start_rekey(secret_shares=4, secret_threshold=2, require_verification=True)
    assert started["started"] is True and started["n"] == 4 and started["t"] == 2 and started["verification_required"] is True
    nonce = started["nonce"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:  # one attempt at a time
        anon.sys.start_rekey(secret_shares=3, secret_threshold=2)
    assert "already in progress" in errors_of(e)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        anon.sys.rekey(old[0], nonce="not-the-nonce")
    assert "nonce" in errors_of(e)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.sys.rekey("zz", nonce=nonce)
    assert anon.sys.rekey(old[0], nonce=nonce)["progress"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:  # the same share twice
        anon.sys.rekey(old[0], nonce=nonce)
    assert "already been provided" in errors_of(e)
    done = anon.sys.rekey_multi(old[1:3], nonce=nonce)
    assert done["complete"] is True and done["verification_required"] is True
    new = done["keys"]
    assert len(new) == 4 and len(done["keys_base64"]) == 4 and not set(new) & set(old)
    vnonce = done["verification_nonce"]

    # Not verified yet: the old shares still unseal.
    c.sys.seal()
    anon.sys.submit_unseal_keys(old[:3])
    assert anon.sys.is_sealed() is False

    verify = anon.sys.read_rekey_verify_progress()
    assert verify["started"] is True and verify["progress"] == 0 and verify["nonce"] == vnonce
    # Old shares are not new ones: at the threshold they fail to verify and progress resets.
    assert anon.sys.rekey_verify(old[0], nonce=vnonce)["progress"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        anon.sys.rekey_verify(old[1], nonce=vnonce)
    assert "do not verify" in errors_of(e)
    assert anon.sys.read_rekey_verify_progress()["progress"] == 0
    assert anon.sys.rekey_verify(new[3], nonce=vnonce)["progress"] == 1
    restarted = anon.sys.cancel_rekey_verify()  # starts the verification over, new nonce
    restarted = restarted if isinstance(restarted, dict) else restarted.json()
    assert restarted["progress"] == 0 and restarted["nonce"] != vnonce
    final = anon.sys.rekey_verify_multi(new[:2], nonce=restarted["nonce"])
    assert final["complete"] is True
    assert anon.sys.read_rekey_progress()["started"] is False
    assert anon.sys.read_seal_status()["n"] == 4 and anon.sys.read_seal_status()["t"] == 2

    # The old shares are void, the new ones unseal, before and after a restart.
    c.sys.seal()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.sys.submit_unseal_keys(old[:3])
    anon.sys.submit_unseal_key(reset=True)
    anon.sys.submit_unseal_keys(new[1:3])
    assert anon.sys.is_sealed() is False
    assert kv_read(c) == "before-rekey"
    srv.restart()
    anon.sys.submit_unseal_keys(new[2:4])
    assert anon.sys.is_sealed() is False
    assert kv_read(c) == "before-rekey"

    # Without verification the new shares are in force at once; DELETE cancels an attempt.
    s = anon.sys.start_rekey(secret_shares=1, secret_threshold=1)
    anon.sys.cancel_rekey()
    assert anon.sys.read_rekey_progress()["started"] is False
    s = anon.sys.start_rekey(secret_shares=1, secret_threshold=1)
    one = anon.sys.rekey_multi(new[:2], nonce=s["nonce"])
    assert one["complete"] is True and len(one["keys"]) == 1 and "verification_nonce" not in one
    c.sys.seal()
    anon.sys.submit_unseal_key(one["keys"][0])
    assert anon.sys.is_sealed() is False
    with pytest.raises(hvac.exceptions.InvalidRequest):  # bad share counts change nothing
        anon.sys.start_rekey(secret_shares=2, secret_threshold=3)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:  # Shamir has no recovery keys
        anon.sys.start_rekey(secret_shares=3, secret_threshold=2, recovery_key=True)
    assert "recovery" in errors_of(e)
    r = requests.get(srv.url + "/v1/sys/rekey/backup", verify=srv.verify, timeout=10)
    assert r.status_code == 400 and "no backed-up keys" in r.json()["errors"][0]


def test_generate_root_with_otp(tls_server):
    srv = tls_server()
    keys, root = init_shamir(srv)
    anon = srv.client()
    st = anon.sys.read_root_generation_progress()
    assert st["started"] is False and st["required"] == 3 and st["otp_length"] == 28

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        anon.sys.start_root_token_generation(otp="short")
    assert "OTP" in errors_of(e)
    start = anon.sys.start_root_token_generation()
    otp, nonce = start["otp"], start["nonce"]
    assert len(otp) == 28 and start["started"] is True
    assert "otp" not in anon.sys.read_root_generation_progress(), "the OTP is shown once"
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.sys.start_root_token_generation()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.sys.generate_root(keys[0], nonce="wrong")
    assert anon.sys.generate_root(keys[0], nonce)["progress"] == 1
    anon.sys.generate_root(keys[1], nonce)
    done = anon.sys.generate_root(keys[2], nonce)
    assert done["complete"] is True and done["encoded_token"] and done["encoded_root_token"] == done["encoded_token"]

    token = decode_with_cli(srv, done["encoded_token"], otp)
    raw = base64.b64decode(done["encoded_token"] + "=" * (-len(done["encoded_token"]) % 4))
    assert bytes(a ^ b for a, b in zip(raw, otp.encode())).decode() == token
    assert token.startswith("hvs.") and token != root
    me = srv.client(token).auth.token.lookup_self()["data"]
    assert me["policies"] == ["root"]
    assert anon.sys.read_root_generation_progress()["started"] is False

    # Wrong shares at the threshold: refused, no token, progress starts over.
    start = anon.sys.start_root_token_generation()
    bogus = ["{:02x}".format(i) + keys[0][2:] for i in (200, 201, 202)]
    anon.sys.generate_root(bogus[0], start["nonce"])
    anon.sys.generate_root(bogus[1], start["nonce"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.sys.generate_root(bogus[2], start["nonce"])
    st = anon.sys.read_root_generation_progress()
    assert st["progress"] == 0 and st["complete"] is False
    anon.sys.cancel_root_generation()
    assert anon.sys.read_root_generation_progress()["started"] is False

    # Sealed: the ceremonies are 503, like every sys/ path but the seal endpoints.
    srv.client(root).sys.seal()
    r = requests.get(srv.url + "/v1/sys/generate-root/attempt", verify=srv.verify, timeout=10)
    assert r.status_code == 503


# --------------------------------------------------------------------------------- HSM


def make_token(label="coffer", pin="1234") -> dict:
    d = _base_tmp() / "softhsm"
    out = subprocess.run([str(REPO_ROOT / "Ops" / "softhsm"), "init", str(d), label, pin],
                         capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def hsm_server(tls_certs, token: dict, monkeypatch, *, extra="", lib=None, pin=None, key_label="coffer-root"):
    monkeypatch.setenv("SOFTHSM2_CONF", token["SOFTHSM2_CONF"])
    monkeypatch.delenv("COFFER_HSM_PIN", raising=False)
    monkeypatch.delenv("VAULT_HSM_PIN", raising=False)
    srv = TLSServer(_base_tmp(), tls_certs)
    srv.config_path.write_text(srv.config_path.read_text() + f"""
seal "pkcs11" {{
  lib          = "{lib or token['COFFER_TEST_HSM_LIB']}"
  token_label  = "{token['COFFER_TEST_HSM_TOKEN']}"
  pin          = "{pin or token['COFFER_TEST_HSM_PIN']}"
  key_label    = "{key_label}"
  generate_key = true
{extra}}}
""")
    return srv


def set_seal_option(srv, name, value):
    text = srv.config_path.read_text()
    lines = [l for l in text.splitlines() if not l.strip().startswith(name + " ")]
    i = next(n for n, l in enumerate(lines) if l.startswith('seal "pkcs11"'))
    lines.insert(i + 1, f'  {name} = "{value}"')
    srv.config_path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def hsm(tls_certs, monkeypatch):
    if not HAVE_SOFTHSM:
        pytest.skip("softhsm2-util is not installed (Ops/install-deps installs it)")
    made = []

    def make(**kw):
        token = kw.pop("token", None) or make_token()
        srv = hsm_server(tls_certs, token, monkeypatch, **kw)
        made.append(srv)
        return srv, token

    yield make
    for s in made:
        s.dispose()


def test_pkcs11_init_autounseal_restart_and_recovery_quorum(hsm):
    srv, token = hsm()
    srv.start()
    s = status(srv)
    assert s["type"] == "pkcs11" and s["initialized"] is False and s["recovery_seal"] is True
    anon = srv.client()
    init = anon.sys.initialize(secret_shares=5, secret_threshold=3, recovery_shares=3, recovery_threshold=2)
    assert init["keys"] == [] and len(init["recovery_keys"]) == 3 and len(init["recovery_keys_base64"]) == 3
    recovery, root = init["recovery_keys"], init["root_token"]
    s = wait_unsealed(srv)
    assert s["sealed"] is False and s["t"] == 2 and s["n"] == 3, s
    c = srv.client(root)
    kv_roundtrip(c, "hsm-sealed")

    # The stored root key is wrapped by the HSM: the blob names the mechanism, the token's
    # key, an IV and ciphertext, and no key material opens it outside the HSM.
    db = sqlite3.connect(srv.db_path)
    try:
        rows = dict(db.execute("SELECT key, value FROM kv WHERE key IN ('core/root-key', 'core/recovery-key')").fetchall())
    except sqlite3.OperationalError:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        pytest.fail(f"unexpected sqlite schema: {tables}")
    finally:
        db.close()
    assert set(rows) == {"core/root-key", "core/recovery-key"}
    blob = bytes(rows["core/root-key"]).decode()
    assert "CKM_AES_GCM" in blob and "coffer-root" in blob and '"iv"' in blob

    # Restart: unsealed by itself, the secret is there.
    srv.restart()
    assert wait_unsealed(srv)["sealed"] is False
    assert kv_read(c) == "hsm-sealed"

    # sys/seal holds (no automatic unseal) until a quorum of recovery shares.
    c.sys.seal()
    time.sleep(2.5)
    assert status(srv)["sealed"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest):  # not recovery shares
        anon.sys.submit_unseal_keys(["{:02x}".format(i) + recovery[0][2:] for i in (91, 92)])
    anon.sys.submit_unseal_key(reset=True)
    r = anon.sys.submit_unseal_key(recovery[0])
    assert r["sealed"] is True and r["progress"] == 1
    assert anon.sys.submit_unseal_key(recovery[2])["sealed"] is False
    assert kv_read(c) == "hsm-sealed"

    # The barrier key is the HSM's business; the recovery shares rekey.
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        anon.sys.start_rekey(secret_shares=3, secret_threshold=2)
    assert "sys/rekey-recovery-key" in errors_of(e)
    st = anon.sys.start_rekey(secret_shares=4, secret_threshold=3, recovery_key=True)
    assert st["required"] == 2
    done = anon.sys.rekey_multi(recovery[:2], nonce=st["nonce"], recovery_key=True)
    assert done["complete"] is True and len(done["keys"]) == 4
    new_recovery = done["keys"]
    s = status(srv)
    assert s["n"] == 4 and s["t"] == 3

    # generate-root takes recovery shares under an auto seal; the old ones are void.
    start = anon.sys.start_root_token_generation()
    anon.sys.generate_root(recovery[0], start["nonce"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.sys.generate_root(recovery[1], start["nonce"])
        anon.sys.generate_root(recovery[2], start["nonce"])
    anon.sys.cancel_root_generation()
    start = anon.sys.start_root_token_generation()
    for k in new_recovery[:3]:
        out = anon.sys.generate_root(k, start["nonce"])
    assert out["complete"] is True
    token = decode_with_cli(srv, out["encoded_token"], start["otp"])
    assert srv.client(token).auth.token.lookup_self()["data"]["policies"] == ["root"]


def test_pkcs11_rsa_oaep_mechanism(hsm):
    # SoftHSM2 2.6 implements OAEP with SHA-1 only (rsa_oaep_hash, as Vault's seal has).
    srv, _ = hsm(extra='  mechanism = "CKM_RSA_PKCS_OAEP"\n  rsa_oaep_hash = "sha1"\n', key_label="coffer-rsa")
    srv.start()
    init = srv.client().sys.initialize(recovery_shares=1, recovery_threshold=1)
    assert wait_unsealed(srv)["sealed"] is False
    kv_roundtrip(srv.client(init["root_token"]), "rsa")
    srv.restart()
    assert wait_unsealed(srv)["sealed"] is False
    assert kv_read(srv.client(init["root_token"])) == "rsa"


def test_pkcs11_wrong_pin_missing_key_and_missing_library(hsm, tls_certs, monkeypatch):
    srv, token = hsm()
    srv.start()
    init = srv.client().sys.initialize(recovery_shares=3, recovery_threshold=2)
    assert wait_unsealed(srv)["sealed"] is False
    srv.stop()

    # A wrong PIN (from the environment, which wins over the file): sealed, says why, alive.
    monkeypatch.setenv("COFFER_HSM_PIN", "9999")
    srv.start()
    time.sleep(2)
    s = status(srv)
    assert s["sealed"] is True and s["initialized"] is True
    assert "CKR_PIN_INCORRECT" in s.get("auto_unseal_error", ""), s
    assert "9999" not in srv.log_text() and "1234" not in s["auto_unseal_error"]
    assert requests.get(srv.url + "/v1/sys/health", verify=srv.verify, timeout=10).status_code == 503
    assert srv.running
    # Not retried (an HSM locks a token after a few wrong PINs): one failure in the log.
    time.sleep(3)
    assert srv.log_text().count("CKR_PIN_INCORRECT") <= 3
    srv.stop()
    monkeypatch.delenv("COFFER_HSM_PIN")

    # The configuration names another key than the one that wrapped the stored root key:
    # sealed, and the status names both.
    set_seal_option(srv, "key_label", "no-such-key")
    set_seal_option(srv, "generate_key", "false")
    srv.start()
    time.sleep(2)
    s = status(srv)
    why = s.get("auto_unseal_error", "")
    assert s["sealed"] is True and '"coffer-root"' in why and '"no-such-key"' in why, s
    assert srv.running
    srv.stop()

    # The key is gone from the token (a fresh token with the same label and PIN), without
    # generate_key: sealed, clear status, retried (the key may be restored later).
    tokens = Path(token["SOFTHSM2_CONF"]).parent / "tokens"
    tokens.rename(tokens.with_name("tokens.orig"))
    subprocess.run([str(REPO_ROOT / "Ops" / "softhsm"), "init", str(tokens.parent)], capture_output=True, check=True)
    set_seal_option(srv, "key_label", "coffer-root")
    srv.start()
    time.sleep(2)
    s = status(srv)
    assert s["sealed"] is True and 'no AES key labelled "coffer-root"' in s.get("auto_unseal_error", ""), s
    assert srv.running
    srv.stop()
    shutil.rmtree(tokens)
    tokens.with_name("tokens.orig").rename(tokens)

    # Back to the right token and key: unseals by itself, the data is intact.
    srv.start()
    assert wait_unsealed(srv)["sealed"] is False
    assert srv.client(init["root_token"]).auth.token.lookup_self()["data"]["policies"] == ["root"]
    srv.stop()

    # The module path does not exist: a clear configuration error, exit 1, at start.
    set_seal_option(srv, "lib", "/nonexistent/libpkcs11.so")
    with pytest.raises(RuntimeError) as e:
        srv.start(timeout=15)
    assert "exited with 1" in str(e.value)
    assert "the PKCS#11 library /nonexistent/libpkcs11.so does not exist" in srv.log_text()

    # A Shamir config on storage the HSM seal initialized: refused at start, not misread.
    text = srv.config_path.read_text()
    srv.config_path.write_text(text[: text.index('seal "pkcs11"')])
    with pytest.raises(RuntimeError):
        srv.start(timeout=15)
    assert "initialized with the pkcs11 seal" in srv.log_text()


# ------------------------------------------------------------------------------ AWS KMS

HAVE_MOTO = shutil.which("moto_server") is not None


@pytest.fixture(scope="module")
def aws():
    """moto's server with authentication enforced (every request SigV4-checked): the
    run's one from Ops/test (COFFER_TEST_AWS_*), or one started here for a local run."""
    env = {k: v for k, v in os.environ.items() if k.startswith("COFFER_TEST_AWS_")}
    started = None
    if "COFFER_TEST_AWS_ENDPOINT" not in env:
        if not HAVE_MOTO:
            pytest.skip("moto_server is not installed (Ops/install-deps installs it)")
        started = _base_tmp() / "moto"
        out = subprocess.run([str(REPO_ROOT / "Ops" / "moto"), "start", str(started)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    yield env
    if started is not None:
        subprocess.run([str(REPO_ROOT / "Ops" / "moto"), "stop", str(started)], capture_output=True, timeout=30)


def kms_client(aws, secret=None):
    import boto3
    return boto3.client("kms", endpoint_url=aws["COFFER_TEST_AWS_ENDPOINT"], region_name=aws["COFFER_TEST_AWS_REGION"],
                        aws_access_key_id=aws["COFFER_TEST_AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or aws["COFFER_TEST_AWS_SECRET_ACCESS_KEY"])


class FlakyProxy:
    """A TCP forwarder to the emulator that can be switched off (connections refused)
    and on again on the same port: a KMS outage and its end."""

    def __init__(self, target_port: int):
        import socket
        import threading
        self.socket, self.threading = socket, threading
        self.target = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener = None

    def on(self):
        s = self.socket.socket()
        s.setsockopt(self.socket.SOL_SOCKET, self.socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.listener = s
        self.threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def off(self):
        # shutdown() first: on Linux close() alone does not wake the thread blocked in
        # accept(), and the socket would keep accepting.
        if self.listener is not None:
            try:
                self.listener.shutdown(self.socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None

    def _accept(self, s):
        while True:
            try:
                client, _ = s.accept()
            except OSError:
                return
            upstream = self.socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                self.threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.close()
                except OSError:
                    pass


def kms_server(tls_certs, aws, monkeypatch, key_id, endpoint=None, secret=None):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_KMS_ENDPOINT", "VAULT_AWSKMS_SEAL_KEY_ID", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws["COFFER_TEST_AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or aws["COFFER_TEST_AWS_SECRET_ACCESS_KEY"])
    srv = TLSServer(_base_tmp(), tls_certs)
    srv.config_path.write_text(srv.config_path.read_text() + f"""
seal "awskms" {{
  region     = "{aws['COFFER_TEST_AWS_REGION']}"
  kms_key_id = "{key_id}"
  endpoint   = "{endpoint or aws['COFFER_TEST_AWS_ENDPOINT']}"
}}
""")
    return srv


def test_awskms_init_autounseal_context_outage_and_bad_credentials(tls_certs, aws, monkeypatch):
    kms = kms_client(aws)
    key = kms.create_key(Description="coffer seal")["KeyMetadata"]
    kms.create_alias(AliasName="alias/coffer-seal", TargetKeyId=key["KeyId"])
    target_port = int(aws["COFFER_TEST_AWS_ENDPOINT"].rsplit(":", 1)[1])
    proxy = FlakyProxy(target_port)
    proxy.on()
    srv = kms_server(tls_certs, aws, monkeypatch, "alias/coffer-seal", endpoint=f"http://127.0.0.1:{proxy.port}")
    try:
        srv.start()
        s = status(srv)
        assert s["type"] == "awskms" and s["initialized"] is False and s["recovery_seal"] is True
        init = srv.client().sys.initialize(recovery_shares=3, recovery_threshold=2)
        assert len(init["recovery_keys"]) == 3 and init["keys"] == []
        assert wait_unsealed(srv)["sealed"] is False
        c = srv.client(init["root_token"])
        kv_roundtrip(c, "kms-sealed")

        # The stored root key is KMS ciphertext for this key, bound to its storage key by
        # the encryption context: KMS itself (asked directly) opens it only with that context.
        db = sqlite3.connect(srv.db_path)
        raw = bytes(db.execute("SELECT value FROM kv WHERE key = 'core/root-key'").fetchone()[0])
        db.close()
        import json
        blob = json.loads(raw)
        assert blob["type"] == "awskms" and blob["key_id"] == key["Arn"]
        ciphertext = base64.b64decode(blob["ciphertext"])
        opened = kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext={"coffer:storage-key": "core/root-key"})
        assert len(opened["Plaintext"]) == 32
        with pytest.raises(Exception) as e:
            kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext={"coffer:storage-key": "core/other"})
        assert "InvalidCiphertext" in str(e.value)

        # Restart: unsealed by itself.
        srv.restart()
        assert wait_unsealed(srv)["sealed"] is False
        assert kv_read(c) == "kms-sealed"

        # KMS unreachable at start: sealed, says why, answers 503 on health, stays alive;
        # once KMS is back it unseals by itself (retry with backoff, at most 30 s apart).
        srv.stop()
        proxy.off()
        srv.start()
        deadline = time.monotonic() + 20
        s = status(srv)
        while not s.get("auto_unseal_error") and time.monotonic() < deadline:
            time.sleep(0.5)
            s = status(srv)
        assert s["sealed"] is True and s["initialized"] is True
        assert "cannot reach" in s.get("auto_unseal_error", "") or "did not answer" in s.get("auto_unseal_error", ""), s
        assert requests.get(srv.url + "/v1/sys/health", verify=srv.verify, timeout=10).status_code == 503
        assert srv.running
        proxy.on()
        assert wait_unsealed(srv, timeout=45)["sealed"] is False
        assert kv_read(c) == "kms-sealed"
        assert "auto_unseal_error" not in status(srv) or not status(srv)["auto_unseal_error"]

        # sys/seal holds until a quorum of recovery shares (a restart would auto-unseal).
        c.sys.seal()
        time.sleep(2)
        assert status(srv)["sealed"] is True
        srv.client().sys.submit_unseal_keys(init["recovery_keys"][:2])
        assert status(srv)["sealed"] is False
        srv.stop()

        # A wrong secret key: KMS refuses the signature; sealed with AWS's error code, and
        # neither secret is in the log or the status.
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key-0123456789")
        srv.start()
        time.sleep(2)
        s = status(srv)
        assert s["sealed"] is True and "SignatureDoesNotMatch" in s.get("auto_unseal_error", ""), s
        log = srv.log_text()
        assert "not-the-secret-key" not in log and aws["COFFER_TEST_AWS_SECRET_ACCESS_KEY"] not in log
        assert srv.running
        srv.stop()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws["COFFER_TEST_AWS_SECRET_ACCESS_KEY"])

        # No credentials at all: a configuration error at start (exit 1), not a sealed node.
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        with pytest.raises(RuntimeError) as e:
            srv.start(timeout=15)
        assert "exited with 1" in str(e.value)
        assert "no AWS credentials" in srv.log_text()
    finally:
        proxy.off()
        srv.dispose()


def test_awskms_unknown_key_stays_sealed_and_says_so(tls_certs, aws, monkeypatch):
    srv = kms_server(tls_certs, aws, monkeypatch, "alias/no-such-key")
    try:
        srv.start()
        with pytest.raises(hvac.exceptions.VaultError) as e:
            srv.client().sys.initialize(recovery_shares=1, recovery_threshold=1)
        assert "NotFoundException" in errors_of(e), errors_of(e)
        assert status(srv)["initialized"] is False  # nothing half-written
        assert srv.running
    finally:
        srv.dispose()


# ------------------------------------------------------------------------ seal migration


def test_migration_shamir_to_pkcs11_and_back_keeps_every_secret(tls_certs, monkeypatch):
    if not HAVE_SOFTHSM:
        pytest.skip("softhsm2-util is not installed (Ops/install-deps installs it)")
    token = make_token()
    monkeypatch.setenv("SOFTHSM2_CONF", token["SOFTHSM2_CONF"])
    monkeypatch.delenv("COFFER_HSM_PIN", raising=False)
    monkeypatch.delenv("VAULT_HSM_PIN", raising=False)
    srv = TLSServer(_base_tmp(), tls_certs)
    shamir_config = srv.config_path.read_text()
    stanza = f"""
seal "pkcs11" {{
  lib          = "{token['COFFER_TEST_HSM_LIB']}"
  token_label  = "{token['COFFER_TEST_HSM_TOKEN']}"
  pin          = "{token['COFFER_TEST_HSM_PIN']}"
  key_label    = "coffer-migrated"
  generate_key = true
}}
"""
    try:
        srv.start()
        keys, root = init_shamir(srv, shares=3, threshold=2)
        c = srv.client(root)
        kv_roundtrip(c, "before-migration")
        c.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        c.write("kv1/plain", value="v1-secret")
        srv.stop()

        # Shamir -> pkcs11: the new stanza; the node waits for the old unseal keys + migrate.
        srv.config_path.write_text(shamir_config + stanza)
        srv.start()
        time.sleep(1.5)
        s = status(srv)
        assert s["sealed"] is True and s["migration"] is True and s["type"] == "shamir", s
        anon = srv.client()
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            anon.sys.submit_unseal_key(keys[0])
        assert "migrate" in errors_of(e)
        assert anon.sys.submit_unseal_key(keys[0], migrate=True)["sealed"] is True
        r = anon.sys.submit_unseal_key(keys[1], migrate=True)
        assert r["sealed"] is False, r
        s = status(srv)
        assert s["type"] == "pkcs11" and s["recovery_seal"] is True and s["migration"] is False
        assert s["n"] == 3 and s["t"] == 2
        assert kv_read(c) == "before-migration" and c.read("kv1/plain")["data"]["value"] == "v1-secret"
        db = sqlite3.connect(srv.db_path)
        blob = bytes(db.execute("SELECT value FROM kv WHERE key = 'core/root-key'").fetchone()[0]).decode()
        db.close()
        assert "CKM_AES_GCM" in blob and "coffer-migrated" in blob

        # Now an HSM-sealed node: a restart unseals by itself; the old unseal keys are its
        # recovery keys (after sys/seal they unseal it).
        srv.restart()
        assert wait_unsealed(srv)["sealed"] is False
        c.sys.seal()
        assert anon.sys.submit_unseal_keys(keys[1:3])["sealed"] is False
        kv_roundtrip(c, "during-hsm")
        srv.stop()

        # pkcs11 -> Shamir: the HSM stanza disabled; the recovery keys + migrate, through the CLI.
        set_seal_option(srv, "disabled", "true")
        srv.start()
        time.sleep(1.5)
        s = status(srv)
        assert s["sealed"] is True and s["migration"] is True and s["type"] == "pkcs11", s
        env = dict(os.environ, COFFER_ADDR=srv.url, COFFER_CACERT=str(srv.verify))
        for k in keys[:2]:
            out = subprocess.run([coffer_bin(), "operator", "unseal", "-migrate", k], capture_output=True, text=True, env=env, timeout=30)
            assert out.returncode == 0, out.stderr
        s = status(srv)
        assert s["sealed"] is False and s["type"] == "shamir" and s["recovery_seal"] is False and s["n"] == 3 and s["t"] == 2, s
        assert kv_read(c) == "during-hsm" and c.read("kv1/plain")["data"]["value"] == "v1-secret"
        db = sqlite3.connect(srv.db_path)
        left = [r[0] for r in db.execute("SELECT key FROM kv WHERE key = 'core/recovery-key'")]
        db.close()
        assert left == []

        # Shamir again: each start is sealed; the same keys unseal it.
        srv.restart()
        time.sleep(1.5)
        assert status(srv)["sealed"] is True
        assert anon.sys.submit_unseal_keys(keys[:2])["sealed"] is False
        assert kv_read(c) == "during-hsm"

        # A migration flag with nothing to migrate is refused.
        c.sys.seal()
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            anon.sys.submit_unseal_key(keys[0], migrate=True)
        assert "no seal migration" in errors_of(e)
    finally:
        srv.dispose()


# -------------------------------------------------------------------- sealable namespaces


def test_sealable_namespace_is_the_tenants_own_key(tls_server):
    srv = tls_server()
    keys, root = init_shamir(srv)
    c = srv.client(root)
    c.sys.create_namespace("sibling")

    # OpenBao's shape: an HCL document in `seal`; the shares come back once, as hex.
    created = c.write("sys/namespaces/acme", seal='seal "shamir" {\n  shares = 3\n  threshold = 2\n}')["data"]
    shares = created["key_shares"]
    assert len(shares) == 3 and created["key_threshold"] == 2 and created["path"] == "acme/"
    assert all(len(bytes.fromhex(s)) == 33 for s in shares)

    acme = hvac.Client(url=srv.url, token=root, verify=srv.verify, namespace="acme")
    sibling = hvac.Client(url=srv.url, token=root, verify=srv.verify, namespace="sibling")

    def status_of():
        return c.read("sys/namespaces/acme/seal-status")["data"]

    # Sealed from the start: its paths answer 503, the sibling's do not.
    st = status_of()
    assert st["sealed"] is True and st["t"] == 2 and st["n"] == 3 and st["type"] == "shamir" and st["progress"] == 0
    r = requests.get(srv.url + "/v1/sys/mounts", headers={"X-Vault-Token": root, "X-Vault-Namespace": "acme"}, verify=srv.verify, timeout=10)
    assert r.status_code == 503 and "namespace is sealed" in " ".join(r.json()["errors"])
    r = requests.get(srv.url + "/v1/acme/sys/mounts", headers={"X-Vault-Token": root}, verify=srv.verify, timeout=10)
    assert r.status_code == 503
    sibling.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    sibling.secrets.kv.v2.create_or_update_secret("s", secret={"v": "sibling"}, mount_point="kv")

    # The root token alone cannot unseal it: only the tenant's shares do.
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        c.write("sys/namespaces/acme/unseal")
    assert "key" in errors_of(e)
    forged = shares[0][:-2] + "{:02x}".format(7)  # a share with an x-coordinate no holder has
    c.write("sys/namespaces/acme/unseal", key=shares[0])
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        c.write("sys/namespaces/acme/unseal", key=forged)
    assert "invalid key" in errors_of(e)
    assert status_of()["sealed"] is True and status_of()["progress"] == 0
    st = c.write("sys/namespaces/acme/unseal", key=shares[1])["data"]
    assert st["sealed"] is True and st["progress"] == 1 and st["nonce"]
    st = c.write("sys/namespaces/acme/unseal", key=shares[2])["data"]
    assert st["sealed"] is False

    acme.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    acme.secrets.kv.v2.create_or_update_secret("db", secret={"password": "acme-secret"}, mount_point="kv")
    acme.sys.create_namespace("team")  # a child lives in acme's storage
    team = hvac.Client(url=srv.url, token=root, verify=srv.verify, namespace="acme/team")
    team.sys.enable_secrets_engine("kv", path="kv", options={"version": "1"})

    # Sealed again (204): acme and its child answer 503, the sibling still serves.
    r = requests.put(srv.url + "/v1/sys/namespaces/acme/seal", headers={"X-Vault-Token": root}, verify=srv.verify, timeout=10)
    assert r.status_code == 204
    for ns in ("acme", "acme/team"):
        r = requests.get(srv.url + "/v1/sys/mounts", headers={"X-Vault-Token": root, "X-Vault-Namespace": ns}, verify=srv.verify, timeout=10)
        assert r.status_code in (503, 404), (ns, r.status_code, r.text)
    r = requests.get(srv.url + "/v1/kv/data/db", headers={"X-Vault-Token": root, "X-Vault-Namespace": "acme"}, verify=srv.verify, timeout=10)
    assert r.status_code == 503
    assert sibling.secrets.kv.v2.read_secret_version("s", mount_point="kv", raise_on_deleted_version=True)["data"]["data"]["v"] == "sibling"

    # A restart: the whole server unseals with the operator's keys, acme stays sealed.
    srv.restart()
    srv.client().sys.submit_unseal_keys(keys[:3])
    assert status_of()["sealed"] is True
    r = requests.get(srv.url + "/v1/kv/data/db", headers={"X-Vault-Token": root, "X-Vault-Namespace": "acme"}, verify=srv.verify, timeout=10)
    assert r.status_code == 503
    for k in shares[:2]:
        c.write("sys/namespaces/acme/unseal", key=k)
    assert acme.secrets.kv.v2.read_secret_version("db", mount_point="kv", raise_on_deleted_version=True)["data"]["data"]["password"] == "acme-secret"
    assert "kv/" in team.sys.list_mounted_secrets_engines()["data"]

    # A global seal seals it too: after the operator unseals the node, acme is still sealed.
    c.sys.seal()
    srv.client().sys.submit_unseal_keys(keys[:3])
    assert status_of()["sealed"] is True

    # An ordinary namespace has no seal status; bad seal documents are 400s.
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        c.read("sys/namespaces/sibling/seal-status")
    assert "not sealable" in errors_of(e)
    for bad in ('seal "shamir" { shares = 2 threshold = 3 }', 'seal "awskms" { kms_key_id = "x" }', "seal {", '{"seal": 5}'):
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            c.write("sys/namespaces/bad", seal=bad)
        assert "invalid seal config" in errors_of(e), bad
    assert c.read("sys/namespaces/bad") is None  # nothing was created (hvac: None for a 404)
    # The spelling: a `seals` list.
    made = c.write("sys/namespaces/other", seals=[{"type": "shamir", "shares": 1, "threshold": 1}])["data"]
    assert len(made["key_shares"]) == 1 and len(bytes.fromhex(made["key_shares"][0])) == 32
