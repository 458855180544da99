import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

extension Core {
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
            nsBarrier.install(try keyring(of: record))
            let ns = try await NamespaceCore.load(
                path: childPath, namespaceID: record.id, storage: nsBarrier, catalog: catalog,
                configuration: configuration, node: self, logger: logger)
            if let installed = install(ns, at: childPath, readAt: generation) { return installed }
        }
        throw CofferError(.unavailable, "namespace \"\(childPath)\" changed while loading; retry")
    }

    /// Makes `ns` the loaded namespace at `path`, unless one is loaded there already (that one
    /// is returned) or a record changed since `generation` was read (nil: the caller's view
    /// may be stale, `recordChanged`).
    func install(_ ns: NamespaceCore, at path: String, readAt generation: UInt64) -> NamespaceCore? {
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

    /// Runs `body` with `ns` held loaded: idle eviction leaves a namespace alone while a
    /// request is in it (the Gateway's namespace stage holds it for the whole request).
    public func withNamespaceInUse<T: Sendable>(_ ns: NamespaceCore, _ body: () async throws -> T) async throws -> T {
        if ns.path.isEmpty { return try await body() }
        beginUse(ns.path)
        defer { endUse(ns.path) }
        return try await body()
    }

    /// A request without the Gateway (tests, in-process callers): the namespace, then
    /// `serve`. No rate-limit quota and no metering: those are the Gateway's stages.
    public func handle(_ request: CoreRequest, namespace header: String?) async throws -> LogicalResponse {
        try RequestPath.check(request.path)
        let (ns, rel) = try await resolve(header: header, path: request.path)
        var req = request
        req.path = rel
        return try await withNamespaceInUse(ns) { try await serve(req, in: ns) }
    }

    /// The billing class of a request at `rel` inside `ns` (nil: help, not counted): the
    /// class its route declares (logins, credentials, crypto), else its operation's.
    public func requestClass(ns: NamespaceCore, rel: String, operation: LogicalOperation) -> RequestClass? {
        if operation == .help { return nil }
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

    /// Serves a request whose namespace is resolved (`req.path` is inside `ns`): finds the
    /// namespace that owns the token (this one or an ancestor; its policies apply), then
    /// `NamespaceCore.handle`: token, ACL, audit, route, lease.
    public func serve(_ req: CoreRequest, in ns: NamespaceCore) async throws -> LogicalResponse {
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

    /// The root, every ancestor of `ns` and `ns` itself, root first (the levels of
    /// rate-limit quotas).
    public func namespaceChain(to ns: NamespaceCore) async throws -> [NamespaceCore] {
        var chain: [NamespaceCore] = [try root()]
        var prefix = ""
        for seg in ns.path.split(separator: "/") {
            prefix += seg + "/"
            if prefix == ns.path { chain.append(ns) } else if let level = try await namespace(path: prefix) { chain.append(level) }
        }
        return chain
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
}
