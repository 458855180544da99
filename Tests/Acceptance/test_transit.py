"""Transit (issue #19, first part) through hvac against the real binary: keys of every type,
config, rotate and trim, encrypt/decrypt/rewrap with batches (mixed good and bad items),
derived and convergent keys, datakeys, random, hash, HMACs, sign/verify in Vault's
encodings, export, backup and restore, and tenant isolation. Interoperability is checked with
the `cryptography` package, never with Coffer's own code: AES-GCM and RSA-OAEP ciphertexts
decrypt with the exported key, signatures verify against the public key Coffer returns."""

from __future__ import annotations

import base64
import hashlib
import hmac as pyhmac
import json

import hvac
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from conftest import PEER_BAO, api_call, unique


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


def errors(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


@pytest.fixture
def transit(root_client):
    path = unique("transit")
    root_client.sys.enable_secrets_engine("transit", path=path)
    return root_client.secrets.transit, path


def test_keys_config_rotate_trim_and_delete(transit, dev_server):
    t, path = transit
    name = unique("k")
    t.create_key(name, mount_point=path)
    k = t.read_key(name, mount_point=path)["data"]
    assert k["type"] == "aes256-gcm96" and k["latest_version"] == 1 and k["supports_encryption"] and not k["supports_signing"]
    assert isinstance(k["keys"]["1"], int) and k["deletion_allowed"] is False and k["min_decryption_version"] == 1
    for typ in ["aes128-gcm96", "chacha20-poly1305", "ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048"]:
        n = unique(typ)
        # hvac 2.4 refuses aes128-gcm96 itself: that one through the raw API.
        assert api_call(dev_server, "POST", f"{path}/keys/{n}", body={"type": typ}).status_code == 200
        d = t.read_key(n, mount_point=path)["data"]
        assert d["type"] == typ, typ
        if typ.startswith("ecdsa") or typ.startswith("rsa"):
            assert d["keys"]["1"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----"), typ
    r = api_call(dev_server, "POST", f"{path}/keys/{unique('h')}", body={"type": "hmac", "key_size": 64})
    assert r.status_code == 200 and r.json()["data"]["key_size"] == 64 and "keys" not in r.json()["data"]
    assert name in t.list_keys(mount_point=path)["data"]["keys"]

    for _ in range(3):
        t.rotate_key(name, mount_point=path)
    assert t.read_key(name, mount_point=path)["data"]["latest_version"] == 4
    old = t.encrypt_data(name, b64(b"old"), key_version=1, mount_point=path)["data"]["ciphertext"]
    assert old.startswith("vault:v1:")
    t.update_key_configuration(name, min_decryption_version=3, min_encryption_version=4, mount_point=path)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        t.decrypt_data(name, old, mount_point=path)
    assert "ciphertext or signature version is disallowed by policy (too old)" in errors(ex)
    assert sorted(t.read_key(name, mount_point=path)["data"]["keys"]) == ["3", "4"]
    t.trim_key(name, min_version=3, mount_point=path)
    assert t.read_key(name, mount_point=path)["data"]["min_available_version"] == 3

    for body, why in [
        ({"type": "nope"}, "unknown key type nope"),
        ({"type": "hmac"}, "invalid key size for HMAC key"),
        ({"type": "ecdsa-p256", "derived": True}, "key derivation and convergent encryption not supported"),
        ({"convergent_encryption": True}, "convergent encryption requires derivation to be enabled"),
        ({"auto_rotate_period": "10m"}, "auto rotate period must be 0 to disable or at least an hour"),
    ]:
        r = api_call(dev_server, "POST", f"{path}/keys/{unique('bad')}", body=body)
        assert r.status_code == 400 and why in r.json()["errors"][0], (body, r.text)
    r = api_call(dev_server, "POST", f"{path}/keys/{name}/config", body={"min_decryption_version": 9})
    assert r.status_code == 400 and "latest key version is 4" in r.json()["errors"][0]
    r = api_call(dev_server, "DELETE", f"{path}/keys/{name}")
    assert r.status_code == 400 and "deletion is not allowed for this key" in r.json()["errors"][0]
    t.update_key_configuration(name, deletion_allowed=True, mount_point=path)
    t.delete_key(name, mount_point=path)
    assert api_call(dev_server, "GET", f"{path}/keys/{name}").status_code == 404


def test_encrypt_decrypt_batches_derived_and_interop(transit, dev_server):
    t, path = transit
    name = unique("enc")
    t.create_key(name, exportable=True, mount_point=path)
    ct = t.encrypt_data(name, b64(b"hello transit"), mount_point=path)["data"]["ciphertext"]
    assert t.decrypt_data(name, ct, mount_point=path)["data"]["plaintext"] == b64(b"hello transit")
    # The ciphertext is AES-256-GCM, nonce||ct||tag under the exported key: open it with cryptography.
    raw_key = unb64(t.export_key(name, key_type="encryption-key", mount_point=path)["data"]["keys"]["1"])
    blob = unb64(ct.split(":", 2)[2])
    assert AESGCM(raw_key).decrypt(blob[:12], blob[12:], None) == b"hello transit"

    # Batches: good and bad items, each with its own answer; the 400 still carries the results.
    items = [{"plaintext": b64(b"a"), "reference": "r1"}, {"plaintext": "%%%", "reference": "r2"}, {"plaintext": b64(b"c")}]
    r = api_call(dev_server, "POST", f"{path}/encrypt/{name}", body={"batch_input": items})
    assert r.status_code == 400, r.text
    res = r.json()["data"]["batch_results"]
    assert res[0]["reference"] == "r1" and res[0]["ciphertext"].startswith("vault:v1:") and "error" in res[1] and res[1]["reference"] == "r2"
    good = t.encrypt_data(name, batch_input=[{"plaintext": b64(b"x")}, {"plaintext": b64(b"y")}], mount_point=path)["data"]["batch_results"]
    dec = t.decrypt_data(name, batch_input=[{"ciphertext": g["ciphertext"]} for g in good], mount_point=path)["data"]["batch_results"]
    assert [d["plaintext"] for d in dec] == [b64(b"x"), b64(b"y")]

    # Rotation and rewrap: old ciphertext still decrypts; rewrap moves it to the newest version.
    t.rotate_key(name, mount_point=path)
    assert t.decrypt_data(name, ct, mount_point=path)["data"]["plaintext"] == b64(b"hello transit")
    re = t.rewrap_data(name, ct, mount_point=path)["data"]
    assert re["ciphertext"].startswith("vault:v2:") and re["key_version"] == 2
    assert t.decrypt_data(name, re["ciphertext"], mount_point=path)["data"]["plaintext"] == b64(b"hello transit")
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        t.decrypt_data(name, "vault:v1:" + b64(b"x" * 40), mount_point=path)
    assert "message authentication failed" in errors(ex)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        t.decrypt_data(name, "v1:abc", mount_point=path)
    assert "invalid ciphertext: no prefix" in errors(ex)

    # Derived keys need a context; convergent ones give the same ciphertext for the same input.
    d = unique("drv")
    t.create_key(d, derived=True, convergent_encryption=True, mount_point=path)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        t.encrypt_data(d, b64(b"p"), mount_point=path)
    assert "missing 'context' for key derivation" in errors(ex)
    c1 = t.encrypt_data(d, b64(b"same"), context=b64(b"tenant-1"), mount_point=path)["data"]["ciphertext"]
    c2 = t.encrypt_data(d, b64(b"same"), context=b64(b"tenant-1"), mount_point=path)["data"]["ciphertext"]
    c3 = t.encrypt_data(d, b64(b"same"), context=b64(b"tenant-2"), mount_point=path)["data"]["ciphertext"]
    assert c1 == c2 and c1 != c3
    assert t.decrypt_data(d, c3, context=b64(b"tenant-2"), mount_point=path)["data"]["plaintext"] == b64(b"same")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.decrypt_data(d, c3, context=b64(b"tenant-1"), mount_point=path)

    # Upsert: an encrypt to a missing key makes it (chacha20 here); datakeys; AAD.
    up = unique("up")
    cu = api_call(dev_server, "POST", f"{path}/encrypt/{up}", body={"plaintext": b64(b"u"), "type": "chacha20-poly1305"})
    assert cu.status_code == 200 and t.read_key(up, mount_point=path)["data"]["type"] == "chacha20-poly1305"
    t.update_key_configuration(up, exportable=True, mount_point=path)
    ck = unb64(t.export_key(up, key_type="encryption-key", mount_point=path)["data"]["keys"]["1"])
    cb = unb64(cu.json()["data"]["ciphertext"].split(":", 2)[2])
    assert ChaCha20Poly1305(ck).decrypt(cb[:12], cb[12:], None) == b"u"
    dk = t.generate_data_key(name, key_type="plaintext", bits=512, mount_point=path)["data"]
    assert len(unb64(dk["plaintext"])) == 64
    assert unb64(t.decrypt_data(name, dk["ciphertext"], mount_point=path)["data"]["plaintext"]).decode() == dk["plaintext"]
    assert "plaintext" not in t.generate_data_key(name, key_type="wrapped", mount_point=path)["data"]
    aad = api_call(dev_server, "POST", f"{path}/encrypt/{name}", body={"plaintext": b64(b"z"), "associated_data": b64(b"hdr")}).json()["data"]["ciphertext"]
    assert api_call(dev_server, "POST", f"{path}/decrypt/{name}", body={"ciphertext": aad, "associated_data": b64(b"hdr")}).status_code == 200
    assert api_call(dev_server, "POST", f"{path}/decrypt/{name}", body={"ciphertext": aad, "associated_data": b64(b"other")}).status_code == 400


def test_rsa_oaep_and_signatures_interoperate(transit):
    t, path = transit
    rsa_name, ec_name, ed_name = unique("rsa"), unique("ec"), unique("ed")
    t.create_key(rsa_name, key_type="rsa-2048", exportable=True, mount_point=path)
    t.create_key(ec_name, key_type="ecdsa-p256", mount_point=path)
    t.create_key(ed_name, key_type="ed25519", mount_point=path)
    # RSA-OAEP (SHA-256) decrypts with the exported private key.
    ct = t.encrypt_data(rsa_name, b64(b"oaep"), mount_point=path)["data"]["ciphertext"]
    priv = serialization.load_pem_private_key(t.export_key(rsa_name, key_type="encryption-key", mount_point=path)["data"]["keys"]["1"].encode(), None)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert priv.decrypt(unb64(ct.split(":", 2)[2]), oaep) == b"oaep"
    assert t.decrypt_data(rsa_name, ct, mount_point=path)["data"]["plaintext"] == b64(b"oaep")

    msg = b"sign me"

    def pub(name):
        k = t.read_key(name, mount_point=path)["data"]["keys"]["1"]["public_key"]
        return k

    # ECDSA P-256, ASN.1 and JWS (r||s) forms.
    sig = t.sign_data(ec_name, b64(msg), mount_point=path)["data"]["signature"]
    ec_pub = serialization.load_pem_public_key(pub(ec_name).encode())
    ec_pub.verify(unb64(sig.split(":", 2)[2]), msg, ec.ECDSA(hashes.SHA256()))
    jws = t.sign_data(ec_name, b64(msg), marshaling_algorithm="jws", mount_point=path)["data"]["signature"]
    raw = base64.urlsafe_b64decode(jws.split(":", 2)[2] + "==")
    ec_pub.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")), msg, ec.ECDSA(hashes.SHA256()))
    assert t.verify_signed_data(ec_name, b64(msg), signature=sig, mount_point=path)["data"]["valid"] is True
    assert t.verify_signed_data(ec_name, b64(b"other"), signature=sig, mount_point=path)["data"]["valid"] is False
    # Ed25519 over the raw input.
    es = t.sign_data(ed_name, b64(msg), mount_point=path)["data"]["signature"]
    ed25519.Ed25519PublicKey.from_public_bytes(unb64(pub(ed_name))).verify(unb64(es.split(":", 2)[2]), msg)
    # RSA-PSS (default) and PKCS#1 v1.5, with SHA-256 and SHA-512.
    rsa_pub = serialization.load_pem_public_key(pub(rsa_name).encode())
    ps = t.sign_data(rsa_name, b64(msg), hash_algorithm="sha2-512", mount_point=path)["data"]["signature"]
    rsa_pub.verify(unb64(ps.split(":", 2)[2]), msg, padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=padding.PSS.AUTO), hashes.SHA512())
    pk = t.sign_data(rsa_name, b64(msg), signature_algorithm="pkcs1v15", mount_point=path)["data"]["signature"]
    rsa_pub.verify(unb64(pk.split(":", 2)[2]), msg, padding.PKCS1v15(), hashes.SHA256())
    assert t.verify_signed_data(rsa_name, b64(msg), signature=pk, signature_algorithm="pkcs1v15", mount_point=path)["data"]["valid"] is True
    # A prehashed input is signed as the digest it is.
    digest = hashlib.sha256(msg).digest()
    pre = t.sign_data(ec_name, b64(digest), prehashed=True, mount_point=path)["data"]["signature"]
    ec_pub.verify(unb64(pre.split(":", 2)[2]), msg, ec.ECDSA(hashes.SHA256()))
    # Batches answer per item.
    res = t.sign_data(ec_name, batch_input=[{"input": b64(b"1")}, {"input": "%%%"}], mount_point=path)["data"]["batch_results"]
    assert res[0]["signature"].startswith("vault:v1:") and "error" in res[1]
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        t.sign_data(unique("aes"), b64(msg), mount_point=path)
    assert "signing key not found" in errors(ex)


def test_hmac_random_hash_export_backup_restore(transit, dev_server):
    t, path = transit
    name = unique("hm")
    t.create_key(name, exportable=True, allow_plaintext_backup=True, mount_point=path)
    mac = t.generate_hmac(name, b64(b"data"), mount_point=path)["data"]["hmac"]
    hkey = unb64(t.export_key(name, key_type="hmac-key", mount_point=path)["data"]["keys"]["1"])
    assert mac == "vault:v1:" + b64(pyhmac.new(hkey, b"data", hashlib.sha256).digest())
    assert t.verify_signed_data(name, b64(b"data"), hmac=mac, mount_point=path)["data"]["valid"] is True
    assert t.verify_signed_data(name, b64(b"datA"), hmac=mac, mount_point=path)["data"]["valid"] is False
    mac512 = t.generate_hmac(name, b64(b"data"), algorithm="sha2-512", mount_point=path)["data"]["hmac"]
    assert unb64(mac512.split(":", 2)[2]) == pyhmac.new(hkey, b"data", hashlib.sha512).digest()

    assert len(unb64(t.generate_random_bytes(n_bytes=48, mount_point=path)["data"]["random_bytes"])) == 48
    assert len(api_call(dev_server, "POST", f"{path}/random/16", body={"format": "hex"}).json()["data"]["random_bytes"]) == 32
    r = api_call(dev_server, "POST", f"{path}/random", body={"bytes": 200000})
    assert r.status_code == 400 and "'bytes' should be less than 131072" in r.json()["errors"][0]
    assert t.hash_data(b64(b"abc"), algorithm="sha2-256", mount_point=path)["data"]["sum"] == hashlib.sha256(b"abc").hexdigest()
    assert api_call(dev_server, "POST", f"{path}/hash/sha2-512", body={"input": b64(b"abc"), "format": "base64"}).json()["data"]["sum"] == b64(hashlib.sha512(b"abc").digest())

    # Export only where allowed; backup and restore (over an existing key only with force).
    plain = unique("noexp")
    t.create_key(plain, mount_point=path)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        t.export_key(plain, key_type="encryption-key", mount_point=path)
    assert "private key material is not exportable" in errors(ex)
    ct = t.encrypt_data(name, b64(b"keep"), mount_point=path)["data"]["ciphertext"]
    backup = t.backup_key(name, mount_point=path)["data"]["backup"]
    r = api_call(dev_server, "POST", f"{path}/restore/{name}", body={"backup": backup})
    assert r.status_code == 400 and "already exists" in r.json()["errors"][0]
    copy = unique("copy")
    assert api_call(dev_server, "POST", f"{path}/restore/{copy}", body={"backup": backup}).status_code == 204
    assert t.decrypt_data(copy, ct, mount_point=path)["data"]["plaintext"] == b64(b"keep")
    assert api_call(dev_server, "POST", f"{path}/restore/{name}", body={"backup": backup, "force": True}).status_code == 204
    r = api_call(dev_server, "GET", f"{path}/backup/{plain}")
    assert r.status_code == 400 and "exporting is disallowed on the policy" in r.json()["errors"][0]


@pytest.mark.skipif(PEER_BAO, reason="Coffer's tenants")
def test_tenants_have_their_own_keys(dev_server):
    a, b = unique("ta").replace("-", "")[:12], unique("tb").replace("-", "")[:12]
    clients = {}
    for t in (a, b):
        assert api_call(dev_server, "POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=dev_server.url, token="root", namespace=t)
        c.sys.enable_secrets_engine("transit", path="transit")
        c.secrets.transit.create_key("shared-name")
        clients[t] = c
    ct = clients[a].secrets.transit.encrypt_data("shared-name", b64(b"tenant a only"))["data"]["ciphertext"]
    assert clients[a].secrets.transit.decrypt_data("shared-name", ct)["data"]["plaintext"] == b64(b"tenant a only")
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        clients[b].secrets.transit.decrypt_data("shared-name", ct)
    assert "message authentication failed" in errors(ex)


@pytest.mark.skipif(PEER_BAO, reason="Coffer's usage metering")
def test_crypto_operations_are_metered_item_by_item():
    """#19 item 4: every encrypt/decrypt/sign/verify counts as a `crypto` request of the
    tenant, batch items one by one, so billing can charge per operation."""
    import time

    from test_usage import FLUSH, Node, row_for, usage
    node = Node()
    try:
        t = unique("tm").replace("-", "")[:12]
        assert node.call("POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=node.srv.url, token=node.root, namespace=t)
        c.sys.enable_secrets_engine("transit", path="transit")
        c.secrets.transit.create_key("k")
        c.secrets.transit.create_key("s", key_type="ed25519")
        ct = c.secrets.transit.encrypt_data("k", b64(b"one"))["data"]["ciphertext"]                       # 1
        c.secrets.transit.decrypt_data("k", ct)                                                              # 1
        c.secrets.transit.encrypt_data("k", batch_input=[{"plaintext": b64(bytes([i]))} for i in range(5)])  # 5
        c.secrets.transit.sign_data("s", batch_input=[{"input": b64(b"a")}, {"input": b64(b"b")}])          # 2
        time.sleep(FLUSH * 2.5)
        row = row_for(usage(node, namespace=t, granularity="hour"), f"{t}/")
        assert row["requests"]["crypto"] == 9, row
    finally:
        node.srv.dispose()
