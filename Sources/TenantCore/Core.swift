import CofferSDK
@preconcurrency import Crypto
import Foundation
import Logging
import Synchronization
import Audit

/// The stored seal configuration (outside the barrier, plaintext by design).
public struct SealConfiguration: Codable, Sendable {
    public var type: String
    public var secretShares: Int
    public var secretThreshold: Int
    /// Recovery key shares (auto seals only; nil under Shamir).
    public var recoveryShares: Int?
    public var recoveryThreshold: Int?

    /// An auto seal (pkcs11, awskms): the root key is wrapped by the seal, and recovery
    /// shares stand in for unseal shares.
    public var isAuto: Bool { type != "shamir" }
    /// The shares a quorum operation (unseal after sys/seal, rekey, generate-root) takes.
    public var quorumShares: Int { isAuto ? recoveryShares ?? 0 : secretShares }
    public var quorumThreshold: Int { isAuto ? recoveryThreshold ?? 0 : secretThreshold }
}

/// What `sys/init` returns: unseal key shares (Shamir) or recovery key shares (auto seal).
public struct InitResult: Sendable {
    public var keys: [[UInt8]]
    public var recoveryKeys: [[UInt8]]
    public var rootToken: String
}

/// Seal state as a value: what `sys/seal-status` reports.
public struct SealStatus: Sendable {
    public var type: String
    public var recoverySeal: Bool
    /// Why the last automatic unseal failed (auto seals), until one succeeds.
    public var autoUnsealError: String?
    public var initialized: Bool
    public var sealed: Bool
    public var shares: Int
    public var threshold: Int
    public var progress: Int
    public var nonce: String
    /// A seal migration waits for `sys/unseal` with `migrate` (the old seal's shares).
    public var migration = false
}

/// One Coffer node: the physical storage, the seal, the barrier and the root namespace.
///
/// Unsealing installs the keyring in the barrier and loads the root `NamespaceCore`;
/// sealing forgets both. Requests that must work while sealed (`sys/init`,
/// `sys/seal-status`, `sys/unseal`, `sys/health`, `sys/leader`) are answered here.
public final class Core: Sendable {
    public let physical: any Storage
    public let barrier: Barrier
    /// Audit devices (`sys/audit`), stored behind the root barrier.
    public let audit: AuditBroker
    /// Leases of every namespace: storage, expiry, revocation (`Leases.swift`).
    public let leases: LeaseManager
    /// The engines' timed work (static-role rotation), run while this node is active.
    public let periodic = PeriodicWork()
    public let configuration: CoreConfiguration
    public let storageType: String
    let catalog: EngineCatalog
    let logger: Logger
    /// The cluster's id: created once, stored behind the root barrier, the same on every
    /// node of an HA cluster (read at unseal).
    public var clusterID: String { storedClusterID.withLock { $0 } }
    let storedClusterID = Mutex(RandomID.secureUUID())
    static let clusterIDKey = "core/cluster-id"
    /// This process in an HA cluster (advertised in the lock; not a secret).
    public let nodeID = RandomID.secureUUID()
    /// HA role, the active node as last seen, the campaign task (`Core+HA.swift`).
    let ha = Mutex(HAState())

    struct Progress {
        var parts: [[UInt8]] = []
        var nonce = ""

        /// Adds a share (a repeat counts once; the first starts a new nonce); all of them
        /// once `threshold` are in, else nil.
        mutating func add(_ part: [UInt8], threshold: Int) -> [[UInt8]]? {
            if parts.isEmpty { nonce = RandomID.secureUUID() }
            if !parts.contains(where: { constantTimeEquals($0, part) }) { parts.append(part) }
            return parts.count >= threshold ? parts : nil
        }
    }

    let progress = Mutex(Progress())
    let rootNamespace = Mutex<NamespaceCore?>(nil)
    let transition = AsyncMutex()

    static let sealConfigKey = "core/seal-config"
    static let rootKeyKey = "core/root-key"
    static let keyringKey = "core/keyring"

    /// The auto seal from the configuration (nil: Shamir).
    public let autoSeal: (any AutoSeal)?
    /// Why the last automatic unseal failed; nil once one succeeds.
    let autoUnsealFailure = Mutex<String?>(nil)
    /// Set by `sys/seal`: an auto-sealed node then stays sealed until a restart or a
    /// quorum of recovery shares (`sys/unseal`), as Vault's does.
    let autoUnsealSuspended = Atomic<Bool>(false)
    /// Set when the seal failed in a way retrying cannot fix (a wrong PIN): the automatic
    /// attempts stop; a quorum of recovery shares may still unseal.
    let autoUnsealStopped = Atomic<Bool>(false)
    static let recoveryKeyKey = "core/recovery-key"
    /// Unsealed sealable namespaces' root keys by namespace id, and the unseal shares given
    /// so far per namespace (`Core+NamespaceSeal.swift`). Memory only: after a restart every
    /// sealable namespace is sealed.
    let namespaceRootKeys = Mutex<[String: [UInt8]]>([:])
    let namespaceUnsealProgress = Mutex<[String: Progress]>([:])
    /// Where a pending seal migration starts (nil: none); see `Core+SealMigration.swift`.
    let migrationSource: SealMigrationSource?
    /// True from the start until `sys/unseal` with `migrate` completes the migration.
    let migrationPending: Atomic<Bool>

    public init(physical: any Storage, storageType: String, catalog: EngineCatalog, configuration: CoreConfiguration, logger: Logger, autoSeal: (any AutoSeal)? = nil,
                migrateFrom: SealMigrationSource? = nil) {
        self.physical = physical
        self.autoSeal = autoSeal
        self.migrationSource = migrateFrom
        self.migrationPending = Atomic(migrateFrom != nil)
        self.storageType = storageType
        self.barrier = Barrier(physical: physical)
        self.audit = AuditBroker(storage: barrier, logger: logger)
        self.leases = LeaseManager(configuration: configuration.leases, clock: configuration.clock, logger: logger)
        self.catalog = catalog
        self.configuration = configuration
        self.logger = logger
        leases.links.withLock {
            $0 = (
                resolve: { [weak self] path in try await self?.namespace(path: path) },
                resolveID: { [weak self] id in
                    guard let self else { return nil }
                    if id == "root" { return try self.root() }
                    guard let path = try await self.namespacePath(id: id) else { return nil }
                    return try await self.namespace(path: path)
                },
                registry: { [weak self] in
                    guard let self else { throw CofferError(.sealed, "Vault is sealed") }
                    return try self.root().rootView
                },
                alive: { [weak self] in self != nil })
        }
    }

    // MARK: seal

    /// Storage without the read cache: the records outside the barrier are read from it,
    /// since another node (HA) may have written them while this one was sealed.
    var uncachedPhysical: any Storage { (physical as? CachingStorage)?.inner ?? physical }

    /// Once initialized, the seal configuration never changes: it is read from storage once.
    let cachedSealConfig = Mutex<SealConfiguration?>(nil)

    public func sealConfiguration() async throws -> SealConfiguration? {
        if let c = cachedSealConfig.withLock({ $0 }) { return c }
        guard let bytes = try await uncachedPhysical.get(Self.sealConfigKey) else { return nil }
        let config = try StoredJSON.decoder.decode(SealConfiguration.self, from: Data(bytes))
        cachedSealConfig.withLock { $0 = config }
        return config
    }

    public var isSealed: Bool { !barrier.isUnsealed || rootNamespace.withLock { $0 == nil } }

    public func status() async throws -> SealStatus {
        let config = try await sealConfiguration()
        let p = progress.withLock { $0 }
        let auto = config?.isAuto ?? (autoSeal != nil)
        return SealStatus(type: config?.type ?? autoSeal?.type ?? "shamir", recoverySeal: auto,
                          autoUnsealError: auto ? autoUnsealFailure.withLock { $0 } : nil,
                          initialized: config != nil, sealed: isSealed, shares: config?.quorumShares ?? 0,
                          threshold: config?.quorumThreshold ?? 0, progress: p.parts.count, nonce: p.nonce,
                          migration: migrationPending.load(ordering: .relaxed))
    }

    /// `sys/init`: creates the unseal key, root key and keyring; returns key shares and the
    /// initial root token. The node stays sealed afterwards, as Vault's does.
    public func initialize(shares: Int, threshold: Int) async throws -> (keys: [[UInt8]], rootToken: String) {
        let r = try await initialize(shares: shares, threshold: threshold, recoveryShares: nil, recoveryThreshold: nil)
        return (r.keys, r.rootToken)
    }

    static func checkShares(_ shares: Int, _ threshold: Int, _ what: String) throws {
        guard shares >= 1, threshold >= 1, threshold <= shares else {
            throw CofferError.invalid("invalid \(what) configuration: threshold must be between 1 and the number of shares")
        }
        if shares > 1 && threshold < 2 { throw CofferError.invalid("invalid \(what) configuration: threshold must be at least 2 when shares > 1") }
        if shares > 255 { throw CofferError.invalid("invalid \(what) configuration: at most 255 shares") }
    }

    /// Splits a 32-byte key into shares (one share is the key itself, as Vault does).
    static func splitKey(_ key: [UInt8], shares: Int, threshold: Int) throws -> [[UInt8]] {
        shares == 1 ? [key] : try Shamir.split(secret: key, shares: shares, threshold: threshold)
    }

    /// The key a quorum of `splitKey`'s shares recombines to.
    static func combineKey(_ parts: [[UInt8]]) throws -> [UInt8] {
        parts.count == 1 ? parts[0] : try Shamir.combine(parts)
    }

    /// The stored form of the root key under Shamir: sealed with the unseal key.
    static func sealRootKey(_ rootKey: [UInt8], unsealKey: [UInt8]) throws -> [UInt8] {
        try Sealer.seal(rootKey, key: SymmetricKey(data: unsealKey), term: 0, aad: rootKeyKey)
    }

    /// `plaintext` wrapped by the auto seal for the storage key `context`; a seal that
    /// cannot answer is a 503 that names it.
    static func wrap(_ plaintext: [UInt8], with seal: any AutoSeal, context: String) async throws -> [UInt8] {
        do {
            return try await seal.wrap(plaintext, context: context)
        } catch let e as SealUnavailable {
            throw CofferError(.unavailable, "\(seal.type) seal: \(e.description)")
        }
    }

    /// `sys/init`. Shamir: `shares`/`threshold` unseal key shares; the node stays sealed.
    /// Auto seal: the root key is wrapped by the seal, `recoveryShares`/`recoveryThreshold`
    /// recovery key shares are returned (5/3 when not given), and the node unseals itself.
    public func initialize(shares: Int, threshold: Int, recoveryShares: Int?, recoveryThreshold: Int?) async throws -> InitResult {
        let result: InitResult = try await transition.withLock {
            if try await sealConfiguration() != nil { throw CofferError.invalid("Vault is already initialized") }
            let rootKey = SecureRandom.bytes(32)
            let keyring = Keyring.generate()
            let config: SealConfiguration
            var parts: [[UInt8]] = []
            var recoveryParts: [[UInt8]] = []
            if let seal = autoSeal {
                let rs = recoveryShares ?? 5, rt = recoveryThreshold ?? recoveryShares ?? 3
                try Self.checkShares(rs, rt, "recovery")
                let recoveryKey = SecureRandom.bytes(32)
                recoveryParts = try Self.splitKey(recoveryKey, shares: rs, threshold: rt)
                try await physical.put(Self.rootKeyKey, try await Self.wrap(rootKey, with: seal, context: Self.rootKeyKey))
                try await physical.put(Self.recoveryKeyKey, try await Self.wrap(recoveryKey, with: seal, context: Self.recoveryKeyKey))
                config = SealConfiguration(type: seal.type, secretShares: 1, secretThreshold: 1, recoveryShares: rs, recoveryThreshold: rt)
            } else {
                // recovery_shares is ignored under Shamir, as Vault does (its CLI always sends it).
                try Self.checkShares(shares, threshold, "seal")
                let unsealKey = SecureRandom.bytes(32)
                parts = try Self.splitKey(unsealKey, shares: shares, threshold: threshold)
                try await physical.put(Self.rootKeyKey, try Self.sealRootKey(rootKey, unsealKey: unsealKey))
                config = SealConfiguration(type: "shamir", secretShares: shares, secretThreshold: threshold)
            }
            try await storeKeyring(keyring, rootKey: rootKey)
            // Create the root token and the default objects with the barrier open, then close it.
            barrier.install(keyring)
            let token: String
            do {
                let ns = try await loadRoot()
                token = try await Self.createRootToken(ns)
            } catch {
                barrier.clear()
                throw error
            }
            barrier.clear()
            rootNamespace.withLock { $0 = nil }
            try await physical.put(Self.sealConfigKey, Array(try StoredJSON.encoder.encode(config)))
            logger.info("core initialized", metadata: ["seal": "\(config.type)", "shares": "\(config.quorumShares)", "threshold": "\(config.quorumThreshold)"])
            return InitResult(keys: parts, recoveryKeys: recoveryParts, rootToken: token)
        }
        if autoSeal != nil { _ = try? await autoUnseal() }
        return result
    }

    static func createRootToken(_ ns: NamespaceCore, id: String? = nil) async throws -> String {
        let now = ns.tokens.now()
        let entry = TokenEntry(
            idHash: "", accessor: "", parentHash: "", policies: ["root"], meta: [:], displayName: "root", numUses: 0,
            creationTime: now, creationTTL: 0, expireTime: 0, explicitMaxTTL: 0, period: 0, renewable: false, orphan: true,
            path: "auth/token/root", role: "", type: "service", entityID: "", namespacePath: "", lastRenewalTime: 0)
        return try await ns.tokens.create(entry, id: id).0
    }

    func storeKeyring(_ keyring: Keyring, rootKey: [UInt8]) async throws {
        let json = try StoredJSON.encoder.encode(keyring)
        try await physical.put(Self.keyringKey, try Sealer.seal(Array(json), key: SymmetricKey(data: rootKey), term: 0, aad: Self.keyringKey))
    }

    /// Parses an unseal key share given as hex or base64.
    public static func decodeKey(_ text: String) throws -> [UInt8] {
        let t = text.trimmingCharacters(in: .whitespaces)
        // ASCII only: Character.isHexDigit also accepts fullwidth digits, which
        // UInt8(_:radix:) rejects.
        if let bytes = Hex.decode(t), !bytes.isEmpty { return bytes }
        if let d = Data(base64Encoded: t), !d.isEmpty { return Array(d) }
        throw CofferError.invalid("'key' must be a valid hex or base64 string")
    }

    /// `sys/unseal`: adds a key share; at the threshold, recombines and opens the barrier.
    /// Under an auto seal the shares are recovery shares: a quorum of them lets the seal
    /// unwrap the root key again (after `sys/seal`).
    public func unseal(key: String?, reset: Bool, migrate: Bool = false) async throws -> SealStatus {
        try await transition.withLock {
            guard let config = try await sealConfiguration() else {
                throw CofferError.invalid("Vault is not initialized")
            }
            if reset {
                progress.withLock { $0 = Progress() }
                return try await status()
            }
            if !isSealed { return try await status() }
            let migrating = migrationPending.load(ordering: .relaxed)
            if migrating && !migrate {
                throw CofferError.invalid("a seal migration is pending: submit the \(config.isAuto ? "recovery" : "unseal") keys with migrate=true (coffer operator unseal -migrate)")
            }
            if migrate && !migrating { throw CofferError.invalid("no seal migration is pending: unseal without migrate") }
            guard let key, !key.isEmpty else { throw CofferError.invalid("'key' must be specified in request body as JSON, or 'reset' set to true") }
            let part = try Self.decodeShare(key, shares: config.quorumShares, what: config.isAuto ? "recovery" : "unseal")
            guard let ready = progress.withLock({ $0.add(part, threshold: config.quorumThreshold) }) else { return try await status() }
            progress.withLock { $0 = Progress() }
            let combined = try Self.combineKey(ready)
            if migrating {
                try await completeSealMigration(quorumKey: combined, config: config)
            } else if config.isAuto {
                try await verifyRecoveryKey(combined)
                try await openBarrier(rootKey: try await unwrapRootKeyWithSeal(config))
            } else {
                try await openBarrier(rootKey: try await unwrapRootKey(unsealKey: combined))
            }
            autoUnsealSuspended.store(false, ordering: .relaxed)
            return try await status()
        }
    }

    /// The root key, opened with a recombined Shamir unseal key.
    func unwrapRootKey(unsealKey: [UInt8]) async throws -> [UInt8] {
        guard let sealedRoot = try await uncachedPhysical.get(Self.rootKeyKey) else {
            throw CofferError.internalError("root key missing from storage")
        }
        do {
            return try Sealer.open(sealedRoot, key: SymmetricKey(data: unsealKey), aad: Self.rootKeyKey)
        } catch {
            throw CofferError.invalid("Error unsealing: unseal keys are invalid (message authentication failed)")
        }
    }

    /// The root key, unwrapped by the auto seal.
    func unwrapRootKeyWithSeal(_ config: SealConfiguration, seal chosen: (any AutoSeal)? = nil) async throws -> [UInt8] {
        guard let seal = chosen ?? autoSeal, seal.type == config.type else {
            throw CofferError(.unavailable, "the stored seal is \(config.type) but the configuration has no such seal")
        }
        guard let blob = try await uncachedPhysical.get(Self.rootKeyKey) else {
            throw CofferError.internalError("root key missing from storage")
        }
        do {
            return try await seal.unwrap(blob, context: Self.rootKeyKey)
        } catch let e as SealUnavailable {
            if !e.retryable { autoUnsealStopped.store(true, ordering: .relaxed) }
            throw CofferError(.unavailable, "\(seal.type) seal: \(e.description)")
        }
    }

    /// Checks a recombined recovery key against the stored one (unwrapped by the seal), in
    /// constant time.
    func verifyRecoveryKey(_ candidate: [UInt8], seal chosen: (any AutoSeal)? = nil) async throws {
        guard let seal = chosen ?? autoSeal, let blob = try await uncachedPhysical.get(Self.recoveryKeyKey) else {
            throw CofferError.invalid("recovery keys are not available: no auto seal")
        }
        let stored: [UInt8]
        do {
            stored = try await seal.unwrap(blob, context: Self.recoveryKeyKey)
        } catch let e as SealUnavailable {
            throw CofferError(.unavailable, "\(seal.type) seal: \(e.description)")
        }
        guard constantTimeEquals(stored, candidate) else {
            throw CofferError.invalid("recovery key verification failed: the recovery key shares are invalid")
        }
    }

    /// An auto-sealed node unseals itself: the seal unwraps the root key. Returns false
    /// when there is nothing to do (not initialized, already unsealed, Shamir, or
    /// `sys/seal` was called since the start). Errors say why it failed and are kept for
    /// `sys/seal-status` until an attempt succeeds.
    @discardableResult
    public func autoUnseal() async throws -> Bool {
        guard autoSeal != nil, isSealed, !autoUnsealSuspended.load(ordering: .relaxed), !autoUnsealStopped.load(ordering: .relaxed),
              !migrationPending.load(ordering: .relaxed) else { return false }
        do {
            return try await transition.withLock {
                guard let config = try await sealConfiguration(), config.isAuto, isSealed else { return false }
                try await openBarrier(rootKey: try await unwrapRootKeyWithSeal(config))
                autoUnsealFailure.withLock { $0 = nil }
                return true
            }
        } catch let e as CofferError {
            autoUnsealFailure.withLock { $0 = e.message }
            throw e
        } catch {
            autoUnsealFailure.withLock { $0 = "\(error)" }
            throw error
        }
    }

    func openBarrier(rootKey: [UInt8]) async throws {
        guard let sealedRing = try await uncachedPhysical.get(Self.keyringKey) else {
            throw CofferError.internalError("keyring missing from storage")
        }
        let ring = try Sealer.open(sealedRing, key: SymmetricKey(data: rootKey), aad: Self.keyringKey)
        let keyring = try StoredJSON.decoder.decode(Keyring.self, from: Data(ring))
        barrier.install(keyring)
        do {
            if let ha = haConfiguration { try await startHA(ha) }
            _ = try await loadRoot()
        } catch {
            barrier.clear()
            throw error
        }
        rootKeyHolder.withLock { $0 = rootKey }
        let haConfig = haConfiguration
        do {
            for (path, reason) in try await audit.load() {
                logger.error("audit device failed to open; it retries on each entry", metadata: ["audit.path": "\(path)", "error": "\(reason)"])
            }
        } catch {
            logger.error("audit devices could not be loaded", metadata: ["error": "\(error)"])
        }
        if haConfig != nil {
            // A standby: the campaign decides whether this node becomes active.
            startCampaign()
        } else {
            leases.start()
            periodic.start()
        }
        logger.info("core unsealed", metadata: ["term": "\(keyring.activeTerm)"])
    }

    let rootKeyHolder = Mutex<[UInt8]?>(nil)
    /// Rekey and root generation attempts in progress (`Core+KeyCeremonies.swift`).
    let ceremonies = Mutex(KeyCeremonies())

    func loadRoot() async throws -> NamespaceCore {
        let ns = try await NamespaceCore.load(path: "", storage: barrier, catalog: catalog, configuration: configuration, node: self, logger: logger)
        try await loadQuotaConfig()
        try await loadClusterID(ns)
        rootNamespace.withLock { $0 = ns }
        loaded.withLock { $0 = [:] }
        return ns
    }

    func loadClusterID(_ root: NamespaceCore) async throws {
        if let id = try await root.rootView.getJSON(Self.clusterIDKey)?.stringValue {
            storedClusterID.withLock { $0 = id }
            return
        }
        do {
            try await root.rootView.putJSON(Self.clusterIDKey, .string(clusterID))
        } catch let e as CofferError where e.code == .standbyWrite {
            // A standby of a cluster created before ids were stored: the active node writes it.
        }
    }

    /// Child namespaces currently loaded, by path (and by id).
    let loaded = Mutex<LoadedNamespaces>([:])
    /// When each loaded namespace last served a request, and how many it serves now.
    struct Activity {
        var lastUsed = ContinuousClock.now
        var inFlight = 0
    }
    let activity = Mutex<[String: Activity]>([:])
    /// Serializes changes to existing namespace records (update, delete, lock, rotate) and
    /// eviction. Loading and creating do not take it: loads of different namespaces run in
    /// parallel (one in-flight load per path, `loading`), and creations claim their name in
    /// `creating`, so their writes share group commits.
    let namespaceLoadLock = AsyncMutex()
    /// In-flight loads, by namespace path: concurrent first requests to one namespace share one load.
    let loading = Mutex<[String: Task<NamespaceCore?, any Error>]>([:])
    /// Paths being created now.
    let creating = Mutex<Set<String>>([])
    /// Ids of namespaces being created (see `reserveID`).
    let creatingIDs = Mutex<Set<String>>([])
    /// Bumped (under `loaded`'s lock) whenever a record is deleted or changed: a load that
    /// read a record before the change discards its result and reads again.
    let recordGeneration = Atomic<UInt64>(0)
    /// `sys/quotas/config` (root namespace).
    let quotaConfigCache = Mutex(QuotaConfig())
    let quotaConfigLock = AsyncMutex()
    /// Per-namespace usage, flushed into hourly buckets by `flushUsage()`.
    public let usage = UsageMeter()
    let usageFlushLock = AsyncMutex()
    /// Namespaces whose gauges were measured in the current hour.
    let usageGauged = Mutex<(hour: String, paths: Set<String>)>(("", []))

    /// Shutdown, first step: an active node steps down and releases the HA lock (a standby
    /// takes over at its next look at the lock); this node stops campaigning.
    public func handOver() async {
        await stopHA()
    }

    /// Shutdown, last step before the storage closes: the lease loop and the engines'
    /// timers (rotation) stop. The keyring stays: requests still draining are served.
    public func stopBackgroundWork() async {
        await periodic.stop()
        await leases.stop()
        for ns in openNamespaces { await ns.teardownBackends() }
    }

    /// The root namespace (when unsealed) and every loaded namespace.
    var openNamespaces: [NamespaceCore] {
        [rootNamespace.withLock { $0 }].compactMap { $0 } + loaded.withLock { Array($0.values) }
    }

    /// `sys/seal`: forgets the keyring and every loaded namespace.
    public func seal() async throws {
        autoUnsealSuspended.store(true, ordering: .relaxed)
        try await seal(keepingHALock: false)
    }

    /// `keepingHALock`: an active HA node stays the lock holder (a snapshot restore writes
    /// first, then stops the campaign).
    func seal(keepingHALock: Bool) async throws {
        if !keepingHALock { await stopHA() }
        await periodic.stop()
        await leases.stop()
        await audit.close()
        for ns in openNamespaces { await ns.teardownBackends() }
        barrier.clear()
        rootNamespace.withLock { $0 = nil }
        loaded.withLock { $0 = [:] }
        activity.withLock { $0 = [:] }
        rootKeyHolder.withLock { $0 = nil }
        progress.withLock { $0 = Progress() }
        // Sealable namespaces seal with the node (OpenBao's rule): their holders unseal again.
        namespaceRootKeys.withLock { $0 = [:] }
        namespaceUnsealProgress.withLock { $0 = [:] }
        if let c = physical as? CachingStorage { c.invalidateAll() }
        logger.info("core sealed")
    }

    /// `sys/rotate`: adds a keyring term; new writes use it, old terms stay for reads.
    public func rotate() async throws {
        try await transition.withLock {
            guard let ring = barrier.keyring, let rootKey = rootKeyHolder.withLock({ $0 }) else {
                throw CofferError(.sealed, "Vault is sealed")
            }
            let next = ring.rotated()
            try await storeKeyring(next, rootKey: rootKey)
            barrier.install(next)
            logger.info("barrier key rotated", metadata: ["term": "\(next.activeTerm)"])
        }
    }

    public func keyStatus() async throws -> [String: JSONValue] {
        guard let ring = barrier.keyring, let active = ring.terms.first(where: { $0.term == ring.activeTerm }) else {
            throw CofferError(.sealed, "Vault is sealed")
        }
        return [
            "term": .int(Int64(active.term)),
            "install_time": .string(ISO8601DateFormatter().string(from: active.installTime)),
            "encryptions": .int(barrier.encryptions),
        ]
    }

    /// Dev mode: initialize with one share, unseal, and optionally fix the root token id.
    public func bootstrapDev(rootTokenID: String?) async throws -> (key: [UInt8], rootToken: String) {
        let (keys, generated) = try await initialize(shares: 1, threshold: 1)
        _ = try await unseal(key: Hex.encode(keys[0]), reset: false)
        var token = generated
        if let rootTokenID, !rootTokenID.isEmpty, let ns = rootNamespace.withLock({ $0 }) {
            if let e = try await ns.tokens.lookup(token: generated) { try await ns.tokens.revokeTree(hash: e.idHash) }
            token = try await Self.createRootToken(ns, id: rootTokenID)
        }
        return (keys[0], token)
    }

    /// The loaded root namespace, or 503 when sealed.
    public func root() throws -> NamespaceCore {
        guard barrier.isUnsealed, let ns = rootNamespace.withLock({ $0 }) else { throw CofferError(.sealed, "Vault is sealed") }
        return ns
    }

    /// Mounts a secret engine (dev mode's `secret/`).
    public func mountDefault(path: String, type: String, options: [String: String]) async throws {
        try await root().enableMount(path: path, type: type, description: "key/value secret storage", config: MountConfig(), options: options, local: false, sealWrap: false, kind: .secret)
    }
}

/// The loaded child namespaces by path, with an index by id kept in step (tokens and storage
/// keys name a namespace by its id; a scan of every loaded namespace per lookup grew with the
/// tenant count). Dictionary-shaped: subscript by path, `removeValue`, `keys`, `values`.
struct LoadedNamespaces: ExpressibleByDictionaryLiteral {
    private(set) var byPath: [String: NamespaceCore] = [:]
    private var byID: [String: NamespaceCore] = [:]

    init(dictionaryLiteral elements: (String, NamespaceCore)...) {
        for (path, ns) in elements { self[path] = ns }
    }

    subscript(path: String) -> NamespaceCore? {
        get { byPath[path] }
        set {
            if let old = byPath[path], byID[old.id] === old { byID[old.id] = nil }
            byPath[path] = newValue
            if let newValue { byID[newValue.id] = newValue }
        }
    }

    @discardableResult
    mutating func removeValue(forKey path: String) -> NamespaceCore? {
        let old = byPath[path]
        self[path] = nil
        return old
    }

    func withID(_ id: String) -> NamespaceCore? { byID[id] }
    var keys: Dictionary<String, NamespaceCore>.Keys { byPath.keys }
    var values: Dictionary<String, NamespaceCore>.Values { byPath.values }
    var count: Int { byPath.count }
}
