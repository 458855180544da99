import CofferSDK
import Foundation
import JOSE

/// Identity tokens (`identity/oidc/`): named signing keys with rotation, roles that say
/// which key signs and what the token claims (a template over the entity), signed ID tokens
/// for the calling token's entity, their introspection, and the OpenID discovery document
/// and JWKS a relying party verifies against. Keys and roles are stored under
/// `sys/identity/oidc/` of the namespace, behind the barrier.
extension IdentityBackend {
    static let oidcRoutes: [Route<IdentityBackend>] = [
        Route("oidc/config", fields: [Field("issuer", .string, description: "Issuer URL to be used in the iss claim of the token.")], operations: [
            .read: { b, _ in try await b.readOIDCConfig() }, .update: { try await $0.writeOIDCConfig($1) },
        ], summary: "The issuer of identity tokens."),
        Route("oidc/key/?", operations: [.list: { b, _ in try await b.listOIDC("key/") }], summary: "List named keys."),
        Route("oidc/key/:name/rotate", fields: [Field("name", .string), Field("verification_ttl", .duration)],
              operations: [.update: { try await $0.rotateKey($1) }], summary: "Rotate a named key."),
        Route("oidc/key/:name", fields: [
            Field("name", .string),
            Field("rotation_period", .duration, description: "How often to generate a new keypair (default 24h)."),
            Field("verification_ttl", .duration, description: "How long the public portion of a key stays available for verification after rotation (default 24h)."),
            Field("allowed_client_ids", .commaStringSlice, description: "Client ids of roles allowed to use this key ('*': all)."),
            Field("algorithm", .string, description: "Signing algorithm: RS256 (default), RS384, RS512, ES256, ES384, ES512, EdDSA."),
        ], operations: [
            .read: { try await $0.readKey($1) }, .create: { try await $0.writeKey($1) }, .update: { try await $0.writeKey($1) },
            .delete: { try await $0.deleteKey($1) },
        ], summary: "Create, read, update or delete a named key."),
        Route("oidc/role/?", operations: [.list: { b, _ in try await b.listOIDC("role/") }], summary: "List roles."),
        Route("oidc/role/:name", fields: [
            Field("name", .string),
            Field("key", .string, description: "The named key that signs the role's tokens."),
            Field("template", .string, description: "The template of the token's claims (JSON, or base64 of it)."),
            Field("client_id", .string, description: "The audience of the role's tokens (generated when absent)."),
            Field("ttl", .duration, description: "TTL of the tokens (default 24h)."),
        ], operations: [
            .read: { try await $0.readRole($1) }, .create: { try await $0.writeRole($1) }, .update: { try await $0.writeRole($1) },
            .delete: { try await $0.deleteRole($1) },
        ], summary: "Create, read, update or delete a role."),
        Route("oidc/token/:name", fields: [Field("name", .string)], operations: [.read: { try await $0.generateToken($1) }],
              usage: [.read: .crypto], summary: "Generate a signed ID token for the calling token's entity."),
        Route("oidc/introspect", fields: [Field("token", .string), Field("client_id", .string)],
              operations: [.update: { try await $0.introspect($1) }], usage: [.update: .crypto], summary: "Verify an ID token."),
        Route("oidc/.well-known/openid-configuration", operations: [.read: { b, _ in try await b.discovery() }],
              summary: "The OpenID discovery document."),
        Route("oidc/.well-known/keys", operations: [.read: { b, _ in try await b.publicKeys() }],
              summary: "The public keys that verify identity tokens (JWKS)."),
    ]

    var oidcStorage: StorageView { store.view.sub("oidc/") }

    // MARK: config

    struct OIDCConfig: Codable, Sendable { var issuer = "" }

    func oidcConfig() async throws -> OIDCConfig {
        try await oidcStorage.getCodable(OIDCConfig.self, "config") ?? OIDCConfig()
    }

    /// The `iss` of this namespace's tokens: the configured issuer (or the node's API
    /// address) with `/v1/<namespace>identity/oidc`, as Vault builds it.
    func issuer() async throws -> String {
        let base = try await oidcConfig().issuer
        return (base.isEmpty ? apiAddress : base) + "/v1/" + namespacePath + "identity/oidc"
    }

    func readOIDCConfig() async throws -> LogicalResponse? {
        LogicalResponse(data: ["issuer": .string(try await oidcConfig().issuer)])
    }

    func writeOIDCConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var issuer = req.fields.string("issuer")
        while issuer.hasSuffix("/") { issuer.removeLast() }
        if !issuer.isEmpty {
            guard let u = URL(string: issuer), let scheme = u.scheme, ["http", "https"].contains(scheme), u.host != nil,
                  u.path.isEmpty, u.query == nil, u.fragment == nil, u.user == nil, issuer.utf8.count <= 1024 else {
                throw CofferError.invalid("invalid issuer, which must include only a scheme, host, and optional port (e.g. https://example.com:8200)")
            }
        }
        try await oidcStorage.putCodable("config", OIDCConfig(issuer: issuer))
        guard !issuer.isEmpty else { return nil }
        return LogicalResponse(warnings: [
            "If \"issuer\" is set explicitly, all tokens must be validated against that address, including those issued by secondary clusters. Setting issuer to \"\" will restore the default behavior of using the cluster's api_addr as the issuer.",
        ])
    }

    func listOIDC(_ prefix: String) async throws -> LogicalResponse? {
        .list(try await oidcStorage.list(prefix: prefix).filter { !$0.hasSuffix("/") })
    }

    // MARK: keys

    static func checkName(_ name: String) throws -> String {
        guard !name.isEmpty, name.utf8.count <= 128, name.unicodeScalars.allSatisfy({ c in
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "-" || c == "_" || c == "."
        }) else { throw CofferError.invalid("invalid name \"\(name.prefix(64))\"") }
        return name
    }

    func key(_ name: String) async throws -> NamedKey? {
        try await oidcStorage.getCodable(NamedKey.self, "key/" + name)
    }

    func readKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let k = try await key(Self.checkName(req.fields.string("name"))) else { return nil }
        return LogicalResponse(data: [
            "algorithm": .string(k.algorithm.rawValue), "allowed_client_ids": Self.strings(k.allowedClientIDs),
            "rotation_period": .int(Int64(k.rotationPeriod)), "verification_ttl": .int(Int64(k.verificationTTL)),
        ])
    }

    func writeKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let name = try Self.checkName(f.string("name"))
        let algorithm = f.has("algorithm") ? try JWSAlgorithm.identityKey(f.string("algorithm")) : nil
        let storage = oidcStorage
        try await storage.withLock("key/" + name) {
            let now = Date()
            var k = try await key(name) ?? NamedKey(name: name, algorithm: algorithm ?? .RS256, rotationPeriod: 86_400, verificationTTL: 86_400, allowedClientIDs: [], versions: [])
            if f.has("rotation_period") { k.rotationPeriod = f.int("rotation_period") }
            if f.has("verification_ttl") { k.verificationTTL = f.int("verification_ttl") }
            if f.has("allowed_client_ids") { k.allowedClientIDs = Self.idList(f.strings("allowed_client_ids")) }
            if k.rotationPeriod > 0 && k.rotationPeriod < 60 { throw CofferError.invalid("rotation_period must be at least one minute") }
            if k.verificationTTL > 10 * k.rotationPeriod && k.rotationPeriod > 0 {
                throw CofferError.invalid("verification_ttl cannot be longer than 10x rotation_period")
            }
            if let algorithm, algorithm != k.algorithm || k.versions.isEmpty {
                k.algorithm = algorithm
                k.rotate(to: try await SigningKeyVersion.generate(algorithm, now: now), now: now)
            } else if k.versions.isEmpty {
                k.rotate(to: try await SigningKeyVersion.generate(k.algorithm, now: now), now: now)
            }
            // A role's tokens must stay verifiable for their whole TTL.
            for (roleName, r) in try await roles(usingKey: name) where r.ttl > k.verificationTTL {
                throw CofferError.invalid("unable to update key \"\(name)\" because it is currently referenced by role \"\(roleName)\" with a ttl greater than verification_ttl")
            }
            try await storage.putCodable("key/" + name, k)
        }
        return nil
    }

    func deleteKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        let storage = oidcStorage
        try await storage.withLock("key/" + name) {
            let users = try await roles(usingKey: name).map(\.0)
            if !users.isEmpty {
                throw CofferError.invalid("unable to delete key \"\(name)\" because it is currently referenced by these roles: \(users.joined(separator: ", "))")
            }
            try await storage.delete("key/" + name)
        }
        return nil
    }

    func rotateKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        let ttl = req.fields.has("verification_ttl") ? req.fields.int("verification_ttl") : nil
        let storage = oidcStorage
        try await storage.withLock("key/" + name) {
            guard var k = try await key(name) else { throw CofferError.invalid("no named key found at \"\(name)\"") }
            let now = Date()
            k.rotate(to: try await SigningKeyVersion.generate(k.algorithm, now: now), now: now, verificationTTL: ttl)
            try await storage.putCodable("key/" + name, k)
        }
        return nil
    }

    /// The key, rotated first when its rotation period has passed (on the active node: a
    /// standby's write is handed to it).
    func signingKey(_ name: String) async throws -> NamedKey? {
        guard let k = try await key(name) else { return nil }
        let now = Date()
        guard k.rotationDue(at: now) else { return k }
        let storage = oidcStorage
        return try await storage.withLock("key/" + name) {
            guard var fresh = try await key(name) else { return nil }
            if fresh.rotationDue(at: now) {
                fresh.rotate(to: try await SigningKeyVersion.generate(fresh.algorithm, now: now), now: now)
                try await storage.putCodable("key/" + name, fresh)
            }
            return fresh
        }
    }

    // MARK: roles

    struct Role: Codable, Sendable {
        var key: String
        var template: String
        var clientID: String
        var ttl: Int
    }

    /// The roles whose tokens `key` signs, by name (sorted).
    func roles(usingKey key: String) async throws -> [(String, Role)] {
        var out: [(String, Role)] = []
        for name in try await oidcStorage.list(prefix: "role/").sorted() where !name.hasSuffix("/") {
            if let r = try await role(name), r.key == key { out.append((name, r)) }
        }
        return out
    }

    func role(_ name: String) async throws -> Role? {
        try await oidcStorage.getCodable(Role.self, "role/" + name)
    }

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await role(Self.checkName(req.fields.string("name"))) else { return nil }
        return LogicalResponse(data: ["key": .string(r.key), "template": .string(r.template), "client_id": .string(r.clientID), "ttl": .int(Int64(r.ttl))])
    }

    /// Claims a template may not set: the ones the token itself carries.
    static let reservedClaimList = ["iat", "aud", "exp", "iss", "sub", "namespace", "nonce", "auth_time", "at_hash", "c_hash"]
    static let reservedClaims = Set(reservedClaimList)

    func writeRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let name = try Self.checkName(f.string("name"))
        let storage = oidcStorage
        try await storage.withLock("role/" + name) {
            var r = try await role(name) ?? Role(key: "", template: "", clientID: Self.clientID(), ttl: 86_400)
            if f.has("key") { r.key = f.string("key") }
            guard !r.key.isEmpty else { throw CofferError.invalid("the key parameter is required") }
            if f.has("template") {
                var t = f.string("template")
                if !t.isEmpty, !t.contains("{"), let d = Data(base64Encoded: t), let s = String(data: d, encoding: .utf8) { t = s }
                guard t.utf8.count <= 64 * 1024 else { throw CofferError.invalid("template is too long (limit: 64 KiB)") }
                if !t.isEmpty {
                    // Rendered for an entity with nothing set, it must be a JSON object of free claims.
                    let sample = try Self.render(template: t, entity: nil, index: IdentityIndex(), now: Date())
                    for k in sample.keys where Self.reservedClaims.contains(k) {
                        throw CofferError.invalid("top level key \"\(k)\" not allowed. Restricted keys: " + Self.reservedClaimList.joined(separator: ", "))
                    }
                }
                r.template = t
            }
            if f.has("client_id") {
                let c = f.string("client_id")
                guard !c.isEmpty, c.utf8.count <= 256 else { throw CofferError.invalid("client_id must be between 1 and 256 bytes") }
                r.clientID = c
            }
            if f.has("ttl") { r.ttl = f.int("ttl") }
            // A key named before it exists is accepted (tokens fail until it does); one that
            // exists must keep the role's tokens verifiable for their whole TTL.
            if let k = try await key(r.key), r.ttl > k.verificationTTL {
                throw CofferError.invalid("a role's token ttl cannot be longer than the verification_ttl of the key it references")
            }
            try await storage.putCodable("role/" + name, r)
        }
        return nil
    }

    func deleteRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await oidcStorage.delete("role/" + Self.checkName(req.fields.string("name")))
        return nil
    }

    /// A role's client id: 26 random base62 characters, as Vault makes them.
    static func clientID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var out = ""
        while out.count < 26 {
            for b in SecureRandom.bytes(32) where b < 248 && out.count < 26 { out.append(alphabet[Int(b) % 62]) }
        }
        return out
    }

    // MARK: tokens

    func generateToken(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        guard let r = try await role(name) else { throw CofferError.invalid("role \"\(name)\" not found") }
        let idx = try await store.index()
        guard let entityID = req.token?.entityID, !entityID.isEmpty, let entity = idx.resolvedEntity(id: entityID) else {
            throw CofferError.invalid("no entity associated with the request's token")
        }
        guard let k = try await signingKey(r.key), let signer = k.current else { throw CofferError.invalid("key \"\(r.key)\" not found") }
        guard k.allows(clientID: r.clientID) else {
            throw CofferError.invalid("the key \"\(r.key)\" does not list the client ID of the role \"\(name)\" as an allowed client ID")
        }
        let now = Date()
        var claims = r.template.isEmpty ? [:] : try Self.render(template: r.template, entity: entity, index: idx, now: now)
        for c in Self.reservedClaims { claims.removeValue(forKey: c) }
        let iat = Int64(now.timeIntervalSince1970)
        claims["iss"] = .string(try await issuer())
        claims["sub"] = .string(entity.id)
        claims["aud"] = .string(r.clientID)
        claims["iat"] = .int(iat)
        claims["exp"] = .int(iat + Int64(r.ttl))
        claims["namespace"] = .string(store.namespaceID)
        let token = try Self.jws(claims: claims, key: signer)
        return LogicalResponse(data: ["client_id": .string(r.clientID), "token": .string(token), "ttl": .int(Int64(r.ttl))])
    }

    /// `header.payload.signature`, compact JWS.
    static func jws(claims: [String: JSONValue], key: SigningKeyVersion) throws -> String {
        try CompactJWS.serialize(payload: .object(claims), algorithm: key.algorithm, kid: key.kid, sign: key.sign)
    }

    /// `identity/oidc/introspect`: `active` and, when not, why.
    func introspect(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let token = req.fields.string("token")
        guard !token.isEmpty else { throw CofferError.invalid("missing token") }
        // Vault answers the verdict as a bare JSON document.
        func inactive(_ why: String) -> LogicalResponse { LogicalResponse(form: .document(["active": .bool(false), "error": .string(why)])) }
        guard let jws = try? CompactJWS(token), let kid = jws.keyID else { return inactive("error parsing token: malformed token") }
        let claims = JSONValue.object(jws.payload)
        let now = Date()
        var verified = false
        for name in try await oidcStorage.list(prefix: "key/") where !name.hasSuffix("/") {
            guard let k = try await key(name), let v = k.verifying(at: now).first(where: { $0.kid == kid }) else { continue }
            guard jws.algorithm == v.algorithm.rawValue else { return inactive("error validating signature: unexpected algorithm") }
            verified = v.verify(jws.signature, jws.signingInput)
            break
        }
        guard verified else { return inactive("error validating signature") }
        guard let exp = claims["exp"]?.intValue, Double(exp) > now.timeIntervalSince1970 else { return inactive("error validating claims: token is expired") }
        guard claims["iss"]?.stringValue == (try await issuer()) else { return inactive("error validating claims: invalid issuer") }
        let clientID = req.fields.string("client_id")
        if !clientID.isEmpty, claims["aud"]?.stringValue != clientID { return inactive("error validating claims: invalid audience") }
        if let sub = claims["sub"]?.stringValue, try await store.index().resolvedEntity(id: sub)?.disabled != false {
            return inactive("entity not found or disabled")
        }
        return LogicalResponse(form: .document(["active": .bool(true)]))
    }

    // MARK: discovery

    func discovery() async throws -> LogicalResponse? {
        let iss = try await issuer()
        var algs = Set<String>()
        for name in try await oidcStorage.list(prefix: "key/") where !name.hasSuffix("/") {
            if let k = try await key(name) { algs.insert(k.algorithm.rawValue) }
        }
        let doc: JSONValue = [
            "issuer": .string(iss), "jwks_uri": .string(iss + "/.well-known/keys"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": Self.strings(algs.isEmpty ? ["RS256"] : algs.sorted()),
        ]
        return LogicalResponse(form: .document(doc))
    }

    func publicKeys() async throws -> LogicalResponse? {
        let now = Date()
        var keys: [JSONValue] = []
        for name in try await oidcStorage.list(prefix: "key/").sorted() where !name.hasSuffix("/") {
            guard let k = try await key(name) else { continue }
            for v in k.verifying(at: now) { keys.append(try v.jwk()) }
        }
        return LogicalResponse(form: .document(["keys": .array(keys)]))
    }

    // MARK: templates

    /// Renders a claims template as Vault's JSON templating does: every `{{ placeholder }}`
    /// becomes the JSON of its value (a string quoted, metadata an object, groups a list;
    /// what the entity lacks an empty string), then the text must be a JSON object.
    static func render(template: String, entity: Entity?, index: IdentityIndex, now: Date) throws -> [String: JSONValue] {
        var out = ""
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else { throw CofferError.invalid("error parsing template: unclosed placeholder") }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            var piece: [UInt8] = []
            try value(of: name, entity: entity, index: index, now: now).write(into: &piece)
            out += String(decoding: piece, as: UTF8.self)
            rest = rest[close.upperBound...]
        }
        out += rest
        guard let parsed = try? JSONValue.parse(out), let obj = parsed.objectValue else {
            throw CofferError.invalid("error parsing template JSON: the rendered template is not a JSON object")
        }
        return obj
    }

    static func value(of name: String, entity e: Entity?, index: IdentityIndex, now: Date) throws -> JSONValue {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func unknown() -> CofferError { CofferError.invalid("error parsing template: no value could be found for one of the template directives") }
        if parts.first == "time" {
            guard parts.count >= 2, parts[1] == "now" else { throw unknown() }
            let t = Int64(now.timeIntervalSince1970)
            if parts.count == 2 { return .int(t) }
            guard parts.count == 4, let d = GoDuration.parseSeconds(parts[3]) else { throw unknown() }
            switch parts[2] {
            case "plus": return .int(t + d)
            case "minus": return .int(t - d)
            default: throw unknown()
            }
        }
        guard parts.count >= 3, parts[0] == "identity", parts[1] == "entity" else { throw unknown() }
        func string(_ s: String?) -> JSONValue { .string(s ?? "") }
        func meta(_ m: [String: String]?, _ key: String?) -> JSONValue {
            if let key { return string(m?[key]) }
            return .object((m ?? [:]).mapValues { .string($0) })
        }
        switch parts[2] {
        case "id" where parts.count == 3: return string(e?.id)
        case "name" where parts.count == 3: return string(e?.name)
        case "metadata" where parts.count <= 4: return meta(e?.metadata, parts.count == 4 ? parts[3] : nil)
        case "groups" where parts.count == 4:
            let ids = e.map { index.groupIDs(ofEntity: $0.id) }.map { $0.direct + $0.inherited } ?? []
            switch parts[3] {
            case "ids": return strings(ids)
            case "names": return strings(ids.compactMap { index.group(id: $0)?.name })
            default: throw unknown()
            }
        case "aliases" where parts.count >= 5:
            let alias = e?.aliases.first { $0.mountAccessor == parts[3] }
            switch parts[4] {
            case "id" where parts.count == 5: return string(alias?.id)
            case "name" where parts.count == 5: return string(alias?.name)
            case "metadata" where parts.count <= 6: return meta(alias?.metadata, parts.count == 6 ? parts[5] : nil)
            case "custom_metadata" where parts.count <= 6: return meta(alias?.customMetadata, parts.count == 6 ? parts[5] : nil)
            default: throw unknown()
            }
        default: throw unknown()
        }
    }
}
