import CofferSDK
import Foundation
import JOSE
import Logging

/// The `jwt` and `oidc` auth methods (one engine, as in Vault): JWTs verified against
/// static PEM keys, a JWKS URL or OIDC discovery, logged in at `login`; and the OIDC
/// authorization-code flow with PKCE (`oidc/auth_url`, `oidc/callback`,
/// `JWTBackend+OIDC.swift`). Roles bind audiences, subject and claims; `groups_claim`
/// becomes external group aliases in the namespace's identity store.
public struct JWTBackend: LogicalBackend {
    let storage: StorageView
    let outbound: OutboundPolicy
    let clock: WallClock
    let logger: Logger
    let maxLeaseTTL: Int
    let mountPath: String
    let cache = KeySetCache()
    let configs = DecodedRecords<JWTConfig>(limit: 1)
    let roles = DecodedRecords<JWTRole>()

    public static let factory: BackendFactory = { c in
        JWTBackend(storage: c.storage, outbound: c.outbound, clock: c.clock, logger: c.logger, maxLeaseTTL: c.maxLeaseTTL, mountPath: c.mountPath)
    }

    public var backendHelp: String { "The JWT backend plugin allows authentication using JWTs (including OIDC)." }
    public var unauthenticatedPaths: [String] { ["login", "oidc/auth_url", "oidc/callback"] }
    public var runsPeriodicWork: Bool { true }

    public static let routes: [Route<JWTBackend>] = [
        Route("config", fields: JWTConfig.fields, operations: [
            .read: { b, _ in try await b.readConfig() }, .update: { try await $0.writeConfig($1) },
        ], summary: "Configure the JWT authentication backend."),
        Route("role/?", fields: [Field("after", .string), Field("limit", .int)],
              operations: [.list: { try await $0.listRoles($1) }], summary: "Lists all the roles registered with the backend."),
        Route("role/:name", fields: JWTRole.fields, operations: [
            .read: { try await $0.readRole($1) }, .create: { try await $0.writeRole($1) },
            .update: { try await $0.writeRole($1) }, .delete: { try await $0.deleteRole($1) },
        ], existenceCheck: { try await $0.role(try RoleName.parse($1)) != nil }, summary: "Register a role with the backend."),
        Route("login", fields: [Field("role", .string), Field("jwt", .string)],
              operations: [.update: { try await $0.login($1) }], usage: [.update: .login, .create: .login],
              summary: "Authenticates with a JWT (or OIDC) token."),
        Route("oidc/auth_url", fields: [Field("role", .string), Field("redirect_uri", .string), Field("client_nonce", .string)],
              operations: [.update: { try await $0.authURL($1) }], summary: "Request an authorization URL to start an OIDC login flow."),
        Route("oidc/callback", fields: [
            Field("state", .string), Field("code", .string), Field("id_token", .string), Field("client_nonce", .string),
            Field("error", .string), Field("error_description", .string), Field("error_uri", .string),
        ], operations: [.read: { try await $0.callback($1) }, .update: { try await $0.callbackFormPost($1) }],
              usage: [.read: .login], summary: "Callback endpoint to complete an OIDC login."),
    ]

    // MARK: config

    func config() async throws -> JWTConfig? { try await configs.get(storage, "config") }

    func readConfig() async throws -> LogicalResponse? {
        guard let c = try await config() else { return nil }
        var data = c.readData
        var warnings: [String] = []
        do {
            _ = try await keySource(c, kid: nil)
            data["status"] = "valid"
        } catch {
            data["status"] = "invalid"
            warnings.append("failed to construct JWK validator: \(error)")
        }
        return LogicalResponse(data: data, warnings: warnings)
    }

    func writeConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let existing = try await config()
        let c = try JWTConfig.parse(req.fields, existing: existing)
        var warnings: [String] = []
        // Like Vault, a key source that cannot be reached now is refused (unless asked not to).
        do {
            switch c.source {
            case .discovery, .oidcFlow:
                _ = try await cache.discovery(c.oidcDiscoveryURL, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, now: clock.now())
            case .jwks:
                _ = try await cache.keys(c.jwksURL, kid: nil, caPEM: c.jwksCAPEM, outbound: outbound, now: clock.now())
            case .staticKeys: break
            }
        } catch let e as HTTPSource.Failure {
            cache.forget()
            guard req.fields.bool("skip_jwks_validation") else {
                throw CofferError.invalid(c.source == .jwks ? "error checking jwks URL: \(e)" : "error checking oidc discovery URL: \(e)")
            }
            warnings.append(c.source == .jwks ? "error checking jwks URL" : "error checking oidc discovery URL")
        }
        try await storage.putCodable("config", c)
        cache.forget()
        return warnings.isEmpty ? nil : LogicalResponse(warnings: warnings)
    }

    // MARK: roles

    func role(_ name: String) async throws -> JWTRole? { try await roles.get(storage, "role/" + name) }

    func listRoles(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: "role/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await role(RoleName.parse(req)) else { return nil }
        return LogicalResponse(data: r.readData)
    }

    func writeRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try RoleName.parse(req)
        let warnings = try await storage.withLock("role/" + name) { () -> [String] in
            var r = try await role(name) ?? JWTRole()
            let w = try r.apply(req.fields, maxLeaseTTL: maxLeaseTTL)
            try await storage.putCodable("role/" + name, r)
            return w
        }
        return warnings.isEmpty ? nil : LogicalResponse(warnings: warnings)
    }

    func deleteRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await storage.delete("role/" + RoleName.parse(req))
        return nil
    }

    /// The role a login names, or the default role; Vault's texts when there is none.
    func loginRole(_ req: LogicalRequest, _ c: JWTConfig) async throws -> (String, JWTRole) {
        var name = req.fields.string("role").lowercased()
        if name.isEmpty { name = c.defaultRole }
        guard !name.isEmpty else { throw CofferError.invalid("missing role") }
        guard !name.contains("/"), let r = try await role(name) else { throw CofferError.invalid("role \"\(name.prefix(64))\" could not be found") }
        return (name, r)
    }

    // MARK: login

    /// The keys that may verify a token with `kid`, from the configured source.
    func keySource(_ c: JWTConfig, kid: String?) async throws -> [JWSPublicKey] {
        let now = clock.now()
        switch c.source {
        case .staticKeys: return try c.jwtValidationPubkeys.map { try cache.staticKey($0) }
        case .jwks: return try await cache.keys(c.jwksURL, kid: kid, caPEM: c.jwksCAPEM, outbound: outbound, now: now)
        case .discovery, .oidcFlow:
            let d = try await cache.discovery(c.oidcDiscoveryURL, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, now: now)
            return try await cache.keys(d.jwksURI, kid: kid, caPEM: c.oidcDiscoveryCAPEM, outbound: outbound, now: now)
        }
    }

    /// Verifies a token's signature and returns its claims (not yet their values).
    func verifiedClaims(_ token: String, _ c: JWTConfig) async throws -> [String: JSONValue] {
        let jws: CompactJWS
        do { jws = try CompactJWS(token) } catch let e as CofferError { throw CofferError.invalid("error validating token: \(e.message)") }
        guard let alg = JWSAlgorithm(rawValue: jws.algorithm) else {
            throw CofferError.invalid("error validating token: unsupported signing algorithm \"\(jws.algorithm.prefix(16))\"")
        }
        guard c.algorithms.contains(alg) else {
            throw CofferError.invalid("error validating token: invalid algorithm (alg) header parameter: token signed with unexpected algorithm")
        }
        let keys: [JWSPublicKey]
        do {
            keys = try await keySource(c, kid: c.source == .staticKeys ? nil : jws.keyID)
        } catch let e as HTTPSource.Failure {
            throw CofferError(.unavailable, "error validating token: cannot fetch the signing keys: \(e)")
        }
        guard !keys.isEmpty else { throw CofferError.invalid("error validating token: error verifying token signature: no known key has the key id \"\((jws.keyID ?? "").prefix(64))\"") }
        let input = jws.signingInput, sig = jws.signature
        guard keys.contains(where: { $0.verify(alg, signature: sig, input: input) }) else {
            // The two texts of Vault's validator: static keys, and key sets.
            throw CofferError.invalid(c.source == .staticKeys
                ? "error validating token: error verifying token signature: no known key successfully validated the token signature"
                : "error validating token: error verifying token signature: failed to verify id token signature")
        }
        return jws.payload
    }

    func login(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let c = try await config() else { throw CofferError.invalid("could not load configuration") }
        let (name, r) = try await loginRole(req, c)
        guard r.roleType != "oidc" else { throw CofferError.invalid("role with oidc role_type is not allowed") }
        let token = req.fields.string("jwt")
        guard !token.isEmpty else { throw CofferError.invalid("missing token") }
        guard TokenParameters.allows(r.token.boundCIDRs, address: req.remoteAddress) else { throw CofferError.denied() }
        let claims = try await verifiedClaims(token, c)
        var e = JWTExpectations()
        e.issuer = c.boundIssuer
        e.subject = r.boundSubject
        e.audiences = r.boundAudiences
        e.expirationLeeway = r.expirationLeeway
        e.notBeforeLeeway = r.notBeforeLeeway
        e.clockSkewLeeway = r.clockSkewLeeway
        try JWTClaims.validate(claims, e, now: clock.now())
        if r.boundAudiences.isEmpty && !JWTClaims.audiences(claims).isEmpty {
            throw CofferError.invalid("audience claim found in JWT but no audiences bound to the role")
        }
        return try auth(claims, role: r, roleName: name, remoteAddress: req.remoteAddress)
    }

    /// The `auth` block of a login whose token passed: alias, metadata, groups, token fields.
    func auth(_ claims: [String: JSONValue], role r: JWTRole, roleName: String, remoteAddress: String?, extraMetadata: [String: String] = [:]) throws -> LogicalResponse {
        let id = try JWTClaims.identity(claims, role: r, roleName: roleName)
        try JWTClaims.checkBound(r.boundClaims, glob: r.boundClaimsType == "glob", claims)
        if r.verboseOIDCLogging {
            logger.debug("OIDC provider response", metadata: ["claims": "\(JSONValue.object(claims).serializedString().prefix(4096))"])
        }
        var auth = AuthInfo(metadata: id.metadata.merging(extraMetadata) { a, _ in a })
        r.token.populate(&auth, remoteAddress: remoteAddress)
        auth.displayName = id.name
        auth.aliasName = id.name
        auth.aliasMetadata = id.metadata
        auth.groupAliases = r.groupsClaim.isEmpty ? nil : id.groups
        return LogicalResponse(auth: auth)
    }

    /// Vault's renewal check: the role must still exist.
    public func renewLogin(_ renewal: LoginRenewal) async throws {
        try await RoleName.checkRenewal(renewal) { try await role($0) != nil }
    }

    /// Drops pending OIDC logins that were never finished.
    public func periodic() async -> Duration? {
        let now = clock.now()
        if let keys = try? await storage.list(prefix: OIDCFlow.pendingPrefix) {
            for k in keys where !k.hasSuffix("/") {
                guard let p = try? await storage.getCodable(OIDCPending.self, OIDCFlow.pendingPrefix + k), p.expiresAt < now else { continue }
                try? await storage.delete(OIDCFlow.pendingPrefix + k)
            }
        }
        return .seconds(60)
    }
}
