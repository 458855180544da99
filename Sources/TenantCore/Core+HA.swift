import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization
import Audit
import Identity

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

/// The stored keyring no longer opens with this node's root key: a snapshot of another
/// cluster was restored (`snapshot-force`). The node seals itself; it is unsealed again with
/// that cluster's keys.
package struct ForeignKeyring: Error {
    package init() {}
}

/// What the lock holder advertises (the lock key's value).
public struct LeaderAdvertisement: Codable, Sendable, Equatable {
    /// The advertisement a lock value holds, or nil when it does not read.
    package static func decoded(_ bytes: [UInt8]) -> LeaderAdvertisement? {
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

    package init(nodeID: String, apiAddr: String, clusterAddr: String, session: String, since: Double) {
        self.nodeID = nodeID
        self.apiAddr = apiAddr
        self.clusterAddr = clusterAddr
        self.session = session
        self.since = since
    }
}

/// The campaign that decides whether this node is active (`Replication.HAService`): the
/// core starts it at unseal and stops it at seal (an active node then gives the lock up).
package protocol HACampaign: Sendable {
    func start()
    func stop() async
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
    var campaign: (any HACampaign)?
    var stepDownRequested = false
    /// How far a standby has read the change feed.
    var feedRevision: UInt64 = 0
}

extension Core {
    /// Makes this node an HA cluster member campaigning through `campaign`: after unseal it
    /// is a standby until it takes the lock. Call before the first unseal.
    package func enableHA(_ config: HAConfiguration, campaign: any HACampaign) {
        ha.withLock { s in
            s.config = config
            s.role = .standby
            s.campaign = campaign
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

    /// The change feed's newest revision.
    package func feedHead() async throws -> UInt64 {
        switch try await physical.changes(since: UInt64.max - 1, limit: 0) {
        case .changes(_, let head), .compacted(let head): return head
        }
    }

    /// At unseal: the campaign starts (this node is a standby until it wins).
    func startCampaign() {
        ha.withLock { $0.campaign }?.start()
    }

    /// At seal: stop campaigning; an active node gives the lock up.
    func stopHA() async {
        await ha.withLock { $0.campaign }?.stop()
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

    // MARK: what the campaign drives (Replication.HAService)

    /// The active node as the lock says (this node, another, or none).
    package func setLeader(_ leader: LeaderAdvertisement?) {
        ha.withLock { s in
            s.leader = leader
            // A step-down request that came while not active is void.
            if s.role != .active { s.stepDownRequested = false }
        }
    }

    /// Whether `sys/step-down` was asked since the last look (and forgets it).
    package func takeStepDownRequest() -> Bool {
        ha.withLock { s in
            defer { s.stepDownRequested = false }
            return s.stepDownRequested
        }
    }

    /// How far this standby has applied the change feed.
    package var feedRevision: UInt64 { ha.withLock { $0.feedRevision } }

    /// Drops every cache and reloads (the feed was compacted past this standby); the feed is
    /// then read from `head`.
    package func reloadEverything(feedAt head: UInt64) async throws {
        try await transition.withLock { try await reloadFromStorage() }
        ha.withLock { $0.feedRevision = max($0.feedRevision, head) }
    }

    /// Standby → active: reload everything from storage (this node may have missed the
    /// last changes of the previous active), open the gate, start background work.
    package func activate(_ advert: LeaderAdvertisement) async throws {
        guard let config = haConfiguration else { return }
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
    package func demote(_ config: HAConfiguration) async {
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

    /// The stored keyring no longer opens with this node's root key (`ForeignKeyring`): the
    /// node seals itself.
    package func sealForForeignKeyring() {
        logger.error("HA: the stored keyring does not open with this node's keys (another cluster's snapshot was restored); sealing this node")
        Task.detached { [weak self] in try? await self?.seal() }
    }

    // MARK: following the active node's writes

    /// Reads the change feed and invalidates what changed (a standby's caches).
    package func followFeed() async throws {
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
    package func apply(_ changes: [StorageChange]) async throws {
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
        } else if rel.hasPrefix(NamespaceCore.identityPrefix) {
            ns?.identity.dropLoaded()
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
