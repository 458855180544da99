import CofferSDK
import Foundation
import Identity
import Logging
import Synchronization

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
    /// The node this namespace is loaded in: seal, keyrings, the namespace registry, the
    /// lease manager, audit, periodic work. Held weakly: a namespace never keeps its node
    /// alive (a sealed node drops its namespaces).
    weak let node: Core?
    let logger: Logger
    public let policies: PolicyStore
    public let tokens: TokenStore
    /// Its entities, aliases and groups (`identity/`), read from storage on first use.
    public let identity: IdentityStore
    let router = Mutex(MountRouter())
    let mountLock = AsyncMutex()
    /// Being deleted (its leases are being revoked): it takes no request meanwhile.
    let closingFlag = Atomic<Bool>(false)
    var isClosing: Bool { closingFlag.load(ordering: .acquiring) }
    /// Child namespace records by name (they hold the children's keyrings), read lazily and
    /// cached, absent names too, so loading a namespace costs the same with 10 or 100,000
    /// children. Bounded: the cache is dropped when it grows past `childCacheLimit`.
    let childCache = Mutex<[String: NamespaceRecord?]>([:])
    /// Rate-limit quotas defined in this namespace, by name (`Quotas.swift`).
    let quotaTable = Mutex<[String: RateLimitQuota]>([:])
    /// Lease-count quotas defined in this namespace, by name (`LeaseQuotas.swift`).
    let leaseQuotaTable = Mutex<[String: LeaseCountQuota]>([:])
    /// Failed logins by mount accessor and alias, below the lockout threshold (`NamespaceCore+Lockout.swift`).
    let failedLogins = Mutex<[String: FailedLogins]>([:])
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
        let state = InitialState(salt: SecureRandom.bytes(32), builtins: builtinEntries.mapValues { $0() })
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

    /// The built-in mounts of every namespace, by table key, and how each is first made.
    static let builtinEntries: [String: @Sendable () -> MountEntry] = [
        "sys/": builtinSysEntry, "auth/token/": builtinTokenEntry, "cubbyhole/": builtinCubbyholeEntry, "identity/": builtinIdentityEntry,
    ]

    static func builtinSysEntry() -> MountEntry {
        MountEntry(path: "sys/", type: "system", description: "system endpoints used for control, policy and debugging", accessorPrefix: "system")
    }

    static func builtinCubbyholeEntry() -> MountEntry {
        MountEntry(path: "cubbyhole/", type: "cubbyhole", description: "per-token private secret storage", accessorPrefix: "cubbyhole")
    }

    static func builtinIdentityEntry() -> MountEntry {
        MountEntry(path: "identity/", type: "identity", description: "identity store", accessorPrefix: "identity")
    }

    static func builtinTokenEntry() -> MountEntry {
        MountEntry(path: "token/", type: "token", description: "token based credentials", accessorPrefix: "auth_token")
    }

    /// Loads (or, on a fresh barrier, creates) the namespace: salt, mount tables, policies.
    /// With `initial` (a namespace this process just created), nothing is read back: the
    /// state is exactly what `initialize` wrote.
    static func load(path: String, namespaceID: String? = nil, storage: any LogicalStorage, catalog: EngineCatalog, configuration: CoreConfiguration, node: Core, logger: Logger, initial: InitialState? = nil) async throws -> NamespaceCore {
        let root = StorageView(storage, prefix: "", locks: storageLocks, lockScope: namespaceID ?? "root")
        var salt: [UInt8]?
        if let initial { salt = initial.salt } else { salt = try await root.get("core/token-salt") }
        if salt == nil {
            salt = SecureRandom.bytes(32)
            try await root.put("core/token-salt", salt!)
        }
        let leases = node.leases
        let tokens = TokenStore(
            view: root.sub("sys/token/"), salt: salt!, defaultTTL: configuration.defaultLeaseTTL, maxTTL: configuration.maxLeaseTTL,
            idSuffix: namespaceID.map { "." + $0 } ?? "", namespacePath: path, clock: configuration.clock,
            onRevoke: revokeLeasesAndCubbyhole(leases, tokenNamespace: path, cubbyholes: root.sub(cubbyholePrefix)),
            onExpiry: scheduleExpiry(leases, namespaceID: namespaceID ?? "root"),
            storeAt: { [weak node] other in
                // Parent/child token links cross namespaces only along the tree.
                guard other != path, path.hasPrefix(other) || other.hasPrefix(path) else { return nil }
                return try await node?.namespace(path: other)?.tokens
            })
        let policies = PolicyStore(view: root.sub("sys/policy/"))
        let ns = NamespaceCore(path: path, id: namespaceID ?? "root", storage: storage, catalog: catalog, configuration: configuration, node: node, logger: logger, policies: policies, tokens: tokens)
        try await ns.loadMounts(builtins: initial?.builtins)
        if initial == nil {
            try await ns.loadQuotas()
            try await ns.loadLeaseQuotas()
        }
        return ns
    }

    /// The token store's expiry hook: schedule the token's revocation.
    static func scheduleExpiry(_ leases: LeaseManager, namespaceID: String) -> (@Sendable (String, Int64) async throws -> Void)? {
        { hash, at in try await leases.scheduleTokenExpiry(namespaceID: namespaceID, tokenHash: hash, at: at) }
    }

    /// The token store's revocation hook: revoke the token's leases, delete its cubbyhole.
    static func revokeLeasesAndCubbyhole(_ leases: LeaseManager, tokenNamespace: String, cubbyholes: StorageView) -> (@Sendable (String) async -> Void)? {
        { hash in
            await leases.revokeByToken(tokenNamespace: tokenNamespace, tokenHash: hash)
            try? await cubbyholes.sub(hash + "/").deleteTree()
        }
    }

    /// Where every token's cubbyhole lives (`CubbyholeBackend`), below the namespace's root view.
    static let cubbyholePrefix = "sys/cubbyhole/"

    init(path: String, id: String, storage: any LogicalStorage, catalog: EngineCatalog, configuration: CoreConfiguration, node: Core, logger: Logger, policies: PolicyStore, tokens: TokenStore) {
        self.path = path
        self.id = id
        self.storagePrefix = path.isEmpty ? "" : NamespacePath.storagePrefix(id: id)
        self.storage = storage
        self.catalog = catalog
        self.configuration = configuration
        self.node = node
        self.logger = logger
        self.policies = policies
        self.tokens = tokens
        self.identity = IdentityStore(view: Self.rootView(storage, id: id).sub(Self.identityPrefix), namespaceID: id)
        identity.resolveMounts { [weak self] accessor in self?.authMount(accessor: accessor) }
    }

    /// Where the identity store keeps its records, below the namespace's root view.
    static let identityPrefix = "sys/identity/"

    /// The auth mount with `accessor`, as the identity store shows it in aliases.
    func authMount(accessor: String) -> AuthMountInfo? {
        router.withLock { r in r.mounts.first { $0.kind == .auth && $0.entry.accessor == accessor }.map(\.identityInfo) }
    }

    /// The node, or the error of a node that is gone (sealed).
    func onNode() throws -> Core {
        guard let node else { throw CofferError(.sealed, "Vault is sealed") }
        return node
    }

    /// A descendant namespace by full path (loading it), or nil.
    func descendant(_ child: String) async throws -> NamespaceCore? {
        guard child.hasPrefix(path), child != path, let node else { return nil }
        return try await node.namespace(path: child)
    }

    var rootView: StorageView { Self.rootView(storage, id: id) }

    /// The namespace's whole storage, with its per-key locks.
    static func rootView(_ storage: any LogicalStorage, id: String) -> StorageView {
        StorageView(storage, prefix: "", locks: storageLocks, lockScope: id)
    }

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
        let ancestorStore: @Sendable (String) async throws -> TokenStore? = { [weak node, path] ancestor in
            guard let node, path.hasPrefix(ancestor) else { return nil }
            return try await node.namespace(path: ancestor)?.tokens
        }
        var tokenBackend = TokenBackend(store: tokens, roles: rootView.sub("sys/token-roles/"), namespacePath: path, identity: identity, ancestorStore: ancestorStore)
        tokenBackend.loginRenewal = { [weak self] entry in try await self?.checkLoginRenewal(entry) }
        // Built-in mount entries are stored once, so their accessors and tunables are stable.
        var builtins: [String: MountEntry]
        if let fresh { builtins = fresh } else { builtins = try await rootView.getCodable([String: MountEntry].self, Self.builtinTable) ?? [:] }
        // A namespace made before a built-in mount existed gets it now, once.
        let missing = Self.builtinEntries.filter { builtins[$0.key] == nil }
        if !missing.isEmpty {
            for (key, make) in missing { builtins[key] = make() }
            try await rootView.putCodable(Self.builtinTable, builtins)
        }
        let stored = builtins
        router.withLock { r in
            r.add(MountedBackend(entry: stored["sys/"]!, backend: SystemBackend.compiled, kind: .system, routePath: "sys/"))
            r.add(MountedBackend(entry: stored["auth/token/"]!, backend: CompiledBackend(tokenBackend), kind: .auth, routePath: "auth/token/"))
            r.add(MountedBackend(entry: stored["cubbyhole/"]!, backend: CompiledBackend(CubbyholeBackend(storage: rootView.sub(Self.cubbyholePrefix))), kind: .secret, routePath: "cubbyhole/"))
            r.add(MountedBackend(entry: stored["identity/"]!, backend: CompiledBackend(IdentityBackend(store: identity, namespacePath: path, apiAddress: configuration.apiAddress)), kind: .secret, routePath: "identity/"))
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
        config.clock = configuration.clock
        config.outbound = path.isEmpty ? .unrestricted : configuration.tenantOutbound
        let periodicKey = periodicKey(entry)
        config.wakePeriodic = { [weak periodic = node?.periodic] in periodic?.poke(periodicKey) }
        config.generatePassword = { [weak self] name in
            guard let self else { throw CofferError(.unavailable, "the namespace was unloaded") }
            return try await self.generatePassword(policy: name)
        }
        let backend = try await factory(config)
        try await backend.setup()
        let routePath = kind == .auth ? "auth/" + entry.path : entry.path
        router.withLock { $0.add(MountedBackend(entry: entry, backend: CompiledBackend(backend), kind: kind, routePath: routePath)) }
        if backend.runsPeriodicWork { node?.periodic.register(periodicKey, backend) }
    }

    /// A mount's key in the node's periodic-work schedule.
    func periodicKey(_ entry: MountEntry) -> String { id + "/" + entry.accessor }

    /// A mount leaves this process: its timed work stops, then the engine tears down.
    func teardown(_ mount: MountedBackend) async {
        node?.periodic.remove(periodicKey(mount.entry))
        await mount.backend.backend?.teardown()
    }
}
