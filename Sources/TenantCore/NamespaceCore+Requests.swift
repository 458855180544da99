import CofferSDK
import Foundation
import Identity
import Logging
import Synchronization
import Audit

extension NamespaceCore {
    // MARK: request handling

    /// Resolves a token, authorizes, dispatches: the request path of DESIGN §2.
    ///
    /// `tokenNamespace` is the namespace that owns the token when it is an ancestor of this
    /// one: the token is looked up there and that namespace's policies apply, to this
    /// namespace's path prefixed with its path relative to the token's namespace.
    public func handle(_ request: CoreRequest, tokenNamespace: NamespaceCore? = nil) async throws -> LogicalResponse {
        let path = request.path
        let owner = tokenNamespace ?? self
        let aclPath = String(self.path.dropFirst(owner.path.count)) + path
        guard let mount = router.withLock({ $0.route(path) }) else {
            throw CofferError(.notFound, "no handler for route \"\(path.prefix(256))\". route entry not found.")
        }
        if mount.closing || isClosing {
            throw CofferError(.unavailable, mount.closing ? "mount \"\(mount.routePath)\" is being disabled" : "namespace \"\(self.path)\" is being deleted")
        }
        let backend = try instance(of: mount, owner: owner)
        var rel = path.count >= mount.routePath.count ? String(path.dropFirst(mount.routePath.count)) : ""
        if rel.hasPrefix("/") { rel.removeFirst() }

        var logical = LogicalRequest(id: request.id, operation: request.operation, path: rel, mountPoint: mount.routePath, data: request.data, remoteAddress: request.remoteAddress)

        let unauthenticated = mount.backend.unauthenticatedPaths.contains { Self.globMatch($0, rel) }
        let audit = node.flatMap { $0.audit.hasDevices ? $0.audit : nil }
        var auditInfo = audit.map { _ in
            var info = AuditRequestInfo(
                id: request.id, operation: request.operation, path: path, namespace: AuditNamespace(id: id, path: self.path),
                mountType: mount.entry.type, mountPoint: mount.routePath, mountAccessor: mount.entry.accessor,
                clientToken: request.clientToken ?? "", data: request.data, remoteAddress: request.remoteAddress ?? "")
            info.nonHMACRequestKeys = mount.entry.config[list: "audit_non_hmac_request_keys"] ?? []
            info.nonHMACResponseKeys = mount.entry.config[list: "audit_non_hmac_response_keys"] ?? []
            return info
        }
        var spent: String?
        var tokenHash: String?
        /// A batch token's expiry: what it leases may not outlive it (nothing links the lease to it).
        var batchExpiry: Int64?
        if !unauthenticated {
            guard let raw = request.clientToken, let e = try await owner.usableToken(raw, address: request.remoteAddress) else {
                // An unwrap whose X-Vault-Token is the (used or expired) wrapping token: Vault's 400.
                let refusal = mount.kind == .system && rel == "wrapping/unwrap" && (request.data["token"]?.stringValue ?? "").isEmpty
                    ? Self.invalidWrappingToken : CofferError.denied()
                if let audit, let info = auditInfo { await Self.auditRefusal(audit, info, refusal) }
                throw refusal
            }
            // The raw token only for the token store and the wrapping endpoints (which act on
            // the caller's own token); the cubbyhole scope only for the cubbyhole.
            let needsRaw = mount.entry.type == "token" || (mount.kind == .system && rel.hasPrefix("wrapping/"))
            logical.token = RequestToken(accessor: e.accessor, policies: e.policies, displayName: e.displayName, namespacePath: owner.path, entityID: e.entityID, clientToken: needsRaw ? raw : nil)
            if mount.entry.type == "cubbyhole" { logical.token?.cubbyholeID = owner === self && e.type != "batch" ? e.idHash : nil }
            // A batch token is not stored: nothing (a lease) can be linked to it.
            tokenHash = e.type == "batch" ? nil : e.idHash
            if e.type == "batch", e.expireTime > 0 { batchExpiry = e.expireTime }

            if logical.operation == .update || logical.operation == .create {
                if let exists = try await backend.exists(logical) {
                    logical.operation = exists ? .update : .create
                } else {
                    logical.operation = .update
                }
            }
            if audit != nil, let token = logical.token {
                auditInfo?.operation = logical.operation
                auditInfo?.clientTokenAccessor = e.accessor
                auditInfo?.auth = AuditAuth(token: token, clientToken: raw, tokenType: e.type, tokenTTL: Int64(e.ttl(now: tokens.now())))
            }
            let needsSudo = mount.backend.rootPaths.contains { Self.globMatch($0, rel) }
            do {
                let acl = try await owner.policies.acl(for: owner.effectivePolicies(e))
                let granted = try acl.authorize(logical.operation, path: aclPath, data: request.data, needsSudo: needsSudo)
                logical.token?.hasSudo = granted.contains(.sudo)
            } catch {
                if let audit, let info = auditInfo { await Self.auditRefusal(audit, info, error) }
                throw error
            }
            if try await Self.spendUse(of: e, in: owner.tokens, audit: audit, auditInfo) { spent = e.idHash }
        } else {
            // The UI's mount listing is open to anyone but shows a token what it can reach.
            if mount.kind == .system, rel.hasPrefix("internal/ui/"), let e = try await owner.usableToken(request.clientToken, address: request.remoteAddress) {
                logical.token = RequestToken(accessor: e.accessor, policies: e.policies, displayName: e.displayName, namespacePath: owner.path, entityID: e.entityID)
            }
            if logical.operation == .update, let exists = try await backend.exists(logical) { logical.operation = exists ? .update : .create }
        }
        if mount.kind == .system, rel == "wrapping/wrap", logical.operation == .update || logical.operation == .create, (request.wrapTTL ?? 0) <= 0 {
            throw CofferError.invalid("endpoint requires response wrapping to be used")
        }
        guard let spent else {
            return try await dispatch(logical, mount: mount, backend: backend, owner: owner, path: path, rel: rel, tokenHash: tokenHash, batchExpiry: batchExpiry, request: request, audit: audit, auditInfo)
        }
        // A limited-use token: its last use revokes it once every request that spent a use is done.
        do {
            let response = try await dispatch(logical, mount: mount, backend: backend, owner: owner, path: path, rel: rel, tokenHash: tokenHash, batchExpiry: batchExpiry, request: request, audit: audit, auditInfo)
            await owner.tokens.endUse(spent)
            return response
        } catch {
            await owner.tokens.endUse(spent)
            throw error
        }
    }

    /// Runs an authorized request: lease quotas, the request's audit entry, the engine, the
    /// lease of what it issued, the response's audit entry.
    private func dispatch(
        _ logical: LogicalRequest, mount: MountedBackend, backend: any LogicalBackend, owner: NamespaceCore, path: String, rel: String, tokenHash: String?, batchExpiry: Int64? = nil, request: CoreRequest,
        audit: AuditBroker?, _ auditInfo: AuditRequestInfo?
    ) async throws -> LogicalResponse {
        // A request that may create a lease takes room under the lease-count quotas first.
        let leases = node?.leases
        let leasing = leases == nil ? nil : mount.backend.backend as? any LeasingBackend
        var reserved: [String] = []
        if let leasing, leasing.mayCreateLease(logical) {
            // Only the active node creates leases: a standby hands the request over before
            // the engine makes anything (a database user) that no lease would track.
            if node?.haRole == .standby { throw CofferError(.standbyWrite, "this node is a standby; leases are issued by the active node") }
            do {
                reserved = try await node?.reserveLeaseQuotas(ns: self, rel: path) ?? []
            } catch {
                if let audit, let info = auditInfo { await Self.auditRefusal(audit, info, error) }
                throw error
            }
        }
        defer { leases?.release(reserved) }
        // The request entry reaches an audit device before the operation runs, or it does not run.
        if let audit, let info = auditInfo { try await audit.logRequest(info) }
        var result: LogicalResponse?
        // A login names an alias: a locked one is refused before its credentials are checked.
        let isLogin = mount.kind == .auth && mount.entry.type != "token"
        let loginAlias = isLogin ? backend.loginAlias(logical) : nil
        do {
            if let loginAlias { try await checkLockout(mount: mount, alias: loginAlias) }
            do {
                result = try await backend.handle(logical)
            } catch let e as CofferError where e.code == .invalidCredentials {
                if let loginAlias { await recordFailedLogin(mount: mount, alias: loginAlias) }
                throw e
            }
            if isLogin, var auth = result?.auth, auth.clientToken.isEmpty {
                // The login's entity: found by its alias, or made.
                if !auth.aliasName.isEmpty {
                    let found = try await identity.entity(forLogin: mount.identityInfo, alias: auth.aliasName, metadata: auth.aliasMetadata, groupAliases: auth.groupAliases)
                    auth.entityID = found.id
                    auth.identityPolicies = found.policies
                }
                let (issued, warnings) = try await issueLoginToken(auth, mount: mount, requestPath: path)
                result?.auth = issued
                result?.warnings += warnings
                if let loginAlias { recordSuccessfulLogin(mount: mount, alias: loginAlias) }
            }
            // As in Vault, a lease made with a batch token ends by the token's expiry.
            if let batchExpiry, var secret = result?.secret {
                let left = Int(max(1, batchExpiry - tokens.now()))
                if secret.ttl <= 0 || secret.ttl > left { secret.ttl = left }
                if secret.maxTTL <= 0 || secret.maxTTL > left { secret.maxTTL = left }
                result?.secret = secret
            }
            if let leasing, let leases, let secret = result?.secret {
                do {
                    let lease = try await leases.register(
                        ns: self, mount: mount, requestPath: path, secret: secret, tokenHash: tokenHash, tokenNamespace: tokenHash == nil ? nil : owner)
                    result?.leaseID = lease.leaseID
                    result?.secret?.ttl = lease.ttl
                    result?.warnings += lease.warnings
                } catch {
                    // No lease, no secret: undo what the engine created.
                    let now = Date(timeIntervalSince1970: configuration.clock.now())
                    try? await leasing.revokeLease(LeaseInfo(leaseID: "", path: rel, internalData: secret.internalData, issueTime: now, expireTime: now))
                    throw error
                }
            }
        } catch {
            if let audit, var info = auditInfo {
                info.error = Self.auditMessage(error)
                try await audit.logResponse(AuditResponseInfo(request: info, error: Self.auditMessage(error)))
            }
            throw error
        }
        guard var response = result else {
            if logical.operation == .read || logical.operation == .list || logical.operation == .patch { throw CofferError(.notFound, "") }
            return .done
        }
        if mount.kind == .system { response.dataAtTopLevel = true }
        response.mountType = mount.entry.type
        response.mountPoint = self.path + mount.routePath
        // Wrapped (X-Vault-Wrap-TTL) before it is audited: the entry holds the wrap_info
        // (its token HMAC'd), as Vault's does, not the response the token now keeps.
        response = try await wrapIfAsked(response, request: request, rel: rel, mount: mount)
        if let audit, let info = auditInfo { try await audit.logResponse(AuditResponseInfo(request: info, response: response)) }
        return response
    }

    /// Spends one use of a limited-use token (no-op for unlimited ones); a token with no use
    /// left is refused (403, audited). Answers whether a use was spent: the caller then calls
    /// `TokenStore.endUse` once the request is done, which revokes a used-up token.
    static func spendUse(of e: TokenEntry, in store: TokenStore, audit: AuditBroker?, _ info: AuditRequestInfo?) async throws -> Bool {
        guard e.numUses > 0 else { return false }
        guard try await store.useToken(e) else {
            if let audit, let info { await auditRefusal(audit, info, CofferError.denied()) }
            throw CofferError.denied()
        }
        return true
    }

    /// Refused before running (no token, denied): both entries carry the error, as in Vault.
    /// An audit failure here changes nothing: the request is refused either way.
    static func auditRefusal(_ audit: AuditBroker, _ request: AuditRequestInfo, _ error: any Error) async {
        var info = request
        info.error = auditMessage(error)
        try? await audit.logRequest(info)
        try? await audit.logResponse(AuditResponseInfo(request: info, error: auditMessage(error)))
    }

    static func auditMessage(_ error: any Error) -> String {
        (error as? CofferError)?.message ?? "internal error"
    }

    /// Checks that a token may perform `operation` on `path`, for endpoints the gateway
    /// answers itself (`sys/metrics`, `sys/step-down`, snapshots): like any request, it
    /// spends one use of a limited-use token and reaches the audit devices (both entries
    /// are written once authorized, before the gateway acts).
    public func authorize(clientToken: String?, operation: LogicalOperation, path: String, needsSudo: Bool = false, requestID: String = RandomID.uuid(), remoteAddress: String? = nil) async throws {
        let audit = node.flatMap { $0.audit.hasDevices ? $0.audit : nil }
        let sys = router.withLock { $0.mounts.first { $0.kind == .system } }
        let info = audit.map { _ in
            AuditRequestInfo(
                id: requestID, operation: operation, path: path, namespace: AuditNamespace(id: id, path: self.path),
                mountType: "system", mountPoint: "sys/", mountAccessor: sys?.entry.accessor ?? "", clientToken: clientToken ?? "",
                data: [:], remoteAddress: remoteAddress ?? "")
        }
        guard let raw = clientToken, let e = try await usableToken(raw, address: remoteAddress) else {
            if let audit, let info { await Self.auditRefusal(audit, info, CofferError.denied()) }
            throw CofferError.denied()
        }
        do {
            try await policies.acl(for: effectivePolicies(e)).authorize(operation, path: path, data: [:], needsSudo: needsSudo)
        } catch {
            if let audit, let info { await Self.auditRefusal(audit, info, error) }
            throw error
        }
        if try await Self.spendUse(of: e, in: tokens, audit: audit, info) { await tokens.endUse(e.idHash) }
        if let audit, var request = info {
            request.clientTokenAccessor = e.accessor
            request.auth = AuditAuth(
                token: RequestToken(accessor: e.accessor, policies: e.policies, displayName: e.displayName, namespacePath: self.path, entityID: e.entityID),
                clientToken: raw, tokenType: e.type, tokenTTL: Int64(e.ttl(now: tokens.now())))
            try await audit.logRequest(request)
            try await audit.logResponse(AuditResponseInfo(request: request))
        }
    }

    /// The entry of a token of this namespace that may act now: known, not out of uses,
    /// presented from an address it is bound to. Nil otherwise (the caller refuses).
    public func usableToken(_ raw: String?, address: String?) async throws -> TokenEntry? {
        guard let raw, !raw.isEmpty, let e = try await tokens.lookup(token: raw), e.numUses >= 0,
              TokenParameters.allows(e.boundCIDRs ?? [], address: address) else { return nil }
        return e
    }

    /// The policies a token acts with: its own, and those its entity brings (the entity's
    /// and its groups', as they are now). A token whose entity is disabled or gone is
    /// refused, though not revoked, as in Vault.
    func effectivePolicies(_ e: TokenEntry) async throws -> [String] {
        try await effectivePolicies(e.policies, entityID: e.entityID)
    }

    /// The same for a token known by its policies and entity id (a request's `RequestToken`).
    func effectivePolicies(_ own: [String], entityID: String) async throws -> [String] {
        guard !entityID.isEmpty else { return own }
        guard let extra = try await identity.policies(ofEntity: entityID) else { throw CofferError.denied() }
        return Self.union(own, extra)
    }

    /// Token policies followed by the identity ones they lack.
    static func union(_ own: [String], _ extra: [String]) -> [String] {
        extra.isEmpty ? own : own + extra.filter { !own.contains($0) }
    }

    /// Capabilities of a token on paths (sys/capabilities*).
    public func capabilities(policies names: [String], paths: [String]) async throws -> [String: [String]] {
        let acl = try await policies.acl(for: names)
        var out: [String: [String]] = [:]
        for p in paths {
            var path = p
            if path.hasPrefix("/") { path.removeFirst() }
            if acl.isRoot {
                out[p] = ["root"]
            } else {
                let c = acl.capabilities(path).names
                out[p] = c.isEmpty ? ["deny"] : c
            }
        }
        return out
    }

    /// Glob with an optional trailing `*`.
    /// A special path of a backend: a trailing `*` matches any rest, a `+` segment exactly
    /// one segment (`issuer/+/pem`), as in Vault's `PathsSpecial`.
    static func globMatch(_ pattern: String, _ path: String) -> Bool {
        guard let plus = pattern.firstIndex(of: "+") else {
            if pattern.hasSuffix("*") { return path.hasPrefix(pattern.dropLast()) }
            return pattern == path
        }
        // The literal part before the first `+` decides most paths without splitting.
        guard path.hasPrefix(pattern[..<plus]) else { return false }
        var p = pattern.split(separator: "/", omittingEmptySubsequences: false)[...]
        var s = path.split(separator: "/", omittingEmptySubsequences: false)[...]
        while let seg = p.first {
            if seg.hasSuffix("*") && p.count == 1 {
                guard let rest = s.first else { return seg == "*" }
                return rest.hasPrefix(seg.dropLast())
            }
            guard let have = s.first else { return false }
            if seg == "+" { if have.isEmpty { return false } } else if seg != have { return false }
            p = p.dropFirst()
            s = s.dropFirst()
        }
        return s.isEmpty
    }
}
