import CofferSDK
import Foundation

extension EtcdStorage: SnapshotStorage {
    /// Ranges over the data prefix in pages of `pageSize`; every page after the first is read
    /// at the first page's revision, so the scan is one point in time (etcd's MVCC). When
    /// etcd compacts that revision mid-scan the scan fails (`.unavailable`): take it again.
    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        try await scan(pageSize: pageSize, keysOnly: false, consume)
    }

    /// `scan`, optionally of keys only (every value then empty).
    func scan(pageSize: Int, keysOnly: Bool, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        let end = Self.rangeEnd(of: dataPrefix)
        var from = dataPrefix
        var revision: Int64?
        while true {
            let request = RangeRequest(key: Data(from), rangeEnd: Data(end), limit: Int64(max(1, pageSize)), revision: revision, keysOnly: keysOnly ? true : nil)
            let reply: SnapshotRangeReply
            do {
                reply = try await call("/v3/kv/range", request, SnapshotRangeReply.self, retryable: true)
            } catch is EtcdCompacted {
                throw CofferError(.unavailable, "etcd: the snapshot's revision was compacted while it was being taken; take it again")
            }
            if revision == nil {
                guard let pinned = reply.header?.revision?.value, pinned > 0 else {
                    throw CofferError(.unavailable, "etcd: a range reply carried no revision")
                }
                revision = pinned
            }
            let kvs = reply.kvs ?? []
            var page: [StorageEntry] = []
            page.reserveCapacity(kvs.count)
            for kv in kvs {
                guard let full = kv.key, full.count > dataPrefix.count else { continue }
                page.append(StorageEntry(key: String(decoding: full.dropFirst(dataPrefix.count), as: UTF8.self), value: kv.value.map { Array($0) } ?? []))
            }
            if !page.isEmpty { try await consume(page) }
            guard reply.more == true, let last = kvs.last?.key else { break }
            from = Array(last) + [0]
        }
    }

    /// Not atomic: etcd caps a transaction (`--max-txn-ops`, `--max-request-bytes`), so the
    /// store is replaced through ordinary deletes and puts (each logged in the change feed,
    /// so standbys' caches follow), 16 at a time, then `last` one by one. Every value is
    /// checked against the request size limit before anything is written.
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        try checkReplacement(with: entries + last)
        let (stale, writes) = try await plannedReplacement(with: entries + last)
        let lastKeys = Set(last.map(\.key))
        try await forEachConcurrently(stale) { key in try await self.delete(key) }
        try await forEachConcurrently(writes.filter { !lastKeys.contains($0.key) }) { e in try await self.put(e.key, e.value) }
        for e in writes where lastKeys.contains(e.key) { try await put(e.key, e.value) }
    }

    /// Every value must fit etcd's request size limit (`maxValueBytes(forKey:)`).
    public func checkReplacement(with entries: [StorageEntry]) throws {
        for e in entries {
            try checkSize(valueBytes: e.value.count, keyBytes: dataPrefix.count + e.key.utf8.count)
        }
    }

    func forEachConcurrently<T: Sendable>(_ items: [T], width: Int = 16, _ body: @escaping @Sendable (T) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            while next < items.count && next < width {
                let item = items[next]
                group.addTask { try await body(item) }
                next += 1
            }
            while try await group.next() != nil {
                if next < items.count {
                    let item = items[next]
                    group.addTask { try await body(item) }
                    next += 1
                }
            }
        }
    }
}

/// A range reply with its header: the revision the range was read at.
struct SnapshotRangeReply: Decodable, Sendable {
    struct Header: Decodable, Sendable {
        var revision: EtcdInt?
    }
    var header: Header?
    var kvs: [KeyValue]?
    var more: Bool?
}
