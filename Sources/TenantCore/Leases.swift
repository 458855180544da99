import CofferSDK
import Foundation
import HeapModule
import Logging
import Synchronization
@preconcurrency import Crypto

/// One lease as stored behind its namespace's barrier at `sys/expire/id/<lease id>`.
struct LeaseEntry: Codable, Sendable {
    var leaseID: String
    /// The request path that created it, relative to its namespace (`database/creds/ro`).
    var path: String
    /// The mount's route path (`database/`) and accessor, to find the engine again.
    var mount: String
    var mountAccessor: String
    var internalData: JSONValue
    /// Unix seconds.
    var issueTime: Double
    var expireTime: Double
    var lastRenewalTime: Double?
    /// Renewals never extend the lease past this (issue time + the capped max TTL).
    var maxExpireTime: Double
    var renewable: Bool
    /// The token that created it: its hash and the path of the namespace that owns it.
    var tokenHash: String?
    var tokenNamespace: String?
    var revokeAttempts: Int = 0
    var lastError: String?
    /// Revocation failed `maxRevokeAttempts` times: kept and listed, retried only by hand.
    var irrevocable: Bool = false

    func info() -> LeaseInfo {
        LeaseInfo(
            leaseID: leaseID, path: String(path.dropFirst(mount.count)), internalData: internalData.objectValue ?? [:],
            issueTime: Date(timeIntervalSince1970: issueTime), expireTime: Date(timeIntervalSince1970: expireTime),
            lastRenewalTime: lastRenewalTime.map { Date(timeIntervalSince1970: $0) })
    }
}

/// A token → lease index row, kept in the token's namespace at
/// `sys/expire/token/<token hash>/<row id>`.
struct LeaseTokenLink: Codable, Sendable {
    var namespace: String
    var leaseID: String
}

/// Counts live leases below path prefixes without scanning: a trie over path segments in
/// which every node knows how many leases lie below it. Paths are full (namespace path +
/// lease id), so a prefix can be a namespace, a mount or a role's creds path.
struct LeasePathCounter: Sendable {
    final class Node: @unchecked Sendable {
        // Mutated only under the manager's state lock.
        var count = 0
        var children: [Substring: Node] = [:]
    }

    let root = Node()

    func add(_ path: String, _ delta: Int) {
        var node = root
        node.count += delta
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            let next: Node
            if let n = node.children[segment] {
                next = n
            } else {
                if delta < 0 { return }
                next = Node()
                node.children[segment] = next
            }
            next.count += delta
            if next.count == 0 { node.children[segment] = nil }
            node = next
        }
    }

    /// Leases whose path starts with `prefix`, segment by segment.
    func count(_ prefix: String) -> Int {
        var node = root
        for segment in prefix.split(separator: "/", omittingEmptySubsequences: true) {
            guard let n = node.children[segment] else { return 0 }
            node = n
        }
        return node.count
    }
}

/// The node's lease manager (DESIGN §2: "lease registration for dynamic secrets").
///
/// Leases live in the namespace that owns the mount (`sys/expire/id/…` behind that
/// namespace's barrier). Expiry is a min-heap of deadlines for every live lease of every
/// namespace, so namespaces can be evicted while their leases keep ticking: when one is
/// due, the manager loads the namespace and asks the mount's `LeasingBackend` to revoke.
/// Nothing scans: the heap pops what is due, stale heap items (renewed or revoked leases)
/// are skipped by comparing with the live deadline.
///
/// Failed revocations retry with exponential backoff (1 s doubling, capped at 60 s); after
/// `maxRevokeAttempts` the lease is marked irrevocable — kept, listed by `GET sys/leases`,
/// counted, revocable by hand (`sys/leases/revoke`) or dropped with `revoke-force`.
///
/// Namespaces that ever held a lease are registered in the root barrier
/// (`core/lease-namespaces/<id>`), so a restart restores exactly those namespaces' leases
/// (in the background after unseal); overdue ones are revoked at once.
public final class LeaseManager: Sendable {
    public struct Configuration: Sendable {
        public var maxRevokeAttempts: Int
        public var maxBackoff: Double
        public var concurrency: Int

        public init(maxRevokeAttempts: Int = 8, maxBackoff: Double = 60, concurrency: Int = 16) {
            self.maxRevokeAttempts = maxRevokeAttempts
            self.maxBackoff = maxBackoff
            self.concurrency = concurrency
        }
    }

    struct Key: Hashable, Sendable {
        var namespace: String
        var leaseID: String
    }

    struct Due: Comparable, Sendable {
        var at: Double
        var key: Key
        static func < (a: Due, b: Due) -> Bool { a.at < b.at }
    }

    struct State: Sendable {
        var heap = Heap<Due>()
        /// Live deadline of every scheduled lease (irrevocable ones are not scheduled).
        var deadlines: [Key: Double] = [:]
        /// Full paths of counted leases (live and irrevocable), for the counter.
        var counted: [Key: String] = [:]
        var counter = LeasePathCounter()
        var running: Set<Key> = []
        var registeredNamespaces: Set<String> = []
        /// Lease-count quota reservations of requests in flight, by quota key.
        var pending: [String: Int] = [:]
        /// Token expiries of the buckets loaded so far (`Leases+TokenExpiry.swift`).
        var tokenHeap = Heap<TokenDue>()
        /// The last hour bucket loaded into `tokenHeap` (-1: none yet).
        var tokenHorizon: Int64 = -1
    }

    let state = Mutex(State())
    let configuration: Configuration
    let logger: Logger
    typealias Resolver = @Sendable (String) async throws -> NamespaceCore?
    typealias Registry = @Sendable () async throws -> StorageView
    /// How to reach namespaces (by full path or by id, loading them) and the root
    /// namespace's storage (the registry of namespaces with leases, the token expiry
    /// schedule); set by the core after its init.
    let links = Mutex<(resolve: Resolver, resolveID: Resolver, registry: Registry, alive: @Sendable () -> Bool)?>(nil)

    /// Whether the core that owns this manager still exists (tests make many cores).
    var coreAlive: Bool { links.withLock { $0 }?.alive() ?? false }

    func resolve(_ path: String) async throws -> NamespaceCore? {
        guard let l = links.withLock({ $0 }) else { throw CofferError(.sealed, "Vault is sealed") }
        return try await l.resolve(path)
    }

    func resolveID(_ id: String) async throws -> NamespaceCore? {
        guard let l = links.withLock({ $0 }) else { throw CofferError(.sealed, "Vault is sealed") }
        return try await l.resolveID(id)
    }

    func registry() async throws -> StorageView {
        guard let l = links.withLock({ $0 }) else { throw CofferError(.sealed, "Vault is sealed") }
        return try await l.registry()
    }
    let task = Mutex<Task<Void, Never>?>(nil)

    static let idPrefix = "sys/expire/id/"
    static let tokenPrefix = "sys/expire/token/"
    static let registryPrefix = "core/lease-namespaces/"

    /// What "now" is for deadlines; `run()` reads it again at least every half second.
    let clock: WallClock

    init(configuration: Configuration, clock: WallClock = .system, logger: Logger) {
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
    }

    func now() -> Double { clock.now() }

    // MARK: lifecycle

    /// After unseal: restores every registered namespace's leases and starts the timer.
    func start() {
        let t = Task { [self] in
            await restore()
            await run()
        }
        task.withLock { $0 = t }
    }

    /// At seal: stops the timer and forgets the schedule (storage keeps the leases).
    func stop() async {
        let t = task.withLock { t in
            defer { t = nil }
            return t
        }
        t?.cancel()
        await t?.value
        state.withLock { $0 = State() }
    }

    func restore() async {
        guard coreAlive else { return }
        do {
            let view = try await registry()
            for id in try await view.list(prefix: Self.registryPrefix) where !id.hasSuffix("/") {
                guard let path = try await view.getJSON(Self.registryPrefix + id)?["path"]?.stringValue else { continue }
                guard let ns = try await resolve(path), ns.id == id else {
                    try await view.delete(Self.registryPrefix + id)
                    continue
                }
                state.withLock { _ = $0.registeredNamespaces.insert(ns.path) }
                var restored = 0
                for leaseID in try await Self.listAll(ns.rootView, Self.idPrefix) {
                    guard let entry = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + leaseID) else { continue }
                    track(ns.path, entry)
                    restored += 1
                }
                if restored > 0 { logger.info("leases restored", metadata: ["namespace": "\(path)", "leases": "\(restored)"]) }
            }
        } catch {
            logger.error("cannot restore leases", metadata: ["error": "\(error)"])
        }
    }

    /// Every key below `prefix`, recursively, relative to it.
    static func listAll(_ view: StorageView, _ prefix: String) async throws -> [String] {
        var out: [String] = []
        var folders = [""]
        while let folder = folders.popLast() {
            for k in try await view.list(prefix: prefix + folder) {
                if k.hasSuffix("/") { folders.append(folder + k) } else { out.append(folder + k) }
            }
        }
        return out.sorted()
    }

    /// Pops what is due, revokes it with bounded concurrency, sleeps until the next
    /// deadline (at most half a second, so new earlier deadlines are noticed).
    func run() async {
        while !Task.isCancelled && coreAlive {
            let now = now()
            var due: [Key] = []
            let next: Double? = state.withLock { s in
                while let top = s.heap.min, top.at <= now {
                    _ = s.heap.popMin()
                    guard s.deadlines[top.key] == top.at, !s.running.contains(top.key) else { continue }
                    s.running.insert(top.key)
                    due.append(top.key)
                    if due.count >= configuration.concurrency * 4 { break }
                }
                return s.heap.min?.at
            }
            let tokensExpired = await runTokenExpiry()
            if !due.isEmpty {
                await withTaskGroup(of: Void.self) { group in
                    var inFlight = 0
                    for key in due {
                        if inFlight >= configuration.concurrency {
                            await group.next()
                            inFlight -= 1
                        }
                        group.addTask { await self.expire(key) }
                        inFlight += 1
                    }
                }
                continue
            }
            if tokensExpired { continue }
            let wait = min(max(min(next ?? now + 0.5, nextTokenExpiry ?? now + 0.5) - now, 0.01), 0.5)
            try? await Task.sleep(for: .milliseconds(Int(wait * 1000)))
        }
    }

    /// A lease is due: revoke it, or record the failure and back off.
    func expire(_ key: Key) async {
        defer { state.withLock { _ = $0.running.remove(key) } }
        do {
            guard let ns = try await resolve(key.namespace) else {
                untrack(key)
                return
            }
            guard let entry = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + key.leaseID) else {
                untrack(key)
                return
            }
            try await revokeOrRetry(ns, entry)
        } catch {
            // Storage itself failed: try again shortly.
            logger.warning("lease expiry failed", metadata: ["lease": "\(key.leaseID)", "error": "\(error)"])
            schedule(key, at: now() + 5)
        }
    }

    /// Revokes; on an engine error counts the attempt, stores it and schedules the retry
    /// (or marks the lease irrevocable). Rethrows the engine error.
    @discardableResult
    func revokeOrRetry(_ ns: NamespaceCore, _ entry: LeaseEntry) async throws -> (any Error)? {
        do {
            try await revokeNow(ns, entry)
            return nil
        } catch {
            var e = entry
            e.revokeAttempts += 1
            e.lastError = Self.message(error)
            let key = Key(namespace: ns.path, leaseID: e.leaseID)
            if e.revokeAttempts >= configuration.maxRevokeAttempts {
                e.irrevocable = true
                try await ns.rootView.putCodable(Self.idPrefix + e.leaseID, e)
                state.withLock { s in s.deadlines[key] = nil }
                logger.error("lease is irrevocable", metadata: ["lease": "\(e.leaseID)", "attempts": "\(e.revokeAttempts)", "error": "\(e.lastError ?? "")"])
            } else {
                try await ns.rootView.putCodable(Self.idPrefix + e.leaseID, e)
                let backoff = min(pow(2, Double(e.revokeAttempts - 1)), configuration.maxBackoff)
                schedule(key, at: now() + backoff)
                logger.warning("lease revocation failed; will retry", metadata: ["lease": "\(e.leaseID)", "attempt": "\(e.revokeAttempts)", "retry_in_s": "\(backoff)", "error": "\(e.lastError ?? "")"])
            }
            return error
        }
    }

    /// Calls the engine, then deletes the lease and its token link.
    func revokeNow(_ ns: NamespaceCore, _ entry: LeaseEntry) async throws {
        guard let backend = ns.leasingBackend(routePath: entry.mount, accessor: entry.mountAccessor) else {
            throw CofferError(.unavailable, "the mount \"\(entry.mount)\" that issued the lease is gone")
        }
        try await backend.revokeLease(entry.info())
        try await forget(ns, entry)
    }

    /// Deletes a lease and its token link without calling the engine.
    func forget(_ ns: NamespaceCore, _ entry: LeaseEntry) async throws {
        if let tokenHash = entry.tokenHash, let tokenNS = entry.tokenNamespace,
            let owner = tokenNS == ns.path ? ns : try await resolve(tokenNS)
        {
            try await owner.rootView.delete(Self.tokenPrefix + tokenHash + "/" + Self.linkID(ns.path, entry.leaseID))
        }
        try await ns.rootView.delete(Self.idPrefix + entry.leaseID)
        untrack(Key(namespace: ns.path, leaseID: entry.leaseID))
    }

    static func linkID(_ namespace: String, _ leaseID: String) -> String {
        Hex.encode(Array(SHA256.hash(data: Array((namespace + "\u{0}" + leaseID).utf8)).prefix(16)))
    }

    static func message(_ error: any Error) -> String {
        if let e = error as? CofferError { return e.message }
        return "\(error)"
    }

    // MARK: schedule and counts

    func track(_ namespace: String, _ entry: LeaseEntry) {
        let key = Key(namespace: namespace, leaseID: entry.leaseID)
        state.withLock { s in
            if s.counted[key] == nil {
                let full = namespace + entry.leaseID
                s.counted[key] = full
                s.counter.add(full, 1)
            }
            if !entry.irrevocable {
                s.deadlines[key] = entry.expireTime
                s.heap.insert(Due(at: entry.expireTime, key: key))
            }
        }
    }

    func schedule(_ key: Key, at: Double) {
        state.withLock { s in
            guard s.counted[key] != nil else { return }
            s.deadlines[key] = at
            s.heap.insert(Due(at: at, key: key))
        }
    }

    func untrack(_ key: Key) {
        state.withLock { s in
            s.deadlines[key] = nil
            if let full = s.counted.removeValue(forKey: key) { s.counter.add(full, -1) }
        }
    }

    /// Live (and irrevocable) leases whose full path starts with `prefix` (segments).
    public func count(prefix: String) -> Int {
        state.withLock { $0.counter.count(prefix) }
    }

    /// Leases scheduled right now (all namespaces).
    public var scheduled: Int { state.withLock { $0.deadlines.count } }

    // MARK: registration

    /// Registers the lease of a response: stores it, links it to the token, schedules its
    /// expiry. Answers the lease id and the TTL granted (capped by `maxTTL`).
    func register(
        ns: NamespaceCore, mount: MountedBackend, requestPath: String, secret: SecretLease,
        tokenHash: String?, tokenNamespace: NamespaceCore?
    ) async throws -> (leaseID: String, ttl: Int, warnings: [String]) {
        let mountDefault = mount.entry.config.defaultTTL(system: ns.configuration.defaultLeaseTTL)
        let mountMax = mount.entry.config.maxTTL(system: ns.configuration.maxLeaseTTL)
        var maxTTL = secret.maxTTL > 0 ? min(secret.maxTTL, mountMax) : mountMax
        maxTTL = min(maxTTL, ns.configuration.maxLeaseTTL)
        var ttl = secret.ttl > 0 ? secret.ttl : mountDefault
        var warnings: [String] = []
        if ttl > maxTTL {
            warnings.append("TTL of \"\(ttl)s\" exceeded the effective max_ttl of \"\(maxTTL)s\"; TTL value is capped accordingly")
            ttl = maxTTL
        }
        let now = now()
        var leaseID = requestPath + "/" + TokenID.random(24)
        if ns.id != "root" { leaseID += "." + ns.id }
        let entry = LeaseEntry(
            leaseID: leaseID, path: requestPath, mount: mount.routePath, mountAccessor: mount.entry.accessor,
            internalData: .object(secret.internalData), issueTime: now, expireTime: now + Double(ttl),
            maxExpireTime: now + Double(maxTTL), renewable: secret.renewable, tokenHash: tokenHash, tokenNamespace: tokenNamespace?.path)
        try await registerNamespace(ns)
        let write = {
            try await ns.rootView.putCodable(Self.idPrefix + leaseID, entry)
            if let tokenHash, let owner = tokenNamespace {
                try await owner.rootView.putCodable(
                    Self.tokenPrefix + tokenHash + "/" + Self.linkID(ns.path, leaseID), LeaseTokenLink(namespace: ns.path, leaseID: leaseID))
            }
        }
        // Under the token's lock, alive: a revocation of the token finds this lease's link
        // or this registration fails (and the engine's secret is undone).
        if let tokenHash, let owner = tokenNamespace {
            try await owner.tokens.whileAlive(tokenHash) { try await write() }
        } else {
            try await write()
        }
        // An unmount or a namespace delete that began meanwhile may have listed the leases
        // before this one: it is undone here instead of outliving them.
        if ns.isClosing || ns.router.withLock({ $0.isClosed(routePath: mount.routePath) }) {
            try? await ns.rootView.delete(Self.idPrefix + leaseID)
            if let tokenHash, let owner = tokenNamespace {
                try? await owner.rootView.delete(Self.tokenPrefix + tokenHash + "/" + Self.linkID(ns.path, leaseID))
            }
            throw CofferError(.unavailable, "mount \"\(mount.routePath)\" is being disabled")
        }
        track(ns.path, entry)
        return (leaseID, ttl, warnings)
    }

    func registerNamespace(_ ns: NamespaceCore) async throws {
        if state.withLock({ $0.registeredNamespaces.contains(ns.path) }) { return }
        try await registry().putJSON(Self.registryPrefix + ns.id, ["path": .string(ns.path)])
        state.withLock { _ = $0.registeredNamespaces.insert(ns.path) }
    }

    // MARK: operations (sys/leases)

    func entry(_ ns: NamespaceCore, _ leaseID: String) async throws -> LeaseEntry {
        let id = try Self.checkID(leaseID)
        guard let e = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + id) else {
            throw CofferError.invalid("invalid lease")
        }
        return e
    }

    static func checkID(_ raw: String) throws -> String {
        var id = raw
        while id.hasPrefix("/") { id.removeFirst() }
        guard !id.isEmpty else { throw CofferError.invalid("missing lease_id") }
        guard id.utf8.count <= 1024, !id.hasSuffix("/"), !id.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw CofferError.invalid("invalid lease")
        }
        return id
    }

    /// `sys/leases/lookup`.
    func lookup(_ ns: NamespaceCore, _ leaseID: String) async throws -> [String: JSONValue] {
        let e = try await entry(ns, leaseID)
        let now = now()
        var out: [String: JSONValue] = [
            "id": .string(e.leaseID),
            "issue_time": .string(RFC3339.format(Date(timeIntervalSince1970: e.issueTime))),
            "expire_time": .string(RFC3339.format(Date(timeIntervalSince1970: e.expireTime))),
            "last_renewal": e.lastRenewalTime.map { .string(RFC3339.format(Date(timeIntervalSince1970: $0))) } ?? .null,
            "renewable": .bool(e.renewable && !e.irrevocable),
            "ttl": .int(Int64(max(0, (e.expireTime - now).rounded(.down)))),
        ]
        if e.irrevocable || e.revokeAttempts > 0 {
            out["revoke_attempts"] = .int(Int64(e.revokeAttempts))
            out["irrevocable"] = .bool(e.irrevocable)
            if let err = e.lastError { out["revocation_error"] = .string(err) }
        }
        return out
    }

    /// `sys/leases/renew`: answers the lease id, the new TTL and warnings.
    func renew(_ ns: NamespaceCore, _ leaseID: String, increment: Int) async throws -> (ttl: Int, warnings: [String]) {
        var e = try await entry(ns, leaseID)
        let now = now()
        guard !e.irrevocable, e.expireTime > now else { throw CofferError.invalid("lease expired") }
        guard e.renewable else { throw CofferError.invalid("lease is not renewable") }
        guard let backend = ns.leasingBackend(routePath: e.mount, accessor: e.mountAccessor) else {
            throw CofferError.invalid("the mount that issued the lease is gone")
        }
        let granted = try await backend.renewLease(e.info(), increment: increment)
        var ttl = granted.ttl > 0 ? granted.ttl : increment
        var warnings: [String] = []
        let remaining = Int((e.maxExpireTime - now).rounded(.down))
        ttl = min(ttl, max(0, remaining))
        if increment > ttl {
            warnings.append("TTL of \"\(increment)s\" exceeded the effective max_ttl of \"\(ttl)s\"; TTL value is capped accordingly")
        }
        e.expireTime = now + Double(ttl)
        e.lastRenewalTime = now
        e.internalData = .object(granted.internalData.isEmpty ? (e.internalData.objectValue ?? [:]) : granted.internalData)
        try await ns.rootView.putCodable(Self.idPrefix + e.leaseID, e)
        schedule(Key(namespace: ns.path, leaseID: e.leaseID), at: e.expireTime)
        return (ttl, warnings)
    }

    /// `sys/leases/revoke`: with `sync`, revokes now and reports an engine failure (the
    /// lease then retries in the background); without, schedules it for now.
    func revoke(_ ns: NamespaceCore, _ leaseID: String, sync: Bool) async throws {
        let e = try await entry(ns, leaseID)
        let key = Key(namespace: ns.path, leaseID: e.leaseID)
        if !sync {
            if e.irrevocable { track(ns.path, e) }
            schedule(key, at: now())
            return
        }
        var fresh = e
        fresh.irrevocable = false
        if let error = try await revokeOrRetry(ns, fresh) {
            throw CofferError(.unavailable, "failed to revoke lease \"\(e.leaseID)\": \(Self.message(error))")
        }
    }

    /// A client's lease prefix: leading slashes dropped, never a `..` segment.
    static func normalizedPrefix(_ raw: String) throws -> String {
        var prefix = raw
        while prefix.hasPrefix("/") { prefix.removeFirst() }
        guard !prefix.split(separator: "/").contains(where: { $0 == ".." }) else { throw CofferError.invalid("invalid prefix") }
        return prefix
    }

    /// `sys/leases/revoke-prefix` and `revoke-force`: every lease below `prefix`.
    /// Answers how many were revoked; with `force`, engines are not called.
    func revokePrefix(_ ns: NamespaceCore, _ rawPrefix: String, force: Bool) async throws -> Int {
        let prefix = try Self.normalizedPrefix(rawPrefix)
        guard !prefix.isEmpty else { throw CofferError.invalid("a non-empty prefix is required") }
        // The prefix may name a folder (`database/creds/ro`) or one lease id.
        let folder = prefix.hasSuffix("/") ? prefix : prefix + "/"
        var ids = try await Self.listAll(ns.rootView, Self.idPrefix + folder).map { folder + $0 }
        if !prefix.hasSuffix("/"), try await ns.rootView.get(Self.idPrefix + prefix) != nil { ids.append(prefix) }
        let failures = try await revoke(ns, ids, force: force)
        if !failures.isEmpty {
            throw CofferError(.unavailable, "failed to revoke \(failures.count) of \(ids.count) leases (they will be retried): \(Self.describe(failures))")
        }
        return ids.count
    }

    /// Revokes every lease of `ns` below `prefix` ("" = all), calling the engines; throws
    /// when any could not be revoked (those stay scheduled for retry). For unmount and
    /// namespace deletion, which must not leave credentials behind.
    func revokeAll(_ ns: NamespaceCore, prefix: String) async throws -> Int {
        let ids = try await Self.listAll(ns.rootView, Self.idPrefix + prefix).map { prefix + $0 }
        var failures = try await revoke(ns, ids, force: false)
        // A database may refuse a revocation for a moment (PostgreSQL's "tuple concurrently
        // updated" while a credential request still in flight grants on the same table):
        // the leases that failed get a few more tries before the unmount gives up.
        for pause in Self.revokeAllRetries where !failures.isEmpty {
            try await Task.sleep(for: pause)
            failures = try await revoke(ns, failures.map(\.id), force: false)
        }
        if !failures.isEmpty {
            throw CofferError.invalid(
                "\(failures.count) of \(ids.count) leases could not be revoked (they will be retried; revoke-force drops them): \(Self.describe(failures))")
        }
        return ids.count
    }

    static let revokeAllRetries: [Duration] = [.milliseconds(200), .milliseconds(500), .seconds(1)]

    static func describe(_ failures: [(id: String, message: String)]) -> String {
        failures.prefix(3).map { "\($0.id): \($0.message)" }.joined(separator: "; ")
    }

    /// Revokes the leases `ids` (irrevocable ones too: this is an explicit request), or with
    /// `force` forgets them without calling their engines. Answers the id and error of each
    /// that failed (it stays scheduled for retry).
    func revoke(_ ns: NamespaceCore, _ ids: [String], force: Bool) async throws -> [(id: String, message: String)] {
        var failures: [(id: String, message: String)] = []
        for id in ids {
            guard var e = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + id) else { continue }
            if force {
                try await forget(ns, e)
                continue
            }
            e.irrevocable = false
            if let error = try await revokeOrRetry(ns, e) { failures.append((id, Self.message(error))) }
        }
        return failures
    }

    /// `LIST sys/leases/lookup/:prefix`.
    func list(_ ns: NamespaceCore, prefix rawPrefix: String) async throws -> [String] {
        var prefix = try Self.normalizedPrefix(rawPrefix)
        if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
        return try await ns.rootView.list(prefix: Self.idPrefix + prefix)
    }

    /// `GET sys/leases`: irrevocable leases of the namespace.
    func irrevocable(_ ns: NamespaceCore, limit: Int) async throws -> [[String: JSONValue]] {
        var out: [[String: JSONValue]] = []
        for id in try await Self.listAll(ns.rootView, Self.idPrefix) {
            guard let e = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + id), e.irrevocable else { continue }
            out.append([
                "lease_id": .string(e.leaseID), "mount_id": .string(e.mountAccessor), "namespace": .string(ns.path),
                "expire_time": .string(RFC3339.format(Date(timeIntervalSince1970: e.expireTime))),
                "error": .string(e.lastError ?? ""), "revoke_attempts": .int(Int64(e.revokeAttempts)),
            ])
            if out.count >= limit { break }
        }
        return out
    }

    /// A token was revoked: revoke every lease it created (in any namespace). Engine
    /// failures leave the lease scheduled for retry; the token revocation goes on.
    func revokeByToken(tokenNamespace: String, tokenHash: String) async {
        do {
            guard let owner = try await resolve(tokenNamespace) else { return }
            let prefix = Self.tokenPrefix + tokenHash + "/"
            for row in try await owner.rootView.list(prefix: prefix) where !row.hasSuffix("/") {
                guard let link = try await owner.rootView.getCodable(LeaseTokenLink.self, prefix + row) else { continue }
                guard let ns = link.namespace == owner.path ? owner : try await resolve(link.namespace),
                    let e = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + link.leaseID)
                else {
                    try await owner.rootView.delete(prefix + row)
                    continue
                }
                try await revokeOrRetry(ns, e)
            }
        } catch {
            logger.error("cannot revoke the leases of a revoked token", metadata: ["error": "\(error)"])
        }
    }

    /// `sys/leases/tidy`: drops token links to missing leases and revokes leases whose
    /// token no longer exists. Answers (links removed, leases revoked).
    func tidy(_ ns: NamespaceCore) async throws -> (links: Int, leases: Int) {
        var links = 0
        var leases = 0
        for row in try await Self.listAll(ns.rootView, Self.tokenPrefix) {
            guard let link = try await ns.rootView.getCodable(LeaseTokenLink.self, Self.tokenPrefix + row) else { continue }
            let target = link.namespace == ns.path ? ns : try await resolve(link.namespace)
            if try await target?.rootView.get(Self.idPrefix + link.leaseID) == nil {
                try await ns.rootView.delete(Self.tokenPrefix + row)
                links += 1
            }
        }
        for id in try await Self.listAll(ns.rootView, Self.idPrefix) {
            guard let e = try await ns.rootView.getCodable(LeaseEntry.self, Self.idPrefix + id), !e.irrevocable,
                let tokenHash = e.tokenHash, let tokenNS = e.tokenNamespace,
                let owner = tokenNS == ns.path ? ns : try await resolve(tokenNS)
            else { continue }
            if try await owner.tokens.lookup(hash: tokenHash) == nil {
                try await revokeOrRetry(ns, e)
                leases += 1
            }
        }
        return (links, leases)
    }
}
