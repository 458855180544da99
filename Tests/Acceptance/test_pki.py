"""PKI (issue #20) through hvac against the real binary: roots, intermediates, imports,
issuers and keys, roles and issuance, CSR signing, revocation with CRLs and OCSP, tidy, leases,
tenants. Every certificate, CRL and OCSP answer is checked with tools nobody here wrote:
`openssl verify`, `openssl x509 -text`, `openssl crl`, `openssl ocsp`, Python's `ssl` in a real
TLS handshake, and the `cryptography` package for CSRs."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import subprocess
import threading
import urllib.parse
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import PEER_BAO, api_call, unique


def errors(excinfo) -> str:
    return " ".join(excinfo.value.errors or [])


def openssl(*args, stdin: bytes | None = None) -> str:
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=30)
    return (r.stdout + r.stderr).decode(errors="replace")


def write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text if text.endswith("\n") else text + "\n")
    return str(p)


def make_csr(cn: str, sans: list[str] = (), key=None, ips: list[str] = ()) -> tuple[str, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    names = [x509.DNSName(s) for s in sans]
    import ipaddress
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode(), key


@pytest.fixture
def pki(root_client):
    """A mount with a root CA (EC P-256) and URLs pointing back at it."""
    path = unique("pki")
    root_client.sys.enable_secrets_engine("pki", path=path, config={"max_lease_ttl": "87600h"})
    p = root_client.secrets.pki
    root = p.generate_root("internal", "Coffer Test Root", extra_params={"key_type": "ec", "ttl": "87600h", "issuer_name": "root-1"},
                           mount_point=path)["data"]
    return p, path, root


def test_root_intermediate_and_leaf_verify_with_openssl(root_client, dev_server, pki, tmp_path):
    p, path, root = pki
    assert root["issuer_name"] == "root-1" and root["certificate"] == root["issuing_ca"] and ":" in root["serial_number"]
    base = f"{dev_server.url}/v1"
    p.set_urls({"issuing_certificates": [f"{base}/{path}/ca"], "crl_distribution_points": [f"{base}/{path}/crl"],
                "ocsp_servers": [f"{base}/{path}/ocsp"]}, mount_point=path)
    assert p.read_urls(mount_point=path)["data"]["ocsp_servers"] == [f"{base}/{path}/ocsp"]

    # The intermediate in its own mount: CSR there, signed by the root, imported back.
    ipath = unique("pki-int")
    root_client.sys.enable_secrets_engine("pki", path=ipath, config={"max_lease_ttl": "43800h"})
    csr = p.generate_intermediate("internal", "Coffer Test Intermediate", extra_params={"key_type": "rsa"}, mount_point=ipath)["data"]["csr"]
    assert "BEGIN CERTIFICATE REQUEST" in csr
    signed = p.sign_intermediate(csr, "Coffer Test Intermediate", extra_params={"ttl": "43800h"}, mount_point=path)["data"]
    assert signed["issuing_ca"] == root["certificate"] and signed["ca_chain"][0] == signed["certificate"]
    # The signed certificate with its parent, as Vault users import a chain: the root comes
    # in as an issuer without a key, so the intermediate's chain reaches it.
    imported = p.set_signed_intermediate(signed["certificate"] + "\n" + root["certificate"], mount_point=ipath)["data"]
    assert len(imported["imported_issuers"]) == 2 and sorted(bool(v) for v in imported["mapping"].values()) == [False, True]
    default = api_call(dev_server, "GET", f"{ipath}/config/issuers").json()["data"]["default"]
    assert imported["mapping"][default]  # the keyed one, the intermediate, is the default

    p.create_or_update_role("web", extra_params={"allowed_domains": ["example.com"], "allow_subdomains": True, "max_ttl": "72h",
                                                 "key_type": "ec", "ou": ["Platform"], "organization": ["Coffer"]}, mount_point=ipath)
    role = p.read_role("web", mount_point=ipath)["data"]
    assert role["allow_subdomains"] and role["key_bits"] == 256 and role["key_usage"] == ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]
    assert "web" in p.list_roles(mount_point=ipath)["data"]["keys"]
    leaf = p.generate_certificate("web", "app.example.com", extra_params={"alt_names": "api.example.com", "ip_sans": "127.0.0.1", "ttl": "24h"},
                                  mount_point=ipath)["data"]
    assert leaf["private_key_type"] == "ec" and "BEGIN EC PRIVATE KEY" in leaf["private_key"]
    assert leaf["issuing_ca"] == signed["certificate"] and leaf["ca_chain"] == [signed["certificate"], root["certificate"]]

    rootf, intf, leaff = write(tmp_path, "root.pem", root["certificate"]), write(tmp_path, "int.pem", signed["certificate"]), write(tmp_path, "leaf.pem", leaf["certificate"])
    assert f"{leaff}: OK" in openssl("verify", "-CAfile", rootf, "-untrusted", intf, leaff)
    assert f"{intf}: OK" in openssl("verify", "-CAfile", rootf, intf)
    # Not trusted without the intermediate, nor by another root.
    assert "OK" not in openssl("verify", "-CAfile", rootf, leaff).split(":")[-1]
    text = openssl("x509", "-in", leaff, "-noout", "-text")
    assert "DNS:app.example.com, DNS:api.example.com, IP Address:127.0.0.1" in text
    assert "Digital Signature, Key Encipherment, Key Agreement" in text and "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "O = Coffer, OU = Platform, CN = app.example.com" in text
    assert f"OCSP - URI:{base}/{ipath}/ocsp" not in text  # the intermediate mount has no URLs configured
    itext = openssl("x509", "-in", intf, "-noout", "-text")
    assert "CA:TRUE" in itext and "Certificate Sign, CRL Sign" in itext and f"OCSP - URI:{base}/{path}/ocsp" in itext
    cert = x509.load_pem_x509_certificate(leaf["certificate"].encode())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(hours=24) <= lifetime <= datetime.timedelta(hours=24, seconds=31)
    assert leaf["expiration"] == int(cert.not_valid_after_utc.timestamp())

    # Fetch endpoints: PEM and DER of the default issuer, the chain, stored certificates.
    assert p.read_ca_certificate(mount_point=ipath).strip() == signed["certificate"].strip()
    chain = p.read_ca_certificate_chain(mount_point=ipath)
    assert signed["certificate"].strip() in chain and root["certificate"].strip() in chain
    der = api_call(dev_server, "GET", f"{ipath}/ca", token=None)
    assert der.status_code == 200 and der.headers["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.content).subject.rfc4514_string() == "CN=Coffer Test Intermediate"
    assert leaf["serial_number"] in p.list_certificates(mount_point=ipath)["data"]["keys"]
    got = p.read_certificate(leaf["serial_number"], mount_point=ipath)["data"]
    assert got["certificate"] == leaf["certificate"] and got["revocation_time"] == 0
    hyphen = leaf["serial_number"].replace(":", "-").upper()
    assert api_call(dev_server, "GET", f"{ipath}/cert/{hyphen}", token=None).json()["data"]["certificate"] == leaf["certificate"]
    raw = api_call(dev_server, "GET", f"{ipath}/cert/{leaf['serial_number']}/raw", token=None)
    assert x509.load_der_x509_certificate(raw.content).serial_number == cert.serial_number

    # format=der and pem_bundle.
    d = p.generate_certificate("web", "der.example.com", extra_params={"format": "der", "private_key_format": "pkcs8"}, mount_point=ipath)["data"]
    x509.load_der_x509_certificate(base64.b64decode(d["certificate"]))
    serialization.load_der_private_key(base64.b64decode(d["private_key"]), password=None)
    b = p.generate_certificate("web", "bundle.example.com", extra_params={"format": "pem_bundle"}, mount_point=ipath)["data"]["certificate"]
    assert b.count("BEGIN CERTIFICATE") == 3 and "BEGIN EC PRIVATE KEY" in b


def test_roles_refuse_names_and_csr_sans(root_client, dev_server, pki, tmp_path):
    p, path, root = pki
    p.create_or_update_role("strict", extra_params={"allowed_domains": ["example.com"], "allow_subdomains": True, "key_type": "ec",
                                                    "allow_ip_sans": False, "ttl": "1h", "max_ttl": "48h"}, mount_point=path)
    for cn, why in [("a.evil.com", "common name a.evil.com not allowed by this role"),
                    ("example.com", "common name example.com not allowed by this role"),
                    ("a.example.com.evil.com", "not allowed by this role")]:
        with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
            p.generate_certificate("strict", cn, mount_point=path)
        assert why in errors(ex), cn
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        p.generate_certificate("strict", "ok.example.com", extra_params={"alt_names": "x.other.org"}, mount_point=path)
    assert "subject alternate name x.other.org not allowed by this role" in errors(ex)
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        p.generate_certificate("strict", "ok.example.com", extra_params={"ip_sans": "10.0.0.1"}, mount_point=path)
    assert "IP Subject Alternative Names are not allowed in this role" in errors(ex)
    assert p.generate_certificate("strict", "*.example.com", mount_point=path)["data"]["certificate"]
    assert p.generate_certificate("strict", "deep.sub.example.com", mount_point=path)["data"]["certificate"]

    p.create_or_update_role("bare-glob", extra_params={"allowed_domains": ["example.com", "*.svc.cluster.local"], "allow_bare_domains": True,
                                                       "allow_glob_domains": True, "allow_localhost": False, "key_type": "ec"}, mount_point=path)
    assert p.generate_certificate("bare-glob", "example.com", mount_point=path)["data"]["certificate"]
    assert p.generate_certificate("bare-glob", "api.ns.svc.cluster.local", mount_point=path)["data"]["certificate"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        p.generate_certificate("bare-glob", "localhost", mount_point=path)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        p.generate_certificate("bare-glob", "sub.example.com", mount_point=path)

    # CSRs: a disallowed SAN is refused; an allowed one is signed with the CSR's key.
    bad, _ = make_csr("ok.example.com", ["ok.example.com", "evil.org"])
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        p.sign_certificate("strict", bad, "ok.example.com", mount_point=path)
    assert "evil.org not allowed by this role" in errors(ex)
    good, key = make_csr("svc.example.com", ["svc.example.com", "alt.example.com"])
    s = p.sign_certificate("strict", good, "ignored.example.com", mount_point=path)
    assert "use_csr_common_name" in " ".join(s["warnings"] or [])
    c = x509.load_pem_x509_certificate(s["data"]["certificate"].encode())
    assert c.public_key().public_numbers() == key.public_key().public_numbers() and "private_key" not in s["data"]
    assert c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["svc.example.com", "alt.example.com"]
    rsa_csr, _ = make_csr("svc.example.com", key=rsa.generate_private_key(65537, 2048))
    with pytest.raises(hvac.exceptions.InvalidRequest) as ex:
        p.sign_certificate("strict", rsa_csr, "svc.example.com", mount_point=path)
    assert "role requires keys of type ec" in errors(ex)
    # sign-verbatim takes the CSR as it is, whatever the names.
    v = p.sign_verbatim(bad, name="strict", mount_point=path)["data"]["certificate"]
    assert "DNS:evil.org" in openssl("x509", "-noout", "-text", stdin=v.encode())
    # Garbage in: a clear 400 each, never a 500.
    for body in [{"csr": "not a csr"}, {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}]:
        r = api_call(dev_server, "POST", f"{path}/sign/strict", body=body)
        assert r.status_code == 400 and r.json()["errors"], r.text
    r = api_call(dev_server, "POST", f"{path}/issue/nope", body={"common_name": "a.example.com"})
    assert r.status_code == 400 and r.json()["errors"] == ["unknown role: nope"]
    r = api_call(dev_server, "POST", f"{path}/issue/strict", body={"common_name": "a.example.com", "ttl": "100h"})
    assert r.status_code == 200 and "maxTTL" in " ".join(r.json()["warnings"] or [])  # capped at the role's max, with Vault's warning
    c = x509.load_pem_x509_certificate(r.json()["data"]["certificate"].encode())
    assert c.not_valid_after_utc - c.not_valid_before_utc <= datetime.timedelta(hours=48, seconds=31)
    r = api_call(dev_server, "POST", f"{path}/roles/rsa-small", body={"key_type": "rsa", "key_bits": 1024})
    assert r.status_code == 400 and "RSA keys < 2048 bits are unsafe" in r.json()["errors"][0]


def ocsp_status(tmp: Path, url: str, issuer_pem: str, cert_pem: str) -> str:
    i, c = write(tmp, "ocsp-issuer.pem", issuer_pem), write(tmp, "ocsp-cert.pem", cert_pem)
    return openssl("ocsp", "-issuer", i, "-cert", c, "-url", url, "-VAfile", i)


def test_revocation_crl_and_ocsp_with_openssl(root_client, dev_server, pki, tmp_path):
    p, path, root = pki
    p.create_or_update_role("r", extra_params={"allow_any_name": True, "key_type": "ec", "ttl": "1h"}, mount_point=path)
    leaf = p.generate_certificate("r", "one.example.com", mount_point=path)["data"]
    other = p.generate_certificate("r", "two.example.com", mount_point=path)["data"]
    url = f"{dev_server.url}/v1/{path}/ocsp"
    out = ocsp_status(tmp_path, url, root["certificate"], leaf["certificate"])
    assert "Response verify OK" in out and ": good" in out, out

    rev = p.revoke_certificate(leaf["serial_number"], mount_point=path)["data"]
    assert rev["state"] == "revoked" and rev["revocation_time"] > 0
    crl_pem = p.read_crl(mount_point=path)
    crlf, rootf = write(tmp_path, "crl.pem", crl_pem), write(tmp_path, "root.pem", root["certificate"])
    text = openssl("crl", "-in", crlf, "-noout", "-text")
    assert leaf["serial_number"].replace(":", "").upper() in text and other["serial_number"].replace(":", "").upper() not in text
    assert "verify OK" in openssl("crl", "-in", crlf, "-CAfile", rootf, "-noout")
    der = api_call(dev_server, "GET", f"{path}/crl", token=None)
    assert der.headers["Content-Type"] == "application/pkix-crl"
    assert x509.load_der_x509_crl(der.content).get_revoked_certificate_by_serial_number(int(leaf["serial_number"].replace(":", ""), 16))

    out = ocsp_status(tmp_path, url, root["certificate"], leaf["certificate"])
    assert "Response verify OK" in out and ": revoked" in out, out
    assert ": good" in ocsp_status(tmp_path, url, root["certificate"], other["certificate"])
    # The GET form (base64 request in the path) answers the same.
    req = tmp_path / "req.der"
    i, c = write(tmp_path, "i.pem", root["certificate"]), write(tmp_path, "c.pem", leaf["certificate"])
    openssl("ocsp", "-issuer", i, "-cert", c, "-no_nonce", "-reqout", str(req))
    r = api_call(dev_server, "GET", f"{path}/ocsp/" + urllib.parse.quote(base64.b64encode(req.read_bytes()).decode(), safe=""), token=None)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/ocsp-response"
    (tmp_path / "resp.der").write_bytes(r.content)
    assert "Cert Status: revoked" in openssl("ocsp", "-respin", str(tmp_path / "resp.der"), "-VAfile", i, "-resp_text")
    bad = api_call(dev_server, "GET", f"{path}/ocsp/bm90LWFuLW9jc3AtcmVxdWVzdA==", token=None)
    assert bad.status_code == 400 and bad.content == bytes([0x30, 0x03, 0x0A, 0x01, 0x01])  # malformedRequest

    got = p.read_certificate(leaf["serial_number"], mount_point=path)["data"]
    assert got["revocation_time"] == rev["revocation_time"] and got["revocation_time_rfc3339"]
    assert leaf["serial_number"] in api_call(dev_server, "LIST", f"{path}/certs/revoked").json()["data"]["keys"]
    again = p.revoke_certificate(leaf["serial_number"], mount_point=path)["data"]
    assert again["revocation_time"] == rev["revocation_time"]
    r = api_call(dev_server, "POST", f"{path}/revoke", body={"serial_number": "11-22-AB"})
    assert r.status_code == 400 and "certificate with serial" in r.json()["errors"][0] and "not found" in r.json()["errors"][0]
    r = api_call(dev_server, "POST", f"{path}/revoke", body={"serial_number": root["serial_number"]})
    assert r.status_code == 400 and "to its own CRL is not allowed" in r.json()["errors"][0]
    # revoke-with-key needs the certificate's own key.
    wrong = ec.generate_private_key(ec.SECP256R1()).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    r = api_call(dev_server, "POST", f"{path}/revoke-with-key", body={"serial_number": other["serial_number"], "private_key": wrong})
    assert r.status_code == (500 if PEER_BAO else 400) and "does not match" in r.json()["errors"][0]
    r = api_call(dev_server, "POST", f"{path}/revoke-with-key", body={"certificate": other["certificate"], "private_key": other["private_key"]})
    assert r.status_code == 200 and r.json()["data"]["state"] == "revoked"

    # CRL config, rotation, tidy.
    p.set_crl_configuration(expiry="48h", disable=False, mount_point=path)
    assert p.read_crl_configuration(mount_point=path)["data"]["expiry"] == "48h"
    assert api_call(dev_server, "GET", f"{path}/crl/rotate").json()["data"]["success"] is True
    text = openssl("crl", "-in", write(tmp_path, "crl2.pem", p.read_crl(mount_point=path)), "-noout", "-text")
    assert other["serial_number"].replace(":", "").upper() in text
    r = api_call(dev_server, "POST", f"{path}/config/crl", body={"enable_delta": True})
    assert r.status_code == 400 and "Delta CRLs cannot be enabled when auto rebuilding is disabled" in r.json()["errors"][0]
    r = api_call(dev_server, "POST", f"{path}/tidy", body={"tidy_cert_store": True, "tidy_revoked_certs": True})
    assert r.status_code in (200, 202) and "Tidy operation successfully started" in r.json()["warnings"][0]
    import time
    for _ in range(50):
        st = api_call(dev_server, "GET", f"{path}/tidy-status").json()["data"]
        if st["state"] == "Finished":
            break
        time.sleep(0.1)
    assert st["state"] == "Finished" and st["cert_store_deleted_count"] == 0 and st["tidy_cert_store"] is True
    assert leaf["serial_number"] in p.list_certificates(mount_point=path)["data"]["keys"]  # not expired: kept
    a = api_call(dev_server, "POST", f"{path}/config/auto-tidy", body={"enabled": True, "tidy_cert_store": True, "interval_duration": "1h"})
    assert a.status_code == 200 and a.json()["data"]["interval_duration"] == 3600
    assert api_call(dev_server, "POST", f"{path}/config/auto-tidy", body={"enabled": True, "tidy_cert_store": False}).status_code == 400


def tls_handshake(cert_pem: str, key_pem: str, chain: list[str], trust_pem: str, tmp: Path, hostname: str) -> str:
    """Serves one TLS handshake with the certificate; the client trusts only `trust_pem`.
    Answers "ok" or the client's verification error."""
    certf = write(tmp, "srv.pem", "\n".join([cert_pem] + chain))
    keyf = write(tmp, "srv.key", key_pem)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certf, keyf)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def serve():
        try:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(b"hello")
        except Exception:
            pass
        finally:
            lsock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cctx = ssl.create_default_context(cafile=write(tmp, "trust.pem", trust_pem))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, cctx.wrap_socket(raw, server_hostname=hostname) as s:
            assert s.recv(5) == b"hello"
        return "ok"
    except ssl.SSLCertVerificationError as e:
        return f"refused: {e.verify_message}"
    finally:
        t.join(5)


def test_tls_client_trusts_root_then_refuses_after_root_replaced(dev_server, pki, tmp_path):
    p, path, root = pki
    p.create_or_update_role("tls", extra_params={"allowed_domains": ["localhost"], "allow_bare_domains": True, "key_type": "ec", "ttl": "1h"}, mount_point=path)
    leaf = p.generate_certificate("tls", "localhost", mount_point=path)["data"]
    assert tls_handshake(leaf["certificate"], leaf["private_key"], [], root["certificate"], tmp_path, "localhost") == "ok"

    new_root = api_call(dev_server, "POST", f"{path}/root/rotate/internal", body={"common_name": "Coffer Test Root 2", "key_type": "ec", "ttl": "8760h"}).json()["data"]
    assert new_root["issuer_name"] == "next" and new_root["issuer_id"] != root["issuer_id"]
    # Still the old default until it is replaced.
    assert api_call(dev_server, "GET", f"{path}/config/issuers").json()["data"]["default"] == root["issuer_id"]
    r = api_call(dev_server, "POST", f"{path}/root/replace", body={"default": "next"})
    assert r.status_code == 200 and r.json()["data"]["default"] == new_root["issuer_id"]
    leaf2 = p.generate_certificate("tls", "localhost", mount_point=path)["data"]
    assert leaf2["issuing_ca"] == new_root["certificate"]
    out = tls_handshake(leaf2["certificate"], leaf2["private_key"], [], root["certificate"], tmp_path, "localhost")
    assert out.startswith("refused"), out
    assert tls_handshake(leaf2["certificate"], leaf2["private_key"], [], new_root["certificate"], tmp_path, "localhost") == "ok"
    # The old issuer still signs when named.
    old = api_call(dev_server, "POST", f"{path}/issuer/root-1/issue/tls", body={"common_name": "localhost"}).json()["data"]
    assert tls_handshake(old["certificate"], old["private_key"], [], root["certificate"], tmp_path, "localhost") == "ok"


def test_issuers_keys_imports_and_lifecycle(root_client, dev_server, pki, tmp_path):
    p, path, root = pki
    issuers = p.list_issuers(mount_point=path)["data"]
    assert issuers["keys"] == [root["issuer_id"]] and issuers["key_info"][root["issuer_id"]]["is_default"] is True
    got = p.read_issuer(root["issuer_id"], mount_point=path)["data"]
    assert got["issuer_name"] == "root-1" and got["key_id"] == root["key_id"] and got["ca_chain"] == [got["certificate"]]
    assert got["usage"] == "crl-signing,issuing-certificates,ocsp-signing,read-only" and got["revoked"] is False
    assert p.read_issuer("default", mount_point=path)["data"]["issuer_id"] == root["issuer_id"]
    assert p.read_issuer("root-1", mount_point=path)["data"]["issuer_id"] == root["issuer_id"]
    p.update_issuer(root["issuer_id"], extra_params={"issuer_name": "renamed", "leaf_not_after_behavior": "truncate"}, mount_point=path)
    got = p.read_issuer("renamed", mount_point=path)["data"]
    assert got["leaf_not_after_behavior"] == "truncate"
    r = api_call(dev_server, "POST", f"{path}/issuer/renamed", body={"usage": "bogus"})
    assert r.status_code == 400 and "Unable to parse specified usages" in r.json()["errors"][0]
    r = api_call(dev_server, "GET", f"{path}/issuer/no-such-issuer")
    # OpenBao answers 500 here; Coffer keeps bad input a 4xx (its route fuzz suite refuses any 5xx).
    assert r.status_code == (500 if PEER_BAO else 400) and "unable to find PKI issuer for reference: no-such-issuer" in r.json()["errors"][0]
    assert api_call(dev_server, "GET", f"{path}/issuer/renamed/json", token=None).json()["data"]["issuer_id"] == root["issuer_id"]
    pem = api_call(dev_server, "GET", f"{path}/issuer/renamed/pem", token=None)
    assert pem.text.strip() == root["certificate"].strip()
    # Keys.
    keys = api_call(dev_server, "LIST", f"{path}/keys").json()["data"]
    assert keys["keys"] == [root["key_id"]] and keys["key_info"][root["key_id"]]["is_default"]
    k = api_call(dev_server, "GET", f"{path}/key/{root['key_id']}").json()["data"]
    assert k["key_type"] == "ec" and len(k["subject_key_id"].split(":")) == 20
    gen = api_call(dev_server, "POST", f"{path}/keys/generate/exported", body={"key_type": "ed25519", "key_name": "edkey"}).json()["data"]
    assert gen["key_type"] == "ed25519" and "BEGIN PRIVATE KEY" in gen["private_key"]
    r = api_call(dev_server, "DELETE", f"{path}/key/{root['key_id']}")
    assert r.status_code == 400 and "Key in Use by Issuer" in r.json()["errors"][0]
    assert api_call(dev_server, "DELETE", f"{path}/key/edkey").status_code == 204
    # A root from an existing key.
    ex = api_call(dev_server, "POST", f"{path}/root/generate/existing", body={"common_name": "Same Key Root", "key_ref": root["key_id"]}).json()["data"]
    assert ex["key_id"] == root["key_id"] and ex["issuer_id"] != root["issuer_id"]

    # Import an exported root (key and certificate) into another mount.
    other = unique("pki-imp")
    root_client.sys.enable_secrets_engine("pki", path=other)
    exp = p.generate_root("exported", "Exported Root", extra_params={"key_type": "rsa"}, mount_point=other)["data"]
    assert "BEGIN RSA PRIVATE KEY" in exp["private_key"] and exp["private_key_type"] == "rsa"
    third = unique("pki-imp2")
    root_client.sys.enable_secrets_engine("pki", path=third)
    assert p.submit_ca_information(exp["private_key"] + "\n" + exp["certificate"], mount_point=third)
    p.create_or_update_role("any", extra_params={"allow_any_name": True, "ttl": "1h"}, mount_point=third)
    leaf = p.generate_certificate("any", "imported.example.com", mount_point=third)["data"]
    assert leaf["private_key_type"] == "rsa" and "BEGIN RSA PRIVATE KEY" in leaf["private_key"]
    rootf, leaff = write(tmp_path, "r.pem", exp["certificate"]), write(tmp_path, "l.pem", leaf["certificate"])
    assert f"{leaff}: OK" in openssl("verify", "-CAfile", rootf, leaff)
    again = api_call(dev_server, "POST", f"{third}/issuers/import/bundle", body={"pem_bundle": exp["certificate"]}).json()["data"]
    assert again["imported_issuers"] is None and len(again["existing_issuers"]) == 1
    r = api_call(dev_server, "POST", f"{third}/issuers/import/cert", body={"pem_bundle": exp["private_key"] + "\n" + exp["certificate"]})
    assert r.status_code == 400 and "private keys found in the PEM bundle but not allowed by the path" in r.json()["errors"][0]
    r = api_call(dev_server, "POST", f"{third}/issuers/import/bundle", body={"pem_bundle": leaf["certificate"]})
    assert r.status_code == 400 and "Refusing to import non-CA certificate" in r.json()["errors"][0]
    # sign-self-issued: the other mount's root re-signed by this one.
    s = p.sign_self_issued(exp["certificate"], mount_point=path)["data"]
    text = openssl("x509", "-noout", "-text", stdin=s["certificate"].encode())
    assert "Issuer: CN = Coffer Test Root" in text and "Subject: CN = Exported Root" in text

    # Revoking an issuer takes its signing away; deleting it makes it unknown.
    rv = p.revoke_issuer(ex["issuer_id"], mount_point=path)["data"]
    assert rv["revoked"] is True and "issuing-certificates" not in rv["usage"]
    r = api_call(dev_server, "POST", f"{path}/issuer/{ex['issuer_id']}/issue/any", body={"common_name": "x"})
    assert r.status_code == 400
    p.delete_issuer(ex["issuer_id"], mount_point=path)
    with pytest.raises(hvac.exceptions.InternalServerError if PEER_BAO else hvac.exceptions.InvalidRequest):
        p.read_issuer(ex["issuer_id"], mount_point=path)
    # DELETE root removes every issuer and key.
    assert p.delete_root(mount_point=other)
    assert api_call(dev_server, "LIST", f"{other}/issuers", token=None).status_code == 404
    r = api_call(dev_server, "GET", f"{other}/ca", token=None)
    assert r.status_code == 204


def test_no_store_and_generate_lease(root_client, dev_server, pki, tmp_path):
    p, path, root = pki
    p.create_or_update_role("mesh", extra_params={"allow_any_name": True, "key_type": "ec", "no_store": True, "ttl": "10m"}, mount_point=path)
    mesh = p.generate_certificate("mesh", "svc-a.mesh.local", mount_point=path)["data"]
    assert mesh["serial_number"] not in p.list_certificates(mount_point=path)["data"]["keys"]
    assert api_call(dev_server, "GET", f"{path}/cert/{mesh['serial_number']}", token=None).status_code == 404

    p.create_or_update_role("leased", extra_params={"allow_any_name": True, "key_type": "ec", "generate_lease": True, "ttl": "1h"}, mount_point=path)
    r = api_call(dev_server, "POST", f"{path}/issue/leased", body={"common_name": "leased.example.com"}).json()
    assert r["lease_id"].startswith(f"{path}/issue/leased/") and 3500 <= r["lease_duration"] <= 3600 and r["renewable"] is False
    serial = r["data"]["serial_number"]
    url = f"{dev_server.url}/v1/{path}/ocsp"
    assert ": good" in ocsp_status(tmp_path, url, root["certificate"], r["data"]["certificate"])
    root_client.sys.revoke_lease(r["lease_id"])
    import time
    for _ in range(50):
        if api_call(dev_server, "GET", f"{path}/cert/{serial}", token=None).json()["data"]["revocation_time"] > 0:
            break
        time.sleep(0.1)
    assert ": revoked" in ocsp_status(tmp_path, url, root["certificate"], r["data"]["certificate"])
    text = openssl("crl", "-noout", "-text", stdin=p.read_crl(mount_point=path).encode())
    assert serial.replace(":", "").upper() in text


@pytest.mark.skipif(PEER_BAO, reason="Coffer's tenants")
def test_tenants_have_their_own_cas(dev_server, tmp_path):
    a, b = unique("pa").replace("-", "")[:12], unique("pb").replace("-", "")[:12]
    clients, roots = {}, {}
    for t in (a, b):
        assert api_call(dev_server, "POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=dev_server.url, token="root", namespace=t)
        c.sys.enable_secrets_engine("pki", path="pki")
        roots[t] = c.secrets.pki.generate_root("internal", f"Root of {t}", extra_params={"key_type": "ec"})["data"]
        c.secrets.pki.create_or_update_role("web", extra_params={"allow_any_name": True, "key_type": "ec"})
        clients[t] = c
    leaf = clients[a].secrets.pki.generate_certificate("web", "a.example.com")["data"]
    la, ra, rb = write(tmp_path, "la.pem", leaf["certificate"]), write(tmp_path, "ra.pem", roots[a]["certificate"]), write(tmp_path, "rb.pem", roots[b]["certificate"])
    assert f"{la}: OK" in openssl("verify", "-CAfile", ra, la)
    assert "OK" not in openssl("verify", "-CAfile", rb, la).split(":")[-1]
    # B sees only its own issuers and certificates.
    assert clients[b].secrets.pki.list_issuers()["data"]["keys"] == [roots[b]["issuer_id"]]
    r = api_call(dev_server, "GET", f"pki/issuer/{roots[a]['issuer_id']}", ns=b)
    assert r.status_code == 400
    assert api_call(dev_server, "GET", f"pki/cert/{leaf['serial_number']}", ns=b, token=None).status_code == 404
    assert leaf["serial_number"] not in clients[b].secrets.pki.list_certificates()["data"]["keys"]
    # B's OCSP does not vouch for A's certificate: A's issuer is unknown there.
    out = ocsp_status(tmp_path, f"{dev_server.url}/v1/{b}/pki/ocsp", roots[a]["certificate"], leaf["certificate"])
    assert ": good" not in out


@pytest.mark.skipif(PEER_BAO, reason="Coffer's usage metering")
def test_certificates_issued_are_metered():
    """#20 item 4: each certificate issued or signed counts as a `certificate` request of the
    tenant in sys/usage, a billing unit of its own."""
    import time

    from test_usage import FLUSH, Node, row_for, usage
    node = Node()
    try:
        t = unique("pm").replace("-", "")[:12]
        assert node.call("POST", f"sys/namespaces/{t}").status_code == 200
        c = hvac.Client(url=node.srv.url, token=node.root, namespace=t)
        c.sys.enable_secrets_engine("pki", path="pki")
        c.secrets.pki.generate_root("internal", "Metered Root", extra_params={"key_type": "ec"})
        c.secrets.pki.create_or_update_role("web", extra_params={"allow_any_name": True, "key_type": "ec"})
        for i in range(3):
            c.secrets.pki.generate_certificate("web", f"m{i}.example.com")
        csr, _ = make_csr("signed.example.com")
        c.secrets.pki.sign_certificate("web", csr, "signed.example.com")
        time.sleep(FLUSH * 2.5)
        row = row_for(usage(node, namespace=t, granularity="hour"), f"{t}/")
        assert row["requests"]["certificate"] == 4, row
    finally:
        node.srv.dispose()


def test_aia_templates_from_the_cluster_path(dev_server, pki):
    p, path, root = pki
    base = f"{dev_server.url}/v1/{path}"
    r = api_call(dev_server, "POST", f"{path}/config/cluster", body={"path": base, "aia_path": base})
    assert r.status_code == 200 and r.json()["data"]["path"] == base
    assert api_call(dev_server, "POST", f"{path}/config/cluster", body={"path": "not a url"}).status_code == 400
    r = api_call(dev_server, "POST", f"{path}/config/urls", body={
        "enable_templating": True, "issuing_certificates": ["{{cluster_aia_path}}/issuer/{{issuer_id}}/der"],
        "crl_distribution_points": ["{{cluster_aia_path}}/issuer/{{issuer_id}}/crl/der"], "ocsp_servers": ["{{cluster_path}}/ocsp"]})
    assert r.status_code == 200 and r.json()["data"]["enable_templating"] is True
    assert api_call(dev_server, "POST", f"{path}/config/urls", body={"enable_templating": False, "ocsp_servers": ["{{cluster_path}}/ocsp"]}).status_code == 400
    p.create_or_update_role("t", extra_params={"allow_any_name": True, "key_type": "ec", "ttl": "1h"}, mount_point=path)
    leaf = p.generate_certificate("t", "aia.example.com", mount_point=path)["data"]
    text = openssl("x509", "-noout", "-text", stdin=leaf["certificate"].encode())
    assert f"CA Issuers - URI:{base}/issuer/{root['issuer_id']}/der" in text and f"OCSP - URI:{base}/ocsp" in text
    assert f"URI:{base}/issuer/{root['issuer_id']}/crl/der" in text
    # The templated URL really serves the issuer (unauthenticated, DER).
    der = api_call(dev_server, "GET", f"{path}/issuer/{root['issuer_id']}/der", token=None)
    assert x509.load_der_x509_certificate(der.content).subject.rfc4514_string() == "CN=Coffer Test Root"


def test_auto_rebuild_with_delta_crls(dev_server, pki, tmp_path):
    """With auto_rebuild the complete CRL waits for its rebuild; a revocation shows at once on
    the delta CRL (which carries the delta indicator naming the complete CRL's number)."""
    p, path, root = pki
    r = api_call(dev_server, "POST", f"{path}/config/crl", body={"auto_rebuild": True, "enable_delta": True, "delta_rebuild_interval": "1m"})
    assert r.status_code == 200 and r.json()["data"]["enable_delta"] is True
    p.create_or_update_role("d", extra_params={"allow_any_name": True, "key_type": "ec", "ttl": "1h"}, mount_point=path)
    leaf = p.generate_certificate("d", "delta.example.com", mount_point=path)["data"]
    p.revoke_certificate(leaf["serial_number"], mount_point=path)
    hexserial = leaf["serial_number"].replace(":", "").upper()
    full = openssl("crl", "-noout", "-text", stdin=p.read_crl(mount_point=path).encode())
    delta_pem = api_call(dev_server, "GET", f"{path}/crl/delta/pem", token=None).text
    delta = openssl("crl", "-noout", "-text", stdin=delta_pem.encode())
    assert hexserial not in full and hexserial in delta, (full, delta)
    assert "Delta CRL Indicator" in delta
    rootf = write(tmp_path, "root.pem", root["certificate"])
    assert "verify OK" in openssl("crl", "-CAfile", rootf, "-noout", stdin=delta_pem.encode())
    # A forced rebuild puts it on the complete CRL.
    assert api_call(dev_server, "GET", f"{path}/crl/rotate").json()["data"]["success"] is True
    assert hexserial in openssl("crl", "-noout", "-text", stdin=p.read_crl(mount_point=path).encode())
