import Crypto
import CofferSDK
import Foundation
import JOSE
import Logging

/// The OIDC authorization-code flow: `oidc/auth_url` makes a pending login (state, nonce,
/// PKCE verifier) and the provider's authorization URL; the provider sends the browser to
/// `oidc/callback` with a code, which is exchanged at the token endpoint for an ID token.
///
/// Pending logins are stored behind the barrier under the state's hash, so any node of the
/// cluster finishes a flow another began, and each is used once: the callback deletes it
/// (a write, which an HA standby forwards to the active node) before anything else.
enum OIDCFlow {
    static let pendingPrefix = "oidc/pending/"
    static let lifetime = 600.0
    static let loginFailed = "OpenBao login failed."

    static func key(_ state: String) -> String {
        pendingPrefix + Hex.encode(Array(SHA256.hash(data: Array(state.utf8))))
    }

    static func random() -> String { Base64URL.encode(SecureRandom.bytes(32)) }

    /// Vault's rule: exact match, except that a loopback redirect may use any port.
    static func validRedirect(_ uri: String, allowed: [String]) -> Bool {
        guard let input = URLComponents(string: uri) else { return false }
        guard let host = input.host, ["localhost", "127.0.0.1", "::1", "[::1]"].contains(host) else { return allowed.contains(uri) }
        func portless(_ c: URLComponents) -> String {
            var c = c
            c.port = nil
            return c.string ?? ""
        }
        let want = portless(input)
        return allowed.contains { URLComponents(string: $0).map(portless) == want }
    }
}

extension JWTBackend {
    func authURL(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let empty = LogicalResponse(data: ["auth_url": ""])
        guard let c = try await config() else { throw CofferError.invalid("could not load configuration") }
        guard c.source == .oidcFlow else { throw CofferError.invalid("OIDC login is not configured for this mount") }
        let (name, r) = try await loginRole(req, c)
        var redirect = req.fields.string("redirect_uri")
        guard !redirect.isEmpty else { throw CofferError.invalid("missing redirect_uri") }
        var namespace = ""
        if c.namespaceInState, var u = URLComponents(string: redirect), let items = u.queryItems,
           let ns = items.first(where: { $0.name == "namespace" })?.value, !ns.isEmpty {
            namespace = ns
            let rest = items.filter { $0.name != "namespace" }
            u.queryItems = rest.isEmpty ? nil : rest
            redirect = u.string ?? redirect
        }
        // Vault answers an empty auth_url, not an error, for a redirect URI the role does not allow.
        guard OIDCFlow.validRedirect(redirect, allowed: r.allowedRedirectURIs) else {
            logger.warning("unauthorized redirect_uri", metadata: ["redirect_uri": "\(redirect.prefix(256))"])
            return empty
        }
        if c.oidcResponseMode == "form_post" { redirect = redirect.replacingOccurrences(of: "ui/vault", with: "v1") }
        let d: Discovery
        do {
            d = try await cache.discovery(c.oidcDiscoveryURL, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, now: clock.now())
        } catch {
            logger.warning("error getting provider for login operation", metadata: ["error": "\(error)"])
            return empty
        }
        let state = OIDCFlow.random(), nonce = OIDCFlow.random()
        let implicit = c.hasResponseType("id_token")
        let verifier = implicit ? "" : OIDCFlow.random()
        let pending = OIDCPending(role: name, redirectURI: redirect, nonce: nonce, codeVerifier: verifier,
                                  clientNonce: req.fields.string("client_nonce"), expiresAt: clock.now() + OIDCFlow.lifetime)
        try await storage.putCodable(OIDCFlow.key(state), pending)
        var q: [(String, String)] = [
            ("client_id", c.oidcClientID), ("nonce", nonce), ("redirect_uri", redirect),
            ("response_type", implicit ? "id_token" : "code"),
            ("scope", (["openid"] + r.oidcScopes.filter { $0 != "openid" }).joined(separator: " ")),
            ("state", namespace.isEmpty ? state : state + ",ns=" + namespace),
        ]
        if !verifier.isEmpty {
            q.append(("code_challenge", Base64URL.encode(Array(SHA256.hash(data: Array(verifier.utf8))))))
            q.append(("code_challenge_method", "S256"))
        }
        if c.oidcResponseMode == "form_post" { q.append(("response_mode", "form_post")) }
        if r.maxAge > 0 { q.append(("max_age", String(r.maxAge))) }
        let sep = d.authorizationEndpoint.contains("?") ? "&" : "?"
        return LogicalResponse(data: ["auth_url": .string(d.authorizationEndpoint + sep + HTTPSource.encodeForm(q))])
    }

    /// The state as the provider returns it (with `,ns=…` when the namespace rode along).
    static func stateID(_ raw: String) -> String {
        raw.range(of: ",ns=").map { String(raw[..<$0.lowerBound]) } ?? raw
    }

    /// `POST oidc/callback` (response_mode form_post): keeps what the provider posted with
    /// the pending login and sends the browser on to the GET that finishes it.
    func callbackFormPost(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let c = try await config() else { throw CofferError.invalid("\(OIDCFlow.loginFailed) Could not load configuration.") }
        guard c.oidcResponseMode == "form_post" else { throw CofferError(.unsupportedOperation, "unsupported operation") }
        let state = Self.stateID(req.fields.string("state"))
        let key = OIDCFlow.key(state)
        try await storage.withLock(key) {
            guard var p = try await storage.getCodable(OIDCPending.self, key), p.expiresAt > clock.now() else {
                throw CofferError.invalid("\(OIDCFlow.loginFailed) Expired or missing OAuth state.")
            }
            p.code = req.fields.string("code")
            p.idToken = req.fields.string("id_token")
            try await storage.putCodable(key, p)
        }
        // The state as the provider posted it: with `,ns=` it takes the namespace along.
        let next = "/v1/auth/\(mountPath)oidc/callback?" + HTTPSource.encodeForm([("state", req.fields.string("state")), ("code", "no_code")])
        let html = "<!DOCTYPE html><html><head><meta http-equiv=\"refresh\" content=\"0;url=\(next)\"></head><body><a href=\"\(next)\">Continue</a></body></html>"
        return LogicalResponse(form: .text(contentType: "text/html", body: html))
    }

    /// `GET oidc/callback`: finishes a pending login once.
    func callback(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        guard let c = try await config() else { throw CofferError.invalid("\(OIDCFlow.loginFailed) Could not load configuration") }
        let state = Self.stateID(f.string("state"))
        let key = OIDCFlow.key(state)
        // Taken out of storage before anything else: a state is good for one try.
        let pending = try await storage.withLock(key) { () -> OIDCPending? in
            let p = try await storage.getCodable(OIDCPending.self, key)
            if p != nil { try await storage.delete(key) }
            return p
        }
        guard let p = pending, p.expiresAt > clock.now() else {
            throw CofferError.invalid("\(OIDCFlow.loginFailed) Expired or missing OAuth state.")
        }
        guard let r = try await role(p.role) else { throw CofferError.invalid("\(OIDCFlow.loginFailed) Role could not be found") }
        let providerError = f.string("error").trimmingCharacters(in: .whitespaces).lowercased()
        if !providerError.isEmpty {
            logger.warning("OIDC callback received error from provider", metadata: ["error": "\(providerError.prefix(64))", "error_description": "\(f.string("error_description").prefix(256))"])
            let known = ["invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type", "invalid_scope", "server_error", "temporarily_unavailable"]
            throw CofferError.invalid("\(OIDCFlow.loginFailed) " + (known.contains(providerError) ? providerError : "An unknown error occurred during OIDC authentication. Check server logs for details"))
        }
        if !p.clientNonce.isEmpty && f.string("client_nonce") != p.clientNonce { throw CofferError.invalid("invalid client_nonce") }
        guard TokenParameters.allows(r.token.boundCIDRs, address: req.remoteAddress) else { throw CofferError.denied() }
        let d: Discovery
        do {
            d = try await cache.discovery(c.oidcDiscoveryURL, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, now: clock.now())
        } catch let e as HTTPSource.Failure {
            throw CofferError(.unavailable, "error getting provider for login operation: \(e)")
        }
        var code = f.string("code")
        if code == "no_code" { code = p.code }
        var idToken = "", accessToken = ""
        if code.isEmpty {
            guard !p.idToken.isEmpty else { throw CofferError.invalid("\(OIDCFlow.loginFailed) No code or id_token received.") }
            idToken = p.idToken
        } else {
            var form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", p.redirectURI)]
            if !p.codeVerifier.isEmpty { form.append(("code_verifier", p.codeVerifier)) }
            let basic = Data((Self.formEscape(c.oidcClientID) + ":" + Self.formEscape(c.oidcClientSecret)).utf8).base64EncodedString()
            let reply: JSONValue
            do {
                reply = try await HTTPSource.json(d.tokenEndpoint, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, form: form, headers: [("Authorization", "Basic " + basic)])
            } catch let e as HTTPSource.Failure {
                throw CofferError.invalid("\(OIDCFlow.loginFailed) Error exchanging oidc code: \"\(e)\".")
            }
            guard let t = reply["id_token"]?.stringValue, !t.isEmpty else {
                throw CofferError.invalid("Token verification failed. No id_token found in response.")
            }
            idToken = t
            accessToken = reply["access_token"]?.stringValue ?? ""
        }
        var claims: [String: JSONValue]
        do {
            claims = try await verifiedClaims(idToken, c)
            var e = JWTExpectations()
            e.issuer = d.issuer
            e.audiences = r.boundAudiences.isEmpty ? [c.oidcClientID] : r.boundAudiences
            e.expirationLeeway = r.expirationLeeway
            e.notBeforeLeeway = r.notBeforeLeeway
            e.clockSkewLeeway = r.clockSkewLeeway
            e.nonce = p.nonce
            try JWTClaims.validate(claims, e, now: clock.now())
        } catch let e as CofferError where e.code == .invalidRequest {
            throw CofferError.invalid("Token verification failed. \(e.message)")
        }
        if r.maxAge > 0 {
            guard let at = claims["auth_time"]?.doubleValue, clock.now() - at <= Double(r.maxAge) + JWTClaims.leeway(r.clockSkewLeeway, default: 60) else {
                throw CofferError.invalid("Token verification failed. auth_time is older than max_age")
            }
        }
        claims["nonce"] = nil
        if !r.boundSubject.isEmpty && claims["sub"]?.stringValue != r.boundSubject {
            throw CofferError.invalid("\(OIDCFlow.loginFailed) sub claim does not match bound subject")
        }
        // Userinfo adds claims the ID token lacks (groups at some providers); failures only warn.
        if !accessToken.isEmpty && !d.userinfoEndpoint.isEmpty {
            do {
                let info = try await HTTPSource.json(d.userinfoEndpoint, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, headers: [("Authorization", "Bearer " + accessToken)])
                if let o = info.objectValue, o["sub"]?.stringValue == claims["sub"]?.stringValue {
                    for (k, v) in o where claims[k] == nil { claims[k] = v }
                }
            } catch {
                logger.warning("error reading /userinfo endpoint", metadata: ["error": "\(error)"])
            }
        }
        var extra: [String: String] = [:]
        if r.oauth2Metadata.contains("id_token") { extra["oauth2_id_token"] = idToken }
        if r.oauth2Metadata.contains("access_token") { extra["oauth2_access_token"] = accessToken }
        do {
            return try auth(claims, role: r, roleName: p.role, remoteAddress: req.remoteAddress, extraMetadata: extra)
        } catch let e as CofferError where e.code == .invalidRequest && !e.message.hasPrefix("error validating claims") {
            throw CofferError.invalid("\(OIDCFlow.loginFailed) \(e.message)")
        }
    }

    /// RFC 6749 §2.3.1: the client id and secret are form-encoded inside Basic auth.
    static func formEscape(_ s: String) -> String { HTTPSource.encodeForm([(s, "")]).dropLast().description }
}
