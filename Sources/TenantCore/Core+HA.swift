import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

/// How a node takes part in an HA cluster (`storage "etcd" { ha_enabled = "true" }`).
public struct HAConfiguration: Sendable {
    public var lock: any HALock
    /// The node's physical storage gate: open only while the node is active.
    public var gate: WriteGate
    /// Where clients reach this node (`api_addr`) and where nodes forward (`cluster_addr`).
    public var apiAddress: String
    public var clusterAddress: String
    /// The lock's lease TTL (`lock_timeout`): a killed active node is replaced this long
    /// after its last renewal at most.
    public var lockTTL: Int
    /// How often a standby looks at the lock (and tries to take it when free).
    public var pollInterval: Duration = .milliseconds(250)
    /// How long a node that stepped down waits before it campaigns again.
    public var stepDownHold: Duration = .seconds(10)
    /// The change feed a standby follows as it happens (etcd's watch) to invalidate its caches.
    public var feed: any ChangeFeedWatching

    public init(lock: any HALock, feed: any ChangeFeedWatching, gate: WriteGate, apiAddress: String, clusterAddress: String, lockTTL: Int = 3) {
        self.lock = lock
        self.feed = feed
        self.gate = gate
        self.apiAddress = apiAddress
        self.clusterAddress = clusterAddress
        self.lockTTL = lockTTL
    }
}

/// What the lock holder advertises (the lock key's value).
public struct LeaderAdvertisement: Codable, Sendable, Equatable {
    /// The advertisement a lock value holds, or nil when it does not read.
    static func decoded(_ bytes: [UInt8]) -> LeaderAdvertisement? {
        try? StoredJSON.decoder.decode(LeaderAdvertisement.self, from: Data(bytes))
    }

    public var nodeID: String
    public var apiAddr: String
    public var clusterAddr: String
    /// Random per term: the storage fence, so an older term of the same node cannot write.
    public var session: String
    /// Unix seconds when this node became active.
    public var since: Double

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", apiAddr = "api_addr", clusterAddr = "cluster_addr", session, since
    }
}

public enum HARole: String, Sendable {
    /// Not in an HA cluster (single node): always active.
    case standalone
    case active
    case standby
}

/// A standby as the active node last heard from it (`sys/ha-status`).
public struct HANodeEcho: Codable, Sendable, Equatable {
    public var nodeID: String
    public var hostname: String
    public var apiAddr: String
    public var clusterAddr: String
    public var version: String
    /// Unix seconds of the last echo (set by the active node on receipt).
    public var lastEcho: Double = 0

    public init(nodeID: String, hostname: String, apiAddr: String, clusterAddr: String, version: String) {
        self.nodeID = nodeID
        self.hostname = hostname
        self.apiAddr = apiAddr
        self.clusterAddr = clusterAddr
        self.version = version
    }

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", hostname, apiAddr = "api_address", clusterAddr = "cluster_address", version, lastEcho = "last_echo"
    }
}

/// The node's HA state.
struct HAState {
    /// Active node: the standbys that echoed, by node id.
    var echoes: [String: HANodeEcho] = [:]
    var config: HAConfiguration?
    var role = HARole.standalone
    var leader: LeaderAdvertisement?
    var task: Task<Void, Never>?
    var stepDownRequested = false
    var feedRevision: UInt64 = 0
    /// The standby's watch on the change feed, and when it was last seen lagging.
    var feedTask: Task<Void, Never>?
    var lastLagCheck: ContinuousClock.Instant?
    var laggingSince: (at: ContinuousClock.Instant, head: UInt64)?
}

extension Core {
    /// Makes this node an HA cluster member: after unseal it is a standby until it takes
    /// the lock. Call before the first unseal.
    public func enableHA(_ config: HAConfiguration) {
        ha.withLock { s in
            s.config = config
            s.role = .standby
        }
    }

    public var haEnabled: Bool { ha.withLock { $0.config != nil } }
    public var haRole: HARole { ha.withLock { $0.role } }
    /// The active node as last seen (this node when it is active).
    public var haLeader: LeaderAdvertisement? { ha.withLock { $0.leader } }

    /// How long a standby stays listed in `sys/ha-status` after its last echo.
    public static let echoValidity: Double = 15

    /// Active node: a standby echoed (through the cluster link, which proved its certificate).
    public func recordEcho(_ echo: HANodeEcho) {
        var e = echo
        e.lastEcho = Date().timeIntervalSince1970
        ha.withLock { s in
            guard s.role == .active, e.nodeID != nodeID else { return }
            if s.echoes.count >= 1024 { s.echoes.removeAll() }
            s.echoes[e.nodeID] = e
        }
    }

    /// The standbys heard from within `echoValidity`, by API address.
    public func recentStandbys(now: Double = Date().timeIntervalSince1970) -> [HANodeEcho] {
        ha.withLock { s in
            s.echoes = s.echoes.filter { now - $0.value.lastEcho <= Self.echoValidity }
            return s.echoes.values.sorted { $0.apiAddr < $1.apiAddr }
        }
    }
    public var haConfiguration: HAConfiguration? { ha.withLock { $0.config } }

    /// Called at unseal, with the barrier open: a standby neither writes nor runs
    /// background work, then the campaign starts.
    func startHA(_ config: HAConfiguration) async throws {
        ha.withLock { s in
            s.role = .standby
            s.stepDownRequested = false
        }
        config.gate.setOpen(false)
        // The feed position before anything is read: every later change gets invalidated.
        let head = try await feedHead()
        ha.withLock { $0.feedRevision = head }
    }

    func feedHead() async throws -> UInt64 {
        switch try await physical.changes(since: UInt64.max - 1, limit: 0) {
        case .changes(_, let head), .compacted(let head): return head
        }
    }

    func launchHALoop(_ config: HAConfiguration) {
        let t = Task<Void, Never> { [weak self] in
            guard let self else { return }
            await self.haLoop(config)
        }
        ha.withLock { $0.task = t }
    }

    /// At seal: stop campaigning; an active node gives the lock up.
    func stopHA() async {
        let t = ha.withLock { s -> Task<Void, Never>? in
            defer { s.task = nil }
            return s.task
        }
        t?.cancel()
        await t?.value
        stopFeedWatcher()
        ha.withLock { s in
            if s.config != nil { s.role = .standby }
            s.leader = nil
        }
        haConfiguration?.gate.setOpen(false)
    }

    /// `sys/step-down`: the active node gives the lock up and does not campaign for a while.
    public func stepDown() async throws {
        guard haEnabled else { throw CofferError.invalid("this node is not part of an HA cluster") }
        guard haRole == .active else { throw CofferError(.standbyWrite, "step-down must reach the active node") }
        ha.withLock { $0.stepDownRequested = true }
        // Wait (bounded) until the loop has handed over, so the caller sees the effect.
        for _ in 0..<100 where haRole == .active {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: the campaign

    func haLoop(_ config: HAConfiguration) async {
        var machine = HAStateMachine(
            nodeID: nodeID, pollInterval: config.pollInterval, lockTTL: .seconds(config.lockTTL), stepDownHold: config.stepDownHold)
        var pending = machine.start()
        var lastError = ContinuousClock.now - .seconds(60)
        var advertised: (advert: LeaderAdvertisement, bytes: [UInt8])?
        while !pending.isEmpty {
            let action = pending.removeFirst()
            if Task.isCancelled, machine.state != .stopped {
                pending = machine.handle(.shutdown)
                continue
            }
            guard let event = await perform(action, config, machine: machine, advertised: &advertised, lastError: &lastError) else { continue }
            let actions = machine.handle(event)
            switch event {
            case .foreignKeyring: logger.error("HA: storage holds another cluster's keyring; sealing")
            case .leaseGone: logger.error("HA: the lock's lease is gone; this node is no longer active")
            case .renewalFailed where actions.contains(.closeGate): logger.error("HA: cannot renew the lock; stepping down")
            default: break
            }
            pending += actions
        }
        if Task.isCancelled { config.gate.setOpen(false) }
    }

    /// Runs one action of the campaign; answers the event it produced (nil: none).
    func perform(
        _ action: HAStateMachine.Action, _ config: HAConfiguration, machine: HAStateMachine,
        advertised: inout (advert: LeaderAdvertisement, bytes: [UInt8])?, lastError: inout ContinuousClock.Instant
    ) async -> HAStateMachine.Event? {
        do {
            switch action {
            case .readLock:
                guard let holder = try await config.lock.holder() else { return .lockHolder(nil, held: false) }
                return .lockHolder(LeaderAdvertisement.decoded(holder), held: true)
            case .acquire:
                let advert = LeaderAdvertisement(
                    nodeID: nodeID, apiAddr: config.apiAddress, clusterAddr: config.clusterAddress,
                    session: RandomID.secureUUID(), since: Date().timeIntervalSince1970)
                let bytes = Array(try StoredJSON.encoder.encode(advert))
                switch try await config.lock.acquire(value: bytes, ttlSeconds: config.lockTTL) {
                case .held(let holder):
                    return .heldBy(holder.flatMap(LeaderAdvertisement.decoded))
                case .acquired(let lease):
                    advertised = (advert, bytes)
                    return .acquired(lease: lease, now: .now)
                }
            case .activate:
                guard let advertised else { return .activationFailed }
                config.lock.fence(advertised.bytes)
                do {
                    try await activate(advertised.advert)
                    return .activated(now: .now)
                } catch is ForeignKeyring {
                    return .foreignKeyring
                } catch {
                    logger.error("could not become active; giving the lock back", metadata: ["error": "\(error)"])
                    return .activationFailed
                }
            case .renew(let lease):
                do {
                    return try await config.lock.keepAlive(lease: lease) ? .renewed(now: .now) : .leaseGone
                } catch {
                    if ContinuousClock.now - lastError > .seconds(10) {
                        logger.warning("HA: cannot renew the lock", metadata: ["error": "\(error)"])
                        lastError = .now
                    }
                    return .renewalFailed(now: .now)
                }
            case .release(let lease):
                // Outside this task: on seal or shutdown it is cancelled, and a cancelled
                // task's etcd call would be abandoned before it is sent.
                await Task { try? await config.lock.release(lease: lease) }.value
                logger.info("HA: lock released")
                return nil
            case .closeGate:
                config.gate.setOpen(false)
                return nil
            case .demote:
                if case .holdingOff = machine.state { logger.info("HA: stepping down") }
                await demote(config)
                return nil
            case .setLeader(let leader):
                ha.withLock { s in
                    s.leader = leader
                    // A step-down request that came while not active is void.
                    if s.role != .active { s.stepDownRequested = false }
                }
                return nil
            case .seal:
                sealForForeignKeyring()
                return nil
            case .follow:
                try await standbyTick(config)
                return .tick(now: .now)
            case .wait(let duration):
                // Short sleeps, so a step-down or a seal is acted on at once.
                let until = ContinuousClock.now + duration
                while ContinuousClock.now < until {
                    if case .active = machine.state, ha.withLock({ s in defer { s.stepDownRequested = false }; return s.stepDownRequested }) {
                        return .stepDownRequested(now: .now)
                    }
                    try await Task.sleep(for: min(.milliseconds(50), until - .now))
                }
                return .tick(now: .now)
            }
        } catch is CancellationError {
            return .shutdown
        } catch is ForeignKeyring {
            return .foreignKeyring
        } catch {
            if Task.isCancelled { return .shutdown }
            if ContinuousClock.now - lastError > .seconds(10) {
                logger.warning("HA: storage unavailable, retrying", metadata: ["error": "\(error)"])
                lastError = ContinuousClock.now
            }
            return .storageFailed
        }
    }

    /// One standby period: follow the change feed until the next look at the lock. A
    /// watcher task applies changes as they come and this only checks, once a second, that
    /// it is not falling behind (a member that stopped answering keeps a watch open but
    /// silent): a watcher behind for over a second is replaced.
    func standbyTick(_ config: HAConfiguration) async throws {
        let feed = config.feed
        ensureFeedWatcher(feed)
        try await Task.sleep(for: config.pollInterval)
        let now = ContinuousClock.now
        let due = ha.withLock { s -> Bool in
            guard s.lastLagCheck.map({ now - $0 >= .seconds(1) }) ?? true else { return false }
            s.lastLagCheck = now
            return true
        }
        guard due else { return }
        let head = try await feedHead()
        let stale = ha.withLock { s -> Bool in
            guard head > s.feedRevision else {
                s.laggingSince = nil
                return false
            }
            guard let lag = s.laggingSince else {
                s.laggingSince = (now, head)
                return false
            }
            // Still short of what was already written a second ago: the watch is stuck.
            return now - lag.at >= .seconds(1) && s.feedRevision < lag.head
        }
        if stale {
            logger.warning("HA: the change feed watch fell behind; reconnecting")
            stopFeedWatcher()
            ha.withLock { $0.laggingSince = nil }
            try await followFeed()
            ensureFeedWatcher(feed)
        }
    }

    func ensureFeedWatcher(_ feed: any ChangeFeedWatching) {
        ha.withLock { s in
            guard s.feedTask == nil else { return }
            s.feedTask = Task { [weak self] in await self?.runFeedWatcher(feed) }
        }
    }

    func stopFeedWatcher() {
        let t = ha.withLock { s -> Task<Void, Never>? in
            defer { s.feedTask = nil }
            return s.feedTask
        }
        t?.cancel()
    }

    func runFeedWatcher(_ feed: any ChangeFeedWatching) async {
        var lastError = ContinuousClock.now - .seconds(60)
        while !Task.isCancelled, haRole == .standby {
            let from = ha.withLock { $0.feedRevision }
            do {
                for try await item in feed.watchChanges(after: from) {
                    if Task.isCancelled { return }
                    switch item {
                    case .changes(let changes, _):
                        try await apply(changes)
                    case .compacted(let head):
                        logger.warning("HA: the change feed was compacted past this standby; reloading everything")
                        try await transition.withLock { try await reloadFromStorage() }
                        ha.withLock { $0.feedRevision = max($0.feedRevision, head) }
                    }
                }
            } catch is ForeignKeyring {
                sealForForeignKeyring()
                return
            } catch {
                if Task.isCancelled { return }
                if ContinuousClock.now - lastError > .seconds(10) {
                    logger.warning("HA: change feed watch interrupted; resuming", metadata: ["error": "\(error)"])
                    lastError = ContinuousClock.now
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Standby → active: reload everything from storage (this node may have missed the
    /// last changes of the previous active), open the gate, start background work.
    func activate(_ advert: LeaderAdvertisement) async throws {
        guard let config = haConfiguration else { return }
        stopFeedWatcher()
        try await transition.withLock {
            guard barrier.isUnsealed else { throw CofferError(.sealed, "Vault is sealed") }
            config.gate.setOpen(true)
            do {
                try await reloadFromStorage()
            } catch {
                config.gate.setOpen(false)
                throw error
            }
            ha.withLock { s in
                s.role = .active
                s.leader = advert
            }
            leases.start()
            periodic.start()
        }
        logger.info("HA: this node is now the active node", metadata: ["api_addr": "\(advert.apiAddr)"])
    }

    /// Active → standby (lost lock, step-down, seal): close the gate, stop background
    /// work, and reload so the caches follow the feed again.
    func demote(_ config: HAConfiguration) async {
        config.gate.setOpen(false)
        let wasActive = ha.withLock { s -> Bool in
            defer {
                s.role = .standby
                if s.leader?.nodeID == nodeID { s.leader = nil }
            }
            return s.role == .active
        }
        guard wasActive else { return }
        await periodic.stop()
        await leases.stop()
        try? await transition.withLock {
            guard barrier.isUnsealed else { return }
            do {
                let head = try await feedHead()
                ha.withLock { $0.feedRevision = head }
                try await reloadFromStorage()
            } catch {
                logger.error("HA: reload after stepping down failed; the next change reloads again", metadata: ["error": "\(error)"])
            }
        }
        logger.info("HA: this node is now a standby")
    }

    /// Drops every cache and loaded namespace and reloads the keyring and the root.
    func reloadFromStorage() async throws {
        if let c = physical as? CachingStorage { c.invalidateAll() }
        barrier.clearDecoded()
        try await reloadKeyring()
        let old = [rootNamespace.withLock { $0 }].compactMap { $0 } + loaded.withLock { Array($0.values) }
        _ = recordGeneration.add(1, ordering: .releasing)
        _ = try await loadRoot()
        activity.withLock { $0 = [:] }
        for ns in old { await ns.teardownBackends() }
    }

    /// Re-reads the root keyring (another node may have rotated it).
    func reloadKeyring() async throws {
        guard let rootKey = rootKeyHolder.withLock({ $0 }), let sealed = try await uncachedPhysical.get(Self.keyringKey) else { return }
        let ring: [UInt8]
        do {
            ring = try Sealer.open(sealed, key: SymmetricKey(data: rootKey), aad: Self.keyringKey)
        } catch {
            throw ForeignKeyring()
        }
        barrier.install(try StoredJSON.decoder.decode(Keyring.self, from: Data(ring)))
    }

    /// The stored keyring no longer opens with this node's root key: a snapshot of another
    /// cluster was restored (`snapshot-force`). The node seals itself; it is unsealed again
    /// with that cluster's keys.
    struct ForeignKeyring: Error {}

    func sealForForeignKeyring() {
        logger.error("HA: the stored keyring does not open with this node's keys (another cluster's snapshot was restored); sealing this node")
        Task.detached { [weak self] in try? await self?.seal() }
    }

    // MARK: following the active node's writes

    /// Reads the change feed and invalidates what changed (a standby's caches).
    func followFeed() async throws {
        let since = ha.withLock { $0.feedRevision }
        switch try await physical.changes(since: since, limit: 1000) {
        case .changes(let changes, let head):
            guard !changes.isEmpty else {
                if head < since { ha.withLock { $0.feedRevision = head } }
                return
            }
            try await apply(changes)
        case .compacted(let head):
            logger.warning("HA: the change feed was compacted past this standby; reloading everything")
            try await transition.withLock { try await reloadFromStorage() }
            ha.withLock { $0.feedRevision = head }
        }
    }

    /// Invalidates what `changes` made stale and records how far the feed was read.
    func apply(_ changes: [StorageChange]) async throws {
        guard let last = changes.last?.revision else { return }
        var reloadRoot = false, auditChanged = false
        var evict: Set<String> = []
        for change in changes {
            invalidate(key: change.key, reloadRoot: &reloadRoot, evict: &evict, auditChanged: &auditChanged)
        }
        try await applyInvalidation(reloadRoot: reloadRoot, evict: evict)
        if auditChanged { try await audit.reloadIfDevicesChanged() }
        ha.withLock { $0.feedRevision = max($0.feedRevision, last) }
    }

    /// What one changed physical key makes stale. Records only reached through storage
    /// (secrets, leases, usage) need just the physical cache entry dropped; tables a
    /// namespace keeps in memory (mounts, policies, quotas, child records, keyring) reload
    /// that namespace.
    func invalidate(key: String, reloadRoot: inout Bool, evict: inout Set<String>, auditChanged: inout Bool) {
        if let c = physical as? CachingStorage { c.invalidate(key) }
        var rel = Substring(key)
        var nsID: String?
        if key.hasPrefix("ns/") {
            let rest = key.dropFirst(3)
            guard let slash = rest.firstIndex(of: "/") else { return }
            nsID = String(rest[..<slash])
            rel = rest[rest.index(after: slash)...]
        }
        if nsID == nil && rel == "core/audit" {
            auditChanged = true
            return
        }
        let structural = rel.hasPrefix("core/") && !rel.hasPrefix("core/lease-namespaces/")
        let ns: NamespaceCore?
        if let nsID {
            ns = loaded.withLock { $0.withID(nsID) }
        } else {
            ns = rootNamespace.withLock { $0 }
        }
        if nsID == nil && (rel == "core/seal-config" || rel == "core/root-key") { return }
        if rel.hasPrefix("sys/token/") {
            ns?.tokens.dropCache()
        } else if rel.hasPrefix(NamespaceCore.childPrefix) {
            // A child's record (metadata, lock) changed: its parent's record cache and the
            // child (with its descendants) go.
            ns?.childCache.withLock { $0.removeAll() }
            let name = rel.dropFirst(NamespaceCore.childPrefix.count)
            if let ns { evict.insert(ns.path + name + "/") }
        } else if structural || rel.hasPrefix("sys/policy/") || rel.hasPrefix("sys/quotas/") {
            if nsID == nil {
                reloadRoot = true
            } else if let ns {
                evict.insert(ns.path)
            }
        }
    }

    func applyInvalidation(reloadRoot: Bool, evict: Set<String>) async throws {
        if reloadRoot {
            try await transition.withLock { try await reloadFromStorage() }
            return
        }
        guard !evict.isEmpty else { return }
        _ = recordGeneration.add(1, ordering: .releasing)
        let dropped = loaded.withLock { l -> [NamespaceCore] in
            let gone = l.keys.filter { path in evict.contains { path.hasPrefix($0) } }
            return gone.compactMap { l.removeValue(forKey: $0) }
        }
        for ns in dropped { await ns.teardownBackends() }
    }
}

extension Core {
    /// A root-namespace record of the cluster machinery (the cluster CA), behind the
    /// barrier: read it, or create it when this node may write (active or single node).
    public func clusterRecord<T: Codable & Sendable>(_ type: T.Type, key: String, create: @Sendable () throws -> T) async throws -> T {
        let view = try root().rootView
        if let existing = try await view.getCodable(T.self, key) { return existing }
        guard haRole != .standby else {
            throw CofferError(.unavailable, "the cluster record \(key) does not exist yet; the active node creates it")
        }
        let fresh = try create()
        try await view.putCodable(key, fresh)
        return fresh
    }
}
