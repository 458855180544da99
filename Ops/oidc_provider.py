#!/usr/bin/env python3
"""A small, real OpenID Connect provider for Coffer's acceptance tests (JWT/OIDC auth).

Started by Ops/oidc-provider; not for production.  It serves two listeners on loopback,
plain HTTP and HTTPS, and each is its own issuer (exactly its base URL, no trailing slash).
Keys, clients, users, codes and access tokens are shared between them.

  GET  /.well-known/openid-configuration   discovery
  GET  /.well-known/jwks.json              {"keys": [...]} (RS256 "rsa-1", ES256 "ec-1", ...)
  GET  /authorize                          auto-approves user `login_hint` (no UI);
                                           code or implicit id_token; query or form_post
  POST /token                              authorization_code (+PKCE S256/plain);
                                           client_secret_basic or client_secret_post
  GET|POST /userinfo                       Authorization: Bearer <access_token>
Admin (JSON, no auth):
  POST /admin/clients  {client_id, client_secret, redirect_uris, id_token_signed_response_alg?}
                       (client_secret null = public client, no client auth at /token)
  POST /admin/users    {username, claims}            (sub defaults to the username)
  POST /admin/mint     {claims, alg?, kid?, key?, expires_in?, issuer?, headers?, secret?}
                       alg RS256 (default) | ES256 | HS256 (with "secret") | none;
                       key = kid of the signing key (default: newest of that alg);
                       kid = header kid override (null: no kid header); expires_in null: no exp
  POST /admin/rotate   {alg?: RS256|ES256, drop_old?} -> {"kid"}; the new key signs by default,
                       drop_old removes the older keys of that alg from the JWKS
  GET  /admin/requests                       {path: count} of requests so far
  DELETE /admin/requests                     reset those counts
Usage: oidc_provider.py --port P [--tls-port Q --cert server.pem --key server-key.pem]
"""
import argparse, base64, hashlib, html, json, secrets, signal, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HOST = "127.0.0.1"
CODE_TTL, TOKEN_TTL = 60, 300
lock = threading.Lock()
keys = {}  # kid -> {"alg", "key"} in creation order
clients, users, codes, access_tokens, request_counts = {}, {}, {}, {}, {}
serial = {"RS256": 0, "ES256": 0}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def add_key(alg):
    serial[alg] += 1
    kid = ("rsa-%d" if alg == "RS256" else "ec-%d") % serial[alg]
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg == "RS256"
           else ec.generate_private_key(ec.SECP256R1()))
    keys[kid] = {"alg": alg, "key": key}
    return kid


def default_kid(alg):
    kids = [kid for kid, k in keys.items() if k["alg"] == alg]
    return kids[-1] if kids else None


def jwk(kid, k):
    pub = k["key"].public_key().public_numbers()
    if k["alg"] == "RS256":
        n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
        e = pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64url(n), "e": b64url(e)}
    return {"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": b64url(pub.x.to_bytes(32, "big")), "y": b64url(pub.y.to_bytes(32, "big"))}


def sign(claims, alg="RS256", key_kid=None, header_kid=..., headers=None, secret=None):
    """Signs claims; header kid defaults to the signing key's kid (None: no kid header)."""
    if alg == "none":
        key, kid = None, None
    elif alg == "HS256":
        key, kid = (secret or "").encode(), None
    else:
        kid = key_kid or default_kid(alg)
        if kid not in keys or keys[kid]["alg"] != alg:
            raise ValueError("no %s key %r" % (alg, kid))
        key = keys[kid]["key"]
    header = {} if header_kid is None else {"kid": kid if header_kid is ... else header_kid}
    header = {k: v for k, v in header.items() if v is not None}
    header.update(headers or {})
    # PyJWS on raw JSON, not jwt.encode: tests may mint claims that PyJWT would refuse to encode
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jwt.api_jws.encode(payload, key, algorithm=alg, headers=header or None)


def user_claims(username):
    return {"sub": username, **users[username]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    issuer = None  # set per listener

    def log_message(self, fmt, *args):
        sys.stderr.write("[%s] %s %s\n" % (self.issuer, self.address_string(), fmt % args))

    def send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def json_body(self):
        raw = self.read_body()
        return json.loads(raw) if raw.strip() else {}

    def form_body(self):
        return {k: v[0] for k, v in parse_qs(self.read_body().decode(), keep_blank_values=True).items()}

    def dispatch(self):
        url = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with lock:
            request_counts[url.path] = request_counts.get(url.path, 0) + 1
        route = ROUTES.get((self.command, url.path))
        if route is None:
            known = any(p == url.path for _, p in ROUTES)
            return self.send(405 if known else 404, {"error": "method not allowed" if known else "not found"})
        try:
            route(self)
        except (ValueError, KeyError, TypeError, AttributeError, jwt.PyJWTError) as e:  # bad input
            self.send(400, {"error": "invalid_request", "error_description": repr(e)})
        except Exception as e:
            self.log_error("internal error: %r", e)
            self.send(500, {"error": "server_error", "error_description": repr(e)})

    do_GET = do_POST = do_DELETE = dispatch

    # ---- discovery ----
    def discovery(self):
        i = self.issuer
        self.send(200, {
            "issuer": i, "authorization_endpoint": i + "/authorize", "token_endpoint": i + "/token",
            "userinfo_endpoint": i + "/userinfo", "jwks_uri": i + "/.well-known/jwks.json",
            "response_types_supported": ["code", "id_token"],
            "response_modes_supported": ["query", "form_post"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "grant_types_supported": ["authorization_code"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]})

    def jwks(self):
        with lock:
            body = {"keys": [jwk(kid, k) for kid, k in keys.items()]}
        self.send(200, body)

    # ---- admin ----
    def admin_clients(self):
        b = self.json_body()
        uris = b["redirect_uris"]
        if not isinstance(uris, list):
            raise ValueError("redirect_uris must be a list")
        with lock:
            clients[b["client_id"]] = {"secret": b.get("client_secret"), "redirect_uris": uris,
                                       "alg": b.get("id_token_signed_response_alg", "RS256")}
        self.send(200, {"client_id": b["client_id"]})

    def admin_users(self):
        b = self.json_body()
        claims = b.get("claims") or {}
        if not isinstance(claims, dict):
            raise ValueError("claims must be an object")
        with lock:
            users[b["username"]] = claims
        self.send(200, {"username": b["username"]})

    def admin_mint(self):
        b = self.json_body()
        now = int(time.time())
        claims = {"iss": b.get("issuer") or self.issuer, "iat": now}
        if b.get("expires_in", TOKEN_TTL) is not None:
            claims["exp"] = now + int(b.get("expires_in", TOKEN_TTL))
        claims.update(b.get("claims") or {})
        with lock:
            token = sign(claims, b.get("alg", "RS256"), b.get("key"), b.get("kid", ...),
                         b.get("headers"), b.get("secret"))
        self.send(200, {"token": token})

    def admin_rotate(self):
        b = self.json_body()
        alg = b.get("alg", "RS256")
        if alg not in serial:
            raise ValueError("alg must be RS256 or ES256")
        with lock:
            kid = add_key(alg)
            if b.get("drop_old"):
                for old in [k for k, v in keys.items() if v["alg"] == alg and k != kid]:
                    del keys[old]
        self.send(200, {"kid": kid})

    def admin_requests(self):
        with lock:
            counts = dict(request_counts)
        self.send(200, counts)

    def admin_requests_reset(self):
        with lock:
            request_counts.clear()
        self.send(200, {})

    # ---- authorization endpoint ----
    def respond_to_client(self, redirect_uri, mode, params):
        params = {k: v for k, v in params.items() if v is not None}
        if mode == "form_post":
            inputs = "".join('<input type="hidden" name="%s" value="%s"/>' % (html.escape(k), html.escape(v))
                             for k, v in params.items())
            page = ('<!DOCTYPE html><html><head><title>Submit</title></head>'
                    '<body onload="document.forms[0].submit()"><form method="post" action="%s">%s'
                    '<noscript><button type="submit">Continue</button></noscript></form></body></html>'
                    % (html.escape(redirect_uri), inputs))
            return self.send(200, page, "text/html; charset=utf-8")
        sep = "&" if "?" in redirect_uri else "?"
        self.send(302, headers=[("Location", redirect_uri + sep + urlencode(params))])

    def authorize(self):
        q = self.query
        client = clients.get(q.get("client_id", ""))
        if client is None:
            return self.send(400, "unknown client_id\n", "text/plain")
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in client["redirect_uris"]:
            return self.send(400, "redirect_uri is not registered for this client\n", "text/plain")
        state, nonce, mode = q.get("state"), q.get("nonce"), q.get("response_mode", "query")
        if mode not in ("query", "form_post"):
            return self.respond_to_client(redirect_uri, "query", {"error": "invalid_request", "state": state,
                                                                  "error_description": "bad response_mode"})
        types = set(q.get("response_type", "").split())

        def error(code, desc):
            self.respond_to_client(redirect_uri, mode, {"error": code, "error_description": desc, "state": state})

        if types not in ({"code"}, {"id_token"}, {"code", "id_token"}):
            return error("unsupported_response_type", "response_type must be code or id_token")
        if "openid" not in q.get("scope", "").split():
            return error("invalid_scope", "scope must contain openid")
        method = q.get("code_challenge_method", "plain")
        if method not in ("S256", "plain"):
            return error("invalid_request", "code_challenge_method must be S256 or plain")
        if "id_token" in types and not nonce:
            return error("invalid_request", "nonce is required for the implicit/hybrid flow")
        username = q.get("login_hint", "")
        if username not in users:
            return error("access_denied", "unknown user")
        auth_time = int(time.time())
        out = {"state": state}
        with lock:
            if "code" in types:
                code = secrets.token_urlsafe(24)
                codes[code] = {"client_id": q["client_id"], "redirect_uri": redirect_uri, "nonce": nonce,
                               "user": username, "challenge": q.get("code_challenge"), "method": method,
                               "auth_time": auth_time, "expires": time.time() + CODE_TTL}
                out["code"] = code
            if "id_token" in types:
                out["id_token"] = self.id_token(q["client_id"], username, nonce, auth_time)
        self.respond_to_client(redirect_uri, mode, out)

    def id_token(self, client_id, username, nonce, auth_time):
        now = int(time.time())
        claims = {**user_claims(username), "iss": self.issuer, "aud": client_id,
                  "iat": now, "exp": now + TOKEN_TTL, "auth_time": auth_time}
        if nonce:
            claims["nonce"] = nonce
        return sign(claims, clients[client_id]["alg"])

    # ---- token endpoint ----
    def token(self):
        f = self.form_body()
        client_id, secret = f.get("client_id"), f.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                cid, secret = unquote_plus(cid), unquote_plus(secret)
            except ValueError:
                cid = None
            if cid is None or (client_id and client_id != cid):
                return self.send(401, {"error": "invalid_client"}, headers=[("WWW-Authenticate", "Basic")])
            client_id = cid
        client = clients.get(client_id or "")
        if client is None or (client["secret"] is not None and secret != client["secret"]):
            return self.send(401, {"error": "invalid_client"}, headers=[("WWW-Authenticate", "Basic")])
        if f.get("grant_type") != "authorization_code":
            return self.send(400, {"error": "unsupported_grant_type"})

        def bad(desc):
            self.send(400, {"error": "invalid_grant", "error_description": desc})

        with lock:
            entry = codes.pop(f.get("code", ""), None)  # single use: consumed by any attempt
        if entry is None:
            return bad("unknown or already used code")
        if entry["expires"] < time.time():
            return bad("code expired")
        if entry["client_id"] != client_id or entry["redirect_uri"] != f.get("redirect_uri"):
            return bad("code was issued to another client or redirect_uri")
        verifier = f.get("code_verifier")
        if entry["challenge"]:
            if not verifier:
                return bad("code_verifier required")
            got = b64url(hashlib.sha256(verifier.encode()).digest()) if entry["method"] == "S256" else verifier
            if not secrets.compare_digest(got, entry["challenge"]):
                return bad("PKCE verification failed")
        elif verifier:
            return bad("code_verifier given but no code_challenge was sent")
        access = secrets.token_urlsafe(32)
        with lock:
            access_tokens[access] = {"user": entry["user"], "expires": time.time() + TOKEN_TTL}
            id_token = self.id_token(client_id, entry["user"], entry["nonce"], entry["auth_time"])
        self.send(200, {"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_TTL,
                        "scope": "openid", "id_token": id_token})

    def userinfo(self):
        auth = self.headers.get("Authorization", "")
        self.read_body()
        with lock:
            t = access_tokens.get(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
            ok = t is not None and t["expires"] >= time.time() and t["user"] in users
            claims = user_claims(t["user"]) if ok else None
        if not ok:
            return self.send(401, {"error": "invalid_token"},
                             headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')])
        self.send(200, claims)


ROUTES = {
    ("GET", "/.well-known/openid-configuration"): Handler.discovery,
    ("GET", "/.well-known/jwks.json"): Handler.jwks,
    ("GET", "/authorize"): Handler.authorize,
    ("POST", "/token"): Handler.token,
    ("GET", "/userinfo"): Handler.userinfo,
    ("POST", "/userinfo"): Handler.userinfo,
    ("POST", "/admin/clients"): Handler.admin_clients,
    ("POST", "/admin/users"): Handler.admin_users,
    ("POST", "/admin/mint"): Handler.admin_mint,
    ("POST", "/admin/rotate"): Handler.admin_rotate,
    ("GET", "/admin/requests"): Handler.admin_requests,
    ("DELETE", "/admin/requests"): Handler.admin_requests_reset,
}


class TLSServer(ThreadingHTTPServer):
    """Does the TLS handshake in the per-connection thread, so one bad client can't stall accept."""
    def __init__(self, addr, handler, context):
        self.context = context
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLEOFError, ConnectionError):  # a port probe (wait_for_port) or a hang-up
            return
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write("TLS handshake from %s failed: %s\n" % (client_address[0], e))
            return
        super().finish_request(request, client_address)


def listener(port, tls=None):
    scheme = "https" if tls else "http"
    handler = type("Handler_%d" % port, (Handler,), {"issuer": "%s://%s:%d" % (scheme, HOST, port)})
    server = TLSServer((HOST, port), handler, tls) if tls else ThreadingHTTPServer((HOST, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stderr.write("issuer %s listening\n" % handler.issuer)
    return server


def main():
    p = argparse.ArgumentParser(description="test OpenID Connect provider")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-port", type=int)
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()
    # A parent that blocks signals (a Swift test) passes its mask on: unblock what we handle.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    add_key("RS256")
    add_key("ES256")
    servers = [listener(a.port)]
    if a.tls_port:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        servers.append(listener(a.tls_port, ctx))
    while not stop.wait(0.5):
        pass
    for s in servers:
        s.shutdown()
        s.server_close()
    sys.stderr.write("stopped\n")


if __name__ == "__main__":
    main()
