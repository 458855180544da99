import CofferSDK
import Foundation
import JOSE
import Logging

/// The `kubernetes` auth method: a workload logs in with its service-account JWT. The
/// token is checked by the cluster's TokenReview API (with `token_reviewer_jwt`, or the
/// token itself, as the bearer) — or, when `pem_keys` are set and no reviewer is, verified
/// locally against those keys. Roles bind service-account names and namespaces (globs
/// allowed) and an audience.
public struct KubernetesBackend: LogicalBackend {
    let storage: StorageView
    let outbound: OutboundPolicy
    let clock: WallClock
    let maxLeaseTTL: Int
    let cache = KeySetCache()
    let configs = DecodedRecords<Config>(limit: 1)
    let roles = DecodedRecords<Role>()

    public static let factory: BackendFactory = { c in
        KubernetesBackend(storage: c.storage, outbound: c.outbound, clock: c.clock, maxLeaseTTL: c.maxLeaseTTL)
    }

    public var backendHelp: String { "The Kubernetes Auth Backend allows authentication with Kubernetes service account tokens." }
    public var unauthenticatedPaths: [String] { ["login"] }

    struct Config: Codable, Sendable {
        var host = ""
        var caCert = ""
        var tokenReviewerJWT = ""
        var pemKeys: [String] = []
        var issuer = ""
        var disableISSValidation = true
        var disableLocalCAJwt = false
    }

    struct Role: Codable, Sendable {
        var token = TokenParameters()
        var names: [String] = []
        var namespaces: [String] = []
        var audience = ""
        var aliasNameSource = "serviceaccount_uid"
        var deprecated = DeprecatedTokenFields()
    }

    public static let routes: [Route<KubernetesBackend>] = [
        Route("config", fields: [
            Field("kubernetes_host", .string, description: "Host must be a host string, a host:port pair, or a URL to the base of the Kubernetes API server."),
            Field("kubernetes_ca_cert", .string, description: "PEM encoded CA cert for use by the TLS client used to talk with the API."),
            Field("token_reviewer_jwt", .string, description: "A service account JWT used to access the TokenReview API (never shown)."),
            Field("pem_keys", .commaStringSlice, description: "PEM public keys or certificates that verify service account JWTs locally."),
            Field("issuer", .string, description: "The JWT issuer checked when disable_iss_validation is false."),
            Field("disable_iss_validation", .bool, default: true, description: "Do not check the JWT's issuer."),
            Field("disable_local_ca_jwt", .bool, default: false, description: "Do not read the pod's own CA and JWT (Coffer never does)."),
        ], operations: [.read: { b, _ in try await b.readConfig() }, .update: { try await $0.writeConfig($1) }],
              summary: "Configures the JWT Public Key and Kubernetes API information."),
        Route("role/?", fields: [Field("after", .string), Field("limit", .int)],
              operations: [.list: { try await $0.listRoles($1) }], summary: "Lists all the roles registered with the backend."),
        Route("role/:name", fields: [
            Field("name", .string, description: "Name of the role."),
            Field("bound_service_account_names", .commaStringSlice, description: "Service account names (globs allowed; \"*\" for all)."),
            Field("bound_service_account_namespaces", .commaStringSlice, description: "Namespaces (globs allowed; \"*\" for all)."),
            Field("bound_service_account_namespace_selector", .string, description: "Not supported (no API server to read labels from)."),
            Field("audience", .string, description: "The audience the token must be issued for."),
            Field("alias_name_source", .string, description: "serviceaccount_uid (default) or serviceaccount_name."),
        ] + DeprecatedTokenFields.fields + TokenParameters.fields, operations: [
            .read: { try await $0.readRole($1) }, .create: { try await $0.writeRole($1) },
            .update: { try await $0.writeRole($1) }, .delete: { try await $0.deleteRole($1) },
        ], existenceCheck: { try await $0.role(try RoleName.parse($1)) != nil }, summary: "Register a role with the backend."),
        Route("login", fields: [Field("role", .string), Field("jwt", .string)],
              operations: [.update: { try await $0.login($1) }], usage: [.update: .login, .create: .login],
              summary: "Authenticates Kubernetes service accounts with Coffer."),
    ]

    // MARK: config

    func config() async throws -> Config? { try await configs.get(storage, "config") }

    func readConfig() async throws -> LogicalResponse? {
        guard let c = try await config() else { return nil }
        return LogicalResponse(data: [
            "kubernetes_host": .string(c.host), "kubernetes_ca_cert": .string(c.caCert),
            "pem_keys": .array(c.pemKeys.map { .string($0) }), "issuer": .string(c.issuer),
            "disable_iss_validation": .bool(c.disableISSValidation), "disable_local_ca_jwt": .bool(c.disableLocalCAJwt),
            "token_reviewer_jwt_set": .bool(!c.tokenReviewerJWT.isEmpty),
        ])
    }

    func writeConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        var c = Config()
        c.host = f.string("kubernetes_host")
        guard !c.host.isEmpty else { throw CofferError.invalid("no host provided") }
        if !c.host.contains("://") { c.host = "https://" + c.host }
        try HTTPSource.checkURL(c.host, field: "kubernetes_host")
        c.caCert = f.string("kubernetes_ca_cert")
        _ = try HTTPSource.trustRoots(c.caCert, field: "kubernetes_ca_cert")
        c.tokenReviewerJWT = f.string("token_reviewer_jwt")
        c.pemKeys = f.strings("pem_keys")
        for pem in c.pemKeys { _ = try JWSPublicKey(pem: pem) }
        c.issuer = f.string("issuer")
        c.disableISSValidation = f.has("disable_iss_validation") ? f.bool("disable_iss_validation") : true
        c.disableLocalCAJwt = f.bool("disable_local_ca_jwt")
        if c.disableLocalCAJwt && c.caCert.isEmpty && c.host.hasPrefix("https://") {
            throw CofferError.invalid("kubernetes_ca_cert must be given when disable_local_ca_jwt is true")
        }
        try await storage.putCodable("config", c)
        return nil
    }

    // MARK: roles

    func role(_ name: String) async throws -> Role? { try await roles.get(storage, "role/" + name) }

    func listRoles(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: "role/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await role(RoleName.parse(req)) else { return nil }
        var d = r.token.json
        d["bound_service_account_names"] = .array(r.names.map { .string($0) })
        d["bound_service_account_namespaces"] = .array(r.namespaces.map { .string($0) })
        d["bound_service_account_namespace_selector"] = ""
        d["alias_name_source"] = .string(r.aliasNameSource)
        if !r.audience.isEmpty { d["audience"] = .string(r.audience) }
        r.deprecated.show(in: &d)
        return LogicalResponse(data: d)
    }

    func writeRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try RoleName.parse(req)
        let f = req.fields
        let warnings = try await storage.withLock("role/" + name) { () -> [String] in
            var r = try await role(name) ?? Role()
            try r.token.parse(f)
            try r.deprecated.upgrade(f, &r.token)
            if r.token.period > maxLeaseTTL {
                throw CofferError.invalid("token period of '\(r.token.period)s' is greater than the backend's maximum lease TTL of '\(maxLeaseTTL)s'")
            }
            if r.token.maxTTL > 0 && r.token.ttl > r.token.maxTTL { throw CofferError.invalid("token ttl should not be greater than token max ttl") }
            if f.has("bound_service_account_names") { r.names = f.strings("bound_service_account_names") }
            guard !r.names.isEmpty else { throw CofferError.invalid("\"bound_service_account_names\" can not be empty") }
            if r.names.count > 1 && r.names.contains("*") { throw CofferError.invalid("can not mix \"*\" with values") }
            if f.has("bound_service_account_namespaces") { r.namespaces = f.strings("bound_service_account_namespaces") }
            if !f.string("bound_service_account_namespace_selector").isEmpty {
                throw CofferError.invalid("bound_service_account_namespace_selector is not supported")
            }
            guard !r.namespaces.isEmpty else {
                throw CofferError.invalid("\"bound_service_account_namespaces\" can not be empty if \"bound_service_account_namespace_selector\" is not set")
            }
            if r.namespaces.count > 1 && r.namespaces.contains("*") { throw CofferError.invalid("can not mix \"*\" with values") }
            if f.has("audience") { r.audience = f.string("audience") }
            if f.has("alias_name_source") {
                let s = f.string("alias_name_source")
                guard ["serviceaccount_uid", "serviceaccount_name", ""].contains(s) else {
                    throw CofferError.invalid("invalid alias_name_source \"\(s.prefix(32))\", must be one of: serviceaccount_uid, serviceaccount_name")
                }
                r.aliasNameSource = s.isEmpty ? "serviceaccount_uid" : s
            }
            try await storage.putCodable("role/" + name, r)
            return r.token.maxTTL > maxLeaseTTL
                ? ["max_ttl is greater than the system or backend mount's maximum TTL value; issued tokens' max TTL value will be truncated"] : []
        }
        return warnings.isEmpty ? nil : LogicalResponse(warnings: warnings)
    }

    func deleteRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await storage.delete("role/" + RoleName.parse(req))
        return nil
    }

    // MARK: login

    /// The service account a token names: legacy secret-based claims, or a projected
    /// token's `kubernetes.io` object.
    struct ServiceAccount {
        var name = "", namespace = "", uid = "", secretName = ""

        init(_ claims: [String: JSONValue]) {
            if let k = claims["kubernetes.io"]?.objectValue {
                namespace = k["namespace"]?.stringValue ?? ""
                name = k["serviceaccount"]?["name"]?.stringValue ?? ""
                uid = k["serviceaccount"]?["uid"]?.stringValue ?? ""
            } else {
                name = claims["kubernetes.io/serviceaccount/service-account.name"]?.stringValue ?? ""
                uid = claims["kubernetes.io/serviceaccount/service-account.uid"]?.stringValue ?? ""
                namespace = claims["kubernetes.io/serviceaccount/namespace"]?.stringValue ?? ""
                secretName = claims["kubernetes.io/serviceaccount/secret.name"]?.stringValue ?? ""
            }
        }
    }

    static func allowed(_ patterns: [String], _ value: String) -> Bool {
        patterns == ["*"] || patterns.contains { Glob.match($0, value) }
    }

    func login(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let roleName = req.fields.string("role").lowercased()
        guard !roleName.isEmpty else { throw CofferError.invalid("missing role") }
        let token = req.fields.string("jwt")
        guard !token.isEmpty else { throw CofferError.invalid("missing jwt") }
        guard !roleName.contains("/"), let r = try await role(roleName) else { throw CofferError.invalid("invalid role name \"\(roleName.prefix(64))\"") }
        guard TokenParameters.allows(r.token.boundCIDRs, address: req.remoteAddress) else { throw CofferError.denied() }
        guard let c = try await config() else { throw CofferError.invalid("could not load backend configuration") }
        let jws: CompactJWS
        do { jws = try CompactJWS(token) } catch let e as CofferError { throw CofferError(.permissionDenied, e.message) }
        guard let alg = JWSAlgorithm(rawValue: jws.algorithm) else {
            throw CofferError(.permissionDenied, "unsupported signing algorithm \"\(jws.algorithm.prefix(16))\"")
        }
        let claims = jws.payload
        let local = !c.pemKeys.isEmpty && c.tokenReviewerJWT.isEmpty
        if local {
            let keys = try c.pemKeys.map { try cache.staticKey($0) }
            guard keys.contains(where: { $0.verify(alg, signature: jws.signature, input: jws.signingInput) }) else {
                throw CofferError.denied()
            }
        }
        var e = JWTExpectations()
        if !c.disableISSValidation { e.issuer = c.issuer.isEmpty ? "kubernetes/serviceaccount" : c.issuer }
        if !r.audience.isEmpty { e.audiences = [r.audience] }
        e.clockSkewLeeway = -1
        e.expirationLeeway = -1
        e.notBeforeLeeway = -1
        do {
            // Service-account tokens of old clusters carry no time claims: allowed, as in Vault.
            if claims["exp"] != nil || claims["nbf"] != nil || claims["iat"] != nil { try JWTClaims.validate(claims, e, now: clock.now()) }
            else { try JWTClaims.validate(claims.merging(["iat": .int(clock.seconds())]) { a, _ in a }, e, now: clock.now()) }
        } catch let err as CofferError {
            throw CofferError(.permissionDenied, err.message.replacingOccurrences(of: "error validating token: ", with: ""))
        }
        let sa = ServiceAccount(claims)
        guard Self.allowed(r.names, sa.name) else { throw CofferError(.permissionDenied, "service account name not authorized") }
        guard Self.allowed(r.namespaces, sa.namespace) else { throw CofferError(.permissionDenied, "namespace not authorized") }
        guard !sa.uid.isEmpty else { throw CofferError.invalid("could not parse UID from claims") }
        if !local { try await review(token, sa: sa, audience: r.audience, claims: claims, config: c) }
        let alias: String
        if r.aliasNameSource == "serviceaccount_name" {
            guard !sa.namespace.isEmpty, !sa.name.isEmpty else { throw CofferError.invalid("service account namespace and name must be set") }
            alias = sa.namespace + "/" + sa.name
        } else {
            alias = sa.uid
        }
        let meta = ["service_account_uid": sa.uid, "service_account_name": sa.name, "service_account_namespace": sa.namespace,
                    "service_account_secret_name": sa.secretName]
        var auth = AuthInfo(metadata: meta.merging(["role": roleName]) { a, _ in a })
        r.token.populate(&auth, remoteAddress: req.remoteAddress)
        auth.displayName = sa.namespace + "-" + sa.name
        auth.aliasName = alias
        auth.aliasMetadata = meta
        return LogicalResponse(auth: auth)
    }

    /// The TokenReview call (authentication.k8s.io/v1): the cluster says whether the token
    /// is valid now, for which audiences, and whose it is.
    func review(_ token: String, sa: ServiceAccount, audience: String, claims: [String: JSONValue], config c: Config) async throws {
        let audiences = audience.isEmpty ? JWTClaims.audiences(claims) : [audience]
        let body: JSONValue = [
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": ["token": .string(token), "audiences": .array(audiences.map { .string($0) })],
        ]
        let url = String(c.host.trimmingSuffix("/")) + "/apis/authentication.k8s.io/v1/tokenreviews"
        let bearer = c.tokenReviewerJWT.isEmpty ? token : c.tokenReviewerJWT
        let answer: JSONValue
        do {
            answer = try await HTTPSource.json(url, caPEM: c.caCert, outbound: outbound, jsonBody: body, headers: [("Authorization", "Bearer " + bearer)])
        } catch let f as HTTPSource.Failure {
            if f.status == 401 || f.status == 403 {
                throw CofferError(.permissionDenied, "lookup failed: service account unauthorized; this could mean it has been deleted or recreated with a new token")
            }
            throw f.refused ? CofferError.invalid("lookup failed: \(f)") : CofferError(.unavailable, "lookup failed: \(f)")
        }
        let status = answer["status"]
        if let err = status?["error"]?.stringValue, !err.isEmpty { throw CofferError(.permissionDenied, "lookup failed: \(err.prefix(256))") }
        guard status?["authenticated"]?.boolValue == true else { throw CofferError(.permissionDenied, "lookup failed: service account jwt not valid") }
        if !audiences.isEmpty {
            let got = status?["audiences"]?.arrayValue?.compactMap(\.stringValue) ?? []
            guard audiences.contains(where: got.contains) else {
                throw CofferError(.permissionDenied, "lookup failed: service account jwt valid for audience(s) \(got), but wanted \(audiences)")
            }
        }
        let parts = (status?["user"]?["username"]?.stringValue ?? "").split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 4 else { throw CofferError(.permissionDenied, "lookup failed: unexpected username format") }
        guard parts[0] == "system", parts[1] == "serviceaccount" else { throw CofferError(.permissionDenied, "lookup failed: username returned is not a service account") }
        guard String(parts[3]) == sa.name else { throw CofferError(.permissionDenied, "JWT names did not match") }
        guard status?["user"]?["uid"]?.stringValue == sa.uid else { throw CofferError(.permissionDenied, "JWT UIDs did not match") }
        guard String(parts[2]) == sa.namespace else { throw CofferError(.permissionDenied, "JWT namepaces did not match") }
    }

    public func renewLogin(_ renewal: LoginRenewal) async throws {
        try await RoleName.checkRenewal(renewal) { try await role($0) != nil }
    }
}
