import CofferSDK
import Foundation
import Testing
@testable import TenantCore

/// One conformance suite for every `Storage` backend (OpenBao's ExerciseBackend idea).
func exerciseStorage(_ s: any Storage) async throws {
    // Empty store.
    #expect(try await s.get("missing") == nil)
    #expect(try await s.list(prefix: "") == [])

    // Put / get / overwrite.
    try await s.put("foo", [1, 2, 3])
    #expect(try await s.get("foo") == [1, 2, 3])
    try await s.put("foo", [4])
    #expect(try await s.get("foo") == [4])
    try await s.put("empty", [])
    #expect(try await s.get("empty") == [])

    // Vault list semantics: immediate children, folders once with a trailing slash, sorted.
    try await s.put("dir/a", [1])
    try await s.put("dir/b", [2])
    try await s.put("dir/sub/c", [3])
    try await s.put("dir/sub/d", [4])
    try await s.put("dirx", [5])
    #expect(try await s.list(prefix: "dir/") == ["a", "b", "sub/"])
    #expect(try await s.list(prefix: "dir/sub/") == ["c", "d"])
    #expect(try await s.list(prefix: "") == ["dir/", "dirx", "empty", "foo"])
    #expect(try await s.list(prefix: "nothing/") == [])

    // Delete, including a missing key.
    try await s.delete("dir/a")
    try await s.delete("never-existed")
    #expect(try await s.get("dir/a") == nil)
    #expect(try await s.list(prefix: "dir/") == ["b", "sub/"])

    // Compare-and-set.
    #expect(try await s.compareAndSet("cas", expected: nil, new: [1]) == true)
    #expect(try await s.compareAndSet("cas", expected: nil, new: [2]) == false)
    #expect(try await s.compareAndSet("cas", expected: [9], new: [2]) == false)
    #expect(try await s.get("cas") == [1])
    #expect(try await s.compareAndSet("cas", expected: [1], new: [2]) == true)
    #expect(try await s.get("cas") == [2])
    #expect(try await s.compareAndSet("cas", expected: [2], new: nil) == true)
    #expect(try await s.get("cas") == nil)

    // Unicode and odd keys survive.
    try await s.put("ünï/cødé key", Array("v".utf8))
    #expect(try await s.get("ünï/cødé key") == Array("v".utf8))
    #expect(try await s.list(prefix: "ünï/") == ["cødé key"])

    // Large values.
    let big = (0..<1_000_000).map { UInt8($0 & 0xFF) }
    try await s.put("big", big)
    #expect(try await s.get("big") == big)

    // Change feed: ordered, complete, deletes flagged.
    guard case .changes(let all, let head) = try await s.changes(since: 0, limit: 10_000) else {
        Issue.record("feed compacted unexpectedly")
        return
    }
    #expect(!all.isEmpty)
    #expect(all.last?.revision == head)
    #expect(zip(all, all.dropFirst()).allSatisfy { $0.revision < $1.revision })
    #expect(all.contains { $0.key == "dir/a" && $0.deleted })
    #expect(all.contains { $0.key == "foo" && !$0.deleted })
    try await s.put("after", [1])
    guard case .changes(let tail, let head2) = try await s.changes(since: head, limit: 10) else {
        Issue.record("feed compacted unexpectedly")
        return
    }
    #expect(tail.map(\.key) == ["after"])
    #expect(head2 > head)
    // Limit is honoured.
    if case .changes(let limited, _) = try await s.changes(since: 0, limit: 2) { #expect(limited.count == 2) }

    // putAll: every entry stored, each in the feed; concurrent groups and puts all land.
    try await s.putAll([StorageEntry(key: "grp/a", value: [1]), StorageEntry(key: "grp/b", value: [2]), StorageEntry(key: "foo", value: [7])])
    #expect(try await s.get("grp/a") == [1])
    #expect(try await s.get("grp/b") == [2])
    #expect(try await s.get("foo") == [7])
    guard case .changes(let grouped, _) = try await s.changes(since: head2, limit: 100) else {
        Issue.record("feed compacted unexpectedly")
        return
    }
    #expect(Set(grouped.map(\.key)).isSuperset(of: ["grp/a", "grp/b", "foo"]))
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<50 {
            group.addTask {
                try await s.putAll([StorageEntry(key: "grp/v\(i)", value: [UInt8(i)]), StorageEntry(key: "grp/m\(i)", value: [UInt8(i), 1])])
            }
            group.addTask { try await s.put("grp/p\(i)", [UInt8(i), 2]) }
        }
        try await group.waitForAll()
    }
    #expect(try await s.list(prefix: "grp/").count == 152)
    #expect(try await s.get("grp/m17") == [17, 1])
    try await s.putAll([])

    // Concurrent writers (group commit on SQLite): every write lands, CAS stays atomic.
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<200 {
            group.addTask { try await s.put("conc/\(i)", [UInt8(i & 0xFF)]) }
        }
        try await group.waitForAll()
    }
    #expect(try await s.list(prefix: "conc/").count == 200)
    #expect(try await s.get("conc/123") == [123])
    try await s.put("counter", [0])
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<20 {
            group.addTask {
                while true {
                    let cur = try await s.get("counter")!
                    if try await s.compareAndSet("counter", expected: cur, new: [cur[0] + 1]) { return }
                }
            }
        }
        try await group.waitForAll()
    }
    #expect(try await s.get("counter") == [20])
}

@Suite struct StorageConformanceTests {
    @Test func memory() async throws {
        try await exerciseStorage(MemoryStorage())
    }

    @Test func sqlite() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let s = try await SQLiteStorage.open(path: dir.appendingPathComponent("c.db").path)
        try await exerciseStorage(s)
        await s.close()
    }

    /// SQLite answers reads of keys it never stored from its key filter, and finds every
    /// key it holds: those in the file when it was opened (listed in pages) and those put,
    /// put together, swapped in or restored since.
    @Test func sqliteKnowsItsKeys() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("c.db").path
        let first = try await SQLiteStorage.open(path: path)
        try await first.putAll((0..<25_000).map { StorageEntry(key: "old/\($0)", value: [1]) })
        await first.close()

        let s = try await SQLiteStorage.open(path: path)
        try await s.put("new/put", [2])
        for _ in 0..<200 where !s.knownKeys.isReady { try await Task.sleep(for: .milliseconds(20)) }
        #expect(s.knownKeys.isReady)
        for i in stride(from: 0, to: 25_000, by: 97) { #expect(try await s.get("old/\(i)") == [1]) }
        #expect(try await s.get("old/24999") == [1])
        #expect(try await s.get("new/put") == [2])
        try await s.putAll([StorageEntry(key: "new/a", value: [3]), StorageEntry(key: "new/b", value: [4])])
        #expect(try await s.compareAndSet("new/cas", expected: nil, new: [5]))
        #expect(try await s.get("new/a") == [3])
        #expect(try await s.get("new/b") == [4])
        #expect(try await s.get("new/cas") == [5])
        try await s.replaceAll(with: [StorageEntry(key: "restored/x", value: [6])], last: [])
        #expect(try await s.get("restored/x") == [6])
        #expect(try await s.get("old/1") == nil)
        let before = s.knownKeys.answered
        for i in 0..<300 { #expect(try await s.get("never/\(i)") == nil) }
        #expect(s.knownKeys.answered - before > 270)
        await s.close()
    }

    /// A namespace's usage gauges in one pass count what the per-range queries count.
    @Test func sqliteStatisticsInOnePass() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let s = try await SQLiteStorage.open(path: dir.appendingPathComponent("c.db").path)
        let memory = MemoryStorage()
        var entries: [StorageEntry] = []
        for i in 0..<40 { entries.append(StorageEntry(key: "ns/a/logical/m/\(i)", value: Array(repeating: 1, count: i))) }
        for i in 0..<7 { entries.append(StorageEntry(key: "ns/a/sys/token/id/\(i)", value: [2, 2])) }
        entries.append(StorageEntry(key: "ns/a/sys/token/idx", value: [3]))   // not under "sys/token/id/"
        entries.append(StorageEntry(key: "ns/ab/logical/m/x", value: [4]))    // a sibling prefix
        entries.append(StorageEntry(key: "ns/a/\u{00E9}t\u{00E9}", value: [5, 5, 5]))
        try await s.putAll(entries)
        try await memory.putAll(entries)
        let within = ["ns/a/logical/", "ns/a/sys/token/id/", "ns/a/sys/expire/id/"]
        let one = try await s.statistics(prefix: "ns/a/", counting: within)
        let reference = try await memory.statistics(prefix: "ns/a/", counting: within)
        #expect(one.count == 49 && one.within == [40, 7, 0])
        #expect(one.count == reference.count && one.bytes == reference.bytes && one.within == reference.within)
        #expect(one.bytes == (0..<40).reduce(0, +) + 14 + 1 + 3)
        await s.close()
    }

    @Test func cachingOverSQLite() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let s = try await SQLiteStorage.open(path: dir.appendingPathComponent("c.db").path)
        try await exerciseStorage(CachingStorage(s))
        await s.close()
    }

    @Test func sqlitePersistsAcrossReopen() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("c.db").path
        let s = try await SQLiteStorage.open(path: path)
        try await s.put("k", [7, 7])
        await s.close()
        let again = try await SQLiteStorage.open(path: path)
        #expect(try await again.get("k") == [7, 7])
        await again.close()
    }

    @Test func memoryFeedCompacts() async throws {
        let s = MemoryStorage(feedLimit: 3)
        for i in 0..<10 { try await s.put("k\(i)", [UInt8(i)]) }
        #expect(try await s.changes(since: 0, limit: 100) == .compacted(head: 10))
        guard case .changes(let c, _) = try await s.changes(since: 8, limit: 100) else {
            Issue.record("expected changes")
            return
        }
        #expect(c.map(\.key) == ["k8", "k9"])
    }
}

/// The dev storage's chunked key index against a plain sorted array, over random inserts,
/// removals and prefix scans across many chunks.
@Suite struct SortedKeysTests {
    @Test func matchesASortedArray() {
        var keys = SortedKeys()
        var reference = Set<String>()
        var rng = SystemRandomNumberGenerator()
        for step in 0..<20_000 {
            let key = "p\(Int.random(in: 0..<40, using: &rng))/k\(Int.random(in: 0..<3000, using: &rng))"
            if Bool.random(using: &rng) || step < 2000 {
                if reference.insert(key).inserted { keys.insert(key) }
            } else if reference.remove(key) != nil {
                keys.remove(key)
            }
        }
        #expect(keys.count == reference.count && keys.chunks.count > 2)
        #expect(keys.all == reference.sorted())
        for prefix in ["", "p1", "p1/", "p39/k29", "q", "p"] {
            #expect(keys.withPrefix(prefix) == reference.filter { $0.hasPrefix(prefix) }.sorted(), "prefix \(prefix)")
        }
        keys.remove("absent")
        #expect(keys.count == reference.count)
    }
}
