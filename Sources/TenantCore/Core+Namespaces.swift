import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

extension Core {
    /// The hooks a namespace's `sys/` backend calls: seal (root only), its own keyring,
    /// and its children.
    func hooks(forPath path: String) -> NodeHooks {
        var hooks = NodeHooks(
            seal: { [weak self] in
                guard path.isEmpty else { throw CofferError.invalid("sys/seal is only available in the root namespace") }
                try await self?.seal()
            },
            rotate: { [weak self] in
                guard let self else { return }
                if path.isEmpty { try await self.rotate() } else { try await self.rotateNamespaceKeyring(path: path) }
            },
            keyStatus: { [weak self] in
                guard let self else { return [:] }
                if path.isEmpty { return try await self.keyStatus() }
                return try await self.namespaceKeyStatus(path: path)
            },
            createNamespace: { [weak self] rel, metadata in
                guard let self else { throw CofferError(.sealed, "Vault is sealed") }
                return try await self.createNamespace(parentPath: path, relative: rel, metadata: metadata)
            },
            updateNamespace: { [weak self] rel, patch in
                guard let self else { throw CofferError(.sealed, "Vault is sealed") }
                return try await self.updateNamespace(parentPath: path, relative: rel, patch: patch)
            },
            deleteNamespace: { [weak self] rel in
                guard let self else { return }
                try await self.deleteNamespace(parentPath: path, relative: rel)
            },
            tokenStore: { [weak self] ancestor in
                guard let self, path.hasPrefix(ancestor) else { return nil }
                return try await self.namespace(path: ancestor)?.tokens
            },
            lock: { [weak self] rel in
                guard let self else { throw CofferError(.sealed, "Vault is sealed") }
                return try await self.lockNamespace(callerPath: path, relative: rel)
            },
            unlock: { [weak self] rel, key, isRoot in
                try await self?.unlockNamespace(callerPath: path, relative: rel, key: key, callerIsRoot: isRoot)
            },
            tenants: path.isEmpty ? TenantHooks(
                provision: { [weak self] name, metadata, policy, quotas in
                    guard let self else { throw CofferError(.sealed, "Vault is sealed") }
                    return try await self.provisionTenant(name: name, metadata: metadata, adminPolicy: policy, quotas: quotas)
                },
                read: { [weak self] name in try await self?.tenant(name: name) },
                list: { [weak self] in try await self?.tenantNames() ?? [] },
                deprovision: { [weak self] name in try await self?.deprovisionTenant(name: name) }) : nil)
        hooks.isStandby = { [weak self] in self?.haRole == .standby }
        hooks.childNamespace = { [weak self] child in
            guard let self, child.hasPrefix(path), child != path else { return nil }
            return try await self.namespace(path: child)
        }
        hooks.usageReport = { [weak self] query in
            guard let self else { throw CofferError(.sealed, "Vault is sealed") }
            return try await self.usageReport(callerPath: path, query: query)
        }
        hooks.audit = audit
        hooks.leases = leases
        hooks.periodic = periodic
        hooks.reserveLeaseQuotas = { [weak self] ns, rel in try await self?.reserveLeaseQuotas(ns: ns, rel: rel) ?? [] }
        hooks.quotaConfig = { [weak self] in self?.quotaConfig ?? QuotaConfig() }
        hooks.setQuotaConfig = { [weak self] config in try await self?.storeQuotaConfig(config) }
        return hooks
    }

    /// The namespace at `path` ("" = root), loading it (and its ancestors) on first use.
    /// nil when it does not exist.
    public func namespace(path: String) async throws -> NamespaceCore? {
        let root = try root()
        if path.isEmpty { return root }
        if let ns = loaded.withLock({ $0[path] }) { return ns }
        var current = root
        for seg in path.split(separator: "/") {
            let childPath = current.path + seg + "/"
            if let ns = loaded.withLock({ $0[childPath] }) {
                current = ns
                continue
            }
            guard let ns = try await loadChild(of: current, name: String(seg)) else { return nil }
            current = ns
        }
        return current
    }

    /// Loads child `name` of `parent`: one load per path at a time, shared by concurrent callers.
    func loadChild(of parent: NamespaceCore, name: String) async throws -> NamespaceCore? {
        let childPath = parent.path + name + "/"
        let task = loading.withLock { inFlight -> Task<NamespaceCore?, any Error> in
            if let running = inFlight[childPath] { return running }
            let task = Task<NamespaceCore?, any Error> {
                defer { _ = self.loading.withLock { $0.removeValue(forKey: childPath) } }
                return try await self.loadChildNow(of: parent, name: name, childPath: childPath)
            }
            inFlight[childPath] = task
            return task
        }
        return try await task.value
    }

    private func loadChildNow(of parent: NamespaceCore, name: String, childPath: String) async throws -> NamespaceCore? {
        for _ in 0..<8 {
            let generation = recordGeneration.load(ordering: .acquiring)
            guard let record = try await parent.child(name) else { return nil }
            let nsBarrier = Barrier(physical: PrefixedStorage(physical, prefix: NamespacePath.storagePrefix(id: record.id)))
            nsBarrier.install(record.keyring)
            let ns = try await NamespaceCore.load(
                path: childPath, namespaceID: record.id, storage: nsBarrier, catalog: catalog,
                configuration: configuration, hooks: hooks(forPath: childPath), logger: logger)
            if let installed = install(ns, at: childPath, readAt: generation) { return installed }
        }
        throw CofferError(.unavailable, "namespace \"\(childPath)\" changed while loading; retry")
    }

    /// Makes `ns` the loaded namespace at `path`, unless one is loaded there already (that one
    /// is returned) or a record changed since `generation` was read (nil: the caller's view
    /// may be stale, `recordChanged`).
    private func install(_ ns: NamespaceCore, at path: String, readAt generation: UInt64) -> NamespaceCore? {
        let installed = loaded.withLock { l -> NamespaceCore? in
            if let existing = l[path] { return existing }
            guard recordGeneration.load(ordering: .acquiring) == generation else { return nil }
            l[path] = ns
            return ns
        }
        if installed != nil { activity.withLock { u in if u[path] == nil { u[path] = Activity() } } }
        return installed
    }

    /// Called after a child record changed in storage: loads that read the old one start over.
    func recordChanged(dropping prefix: String? = nil) {
        loaded.withLock { l in
            recordGeneration.add(1, ordering: .releasing)
            if let prefix { for k in l.keys where k.hasPrefix(prefix) { l[k] = nil } }
        }
    }

    /// Splits a request into its namespace and the path inside it: the `X-Vault-Namespace`
    /// header, then the longest run of leading path segments naming child namespaces.
    public func resolve(header: String?, path: String) async throws -> (NamespaceCore, String) {
        var ns: NamespaceCore
        if let header, !header.isEmpty {
            guard let base = NamespacePath.normalize(header) else {
                throw CofferError.invalid("invalid namespace \"\(header.prefix(128))\"")
            }
            guard let found = try await namespace(path: base) else {
                throw CofferError(.notFound, "namespace not found: \(base.prefix(128))")
            }
            ns = found
        } else {
            ns = try root()
        }
        var rest = Substring(path)
        while let slash = rest.utf8.firstIndex(of: UInt8(ascii: "/")) {
            let seg = rest[..<slash]
            guard try await ns.child(String(seg)) != nil,
                  let child = try await namespace(path: ns.path + seg + "/") else { break }
            ns = child
            rest = rest[rest.index(after: slash)...]
        }
        let rel = rest.startIndex == path.startIndex ? path : String(rest)
        if ns.path != "" && !rel.hasPrefix("sys/namespaces/api-lock/unlock"), let locked = try await lockedAncestor(of: ns.path) {
            throw CofferError(.unavailable, "API access to this namespace (\"\(locked)\") has been locked by an administrator")
        }
        return (ns, rel)
    }

    /// The first namespace at or above `path` whose API is locked.
    func lockedAncestor(of path: String) async throws -> String? {
        var current = try root()
        for seg in path.split(separator: "/") {
            guard let record = try await current.child(String(seg)) else { return nil }
            if record.lockHash != nil { return record.path }
            guard let next = loaded.withLock({ $0[record.path] }) else { return nil }
            current = next
        }
        return nil
    }

    /// `sys/namespaces/api-lock/lock[/sub]`: locks the namespace (the caller's own, or a
    /// descendant) and returns the unlock key, once.
    func lockNamespace(callerPath: String, relative: String) async throws -> String {
        let target = try targetPath(callerPath, relative)
        let (pp, name) = try split("", target)
        return try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), var record = try await parent.child(name) else {
                throw CofferError(.notFound, "namespace not found")
            }
            guard record.lockHash == nil else { throw CofferError.invalid("namespace \"\(record.path)\" is already locked") }
            let key = TokenID.random(32)
            record.lockHash = Array(SHA256.hash(data: Array(key.utf8)))
            try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record)
            let updated = record
            parent.setChild(name, updated)
            recordChanged()
            logger.info("namespace API locked", metadata: ["ns.path": "\(record.path)"])
            return key
        }
    }

    /// `sys/namespaces/api-lock/unlock[/sub]`: needs the unlock key, or a root token.
    func unlockNamespace(callerPath: String, relative: String, key: String?, callerIsRoot: Bool) async throws {
        let target = try targetPath(callerPath, relative)
        let (pp, name) = try split("", target)
        try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), var record = try await parent.child(name) else {
                throw CofferError(.notFound, "namespace not found")
            }
            guard let hash = record.lockHash else { throw CofferError.invalid("namespace \"\(record.path)\" is not locked") }
            if !callerIsRoot {
                guard let key, constantTimeEquals(Array(SHA256.hash(data: Array(key.utf8))), hash) else {
                    throw CofferError.invalid("unlock key is missing or invalid")
                }
            }
            record.lockHash = nil
            try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record)
            let updated = record
            parent.setChild(name, updated)
            recordChanged()
            logger.info("namespace API unlocked", metadata: ["ns.path": "\(record.path)"])
        }
    }

    func targetPath(_ callerPath: String, _ relative: String) throws -> String {
        guard let rel = NamespacePath.normalize(relative) else { throw CofferError.invalid("invalid namespace path") }
        let target = callerPath + rel
        guard !target.isEmpty else { throw CofferError.invalid("the root namespace cannot be locked") }
        return target
    }

    /// The Vault request path end to end: namespace, token (from its own namespace, which
    /// must be this one or an ancestor), ACL in the token's namespace, dispatch.
    public func handle(_ request: CoreRequest, namespace header: String?) async throws -> LogicalResponse {
        try RequestPath.check(request.path)
        let (ns, rel) = try await resolve(header: header, path: request.path)
        request.trace?.namespace.withLock { $0 = ns.path }
        if !ns.path.isEmpty { beginUse(ns.path) }
        defer { if !ns.path.isEmpty { endUse(ns.path) } }
        let kind = requestClass(ns: ns, rel: rel, operation: request.operation)
        do {
            let rateHeaders = try await enforceQuotas(ns: ns, rel: rel, request: request)
            var req = request
            req.path = rel
            var response = try await handleResolved(req, ns: ns)
            if !rateHeaders.isEmpty { response.headers.merge(rateHeaders) { a, _ in a } }
            usage.record(namespace: ns.path, storagePrefix: ns.storagePrefix, class: kind, outcome: .ok, bytesIn: request.bytesIn)
            return response
        } catch let e as CofferError where e.code == .standbyWrite {
            // Not served here: the Gateway forwards it, and the active node counts it.
            throw e
        } catch let e as CofferError {
            usage.record(namespace: ns.path, storagePrefix: ns.storagePrefix, class: kind, outcome: e.code == .rateLimited ? .throttled : .error, bytesIn: request.bytesIn)
            if e.code == .rateLimited, quotaConfig.enableAuditLogging, audit.hasDevices {
                // `enable_rate_limit_audit_logging`: refused requests reach the audit devices too.
                var info = AuditRequestInfo(
                    id: request.id, operation: request.operation, path: rel, namespace: AuditNamespace(id: ns.id, path: ns.path),
                    clientToken: request.clientToken ?? "", data: request.data, remoteAddress: request.remoteAddress ?? "")
                info.error = e.message
                try? await audit.logRequest(info)
            }
            throw e
        } catch {
            usage.record(namespace: ns.path, storagePrefix: ns.storagePrefix, class: kind, outcome: .error, bytesIn: request.bytesIn)
            throw error
        }
    }

    /// The billing class of a request (nil: help, not counted).
    func requestClass(ns: NamespaceCore, rel: String, operation: LogicalOperation) -> RequestClass? {
        if operation == .help { return nil }
        // A class the engine's route declares (logins, credentials, crypto operations).
        if let mount = ns.router.withLock({ $0.route(rel) }), mount.backend.declaresUsage {
            var inside = rel.count >= mount.routePath.count ? String(rel.dropFirst(mount.routePath.count)) : ""
            if inside.hasPrefix("/") { inside.removeFirst() }
            if let declared = mount.backend.declaredClass(path: inside, operation: operation) { return declared }
        }
        switch operation {
        case .read: return .read
        case .list: return .list
        case .delete: return .delete
        case .create, .update, .patch: return .write
        case .help: return nil
        }
    }

    func handleResolved(_ req: CoreRequest, ns: NamespaceCore) async throws -> LogicalResponse {
        var tokenNS = ns
        if let raw = req.clientToken, !raw.isEmpty {
            if let id = TokenID.namespaceID(of: raw) {
                guard id != ns.id else { return try await ns.handle(req) }
                guard let path = try await namespacePath(id: id), ns.path.hasPrefix(path),
                      let owner = try await namespace(path: path) else {
                    throw CofferError.denied()
                }
                tokenNS = owner
            } else {
                tokenNS = try root()
            }
        }
        return try await ns.handle(req, tokenNamespace: tokenNS === ns ? nil : tokenNS)
    }

    /// Whether `raw` is a live token of any namespace (for endpoints that only need a
    /// caller, such as the OpenAPI document). Spends no use of the token.
    public func isLiveToken(_ raw: String?) async throws -> Bool {
        guard let raw, !raw.isEmpty else { return false }
        var owner = try root()
        if let id = TokenID.namespaceID(of: raw) {
            guard let path = try await namespacePath(id: id), let ns = try await namespace(path: path) else { return false }
            owner = ns
        }
        guard let e = try await owner.tokens.lookup(token: raw) else { return false }
        return e.numUses >= 0
    }

    /// Namespace id → path, for tokens and accessors that carry an id suffix.
    func namespacePath(id: String) async throws -> String? {
        guard NamespacePath.isValidName(Substring(id)) else { return nil }
        if let ns = loaded.withLock({ $0.withID(id) }) { return ns.path }
        return try await barrier.getJSON("sys/namespace-ids/" + id)?.stringValue
    }

    // MARK: lifecycle

    func split(_ parentPath: String, _ relative: String) throws -> (parent: String, name: String) {
        guard let rel = NamespacePath.normalize(relative), !rel.isEmpty else {
            throw CofferError.invalid("invalid namespace path \"\(relative.prefix(128))\"")
        }
        var segs = rel.split(separator: "/").map(String.init)
        let name = segs.removeLast()
        // Reserved at every depth: `acme/sys/` would shadow acme's own `sys/` (and the stock
        // default policy's grants on `cubbyhole/`).
        if NamespacePath.reserved.contains(name) {
            throw CofferError.invalid("\"\(name)\" is a reserved path and cannot be a namespace")
        }
        return (parentPath + segs.map { $0 + "/" }.joined(), name)
    }

    func createNamespace(parentPath: String, relative: String, metadata: [String: String]) async throws -> NamespaceRecord {
        let (pp, name) = try split(parentPath, relative)
        guard let parent = try await namespace(path: pp) else {
            throw CofferError.invalid("parent namespace does not exist: \(pp)")
        }
        let path = pp + name + "/"
        guard creating.withLock({ $0.insert(path).inserted }) else {
            throw CofferError.invalid("namespace \"\(path)\" already exists")
        }
        defer { _ = creating.withLock { $0.remove(path) } }
        if try await parent.child(name) != nil {
            throw CofferError.invalid("namespace \"\(path)\" already exists")
        }
        if parent.mounts(kind: .secret).contains(where: { $0.routePath == name + "/" }) {
            throw CofferError.invalid("\"\(name)/\" is already a mount path in \"\(pp)\"")
        }
        // Reserved in-process first, so two concurrent creations never pick the same id
        // between the storage check and the write.
        var id = NamespacePath.newID()
        while try await !reserveID(id) { id = NamespacePath.newID() }
        defer { _ = creatingIDs.withLock { $0.remove(id) } }
        let record = NamespaceRecord(id: id, path: path, customMetadata: metadata, keyring: .generate(), createdAt: Date())
        let nsBarrier = Barrier(physical: PrefixedStorage(physical, prefix: NamespacePath.storagePrefix(id: id)))
        nsBarrier.install(record.keyring)
        // Every write of a creation at once: with concurrent creations they share group commits.
        let initial = try await withThrowingTaskGroup(of: NamespaceCore.InitialState?.self) { group in
            group.addTask { [id] in try await self.barrier.putJSON("sys/namespace-ids/" + id, .string(record.path)); return nil }
            group.addTask { try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record); return nil }
            group.addTask { try await NamespaceCore.initialize(storage: nsBarrier) }
            var initial: NamespaceCore.InitialState?
            for try await state in group where state != nil { initial = state }
            return initial!
        }
        let generation = recordGeneration.load(ordering: .acquiring)
        parent.setChild(name, record)
        // Loaded now, from what was just written: a new namespace's first request (usually at
        // once: a mount, a policy) does not read it back.
        let ns = try await NamespaceCore.load(
            path: path, namespaceID: id, storage: nsBarrier, catalog: catalog, configuration: configuration,
            hooks: hooks(forPath: path), logger: logger, initial: initial)
        // Not installed after a delete or change of a record since: left to a normal load.
        _ = install(ns, at: path, readAt: generation)
        logger.info("namespace created", metadata: ["ns.path": "\(record.path)", "ns.id": "\(id)"])
        return record
    }

    /// Claims a new namespace id: false when a creation in flight or a stored namespace has it.
    private func reserveID(_ id: String) async throws -> Bool {
        guard creatingIDs.withLock({ $0.insert(id).inserted }) else { return false }
        if try await barrier.get("sys/namespace-ids/" + id) == nil { return true }
        _ = creatingIDs.withLock { $0.remove(id) }
        return false
    }

    func updateNamespace(parentPath: String, relative: String, patch: [String: JSONValue]) async throws -> NamespaceRecord {
        let (pp, name) = try split(parentPath, relative)
        return try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), var record = try await parent.child(name) else {
                throw CofferError(.notFound, "")
            }
            for (k, v) in patch {
                if v.isNull { record.customMetadata[k] = nil } else if let s = v.stringValue { record.customMetadata[k] = s }
                else { throw CofferError.invalid("custom_metadata values must be strings") }
            }
            try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record)
            let updated = record
            parent.setChild(name, updated)
            recordChanged()
            return record
        }
    }

    /// Crypto-shred: the keyring goes first (the record in the parent), so every row the
    /// namespace leaves behind is undecryptable at once; the rows are removed after.
    func deleteNamespace(parentPath: String, relative: String) async throws {
        let (pp, name) = try split(parentPath, relative)
        // Its leases are revoked first (the credentials must not outlive the keyring); a
        // failure stops the delete, as an unmount does.
        let victim = try await namespace(path: pp + name + "/")
        if let victim, try await victim.childNames().isEmpty {
            _ = try await leases.revokeAll(victim, prefix: "")
        }
        let record: NamespaceRecord? = try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), let record = try await parent.child(name) else {
                return nil
            }
            if let child = try await namespace(path: record.path), try await !child.childNames().isEmpty {
                throw CofferError.invalid("cannot delete namespace (\"\(record.path)\") containing child namespaces")
            }
            try await parent.rootView.delete(NamespaceCore.childPrefix + name)
            parent.setChild(name, nil)
            try await barrier.delete("sys/namespace-ids/" + record.id)
            recordChanged(dropping: record.path)
            logger.info("namespace deleted (keyring shredded)", metadata: ["ns.path": "\(record.path)", "ns.id": "\(record.id)"])
            return record
        }
        if let record {
            await victim?.teardownBackends()
            try await PrefixedStorage(physical, prefix: NamespacePath.storagePrefix(id: record.id)).deleteAll()
        }
    }

    // MARK: tenants

    static let tenantPrefix = "sys/tenants/"

    /// The default `tenant-admin` policy: everything inside the tenant's namespace, and by
    /// construction nothing outside it (policies only ever reach their own namespace and
    /// its descendants).
    public static let tenantAdminPolicy = """
        path "*" {
          capabilities = ["create", "read", "update", "delete", "list", "sudo", "patch"]
        }
        """

    /// `PUT sys/tenants/:name`: namespace + admin policy + orphan periodic admin token, in one call.
    func provisionTenant(name: String, metadata: [String: String], adminPolicy: String?, quotas: JSONValue?) async throws -> (record: JSONValue, auth: AuthInfo) {
        guard NamespacePath.isValidName(Substring(name)), !NamespacePath.reserved.contains(name) else {
            throw CofferError.invalid("invalid tenant name \"\(name.prefix(64))\"")
        }
        let root = try root()
        let tenantExists = try await root.rootView.get(Self.tenantPrefix + name) != nil
        let namespaceExists = try await root.child(name) != nil
        if tenantExists || namespaceExists {
            throw CofferError(.alreadyExists, "tenant \"\(name)\" already exists")
        }
        let policyText = adminPolicy ?? Self.tenantAdminPolicy
        _ = try Policy.parse(name: "tenant-admin", text: policyText)  // refuse a bad override before creating anything
        let record = try await createNamespace(parentPath: "", relative: name, metadata: metadata)
        do {
            guard let ns = try await namespace(path: record.path) else { throw CofferError.internalError("tenant namespace vanished") }
            try await ns.policies.write(name: "tenant-admin", text: policyText)
            let now = TokenStore.now()
            let period = 24 * 3600
            let template = TokenEntry(
                idHash: "", accessor: "", parentHash: "", policies: ["default", "tenant-admin"], meta: ["tenant": name],
                displayName: "token-tenant-admin", numUses: 0, creationTime: now, creationTTL: period,
                expireTime: now + Int64(period), explicitMaxTTL: 0, period: period, renewable: true, orphan: true,
                path: "sys/tenants/\(name)", role: "", type: "service", entityID: "", namespacePath: record.path, lastRenewalTime: 0)
            let (token, entry) = try await ns.tokens.create(template)
            var tenant: [String: JSONValue] = [
                "name": .string(name), "namespace_id": .string(record.id), "namespace_path": .string(record.path),
                "custom_metadata": .object(metadata.mapValues { .string($0) }), "admin_policy": "tenant-admin",
                "created_time": .string(RFC3339.format(record.createdAt)),
            ]
            if let quotas {
                let applied = try await applyTenantQuotas(quotas, in: ns)
                tenant["quotas"] = .array(applied.map { .object($0.json) })
            }
            try await root.rootView.putJSON(Self.tenantPrefix + name, .object(tenant))
            logger.info("tenant provisioned", metadata: ["ns.path": "\(record.path)", "ns.id": "\(record.id)"])
            return (.object(tenant), entry.authInfo(token: token))
        } catch {
            try? await deleteNamespace(parentPath: "", relative: name)
            throw error
        }
    }

    /// The `quotas` of `PUT sys/tenants/:name`: rate-limit quotas (a list of Vault quota
    /// objects, or `{"rate_limit": [...]}`), created in the tenant's namespace as managed by
    /// the root: the tenant's admins can read them, not change them, and their own quotas
    /// only ever add limits.
    func applyTenantQuotas(_ spec: JSONValue, in ns: NamespaceCore) async throws -> [RateLimitQuota] {
        let items: [JSONValue]
        if let list = spec.arrayValue {
            items = list
        } else if let object = spec.objectValue {
            if let list = object["rate_limit"]?.arrayValue ?? object["rate-limit"]?.arrayValue {
                items = list
            } else if object["rate"] != nil {
                items = [spec]
            } else {
                throw CofferError.invalid("quotas must be a list of rate-limit quotas or {\"rate_limit\": [...]}")
            }
        } else {
            throw CofferError.invalid("quotas must be a list of rate-limit quotas or {\"rate_limit\": [...]}")
        }
        var made: [RateLimitQuota] = []
        for (i, item) in items.enumerated() {
            guard let object = item.objectValue else { throw CofferError.invalid("quotas[\(i)] must be an object") }
            let fields = try FieldValues.validate(SystemBackend.quotaFields, data: object, captures: [:])
            let name = fields.optionalString("name") ?? (i == 0 ? "tenant" : "tenant-\(i)")
            guard !made.contains(where: { $0.name == name }) else { throw CofferError.invalid("duplicate quota name \"\(name.prefix(64))\"") }
            made.append(try await ns.makeQuota(name: name, fields: fields, existing: nil, managed: true))
        }
        let quotas = made
        try await ns.updateQuotas { table in for q in quotas { table[q.name] = q } }
        return made
    }

    func tenant(name: String) async throws -> JSONValue? {
        guard NamespacePath.isValidName(Substring(name)) else { return nil }
        guard var t = try await root().rootView.getJSON(Self.tenantPrefix + name)?.objectValue else { return nil }
        t["locked"] = .bool(try await root().child(name)?.lockHash != nil)
        if let ns = try await namespace(path: name + "/") {
            t["mounts"] = .array(ns.mounts(kind: .secret).map { .string($0.routePath) }.sorted { ($0.stringValue ?? "") < ($1.stringValue ?? "") })
            t["policies_count"] = .int(Int64(try await ns.policies.list().count))
            t["child_namespaces"] = .int(Int64(try await ns.childNames().count))
            let managed = ns.rateLimitQuotas.values.filter(\.managed).sorted { $0.name < $1.name }
            t["quotas"] = .array(managed.map { .object($0.json) })
        }
        // This month so far, the tenant's whole subtree.
        if let month = try? await usageReport(callerPath: name + "/", query: UsageQuery()).data?["totals"] {
            t["usage_this_month"] = month
        }
        return .object(t)
    }

    func tenantNames() async throws -> [String] {
        try await root().rootView.list(prefix: Self.tenantPrefix).filter { !$0.hasSuffix("/") }.sorted()
    }

    /// Deprovisions: descendants first, then the tenant's namespace (each a crypto-shred).
    func deprovisionTenant(name: String) async throws {
        guard NamespacePath.isValidName(Substring(name)), try await root().rootView.get(Self.tenantPrefix + name) != nil else { return }
        try await deleteTree(path: name + "/")
        try await root().rootView.delete(Self.tenantPrefix + name)
    }

    func deleteTree(path: String) async throws {
        guard let ns = try await namespace(path: path) else { return }
        for child in try await ns.childNames() {
            try await deleteTree(path: path + child + "/")
        }
        try await deleteNamespace(parentPath: "", relative: path)
    }

    // MARK: idle eviction

    func beginUse(_ path: String) {
        activity.withLock { u in
            u[path, default: Activity()].inFlight += 1
            u[path]!.lastUsed = .now
        }
    }

    func endUse(_ path: String) {
        activity.withLock { u in
            u[path, default: Activity()].inFlight -= 1
            u[path]!.lastUsed = .now
        }
    }

    /// How many child namespaces are loaded now.
    public var loadedNamespaceCount: Int { loaded.withLock { $0.count } }

    /// Drops loaded namespaces that have served no request for `idle` and have no request
    /// in flight and no loaded descendant (deepest first). They load again on next use;
    /// an idle namespace then costs only its record in its parent. Returns how many went.
    @discardableResult
    public func evictIdle(olderThan idle: Duration) async -> Int {
        (try? await namespaceLoadLock.withLock {
            let now = ContinuousClock.now
            var evicted = 0
            // A namespace stays while it is busy or a descendant stays; the ancestors of every
            // busy namespace are exactly those, so two linear passes (no sort of tens of
            // thousands of paths) decide.
            let paths = loaded.withLock { Array($0.keys) }
            let activityNow = activity.withLock { $0 }
            var busy: [String] = []
            var idlePaths: [String] = []
            for path in paths {
                let use = activityNow[path]
                if use.map({ $0.inFlight > 0 || now - $0.lastUsed < idle }) ?? false { busy.append(path) } else { idlePaths.append(path) }
            }
            var keptBelow: Set<Substring> = []
            for path in busy {
                var end = path.index(before: path.endIndex)
                while let slash = path[..<end].lastIndex(of: "/") {
                    guard keptBelow.insert(path[...slash]).inserted else { break }  // the rest are marked
                    end = slash
                }
            }
            let gone = idlePaths.filter { !keptBelow.contains(Substring($0)) }
            let dropped = loaded.withLock { l in gone.compactMap { l.removeValue(forKey: $0) } }
            for ns in dropped { await ns.teardownBackends() }
            activity.withLock { a in
                for path in gone where (a[path]?.inFlight ?? 0) == 0 { a[path] = nil }
            }
            evicted = gone.count
            return evicted
        }) ?? 0
    }

    func rotateNamespaceKeyring(path: String) async throws {
        let (pp, name) = try split("", path)
        try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), var record = try await parent.child(name),
                  let ns = try await namespace(path: path), let nsBarrier = ns.storage as? Barrier else {
                throw CofferError(.notFound, "namespace not found")
            }
            record.keyring = record.keyring.rotated()
            try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record)
            let updated = record
            parent.setChild(name, updated)
            recordChanged()
            nsBarrier.install(record.keyring)
        }
    }

    func namespaceKeyStatus(path: String) async throws -> [String: JSONValue] {
        guard let ns = try await namespace(path: path), let nsBarrier = ns.storage as? Barrier,
              let ring = nsBarrier.keyring, let active = ring.terms.first(where: { $0.term == ring.activeTerm }) else {
            throw CofferError(.notFound, "namespace not found")
        }
        return ["term": .int(Int64(active.term)), "install_time": .string(RFC3339.format(active.installTime)), "encryptions": .int(nsBarrier.encryptions)]
    }
}
