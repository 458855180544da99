import CofferSDK
@preconcurrency import Crypto
import Engines
import Foundation
import Logging
import Replication
import Testing
import TenantCore

/// Every key and value of a store, in key order.
func contents(_ s: any SnapshotStorage) async throws -> [StorageEntry] {
    var out: [StorageEntry] = []
    try await s.scan(pageSize: 7) { out += $0 }
    return out
}

/// The snapshot contract on one backend: a scan sees one point in time, `replaceAll`
/// leaves exactly the given entries.
func exerciseSnapshotStorage(_ s: any SnapshotStorage) async throws {
    #expect(try await contents(s).isEmpty)
    for i in 0..<250 { try await s.put(String(format: "k/%04d", i), [UInt8(i & 0xFF), 1]) }
    try await s.put("ünï/cødé", [9])
    try await s.put("empty", [])
    // Writes during the scan (after its first page) are not seen; the scan is the store as
    // of its start.
    let before = try await contents(s)
    #expect(before.count == 252)
    var seen: [StorageEntry] = []
    var pages = 0
    try await s.scan(pageSize: 50) { page in
        #expect(page.count <= 50)
        if pages == 0 {
            try await s.put("k/0100", [42])
            try await s.delete("k/0200")
            try await s.put("a-new-key-before-everything", [1])
            try await s.put("zz-new-key-after-everything", [1])
        }
        pages += 1
        seen += page
    }
    #expect(pages == 6)
    #expect(seen == before)
    #expect(zip(seen, seen.dropFirst()).allSatisfy { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) })

    // Replace: stale keys go, changed values change, unchanged ones stay, `last` lands too.
    let wanted = [
        StorageEntry(key: "k/0001", value: [1, 1]), StorageEntry(key: "k/0002", value: [7]),
        StorageEntry(key: "fresh/one", value: Array(repeating: 5, count: 10_000)),
    ]
    let last = [StorageEntry(key: "core/keyring", value: [3]), StorageEntry(key: "core/seal-config", value: [4])]
    try await s.replaceAll(with: wanted, last: last)
    let after = try await contents(s)
    #expect(Dictionary(uniqueKeysWithValues: after.map { ($0.key, $0.value) }) == Dictionary(uniqueKeysWithValues: (wanted + last).map { ($0.key, $0.value) }))
    #expect(try await s.get("k/0001") == [1, 1])
    #expect(try await s.get("k/0003") == nil)
    #expect(try await s.list(prefix: "") == ["core/", "fresh/", "k/"])
    try await s.replaceAll(with: [], last: [])
    #expect(try await contents(s).isEmpty)
}

/// Runs `body` with a SQLite store on a fresh file, closed afterwards whatever happens (a
/// connection dropped unclosed traps).
func withSQLiteStorage(_ body: (SQLiteStorage) async throws -> Void) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-snap-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    let s = try await SQLiteStorage.open(path: dir.appendingPathComponent("c.db").path)
    do {
        try await body(s)
    } catch {
        await s.close()
        throw error
    }
    await s.close()
}

/// A backend without snapshot support.
struct PlainStorage: Storage {
    let inner = MemoryStorage()
    func get(_ key: String) async throws -> [UInt8]? { try await inner.get(key) }
    func put(_ key: String, _ value: [UInt8]) async throws { try await inner.put(key, value) }
    func delete(_ key: String) async throws { try await inner.delete(key) }
    func list(prefix: String) async throws -> [String] { try await inner.list(prefix: prefix) }
    func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try await inner.compareAndSet(key, expected: expected, new: new)
    }
    func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges { try await inner.changes(since: revision, limit: limit) }
}

/// A node on a backend, initialized and unsealed, with the server's storage stack.
struct SnapshotNode {
    let core: Core
    let backend: any SnapshotStorage
    let unsealKey: String
    let rootToken: String
    var close: @Sendable () async -> Void = {}

    static let catalog = EngineCatalog(secrets: ["kv": KVEngine.factory])

    static func make(_ backend: any SnapshotStorage, type: String) async throws -> SnapshotNode {
        let core = Core(
            physical: CachingStorage(MetricsStorage(backend, backend: type)), storageType: type, catalog: catalog,
            configuration: CoreConfiguration(), logger: Logger(label: "test"))
        let (keys, root) = try await core.initialize(shares: 1, threshold: 1)
        let key = Data(keys[0]).base64EncodedString()
        _ = try await core.unseal(key: key, reset: false)
        try await core.mountDefault(path: "secret/", type: "kv", options: ["version": "2"])
        return SnapshotNode(core: core, backend: backend, unsealKey: key, rootToken: root)
    }

    static func memory() async throws -> SnapshotNode { try await make(MemoryStorage(), type: "inmem") }

    /// Runs `body` with a node on a fresh SQLite file, closed afterwards whatever happens
    /// (a connection dropped unclosed traps).
    static func withSQLite(_ body: (SnapshotNode) async throws -> Void) async throws {
        let node = try await sqlite()
        do {
            try await body(node)
        } catch {
            await node.close()
            throw error
        }
        await node.close()
    }

    static func sqlite() async throws -> SnapshotNode {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-snap-\(UUID().uuidString)")
        let s = try await SQLiteStorage.open(path: dir.appendingPathComponent("c.db").path)
        var node = try await make(s, type: "sqlite")
        node.close = {
            await s.close()
            try? FileManager.default.removeItem(at: dir)
        }
        return node
    }

    @discardableResult
    func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:], token: String? = nil) async throws -> LogicalResponse {
        try await core.root().handle(CoreRequest(operation: op, path: path, data: data, clientToken: token ?? rootToken))
    }

    func writeSecret(_ name: String, _ value: String, token: String? = nil) async throws {
        try await call(.update, "secret/data/\(name)", ["data": ["v": .string(value)]], token: token)
    }

    /// nil when there is no such secret.
    func readSecret(_ name: String, token: String? = nil) async throws -> String? {
        do {
            let r = try await call(.read, "secret/data/\(name)", token: token)
            return r.data?["data"]?["v"]?.stringValue
        } catch let e as CofferError where e.code == .notFound {
            return nil
        }
    }
}

@Suite struct SnapshotTests {
    // MARK: backends

    @Test func memoryBackend() async throws {
        try await exerciseSnapshotStorage(MemoryStorage())
    }

    @Test func sqliteBackend() async throws {
        try await withSQLiteStorage { s in
            try await exerciseSnapshotStorage(s)
            // The restore is in the change feed (what replication and standbys' caches read).
            guard case .changes(let feed, _) = try await s.changes(since: 0, limit: 100_000) else {
                Issue.record("feed compacted")
                return
            }
            #expect(feed.contains { $0.key == "fresh/one" && !$0.deleted })
            #expect(feed.contains { $0.key == "k/0003" && $0.deleted })
        }
    }

    @Test func serverStackOverSQLite() async throws {
        try await withSQLiteStorage { s in
            let stack = CachingStorage(MetricsStorage(s, backend: "sqlite"))
            #expect(stack.supportsSnapshots)
            try await exerciseSnapshotStorage(stack)
        }
    }

    @Test(.enabled(if: EtcdTestSupport.address != nil, "set COFFER_TEST_ETCD_ADDR (Ops/etcd start DIR)"))
    func etcdBackend() async throws {
        let s = try EtcdStorage(
            configuration: EtcdStorageConfiguration(addresses: [EtcdTestSupport.address ?? ""], prefix: "coffer-snap-\(UUID().uuidString)/"))
        try await exerciseSnapshotStorage(s)
        // A value over etcd's request limit is refused before anything is written.
        let big = StorageEntry(key: "big", value: Array(repeating: 1, count: 2 << 20))
        #expect(throws: CofferError.self) { try s.checkReplacement(with: [big]) }
        try await s.shutdown()
    }

    @Test func wrapperOfAPlainBackendCannotSnapshot() async throws {
        #expect(!CachingStorage(MetricsStorage(PlainStorage(), backend: "plain")).supportsSnapshots)
        let core = Core(
            physical: CachingStorage(PlainStorage()), storageType: "plain", catalog: SnapshotNode.catalog,
            configuration: CoreConfiguration(), logger: Logger(label: "test"))
        _ = try await core.bootstrapDev(rootTokenID: nil)
        let error = await #expect(throws: CofferError.self) { try await core.snapshotSave() }
        #expect(error?.code == .invalidRequest)
        #expect(error?.message == "storage backend plain cannot take snapshots")
    }

    // MARK: save and restore through the core

    /// Memory -> bytes -> SQLite: the same physical entries, and the restored node unseals
    /// with the source's key and serves the source's secrets to the source's root token.
    @Test func memoryToSQLiteRoundTrip() async throws {
        let source = try await SnapshotNode.memory()
        try await source.writeSecret("alpha", "one")
        try await source.writeSecret("nested/beta", "two")
        try await source.call(.update, "sys/policies/acl/readers", ["policy": #"path "secret/*" { capabilities = ["read"] }"#])
        let bytes = try await source.core.snapshotSave()
        let header = try StorageSnapshot.decode(bytes).header
        #expect(header.storageType == "inmem")
        #expect(header.formatVersion == 1)
        let sourceEntries = try await contents(source.backend)
        #expect(header.keyCount == sourceEntries.count)
        #expect(header.clusterFingerprint == StorageSnapshot.fingerprint(sealedRootKey: try #require(try await source.backend.get("core/root-key"))))

        try await SnapshotNode.withSQLite { target in
            let other = try await target.core.snapshotSave()
            #expect(try StorageSnapshot.decode(other).header.clusterFingerprint != header.clusterFingerprint)
            _ = try await target.core.snapshotRestore(bytes, force: true)
            #expect(target.core.isSealed)
            #expect(try await contents(target.backend) == sourceEntries)

            // Its own key no longer opens it; the source's does.
            await #expect(throws: CofferError.self) { _ = try await target.core.unseal(key: target.unsealKey, reset: false) }
            _ = try await target.core.unseal(key: target.unsealKey, reset: true)
            _ = try await target.core.unseal(key: source.unsealKey, reset: false)
            #expect(!target.core.isSealed)
            #expect(try await target.readSecret("alpha", token: source.rootToken) == "one")
            #expect(try await target.readSecret("nested/beta", token: source.rootToken) == "two")
            let policy = try await target.call(.read, "sys/policies/acl/readers", token: source.rootToken)
            #expect(policy.data?["policy"]?.stringValue?.contains("secret/*") == true)
            await #expect(throws: CofferError.self) { try await target.readSecret("alpha", token: target.rootToken) }
        }
    }

    /// SQLite -> etcd -> SQLite through the core: the etcd node unseals with the first
    /// node's key and serves its secrets, and its own snapshot restores back into SQLite.
    @Test(.enabled(if: EtcdTestSupport.address != nil, "set COFFER_TEST_ETCD_ADDR (Ops/etcd start DIR)"))
    func sqliteToEtcdAndBack() async throws {
        try await SnapshotNode.withSQLite { source in
            try await source.writeSecret("alpha", "one")
            let etcd = try EtcdStorage(
                configuration: EtcdStorageConfiguration(addresses: [EtcdTestSupport.address ?? ""], prefix: "coffer-snap-\(UUID().uuidString)/"))
            let middle = try await SnapshotNode.make(etcd, type: "etcd")
            _ = try await middle.core.snapshotRestore(try await source.core.snapshotSave(), force: true)
            #expect(try await contents(etcd) == contents(source.backend))
            _ = try await middle.core.unseal(key: source.unsealKey, reset: false)
            #expect(try await middle.readSecret("alpha", token: source.rootToken) == "one")
            try await middle.writeSecret("beta", "two", token: source.rootToken)
            let fromEtcd = try await middle.core.snapshotSave()
            #expect(try StorageSnapshot.decode(fromEtcd).header.storageType == "etcd")
            // Same cluster: no force needed.
            _ = try await source.core.snapshotRestore(fromEtcd, force: false)
            _ = try await source.core.unseal(key: source.unsealKey, reset: false)
            #expect(try await source.readSecret("beta") == "two")
            try await etcd.shutdown()
        }
    }

    @Test func foreignSnapshotRefusedWithoutForce() async throws {
        let source = try await SnapshotNode.memory()
        let bytes = try await source.core.snapshotSave()
        try await SnapshotNode.withSQLite { target in
            try await target.writeSecret("mine", "stays")
            let before = try await contents(target.backend)
            let error = await #expect(throws: CofferError.self) { _ = try await target.core.snapshotRestore(bytes, force: false) }
            #expect(error?.code == .invalidRequest)
            #expect(error?.message.hasPrefix("snapshot is from a different cluster (its keys differ); use sys/storage/snapshot-force") == true)
            #expect(!target.core.isSealed)
            #expect(try await contents(target.backend) == before)
            #expect(try await target.readSecret("mine") == "stays")
        }
    }

    /// A node's own snapshot restores without force: what was written after it is gone,
    /// and the same keys unseal the node.
    @Test func ownSnapshotRestoresWithoutForce() async throws {
        try await SnapshotNode.withSQLite { node in
            try await node.writeSecret("kept", "v1")
            try await node.core.rotate()
            let bytes = try await node.core.snapshotSave()
            try await node.writeSecret("kept", "v2")
            try await node.writeSecret("later", "gone")
            try await node.core.rotate()
            _ = try await node.core.snapshotRestore(bytes, force: false)
            #expect(node.core.isSealed)
            #expect(try await node.core.sealConfiguration()?.secretShares == 1)
            _ = try await node.core.unseal(key: node.unsealKey, reset: false)
            #expect(try await node.readSecret("kept") == "v1")
            #expect(try await node.readSecret("later") == nil)
        }
    }

    /// The `accepted` hook (the audit response entry) runs before anything changes; if it
    /// throws, nothing changes.
    @Test func refusedByTheAcceptedHookChangesNothing() async throws {
        let node = try await SnapshotNode.memory()
        let bytes = try await node.core.snapshotSave()
        try await node.writeSecret("after", "x")
        let before = try await contents(node.backend)
        await #expect(throws: CofferError.self) {
            _ = try await node.core.snapshotRestore(bytes, force: false) { throw CofferError(.internal, "audit refused") }
        }
        #expect(!node.core.isSealed)
        #expect(try await contents(node.backend) == before)
    }

    // MARK: corrupt and hostile input

    /// A file with a correct trailer over `body` (magic, version and all are up to the caller).
    static func signed(_ body: [UInt8]) -> [UInt8] { body + Array(SHA256.hash(data: body)) }

    static func be32(_ n: UInt32) -> [UInt8] { [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] }

    static func header(keyCount: Int, fingerprint: String = "") -> [UInt8] {
        let json = Array(#"{"cluster_fingerprint":"\#(fingerprint)","coffer_version":"x","created_at":"2026-01-01T00:00:00Z","format_version":1,"key_count":\#(keyCount),"storage_type":"inmem"}"#.utf8)
        return be32(UInt32(json.count)) + json
    }

    static func entry(_ key: String, _ value: [UInt8]) -> [UInt8] {
        be32(UInt32(key.utf8.count)) + Array(key.utf8) + be32(UInt32(value.count)) + value
    }

    /// Every malformed input, with the start of the message it must get.
    static func corruptions(of good: [UInt8]) -> [(String, [UInt8], String)] {
        var cases: [(String, [UInt8], String)] = []
        let n = good.count
        // A flipped bit anywhere: the magic, the version, the header, the entries, the trailer.
        var positions = Set([0, 7, 8, 11, 12, 15, 16, n / 2, n - 33, n - 32, n - 1])
        for p in stride(from: 0, to: n, by: max(1, n / 97)) { positions.insert(p) }
        for p in positions.sorted() {
            var b = good
            b[p] ^= 0x01
            let expected = p < 8 ? "not a Coffer snapshot" : p < 12 ? "snapshot format version" : "snapshot is corrupt: checksum mismatch"
            cases.append(("flip at \(p)", b, expected))
        }
        for cut in [0, 3, 8, 10, 12, 20, 44, n / 3, n - 33, n - 32, n - 1] {
            let expected = cut < 8 ? "not a Coffer snapshot" : "snapshot is corrupt:"
            cases.append(("truncated to \(cut)", Array(good.prefix(cut)), expected))
        }
        cases.append(("empty", [], "not a Coffer snapshot"))
        cases.append(("wrong magic", Array("PK\u{3}\u{4}somezipfile-not-a-snapshot-at-all-xxxxxxxxxxxxxxxxxxxxxxxx".utf8), "not a Coffer snapshot"))
        cases.append(("trailing garbage", good + [0], "snapshot is corrupt: checksum mismatch"))
        let magic = StorageSnapshot.magic
        cases.append(("version 2", signed(magic + be32(2) + header(keyCount: 0)), "snapshot format version 2 is not supported"))
        // Correctly signed but hostile: lengths that point past the end, lies about the count.
        cases.append(("huge header length", signed(magic + be32(1) + be32(0xFFFF_FFFF) + [1, 2, 3]), "snapshot is corrupt: a length field exceeds the file"))
        cases.append(("huge key length", signed(magic + be32(1) + header(keyCount: 1) + be32(0xFFFF_FFF0) + [1, 2, 3, 4, 5, 6, 7, 8]), "snapshot is corrupt: a length field exceeds the file"))
        cases.append(("huge value length", signed(magic + be32(1) + header(keyCount: 1) + be32(1) + [0x61] + be32(0x7FFF_FFFF) + [1, 2]), "snapshot is corrupt: a length field exceeds the file"))
        cases.append(("huge key count", signed(magic + be32(1) + header(keyCount: Int(Int32.max)) + entry("a", [1])), "snapshot is corrupt: key count does not match"))
        cases.append(("negative key count", signed(magic + be32(1) + header(keyCount: -1)), "snapshot is corrupt: key count does not match"))
        cases.append(("count too small", signed(magic + be32(1) + header(keyCount: 1) + entry("a", [1]) + entry("b", [2])), "snapshot is corrupt: key count does not match"))
        cases.append(("header not JSON", signed(magic + be32(1) + be32(3) + Array("{x]".utf8)), "snapshot is corrupt: unreadable header"))
        cases.append(("duplicate key", signed(magic + be32(1) + header(keyCount: 2) + entry("a", [1]) + entry("a", [2])), "snapshot is corrupt: a key appears twice"))
        cases.append(("invalid UTF-8 key", signed(magic + be32(1) + header(keyCount: 1) + be32(2) + [0xC3, 0x28] + be32(0)), "snapshot is corrupt: an entry has an invalid key"))
        cases.append(("no keyring", signed(magic + be32(1) + header(keyCount: 2) + entry("core/root-key", [1]) + entry("core/seal-config", [2])), "snapshot is incomplete: it holds no core/keyring"))
        let fp = StorageSnapshot.fingerprint(sealedRootKey: [1])
        cases.append((
            "fingerprint mismatch",
            signed(magic + be32(1) + header(keyCount: 3, fingerprint: fp) + entry("core/keyring", [1]) + entry("core/root-key", [2]) + entry("core/seal-config", [3])),
            "snapshot is corrupt: the cluster fingerprint does not match"
        ))
        cases.append((
            "unreadable seal configuration",
            signed(magic + be32(1) + header(keyCount: 3, fingerprint: fp) + entry("core/keyring", [1]) + entry("core/root-key", [1]) + entry("core/seal-config", [3])),
            "snapshot is corrupt: its seal configuration is unreadable"
        ))
        return cases
    }

    @Test func corruptSnapshotsAreRefusedAndChangeNothing() async throws {
        let source = try await SnapshotNode.memory()
        try await source.writeSecret("s", "v")
        let good = try await source.core.snapshotSave()
        try await SnapshotNode.withSQLite { target in
            try await target.writeSecret("mine", "stays")
            let before = try await contents(target.backend)
            for (name, bytes, expected) in Self.corruptions(of: good) {
                for force in [false, true] {
                    let error = await #expect(throws: CofferError.self, "\(name)") { _ = try await target.core.snapshotRestore(bytes, force: force) }
                    #expect(error?.code == .invalidRequest, "\(name)")
                    #expect(error?.message.hasPrefix(expected) == true, "\(name): \(error?.message ?? "-")")
                }
            }
            #expect(!target.core.isSealed)
            #expect(try await contents(target.backend) == before)
            #expect(try await target.readSecret("mine") == "stays")
            // The good one still works after all that.
            _ = try await target.core.snapshotRestore(good, force: true)
            _ = try await target.core.unseal(key: source.unsealKey, reset: false)
            #expect(try await target.readSecret("s", token: source.rootToken) == "v")
        }
    }

    @Test func sealedNodeNeitherSavesNorRestores() async throws {
        let node = try await SnapshotNode.memory()
        let bytes = try await node.core.snapshotSave()
        try await node.core.seal()
        let save = await #expect(throws: CofferError.self) { _ = try await node.core.snapshotSave() }
        #expect(save?.code == .sealed)
        let restore = await #expect(throws: CofferError.self) { _ = try await node.core.snapshotRestore(bytes, force: true) }
        #expect(restore?.code == .sealed)
    }
}
