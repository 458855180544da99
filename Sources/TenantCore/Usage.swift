import CofferSDK
import Foundation
import Synchronization

/// One namespace's usage in one hour (or an aggregate of hours): counters add up; the
/// gauges (stored objects and bytes, tokens, leases) keep the latest value measured.
public struct UsageCounters: StoredJSONRecord, Sendable, Equatable {
    public var requests: [String: Int] = [:]
    public var throttled = 0
    public var errors = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public var storedObjects: Int?
    public var storedBytes: Int?
    public var tokens: Int?
    public var leases: Int?
    /// Logins refused for wrong credentials of an existing user or role, and the aliases
    /// those failures locked (user lockout).
    public var failedLogins = 0
    public var lockouts = 0

    public init() {}

    /// Written for every namespace that served requests, at every usage flush.
    public var storedJSON: JSONValue {
        var o: [String: JSONValue] = [
            "requests": .object(requests.mapValues { .int(Int64($0)) }), "throttled": .int(Int64(throttled)),
            "errors": .int(Int64(errors)), "bytesIn": .int(Int64(bytesIn)), "bytesOut": .int(Int64(bytesOut)),
        ]
        if let storedObjects { o["storedObjects"] = .int(Int64(storedObjects)) }
        if let storedBytes { o["storedBytes"] = .int(Int64(storedBytes)) }
        if let tokens { o["tokens"] = .int(Int64(tokens)) }
        if let leases { o["leases"] = .int(Int64(leases)) }
        o["failedLogins"] = .int(Int64(failedLogins))
        o["lockouts"] = .int(Int64(lockouts))
        return .object(o)
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        requests = try f.ints("requests")
        throttled = try f.int("throttled")
        errors = try f.int("errors")
        bytesIn = try f.int("bytesIn")
        bytesOut = try f.int("bytesOut")
        storedObjects = f.has("storedObjects") ? try f.int("storedObjects") : nil
        storedBytes = f.has("storedBytes") ? try f.int("storedBytes") : nil
        tokens = f.has("tokens") ? try f.int("tokens") : nil
        leases = f.has("leases") ? try f.int("leases") : nil
        failedLogins = f.has("failedLogins") ? try f.int("failedLogins") : 0
        lockouts = f.has("lockouts") ? try f.int("lockouts") : 0
    }

    public var requestsTotal: Int { requests.values.reduce(0, +) }

    /// Adds `other`'s counters; its gauges win when present (it is the later measurement).
    public mutating func add(_ other: UsageCounters) {
        for (k, v) in other.requests { requests[k, default: 0] += v }
        throttled += other.throttled
        errors += other.errors
        bytesIn += other.bytesIn
        bytesOut += other.bytesOut
        failedLogins += other.failedLogins
        lockouts += other.lockouts
        storedObjects = other.storedObjects ?? storedObjects
        storedBytes = other.storedBytes ?? storedBytes
        tokens = other.tokens ?? tokens
        leases = other.leases ?? leases
    }
}

/// Per-namespace usage, counted in memory on the request path (one lock, no I/O) and
/// flushed by `Core.flushUsage()` into hourly buckets in storage (behind the barrier, so
/// replicated like everything else). A crash loses at most one flush interval.
public final class UsageMeter: Sendable {
    public enum Outcome: Sendable { case ok, error, throttled }

    struct State {
        /// Not yet flushed: namespace path -> hour ("2026112905") -> counters.
        var pending: [String: [String: UsageCounters]] = [:]
        /// Requests since start, per namespace and class (Prometheus, top N).
        var totals: [String: [RequestClass: Int]] = [:]
        /// Physical key prefix of each namespace in `pending`, as the request that counted
        /// saw it: the flush measures gauges there without looking the namespace up.
        var storagePrefixes: [String: String] = [:]
    }

    let state = Mutex(State())

    public init() {}

    /// "YYYYMMDDHH" in UTC. On the request path: the last hour's key is kept, so a request
    /// pays one integer division, not a calendar computation.
    static func hourKey(_ date: Date) -> String {
        let hour = Int64((date.timeIntervalSince1970 / 3600).rounded(.down))
        if let cached = lastHourKey.withLock({ $0.hour == hour ? $0.key : nil }) { return cached }
        var secs = time_t(hour * 3600)
        var t = tm()
        gmtime_r(&secs, &t)
        let key = String(format: "%04d%02d%02d%02d", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour)
        lastHourKey.withLock { $0 = (hour, key) }
        return key
    }

    static let lastHourKey = Mutex<(hour: Int64, key: String)>((-1, ""))

    static func date(hourKey k: String) -> Date? {
        guard k.utf8.count == 10, let y = Int(k.prefix(4)), let m = Int(k.dropFirst(4).prefix(2)),
              let d = Int(k.dropFirst(6).prefix(2)), let h = Int(k.dropFirst(8)) else { return nil }
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c.date(from: DateComponents(year: y, month: m, day: d, hour: h))
    }

    /// Counts one request of namespace `path` ("" = root).
    /// `units`: the billable operations of the request (a batch's items), counted in its class.
    public func record(namespace path: String, storagePrefix: String? = nil, class kind: RequestClass?, outcome: Outcome, bytesIn: Int, units: Int = 1, now: Date = Date()) {
        let hour = Self.hourKey(now)
        let n = max(1, units)
        state.withLock { s in
            s.pending[path, default: [:]][hour, default: UsageCounters()].apply(kind, outcome, bytesIn, units: n)
            if let kind { s.totals[path, default: [:]][kind, default: 0] += n }
            if let storagePrefix, s.storagePrefixes[path] == nil { s.storagePrefixes[path] = storagePrefix }
        }
    }

    /// Counts a login refused for wrong credentials in namespace `path`, and whether it
    /// locked its alias.
    public func recordFailedLogin(namespace path: String, lockedOut: Bool, now: Date = Date()) {
        let hour = Self.hourKey(now)
        state.withLock { s in
            s.pending[path, default: [:]][hour, default: UsageCounters()].failedLogins += 1
            if lockedOut { s.pending[path, default: [:]][hour, default: UsageCounters()].lockouts += 1 }
        }
    }

    public func addBytesOut(namespace path: String, _ n: Int, now: Date = Date()) {
        guard n > 0 else { return }
        let hour = Self.hourKey(now)
        state.withLock { s in s.pending[path, default: [:]][hour, default: UsageCounters()].bytesOut += n }
    }

    /// Takes everything not yet flushed.
    func drain() -> [String: [String: UsageCounters]] { drainWithPrefixes().pending }

    /// Takes everything not yet flushed, with the storage prefixes the requests saw.
    func drainWithPrefixes() -> (pending: [String: [String: UsageCounters]], prefixes: [String: String]) {
        state.withLock { s in
            let taken = (s.pending, s.storagePrefixes)
            s.pending = [:]
            s.storagePrefixes = [:]
            return taken
        }
    }

    /// Puts back what a failed flush took.
    func restore(_ pending: [String: [String: UsageCounters]]) {
        state.withLock { s in
            for (path, hours) in pending {
                for (hour, counters) in hours { s.pending[path, default: [:]][hour, default: UsageCounters()].add(counters) }
            }
        }
    }

    /// Not yet flushed, for one namespace (queries add it to what storage holds).
    func pending(namespace path: String) -> [String: UsageCounters] {
        state.withLock { $0.pending[path] ?? [:] }
    }

    /// Forgets a deleted namespace's in-memory totals (its stored buckets stay for billing).
    public func forget(namespace path: String) {
        state.withLock { s in s.totals = s.totals.filter { !$0.key.hasPrefix(path) } }
    }

    /// Prometheus text: requests per namespace and class for the `top` namespaces by
    /// traffic, everything else summed under `namespace="other"` — bounded cardinality
    /// however many tenants there are.
    public func prometheusText(top: Int) -> String {
        let totals = state.withLock { $0.totals }
        var ranked: [(path: String, total: Int)] = []
        for (path, byClass) in totals { ranked.append((path, byClass.values.reduce(0, +))) }
        ranked.sort { a, b in a.total != b.total ? a.total > b.total : a.path < b.path }
        var rows: [(String, [RequestClass: Int])] = []
        var other: [RequestClass: Int] = [:]
        for (i, (path, _)) in ranked.enumerated() {
            if i < top { rows.append((path.isEmpty ? "root" : path, totals[path]!)) } else {
                for (k, v) in totals[path]! { other[k, default: 0] += v }
            }
        }
        if !other.isEmpty { rows.append(("other", other)) }
        var out = "# HELP coffer_namespace_requests_total Requests per namespace (top namespaces by traffic, the rest as \"other\") and class.\n"
        out += "# TYPE coffer_namespace_requests_total counter\n"
        for (ns, byClass) in rows {
            for kind in RequestClass.allCases {
                guard let n = byClass[kind] else { continue }
                out += "coffer_namespace_requests_total{namespace=\"\(Self.escape(ns))\",class=\"\(kind.rawValue)\"} \(n)\n"
            }
        }
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}

extension UsageCounters {
    mutating func apply(_ kind: RequestClass?, _ outcome: UsageMeter.Outcome, _ bytes: Int, units: Int = 1) {
        if let kind { requests[kind.rawValue, default: 0] += units }
        switch outcome {
        case .ok: break
        case .error: errors += 1
        case .throttled: throttled += 1
        }
        bytesIn += bytes
    }

    func json(namespace: String, period: Date) -> [String: JSONValue] {
        var r: [String: JSONValue] = [
            "namespace": .string(namespace), "period_start": .string(RFC3339.format(period)),
            "requests": .object(Dictionary(uniqueKeysWithValues: RequestClass.allCases.map { ($0.rawValue, .int(Int64(requests[$0.rawValue] ?? 0))) })),
            "requests_total": .int(Int64(requestsTotal)), "throttled": .int(Int64(throttled)), "errors": .int(Int64(errors)),
            "bytes_in": .int(Int64(bytesIn)), "bytes_out": .int(Int64(bytesOut)),
            "failed_logins": .int(Int64(failedLogins)), "lockouts": .int(Int64(lockouts)),
        ]
        r["stored_objects"] = storedObjects.map { .int(Int64($0)) } ?? .null
        r["stored_bytes"] = storedBytes.map { .int(Int64($0)) } ?? .null
        r["tokens"] = tokens.map { .int(Int64($0)) } ?? .null
        r["leases"] = leases.map { .int(Int64($0)) } ?? .null
        return r
    }

    static let csvHeader = "namespace,period_start," + RequestClass.allCases.map { "requests_\($0.rawValue)" }.joined(separator: ",")
        + ",requests_total,throttled,errors,bytes_in,bytes_out,stored_objects,stored_bytes,tokens,leases,failed_logins,lockouts"

    func csvRow(namespace: String, period: Date) -> String {
        func opt(_ v: Int?) -> String { v.map(String.init) ?? "" }
        let ns = namespace.contains(",") || namespace.contains("\"") ? "\"" + namespace.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : namespace
        return ([ns, RFC3339.format(period)] + RequestClass.allCases.map { String(requests[$0.rawValue] ?? 0) }
            + [String(requestsTotal), String(throttled), String(errors), String(bytesIn), String(bytesOut),
               opt(storedObjects), opt(storedBytes), opt(tokens), opt(leases), String(failedLogins), String(lockouts)]).joined(separator: ",")
    }
}

/// Storage that can size a key range (for the stored-bytes gauges).
public protocol StorageStatistics: Sendable {
    /// Number of keys and total value bytes under `prefix`.
    func statistics(prefix: String) async throws -> (count: Int, bytes: Int)
    /// The same, plus the number of keys under each of `within` (prefixes inside `prefix`), in
    /// one pass where the store can: a namespace's gauges are four ranges of one prefix.
    func statistics(prefix: String, counting within: [String]) async throws -> (count: Int, bytes: Int, within: [Int])
}

extension StorageStatistics {
    public func statistics(prefix: String, counting within: [String]) async throws -> (count: Int, bytes: Int, within: [Int]) {
        let whole = try await statistics(prefix: prefix)
        var counts: [Int] = []
        for p in within { counts.append(try await statistics(prefix: p).count) }
        return (whole.count, whole.bytes, counts)
    }
}

/// A storage wrapper whose statistics are those of the storage it wraps (none when that one
/// cannot size ranges).
public protocol StorageStatisticsForwarding: StorageStatistics {
    var inner: any Storage { get }
}

extension StorageStatisticsForwarding {
    public func statistics(prefix: String) async throws -> (count: Int, bytes: Int) {
        guard let inner = inner as? any StorageStatistics else { return (0, 0) }
        return try await inner.statistics(prefix: prefix)
    }

    public func statistics(prefix: String, counting within: [String]) async throws -> (count: Int, bytes: Int, within: [Int]) {
        guard let inner = inner as? any StorageStatistics else { return (0, 0, within.map { _ in 0 }) }
        return try await inner.statistics(prefix: prefix, counting: within)
    }
}

extension MemoryStorage: StorageStatistics {
    public func statistics(prefix: String) async throws -> (count: Int, bytes: Int) {
        state.withLock { s in
            var count = 0, bytes = 0
            for (k, v) in s.values where k.hasPrefix(prefix) {
                count += 1
                bytes += v.count
            }
            return (count, bytes)
        }
    }
}

extension CachingStorage: StorageStatisticsForwarding {}

extension MetricsStorage: StorageStatisticsForwarding {}

extension SQLiteStorage: StorageStatistics {
    public func statistics(prefix: String) async throws -> (count: Int, bytes: Int) {
        let row = try await query(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM kv WHERE key >= ? AND key < ?",
            [.text(prefix), .text(prefix + "\u{10FFFF}")]).first
        return (row?.first?.integer ?? 0, row?.last?.integer ?? 0)
    }

    /// One range scan: conditional counts for the inner ranges.
    public func statistics(prefix: String, counting within: [String]) async throws -> (count: Int, bytes: Int, within: [Int]) {
        var sql = "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0)"
        var binds: [SQLiteBind] = []
        for p in within {
            sql += ", COALESCE(SUM(key >= ? AND key < ?), 0)"
            binds += [.text(p), .text(p + "\u{10FFFF}")]
        }
        sql += " FROM kv WHERE key >= ? AND key < ?"
        binds += [.text(prefix), .text(prefix + "\u{10FFFF}")]
        let row = try await query(sql, binds).first ?? []
        func at(_ i: Int) -> Int { i < row.count ? row[i].integer ?? 0 : 0 }
        return (at(0), at(1), within.indices.map { at($0 + 2) })
    }
}
