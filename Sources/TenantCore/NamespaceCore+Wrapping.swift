import CofferSDK
import Foundation

extension NamespaceCore {
    // MARK: response wrapping

    /// The policy of every wrapping token (built in, never stored, not assignable).
    static let wrappingPolicy = "response-wrapping"
    static let invalidWrappingToken = CofferError.invalid("wrapping token is not valid or does not exist")

    /// Answers a wrapping token in place of `response` when the request asked for one
    /// (`X-Vault-Wrap-TTL`); a response with nothing in it is not wrapped, as in Vault.
    func wrapIfAsked(_ response: LogicalResponse, request: CoreRequest, rel: String, mount: MountedBackend) async throws -> LogicalResponse {
        guard let ttl = request.wrapTTL, ttl > 0 else { return response }
        guard case .envelope = response.form, response.data != nil || response.auth != nil || response.secret != nil else { return response }
        return try await wrap(Self.wrappedDocument(response, requestID: request.id), ttl: ttl, creationPath: request.path,
                              wrappedAccessor: response.auth?.accessor ?? "")
    }

    /// The response as Vault stores it in the wrapping token's cubbyhole: its envelope.
    static func wrappedDocument(_ r: LogicalResponse, requestID: String) -> JSONValue {
        var o: [String: JSONValue] = [
            "request_id": .string(requestID),
            "lease_id": .string(r.leaseID ?? ""),
            "renewable": .bool(r.secret?.renewable ?? false),
            "lease_duration": .int(Int64(r.secret?.ttl ?? 0)),
            "data": r.data.map { .object($0) } ?? .null,
            "wrap_info": .null,
            "warnings": r.warnings.isEmpty ? .null : .array(r.warnings.map { .string($0) }),
            "auth": r.auth?.json ?? .null,
        ]
        if let t = r.mountType { o["mount_type"] = .string(t) }
        return .object(o)
    }

    /// Makes a wrapping token (one use, `response-wrapping` policy, an orphan) holding
    /// `document` in its cubbyhole; answers the response carrying only its `wrap_info`.
    func wrap(_ document: JSONValue, ttl requested: Int, creationPath: String, wrappedAccessor: String) async throws -> LogicalResponse {
        let ttl = min(requested, configuration.maxLeaseTTL)
        let now = tokens.now()
        let template = TokenEntry(
            idHash: "", accessor: "", parentHash: "", policies: [Self.wrappingPolicy], meta: [:], displayName: "",
            numUses: 1, creationTime: now, creationTTL: ttl, expireTime: now + Int64(ttl), explicitMaxTTL: ttl,
            period: 0, renewable: false, orphan: true, path: creationPath, role: "", type: "service", entityID: "",
            namespacePath: path, lastRenewalTime: 0)
        let (token, entry) = try await tokens.create(template)
        let text = String(decoding: document.serialized(), as: UTF8.self)
        try await cubbyhole(of: entry.idHash).putJSON("response", ["response": .string(text)])
        var info: [String: JSONValue] = [
            "token": .string(token), "accessor": .string(entry.accessor), "ttl": .int(Int64(ttl)),
            "creation_time": .string(TokenEntry.rfc3339(now)), "creation_path": .string(creationPath),
        ]
        if !wrappedAccessor.isEmpty { info["wrapped_accessor"] = .string(wrappedAccessor) }
        var out = LogicalResponse()
        out.wrapInfo = .object(info)
        return out
    }

    func cubbyhole(of tokenHash: String) -> StorageView {
        rootView.sub(Self.cubbyholePrefix + tokenHash + "/")
    }

    /// A live wrapping token of this namespace, or Vault's 400.
    func wrappingToken(_ raw: String) async throws -> TokenEntry {
        guard !raw.isEmpty, raw.utf8.count <= 256, let e = try await tokens.lookup(token: raw), e.policies == [Self.wrappingPolicy] else {
            throw Self.invalidWrappingToken
        }
        return e
    }

    /// Takes the wrapped response out of a wrapping token (once: concurrent unwraps of one
    /// token get it once) and revokes the token.
    func unwrap(token raw: String) async throws -> JSONValue {
        try await unwrap(try await wrappingToken(raw))
    }

    func unwrap(_ e: TokenEntry) async throws -> JSONValue {
        let box = cubbyhole(of: e.idHash)
        let record: JSONValue? = try await box.withLock("response") {
            let r = try await box.getJSON("response")
            if r != nil { try await box.delete("response") }
            return r
        }
        try? await tokens.revokeTree(hash: e.idHash)
        guard let text = record?["response"]?.stringValue, let doc = try? JSONValue.parse(text) else { throw Self.invalidWrappingToken }
        return doc
    }

    /// What `sys/wrapping/lookup` shows of a wrapping token.
    func wrappingLookup(token raw: String) async throws -> [String: JSONValue] {
        let e = try await wrappingToken(raw)
        return [
            "creation_path": .string(e.path), "creation_time": .string(TokenEntry.rfc3339(e.creationTime)),
            "creation_ttl": .int(Int64(e.creationTTL)),
        ]
    }

    /// A new wrapping token for the same response (same path and TTL); the old one is gone.
    func rewrap(token raw: String) async throws -> LogicalResponse {
        let e = try await wrappingToken(raw)
        let doc = try await unwrap(e)
        return try await wrap(doc, ttl: e.creationTTL, creationPath: e.path, wrappedAccessor: doc["auth"]?["accessor"]?.stringValue ?? "")
    }
}

extension SystemBackend {
    static let wrappingRoutes: [Route<SystemBackend>] = [
        Route("wrapping/wrap", operations: [.update: { _, req in
            // The body is the data; the core wraps it (X-Vault-Wrap-TTL is required).
            guard !req.data.isEmpty else { throw CofferError.invalid("missing data to wrap") }
            return LogicalResponse(data: req.data)
        }], summary: "Wrap the request's data in a wrapping token."),
        Route("wrapping/unwrap", fields: [Field("token", .string)], operations: [.update: { b, req in
            .document(try await b.ns.unwrap(token: try Self.wrappingTokenOf(req)))
        }], summary: "Return a wrapped response and revoke its wrapping token."),
        Route("wrapping/lookup", fields: [Field("token", .string)], operations: [
            .update: { b, req in LogicalResponse(data: try await b.ns.wrappingLookup(token: try Self.wrappingTokenOf(req))) },
            .read: { b, req in LogicalResponse(data: try await b.ns.wrappingLookup(token: try Self.wrappingTokenOf(req))) },
        ], summary: "Look up a wrapping token's creation path, time and TTL."),
        Route("wrapping/rewrap", fields: [Field("token", .string)], operations: [.update: { b, req in
            try await b.ns.rewrap(token: try Self.wrappingTokenOf(req))
        }], summary: "Move a wrapped response to a new wrapping token."),
    ]

    /// The wrapping token of a request: `token` in the body, else the calling token.
    static func wrappingTokenOf(_ req: LogicalRequest) throws -> String {
        let t = req.fields.string("token")
        if !t.isEmpty { return t }
        guard let own = req.token?.clientToken, !own.isEmpty else { throw NamespaceCore.invalidWrappingToken }
        return own
    }
}
