import CofferSDK
import Foundation
import Logging
import Synchronization

/// A request as the Gateway hands it to the core: a Vault path, an operation and a token.
public struct CoreRequest: Sendable {
    public var id: String
    public var operation: LogicalOperation
    /// The path below `/v1/`, relative to the namespace.
    public var path: String
    public var data: [String: JSONValue]
    public var clientToken: String?
    public var remoteAddress: String?
    /// Request body size, for usage metering.
    public var bytesIn = 0
    /// Filled by the node for the caller (which namespace served the request).
    public var trace: RequestTrace?

    public init(id: String = RandomID.uuid(), operation: LogicalOperation, path: String, data: [String: JSONValue] = [:], clientToken: String? = nil, remoteAddress: String? = nil) {
        self.id = id
        self.operation = operation
        self.path = path
        self.data = data
        self.clientToken = clientToken
        self.remoteAddress = remoteAddress
    }
}

/// What the node learned while serving a request, for the HTTP tier (metering, logs).
public final class RequestTrace: Sendable {
    let namespace = Mutex<String?>(nil)
    public init() {}
    /// The namespace path that served the request ("" = root), once resolved.
    public var namespacePath: String? { namespace.withLock { $0 } }
}

/// Node-level operations a namespace's `sys/` backend reaches through: seal, its keyring,
/// and its child namespaces (the node keeps the registry of loaded namespaces).
public struct NodeHooks: Sendable {
    public var seal: @Sendable () async throws -> Void
    public var rotate: @Sendable () async throws -> Void
    public var keyStatus: @Sendable () async throws -> [String: JSONValue]
    /// Creates a child (path relative to this namespace, may be nested under existing ones).
    public var createNamespace: @Sendable (_ relativePath: String, _ metadata: [String: String]) async throws -> NamespaceRecord
    public var updateNamespace: @Sendable (_ relativePath: String, _ metadataPatch: [String: JSONValue]) async throws -> NamespaceRecord
    public var deleteNamespace: @Sendable (_ relativePath: String) async throws -> Void
    /// The token store of an ancestor namespace (by path).
    public var tokenStore: @Sendable (_ path: String) async throws -> TokenStore?
    /// A descendant namespace by full path (loading it), or nil.
    public var childNamespace: @Sendable (_ path: String) async throws -> NamespaceCore? = { _ in nil }
    /// `sys/quotas/config` (root namespace).
    public var quotaConfig: @Sendable () -> QuotaConfig = { QuotaConfig() }
    public var setQuotaConfig: @Sendable (QuotaConfig) async throws -> Void = { _ in }
    /// `sys/usage` for this namespace and its descendants.
    public var usageReport: @Sendable (_ query: UsageQuery) async throws -> LogicalResponse = { _ in LogicalResponse() }
    /// The node's audit broker (devices are enabled in the root namespace, entries come from all).
    public var audit: AuditBroker?
    /// The node's lease manager (leases of every namespace).
    public var leases: LeaseManager?
    /// The node's runner of the engines' timed work.
    public var periodic: PeriodicWork?
    /// Reserves lease-count quota room for a request that may create a lease (`Core`).
    public var reserveLeaseQuotas: @Sendable (_ ns: NamespaceCore, _ rel: String) async throws -> [String] = { _, _ in [] }
    /// API lock of this namespace or a descendant: returns the unlock key.
    public var lock: @Sendable (_ relativePath: String) async throws -> String
    public var unlock: @Sendable (_ relativePath: String, _ key: String?, _ callerIsRoot: Bool) async throws -> Void
    /// Tenant provisioning (`sys/tenants`), root namespace only.
    public var tenants: TenantHooks?
    /// Is this node an HA standby (serves reads, runs no background work)?
    public var isStandby: @Sendable () -> Bool = { false }

    public init(
        seal: @escaping @Sendable () async throws -> Void,
        rotate: @escaping @Sendable () async throws -> Void,
        keyStatus: @escaping @Sendable () async throws -> [String: JSONValue],
        createNamespace: @escaping @Sendable (String, [String: String]) async throws -> NamespaceRecord,
        updateNamespace: @escaping @Sendable (String, [String: JSONValue]) async throws -> NamespaceRecord,
        deleteNamespace: @escaping @Sendable (String) async throws -> Void,
        tokenStore: @escaping @Sendable (String) async throws -> TokenStore?,
        lock: @escaping @Sendable (String) async throws -> String,
        unlock: @escaping @Sendable (String, String?, Bool) async throws -> Void,
        tenants: TenantHooks?
    ) {
        self.lock = lock
        self.unlock = unlock
        self.tokenStore = tokenStore
        self.tenants = tenants
        self.seal = seal
        self.rotate = rotate
        self.keyStatus = keyStatus
        self.createNamespace = createNamespace
        self.updateNamespace = updateNamespace
        self.deleteNamespace = deleteNamespace
    }
}

/// One-call tenant provisioning, answered by the node (it spans namespaces).
public struct TenantHooks: Sendable {
    public var provision: @Sendable (_ name: String, _ metadata: [String: String], _ adminPolicy: String?, _ quotas: JSONValue?) async throws -> (record: JSONValue, auth: AuthInfo)
    public var read: @Sendable (_ name: String) async throws -> JSONValue?
    public var list: @Sendable () async throws -> [String]
    public var deprovision: @Sendable (_ name: String) async throws -> Void
}

/// Defaults that come from the server configuration.
public struct CoreConfiguration: Sendable {
    public var defaultLeaseTTL: Int
    public var maxLeaseTTL: Int
    public var clusterName: String
    public var version: String
    /// Lease revocation retries and concurrency.
    public var leases = LeaseManager.Configuration()
    /// Where engines of tenant (non-root) namespaces may connect: `database_allowed_hosts`
    /// and `database_denied_cidrs` of the server configuration.
    public var tenantOutbound = OutboundPolicy.defaultTenant

    public init(defaultLeaseTTL: Int = 2_764_800, maxLeaseTTL: Int = 2_764_800, clusterName: String = "coffer-cluster", version: String = "0.1.0") {
        self.defaultLeaseTTL = defaultLeaseTTL
        self.maxLeaseTTL = maxLeaseTTL
        self.clusterName = clusterName
        self.version = version
    }
}

/// One namespace's core: mounts and router, policies, tokens. Everything it stores goes
/// through its `storage` (the barrier, or a namespace keyring view of it).
public final class NamespaceCore: Sendable {
    /// Full path with a trailing slash; "" for the root namespace.
    public let path: String
    /// Its id (`NamespacePath.newID`); "root" for the root namespace.
    public let id: String
    /// Physical key prefix of its rows ("" for the root, whose children live under `ns/`).
    public let storagePrefix: String
    let storage: any LogicalStorage
    let catalog: EngineCatalog
    let configuration: CoreConfiguration
    let hooks: NodeHooks
    let logger: Logger
    public let policies: PolicyStore
    public let tokens: TokenStore
    let router = Mutex(MountRouter())
    let mountLock = AsyncMutex()
    /// Child namespace records by name (they hold the children's keyrings), read lazily and
    /// cached, absent names too, so loading a namespace costs the same with 10 or 100,000
    /// children. Bounded: the cache is dropped when it grows past `childCacheLimit`.
    let childCache = Mutex<[String: NamespaceRecord?]>([:])
    /// Rate-limit quotas defined in this namespace, by name (`Quotas.swift`).
    let quotaTable = Mutex<[String: RateLimitQuota]>([:])
    /// Lease-count quotas defined in this namespace, by name (`LeaseQuotas.swift`).
    let leaseQuotaTable = Mutex<[String: LeaseCountQuota]>([:])
    static let childCacheLimit = 10_000
    static let childPrefix = "sys/namespaces/"

    /// The record of child `name`, or nil.
    public func child(_ name: String) async throws -> NamespaceRecord? {
        if let hit = childCache.withLock({ $0[name] }) { return hit }
        guard NamespacePath.isValidName(Substring(name)) else { return nil }
        let record = try await rootView.getCodable(NamespaceRecord.self, Self.childPrefix + name)
        setChild(name, record)
        return record
    }

    /// Records what storage now holds for child `name` (the caller wrote it).
    func setChild(_ name: String, _ record: NamespaceRecord?) {
        childCache.withLock { c in
            if c.count >= Self.childCacheLimit { c.removeAll(keepingCapacity: true) }
            c[name] = .some(record)
        }
    }

    /// Names of every child, from storage.
    public func childNames() async throws -> [String] {
        try await rootView.list(prefix: Self.childPrefix).filter { !$0.hasSuffix("/") }.sorted()
    }

    static let secretTable = "core/mounts"
    static let authTable = "core/auth"
    static let builtinTable = "core/builtin-mounts"

    /// Writes a new namespace's initial records (token salt, built-in mount entries) in one
    /// write, so they share one commit; `load` then only reads. The stock `default` policy
    /// is not written (`PolicyStore.stockDefault`). Returns what it wrote, so the namespace
    /// can be assembled without reading it back.
    static func initialize(storage: any LogicalStorage) async throws -> InitialState {
        let state = InitialState(salt: Random.bytes(32), builtins: ["sys/": builtinSysEntry(), "auth/token/": builtinTokenEntry()])
        try await storage.putAll([
            StorageEntry(key: "core/token-salt", value: state.salt),
            StorageEntry(key: Self.builtinTable, value: state.builtins.storedJSON.serialized()),
        ])
        return state
    }

    /// A new namespace's records as `initialize` wrote them: no mounts beyond the built-in
    /// ones, no quotas, the default policy.
    struct InitialState: Sendable {
        let salt: [UInt8]
        let builtins: [String: MountEntry]
    }

    static func builtinSysEntry() -> MountEntry {
        MountEntry(path: "sys/", type: "system", description: "system endpoints used for control, policy and debugging", accessorPrefix: "system")
    }

    static func builtinTokenEntry() -> MountEntry {
        MountEntry(path: "token/", type: "token", description: "token based credentials", accessorPrefix: "auth_token")
    }

    /// Loads (or, on a fresh barrier, creates) the namespace: salt, mount tables, policies.
    public static func load(path: String, namespaceID: String? = nil, storage: any LogicalStorage, catalog: EngineCatalog, configuration: CoreConfiguration, hooks: NodeHooks, logger: Logger) async throws -> NamespaceCore {
        try await load(path: path, namespaceID: namespaceID, storage: storage, catalog: catalog, configuration: configuration, hooks: hooks, logger: logger, initial: nil)
    }

    /// With `initial` (a namespace this process just created), nothing is read back: the
    /// state is exactly what `initialize` wrote.
    static func load(path: String, namespaceID: String?, storage: any LogicalStorage, catalog: EngineCatalog, configuration: CoreConfiguration, hooks: NodeHooks, logger: Logger, initial: InitialState?) async throws -> NamespaceCore {
        let root = StorageView(storage, prefix: "", locks: storageLocks, lockScope: namespaceID ?? "root")
        var salt: [UInt8]?
        if let initial { salt = initial.salt } else { salt = try await root.get("core/token-salt") }
        if salt == nil {
            salt = Random.bytes(32)
            try await root.put("core/token-salt", salt!)
        }
        let leases = hooks.leases
        let tokens = TokenStore(
            view: root.sub("sys/token/"), salt: salt!, defaultTTL: configuration.defaultLeaseTTL, maxTTL: configuration.maxLeaseTTL,
            idSuffix: namespaceID.map { "." + $0 } ?? "",
            onRevoke: revokeLeasesOfToken(leases, tokenNamespace: path),
            onExpiry: scheduleExpiry(leases, namespaceID: namespaceID ?? "root"),
            storeAt: { other in
                // Parent/child token links cross namespaces only along the tree.
                if other != path, path.hasPrefix(other) { return try await hooks.tokenStore(other) }
                if other != path, other.hasPrefix(path) { return try await hooks.childNamespace(other)?.tokens }
                return nil
            })
        let policies = PolicyStore(view: root.sub("sys/policy/"))
        let ns = NamespaceCore(path: path, id: namespaceID ?? "root", storage: storage, catalog: catalog, configuration: configuration, hooks: hooks, logger: logger, policies: policies, tokens: tokens)
        try await ns.loadMounts(builtins: initial?.builtins)
        if initial == nil {
            try await ns.loadQuotas()
            try await ns.loadLeaseQuotas()
        }
        return ns
    }

    /// The token store's expiry hook: schedule the token's revocation.
    static func scheduleExpiry(_ leases: LeaseManager?, namespaceID: String) -> (@Sendable (String, Int64) async throws -> Void)? {
        guard let leases else { return nil }
        return { hash, at in try await leases.scheduleTokenExpiry(namespaceID: namespaceID, tokenHash: hash, at: at) }
    }

    /// The token store's revocation hook: revoke the token's leases.
    static func revokeLeasesOfToken(_ leases: LeaseManager?, tokenNamespace: String) -> (@Sendable (String) async -> Void)? {
        guard let leases else { return nil }
        return { hash in await leases.revokeByToken(tokenNamespace: tokenNamespace, tokenHash: hash) }
    }

    init(path: String, id: String, storage: any LogicalStorage, catalog: EngineCatalog, configuration: CoreConfiguration, hooks: NodeHooks, logger: Logger, policies: PolicyStore, tokens: TokenStore) {
        self.path = path
        self.id = id
        self.storagePrefix = path.isEmpty ? "" : NamespacePath.storagePrefix(id: id)
        self.storage = storage
        self.catalog = catalog
        self.configuration = configuration
        self.hooks = hooks
        self.logger = logger
        self.policies = policies
        self.tokens = tokens
    }

    var rootView: StorageView { StorageView(storage, prefix: "", locks: Self.storageLocks, lockScope: id) }

    /// The per-key storage locks of every namespace of this process (scoped by namespace
    /// id), so a namespace loaded again while an old instance still serves a request shares them.
    static let storageLocks = KeyedLock()

    /// Stops every engine's background work (seal, eviction, deletion of the namespace).
    func teardownBackends() async {
        for m in router.withLock({ $0.mounts }) { await teardown(m) }
    }

    /// The engine of a mount that issues leases, if it is still mounted (same accessor).
    func leasingBackend(routePath: String, accessor: String) -> (any LeasingBackend)? {
        let mount = router.withLock { r in r.mounts.first { $0.routePath == routePath && $0.entry.accessor == accessor } }
        return mount?.backend.backend as? any LeasingBackend
    }

    /// The instance that serves a request on `mount`: the mounted engine, or for `sys/` one
    /// made for this call (this namespace, and `owner`, the namespace of the calling token).
    func instance(of mount: MountedBackend, owner: NamespaceCore) throws -> any LogicalBackend {
        if mount.kind == .system { return SystemBackend(ns: self, tokenNamespace: owner) }
        guard let backend = mount.backend.backend else { throw CofferError.internalError("mount \(mount.routePath) has no backend") }
        return backend
    }

    /// `fresh`: the built-in mount table of a namespace just created, which has no other mounts.
    func loadMounts(builtins fresh: [String: MountEntry]? = nil) async throws {
        let ancestorStore = hooks.tokenStore
        let tokenBackend = TokenBackend(store: tokens, roles: rootView.sub("sys/token-roles/"), namespacePath: path, ancestorStore: ancestorStore)
        // Built-in mount entries are stored once, so their accessors and tunables are stable.
        var builtins: [String: MountEntry]
        if let fresh { builtins = fresh } else { builtins = try await rootView.getCodable([String: MountEntry].self, Self.builtinTable) ?? [:] }
        if builtins["sys/"] == nil || builtins["auth/token/"] == nil {
            builtins["sys/"] = builtins["sys/"] ?? Self.builtinSysEntry()
            builtins["auth/token/"] = builtins["auth/token/"] ?? Self.builtinTokenEntry()
            try await rootView.putCodable(Self.builtinTable, builtins)
        }
        let stored = builtins
        router.withLock { r in
            r.add(MountedBackend(entry: stored["sys/"]!, backend: SystemBackend.compiled, kind: .system, routePath: "sys/"))
            r.add(MountedBackend(entry: stored["auth/token/"]!, backend: CompiledBackend(tokenBackend), kind: .auth, routePath: "auth/token/"))
        }
        if fresh != nil { return }
        for entry in try await mountTable(Self.secretTable) {
            try await instantiate(entry, kind: .secret)
        }
        for entry in try await mountTable(Self.authTable) {
            try await instantiate(entry, kind: .auth)
        }
    }

    func mountTable(_ key: String) async throws -> [MountEntry] {
        try await rootView.getCodable([MountEntry].self, key) ?? []
    }

    func instantiate(_ entry: MountEntry, kind: MountedBackend.Kind) async throws {
        let factories = kind == .auth ? catalog.auth : catalog.secrets
        guard let factory = factories[entry.type] else {
            throw CofferError.invalid("plugin not found in the catalog: \(entry.type)")
        }
        let prefix = kind == .auth ? "auth/\(entry.uuid)/" : "logical/\(entry.uuid)/"
        var config = BackendConfiguration(
            storage: rootView.sub(prefix), mountPath: entry.path, mountType: entry.type, options: entry.options,
            defaultLeaseTTL: entry.config.defaultTTL(system: configuration.defaultLeaseTTL),
            maxLeaseTTL: entry.config.maxTTL(system: configuration.maxLeaseTTL),
            logger: logger)
        config.outbound = path.isEmpty ? .unrestricted : configuration.tenantOutbound
        let periodicKey = periodicKey(entry)
        config.wakePeriodic = { [weak periodic = hooks.periodic] in periodic?.poke(periodicKey) }
        config.generatePassword = { [weak self] name in
            guard let self else { throw CofferError(.unavailable, "the namespace was unloaded") }
            return try await self.generatePassword(policy: name)
        }
        let backend = try await factory(config)
        try await backend.setup()
        let routePath = kind == .auth ? "auth/" + entry.path : entry.path
        router.withLock { $0.add(MountedBackend(entry: entry, backend: CompiledBackend(backend), kind: kind, routePath: routePath)) }
        if backend.runsPeriodicWork { hooks.periodic?.register(periodicKey, backend) }
    }

    /// A mount's key in the node's periodic-work schedule.
    func periodicKey(_ entry: MountEntry) -> String { id + "/" + entry.accessor }

    /// A mount leaves this process: its timed work stops, then the engine tears down.
    func teardown(_ mount: MountedBackend) async {
        hooks.periodic?.remove(periodicKey(mount.entry))
        await mount.backend.backend?.teardown()
    }

    // MARK: mount management (used by sys/)

    public func mounts(kind: MountedBackend.Kind) -> [MountedBackend] {
        router.withLock { r in r.mounts.filter { $0.kind == kind || (kind == .secret && $0.kind == .system) } }
    }

    public func enableMount(path rawPath: String, type rawType: String, description: String, config: MountConfig, options: [String: String], local: Bool, sealWrap: Bool, kind: MountedBackend.Kind) async throws {
        let trimmed = rawPath.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !trimmed.isEmpty else { throw CofferError.invalid("path cannot be empty") }
        guard !trimmed.contains("..") && !trimmed.contains("//") && trimmed.count <= 256 else { throw CofferError.invalid("invalid mount path") }
        let path = trimmed + "/"
        let (type, opts) = EngineCatalog.canonical(type: rawType, options: options)
        guard !type.isEmpty else { throw CofferError.invalid("backend type must be specified as a string") }
        if kind == .secret {
            for reserved in ["sys/", "auth/", "cubbyhole/", "identity/"] where path.hasPrefix(reserved) {
                throw CofferError.invalid("cannot mount under reserved path \"\(reserved)\"")
            }
        } else if path == "token/" {
            throw CofferError.invalid("token credential backend cannot be instantiated")
        }
        let factories = kind == .auth ? catalog.auth : catalog.secrets
        guard factories[type] != nil else {
            throw CofferError.invalid(kind == .auth ? "unknown auth method type: \(type)" : "plugin not found in the catalog: \(type)")
        }
        let routePath = kind == .auth ? "auth/" + path : path
        if kind == .secret, let first = path.split(separator: "/").first, try await child(String(first)) != nil {
            throw CofferError.invalid("path is already in use by namespace \"\(self.path)\(first)/\"")
        }
        try await mountLock.withLock {
            if let c = router.withLock({ $0.conflicts(routePath) }) {
                throw CofferError.invalid("path is already in use at \(c)")
            }
            let entry = MountEntry(path: path, type: type, description: description, options: opts, config: config, local: local, sealWrap: sealWrap, accessorPrefix: kind == .auth ? "auth_\(type)" : type)
            try await instantiate(entry, kind: kind)
            let table = kind == .auth ? Self.authTable : Self.secretTable
            var entries = try await mountTable(table)
            entries.append(entry)
            try await rootView.putCodable(table, entries)
        }
    }

    public func disableMount(path rawPath: String, kind: MountedBackend.Kind) async throws {
        let path = rawPath.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        let table = kind == .auth ? Self.authTable : Self.secretTable
        if kind == .secret, path == "sys/" || path == "cubbyhole/" || path == "identity/" {
            throw CofferError.invalid("cannot unmount \"\(path)\"")
        }
        if kind == .auth, path == "token/" { throw CofferError.invalid("token credential backend cannot be disabled") }
        let routePath = kind == .auth ? "auth/" + path : path
        // As Vault: the mount's leases are revoked first, and a failure stops the unmount.
        if let leases = hooks.leases, leasingBackend(routePath: routePath, accessor: router.withLock({ r in r.mounts.first { $0.routePath == routePath }?.entry.accessor }) ?? "") != nil {
            _ = try await leases.revokeAll(self, prefix: routePath)
        }
        try await mountLock.withLock {
            var entries = try await mountTable(table)
            guard let entry = entries.first(where: { $0.path == path }) else { return }
            entries.removeAll { $0.path == path }
            try await rootView.putCodable(table, entries)
            let gone = router.withLock { r in
                defer { r.remove(routePath: routePath) }
                return r.mounts.first { $0.routePath == routePath }
            }
            if let gone { await teardown(gone) }
            let prefix = kind == .auth ? "auth/\(entry.uuid)/" : "logical/\(entry.uuid)/"
            try await rootView.sub(prefix).deleteTree()
        }
    }

    public func tuneMount(path rawPath: String, kind: MountedBackend.Kind, apply: @Sendable (inout MountEntry) throws -> Void) async throws {
        let path = rawPath.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        let table = kind == .auth ? Self.authTable : Self.secretTable
        try await mountLock.withLock {
            var entries = try await mountTable(table)
            guard let i = entries.firstIndex(where: { $0.path == path }) else {
                // Built-in mounts (token/, sys/) are not in the table: their tunables are kept
                // in a record of their own and only change what they report.
                let routePath = kind == .auth ? "auth/" + path : path
                guard var m = router.withLock({ r in r.mounts.first { $0.routePath == routePath } }) else {
                    throw CofferError.invalid("no mount at \(path)")
                }
                try apply(&m.entry)
                var tuned = try await rootView.getCodable([String: MountEntry].self, Self.builtinTable) ?? [:]
                tuned[routePath] = m.entry
                try await rootView.putCodable(Self.builtinTable, tuned)
                let updated = m
                router.withLock { $0.add(updated) }
                return
            }
            let before = entries[i]
            try apply(&entries[i])
            try await rootView.putCodable(table, entries)
            if before.options != entries[i].options || before.config.defaultLeaseTTL != entries[i].config.defaultLeaseTTL || before.config.maxLeaseTTL != entries[i].config.maxLeaseTTL {
                try await instantiate(entries[i], kind: kind)
            } else {
                let updated = entries[i]
                router.withLock { r in
                    let routePath = kind == .auth ? "auth/" + path : path
                    if var m = r.route(routePath), m.routePath == routePath {
                        m.entry = updated
                        r.add(m)
                    }
                }
            }
        }
    }

    public func remount(from: String, to: String) async throws {
        var srcPath = from.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        var dstPath = to.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        var kindValue = MountedBackend.Kind.secret
        if srcPath.hasPrefix("auth/") {
            guard dstPath.hasPrefix("auth/") else { throw CofferError.invalid("cannot move an auth mount to a secrets path") }
            kindValue = .auth
            srcPath.removeFirst(5)
            dstPath.removeFirst(5)
        }
        let src = srcPath, dst = dstPath, kind = kindValue
        guard dst.count > 1, !dst.contains("..") else { throw CofferError.invalid("invalid destination path") }
        let table = kind == .auth ? Self.authTable : Self.secretTable
        try await mountLock.withLock {
            var entries = try await mountTable(table)
            guard let i = entries.firstIndex(where: { $0.path == src }) else {
                throw CofferError.invalid("no secret engine mount at \(src)")
            }
            let dstRoute = kind == .auth ? "auth/" + dst : dst
            if kind == .secret {
                for reserved in ["sys/", "auth/", "cubbyhole/", "identity/"] where dst.hasPrefix(reserved) {
                    throw CofferError.invalid("cannot remount to reserved path \"\(reserved)\"")
                }
            }
            let srcRoute = kind == .auth ? "auth/" + src : src
            if let c = router.withLock({ r in r.mounts.first { $0.routePath != srcRoute && (dstRoute.hasPrefix($0.routePath) || $0.routePath.hasPrefix(dstRoute)) }?.routePath }) {
                throw CofferError.invalid("path already in use at \(c)")
            }
            entries[i].path = dst
            try await rootView.putCodable(table, entries)
            router.withLock { r in
                if var m = r.mounts.first(where: { $0.routePath == srcRoute }) {
                    r.remove(routePath: srcRoute)
                    m.entry.path = dst
                    m.routePath = dstRoute
                    r.add(m)
                }
            }
        }
    }

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
        var rel = path.count >= mount.routePath.count ? String(path.dropFirst(mount.routePath.count)) : ""
        if rel.hasPrefix("/") { rel.removeFirst() }

        var logical = LogicalRequest(id: request.id, operation: request.operation, path: rel, mountPoint: mount.routePath, data: request.data, remoteAddress: request.remoteAddress)

        let unauthenticated = mount.backend.unauthenticatedPaths.contains { Self.globMatch($0, rel) }
        let audit = hooks.audit.flatMap { $0.hasDevices ? $0 : nil }
        var auditInfo = audit.map { _ in
            AuditRequestInfo(
                id: request.id, operation: request.operation, path: path, namespace: AuditNamespace(id: id, path: self.path),
                mountType: mount.entry.type, mountPoint: mount.routePath, mountAccessor: mount.entry.accessor,
                clientToken: request.clientToken ?? "", data: request.data, remoteAddress: request.remoteAddress ?? "")
        }
        var spent: String?
        var tokenHash: String?
        if !unauthenticated {
            guard let raw = request.clientToken, !raw.isEmpty, let e = try await owner.tokens.lookup(token: raw), e.numUses >= 0 else {
                if let audit, let info = auditInfo { await Self.auditRefusal(audit, info, CofferError.denied()) }
                throw CofferError.denied()
            }
            logical.token = RequestToken(accessor: e.accessor, policies: e.policies, displayName: e.displayName, namespacePath: owner.path, entityID: e.entityID, clientToken: mount.entry.type == "token" ? raw : nil)
            tokenHash = e.idHash

            if logical.operation == .update || logical.operation == .create {
                if let exists = try await instance(of: mount, owner: owner).exists(logical) {
                    logical.operation = exists ? .update : .create
                } else {
                    logical.operation = .update
                }
            }
            if audit != nil, let token = logical.token {
                auditInfo?.operation = logical.operation
                auditInfo?.clientTokenAccessor = e.accessor
                auditInfo?.auth = AuditAuth(token: token, clientToken: raw, tokenType: e.type, tokenTTL: Int64(e.ttl(now: TokenStore.now())))
            }
            let acl = try await owner.policies.acl(for: e.policies)
            let needsSudo = mount.backend.rootPaths.contains { Self.globMatch($0, rel) }
            do {
                let granted = try acl.authorize(logical.operation, path: aclPath, data: request.data, needsSudo: needsSudo)
                logical.token?.hasSudo = granted.contains(.sudo)
            } catch {
                if let audit, let info = auditInfo { await Self.auditRefusal(audit, info, error) }
                throw error
            }
            if try await Self.spendUse(of: e, in: owner.tokens, audit: audit, auditInfo) { spent = e.idHash }
        } else if logical.operation == .update {
            if let exists = try await instance(of: mount, owner: owner).exists(logical) { logical.operation = exists ? .update : .create }
        }
        guard let spent else {
            return try await dispatch(logical, mount: mount, owner: owner, path: path, rel: rel, tokenHash: tokenHash, audit: audit, auditInfo)
        }
        // A limited-use token: its last use revokes it once every request that spent a use is done.
        do {
            let response = try await dispatch(logical, mount: mount, owner: owner, path: path, rel: rel, tokenHash: tokenHash, audit: audit, auditInfo)
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
        _ logical: LogicalRequest, mount: MountedBackend, owner: NamespaceCore, path: String, rel: String, tokenHash: String?,
        audit: AuditBroker?, _ auditInfo: AuditRequestInfo?
    ) async throws -> LogicalResponse {
        // A request that may create a lease takes room under the lease-count quotas first.
        let leasing = hooks.leases == nil ? nil : mount.backend.backend as? any LeasingBackend
        var reserved: [String] = []
        if let leasing, leasing.mayCreateLease(logical) {
            // Only the active node creates leases: a standby hands the request over before
            // the engine makes anything (a database user) that no lease would track.
            if hooks.isStandby() { throw CofferError(.standbyWrite, "this node is a standby; leases are issued by the active node") }
            do {
                reserved = try await hooks.reserveLeaseQuotas(self, path)
            } catch {
                if let audit, let info = auditInfo { await Self.auditRefusal(audit, info, error) }
                throw error
            }
        }
        defer { hooks.leases?.release(reserved) }
        // The request entry reaches an audit device before the operation runs, or it does not run.
        if let audit, let info = auditInfo { try await audit.logRequest(info) }
        var result: LogicalResponse?
        do {
            result = try await instance(of: mount, owner: owner).handle(logical)
            if let leasing, let leases = hooks.leases, let secret = result?.secret {
                do {
                    let lease = try await leases.register(
                        ns: self, mount: mount, requestPath: path, secret: secret, tokenHash: tokenHash, tokenNamespace: tokenHash == nil ? nil : owner)
                    result?.leaseID = lease.leaseID
                    result?.secret?.ttl = lease.ttl
                    result?.warnings += lease.warnings
                } catch {
                    // No lease, no secret: undo what the engine created.
                    let now = Date()
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
            return LogicalResponse(statusCode: 204)
        }
        if mount.kind == .system { response.dataAtTopLevel = true }
        response.mountType = mount.entry.type
        response.mountPoint = self.path + mount.routePath
        response.namespacePath = self.path
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
        let audit = hooks.audit.flatMap { $0.hasDevices ? $0 : nil }
        let sys = router.withLock { $0.mounts.first { $0.kind == .system } }
        let info = audit.map { _ in
            AuditRequestInfo(
                id: requestID, operation: operation, path: path, namespace: AuditNamespace(id: id, path: self.path),
                mountType: "system", mountPoint: "sys/", mountAccessor: sys?.entry.accessor ?? "", clientToken: clientToken ?? "",
                data: [:], remoteAddress: remoteAddress ?? "")
        }
        guard let raw = clientToken, !raw.isEmpty, let e = try await tokens.lookup(token: raw), e.numUses >= 0 else {
            if let audit, let info { await Self.auditRefusal(audit, info, CofferError.denied()) }
            throw CofferError.denied()
        }
        do {
            try await policies.acl(for: e.policies).authorize(operation, path: path, data: [:], needsSudo: needsSudo)
        } catch {
            if let audit, let info { await Self.auditRefusal(audit, info, error) }
            throw error
        }
        if try await Self.spendUse(of: e, in: tokens, audit: audit, info) { await tokens.endUse(e.idHash) }
        if let audit, var request = info {
            request.clientTokenAccessor = e.accessor
            request.auth = AuditAuth(
                token: RequestToken(accessor: e.accessor, policies: e.policies, displayName: e.displayName, namespacePath: self.path, entityID: e.entityID),
                clientToken: raw, tokenType: e.type, tokenTTL: Int64(e.ttl(now: TokenStore.now())))
            try await audit.logRequest(request)
            try await audit.logResponse(AuditResponseInfo(request: request))
        }
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
    static func globMatch(_ pattern: String, _ path: String) -> Bool {
        if pattern.hasSuffix("*") { return path.hasPrefix(pattern.dropLast()) }
        return pattern == path
    }
}

/// A mutex for async critical sections (mount table changes).
public actor AsyncMutex {
    var busy = false
    var waiters: [CheckedContinuation<Void, Never>] = []

    public init() {}

    public func withLock<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    func acquire() async {
        if !busy { busy = true; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }
}
