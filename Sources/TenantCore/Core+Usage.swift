import CofferSDK
import Foundation
import Synchronization

/// `GET sys/usage`: which namespace (relative to the caller's), which period, how rows are
/// bucketed, and the format.
public struct UsageQuery: Sendable {
    public var namespace = ""
    public var start: Date?
    public var end: Date?
    public var granularity = "day"
    public var format = "json"
    public var includeDescendants = true

    public init() {}
}

extension Core {
    /// Storage key of one namespace-hour: `sys/usage/n/<path>.h/<YYYYMMDDHH>`. Namespace names
    /// never start with a dot, so `.h/` never collides with a child's folder, and a subtree's
    /// buckets sit under one prefix (they outlive the namespace, for billing).
    static func usagePrefix(_ path: String) -> String { "sys/usage/n/" + path + ".h/" }

    /// Physical key prefix of a namespace's rows ("" for the root, whose children live under `ns/`).
    /// Found from the namespace's record in its parent, without loading the namespace: the
    /// usage flush measures every namespace that served requests, and loading each again kept
    /// a burst of new tenants in memory for another idle period.
    func physicalPrefix(of path: String) async throws -> String? {
        if path.isEmpty { return "" }
        if let ns = loaded.withLock({ $0[path] }) { return ns.storagePrefix }
        let (parentPath, name) = try split("", path)
        guard let parent = try await namespace(path: parentPath), let record = try await parent.child(name) else { return nil }
        return NamespacePath.storagePrefix(id: record.id)
    }

    /// The gauges of a namespace now: stored objects (rows of its engines), stored bytes
    /// (all its rows, ciphertext), live tokens, live leases.
    func measureGauges(_ path: String, prefix known: String? = nil) async throws -> UsageCounters {
        var g = UsageCounters()
        guard let stats = physical as? any StorageStatistics else { return g }
        let found: String?
        if let known { found = known } else { found = try await physicalPrefix(of: path) }
        guard let prefix = found else { return g }
        let counted = [prefix + "logical/", prefix + "sys/token/id/", prefix + LeaseManager.idPrefix]
        if prefix.isEmpty {
            // The root's own rows: every top-level range but the children's `ns/`.
            var bytes = 0
            for top in try await physical.list(prefix: "") where top != "ns/" {
                bytes += try await stats.statistics(prefix: top).bytes
            }
            g.storedBytes = bytes
            g.storedObjects = try await stats.statistics(prefix: counted[0]).count
            g.tokens = try await stats.statistics(prefix: counted[1]).count
            g.leases = try await stats.statistics(prefix: counted[2]).count
        } else {
            // A namespace's rows all sit under its prefix: one pass.
            let s = try await stats.statistics(prefix: prefix, counting: counted)
            g.storedBytes = s.bytes
            (g.storedObjects, g.tokens, g.leases) = (s.within[0], s.within[1], s.within[2])
        }
        return g
    }

    /// Moves the in-memory usage into the hourly buckets in storage (read, add, write),
    /// measuring each active namespace's gauges into its latest hour. What fails to be
    /// written goes back to memory for the next flush.
    public func flushUsage() async throws {
        guard !isSealed else { return }
        try await usageFlushLock.withLock {
            let (pending, prefixes) = usage.drainWithPrefixes()
            if pending.isEmpty { return }
            var left = pending
            defer { if !left.isEmpty { usage.restore(left) } }
            // Chunks of namespaces, each stored with one write: a burst of new tenants makes
            // tens of thousands of buckets per flush.
            let work = Array(pending)
            let chunks = stride(from: 0, to: work.count, by: Self.usageFlushChunk).map {
                Array(work[$0..<min($0 + Self.usageFlushChunk, work.count)])
            }
            var next = 0
            try await withThrowingTaskGroup(of: [String].self) { group in
                func launch() {
                    guard next < chunks.count else { return }
                    let chunk = chunks[next]
                    next += 1
                    group.addTask { try await self.flushUsage(chunk, prefixes: prefixes) }
                }
                for _ in 0..<16 { launch() }
                while let done = try await group.next() {
                    for path in done { left[path] = nil }
                    launch()
                }
            }
        }
    }

    static let usageFlushChunk = 64

    /// Reads, adds and writes the buckets of a chunk of namespaces; returns their paths.
    func flushUsage(_ chunk: [(key: String, value: [String: UsageCounters])], prefixes: [String: String]) async throws -> [String] {
        var entries: [StorageEntry] = []
        for (path, hours) in chunk {
            entries += try await usageEntries(path: path, hours: hours, prefix: prefixes[path])
        }
        try await barrier.putAll(entries)
        return chunk.map(\.key)
    }

    func usageEntries(path: String, hours: [String: UsageCounters], prefix: String?) async throws -> [StorageEntry] {
        let latest = hours.keys.max()
        // Gauges: measured once per namespace and hour (range scans are not free at 100k tenants).
        let measure = latest.map { hour in usageGauged.withLock { g -> Bool in
            if g.hour != hour { g = (hour, []) }
            return g.paths.insert(path).inserted
        } } ?? false
        let gauges = measure ? try await measureGauges(path, prefix: prefix) : UsageCounters()
        var entries: [StorageEntry] = []
        for (hour, counters) in hours {
            let key = Self.usagePrefix(path) + hour
            var stored = try await barrier.getCodable(UsageCounters.self, key) ?? UsageCounters()
            stored.add(counters)
            if hour == latest { stored.add(gauges) }
            entries.append(StorageEntry(key: key, value: stored.storedJSON.serialized()))
        }
        return entries
    }

    /// Every namespace path at or below `path` that has usage, stored or pending.
    func usagePaths(under path: String) async throws -> [String] {
        var out: Set<String> = [path]
        var queue = [path]
        while let p = queue.popLast() {
            for entry in try await barrier.list(prefix: "sys/usage/n/" + p) where entry.hasSuffix("/") && entry != ".h/" {
                out.insert(p + entry)
                queue.append(p + entry)
            }
        }
        for p in usage.state.withLock({ Array($0.pending.keys) }) where p.hasPrefix(path) { out.insert(p) }
        return out.sorted()
    }

    /// The usage of one namespace (and, by default, its descendants) over a period, in hour,
    /// day or month rows, as JSON or CSV.
    func usageReport(callerPath: String, query: UsageQuery) async throws -> LogicalResponse {
        guard let rel = NamespacePath.normalize(query.namespace) else {
            throw CofferError.invalid("invalid namespace \"\(query.namespace.prefix(128))\"")
        }
        let target = callerPath + rel
        guard ["hour", "day", "month"].contains(query.granularity) else {
            throw CofferError.invalid("granularity must be hour, day or month")
        }
        guard ["json", "csv"].contains(query.format) else { throw CofferError.invalid("format must be json or csv") }
        let now = Date()
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        let monthStart = utc.date(from: utc.dateComponents([.year, .month], from: now))!
        let start = query.start ?? monthStart
        let end = query.end ?? now.addingTimeInterval(3600)
        guard start < end else { throw CofferError.invalid("start must be before end") }
        let paths = query.includeDescendants ? try await usagePaths(under: target) : [target]
        let exists = try await namespace(path: target) != nil
        let hasStored = try await !barrier.list(prefix: Self.usagePrefix(target)).isEmpty
        guard exists || hasStored || paths.count > 1 else {
            throw CofferError(.notFound, "namespace not found: \(target.prefix(128))")
        }
        func period(_ date: Date) -> Date {
            switch query.granularity {
            case "month": return utc.date(from: utc.dateComponents([.year, .month], from: date))!
            case "day": return utc.date(from: utc.dateComponents([.year, .month, .day], from: date))!
            default: return date
            }
        }
        let firstHour = UsageMeter.hourKey(start.addingTimeInterval(-3599)), lastHour = UsageMeter.hourKey(end)
        var rows: [(String, Date, UsageCounters)] = []
        var total = UsageCounters()
        for path in paths {
            var hours: [String: UsageCounters] = [:]
            for key in try await barrier.list(prefix: Self.usagePrefix(path)) where key >= firstHour && key <= lastHour {
                if let c = try await barrier.getCodable(UsageCounters.self, Self.usagePrefix(path) + key) { hours[key] = c }
            }
            for (hour, c) in usage.pending(namespace: path) where hour >= firstHour && hour <= lastHour {
                hours[hour, default: UsageCounters()].add(c)
            }
            var buckets: [Date: UsageCounters] = [:]
            for hour in hours.keys.sorted() {
                guard let d = UsageMeter.date(hourKey: hour), d.addingTimeInterval(3600) > start, d < end else { continue }
                buckets[period(d), default: UsageCounters()].add(hours[hour]!)
            }
            for (d, c) in buckets.sorted(by: { $0.key < $1.key }) {
                rows.append((path, d, c))
                var counted = c
                counted.storedObjects = nil
                counted.storedBytes = nil
                counted.tokens = nil
                counted.leases = nil
                total.add(counted)
            }
        }
        if query.format == "csv" {
            var text = UsageCounters.csvHeader + "\n"
            for (path, d, c) in rows { text += c.csvRow(namespace: path.isEmpty ? "root" : path, period: d) + "\n" }
            var r = LogicalResponse()
            r.form = .text(contentType: "text/csv; charset=utf-8", body: text)
            return r
        }
        var totalJSON = total.json(namespace: target, period: start)
        for k in ["stored_objects", "stored_bytes", "tokens", "leases", "period_start"] { totalJSON[k] = nil }
        return LogicalResponse(data: [
            "namespace": .string(target), "start": .string(RFC3339.format(start)), "end": .string(RFC3339.format(end)),
            "granularity": .string(query.granularity),
            "rows": .array(rows.map { .object($0.2.json(namespace: $0.0.isEmpty ? "root" : $0.0, period: $0.1)) }),
            "totals": .object(totalJSON),
        ])
    }
}

extension Core {
    /// HA standby: takes the counts not yet flushed, to ship them to the active node (the
    /// only one that writes usage buckets). nil when there is nothing to ship.
    public func takeUsageForActive() throws -> [UInt8]? {
        let pending = usage.drain()
        guard !pending.isEmpty else { return nil }
        return Array(try StoredJSON.encoder.encode(pending))
    }

    /// Puts shipped counts back (shipping failed), or merges a standby's counts (active).
    public func mergeUsage(_ bytes: [UInt8]) throws {
        let pending: [String: [String: UsageCounters]]
        do {
            pending = try StoredJSON.decoder.decode([String: [String: UsageCounters]].self, from: Data(bytes))
        } catch {
            throw CofferError.invalid("usage shipment is not valid JSON of usage counters")
        }
        usage.restore(pending)
    }
}
