/// One stored key and its value (ciphertext), as a snapshot carries it.
public struct StorageEntry: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]

    public init(key: String, value: [UInt8]) {
        self.key = key
        self.value = value
    }
}

/// A `Storage` that can copy out everything it holds as of one point in time and replace
/// everything it holds: what `sys/storage/snapshot` needs from a backend.
///
/// Snapshots carry physical entries (barrier ciphertext, the seal configuration and the
/// sealed root key and keyring), so one taken from any backend restores into any other.
public protocol SnapshotStorage: Storage {
    /// Whether `scan` and `replaceAll` work here. A wrapper answers for what it wraps.
    var supportsSnapshots: Bool { get }

    /// Hands every key and value to `consume` in pages of at most `pageSize` entries, in key
    /// order, all as of one point in time: writes that land during the scan are not seen.
    func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws

    /// Replaces the whole contents with `entries` + `last` (unique keys): afterwards exactly
    /// these keys exist, with these values. A backend that cannot do it atomically deletes
    /// first, then writes `entries` in any order, then `last` one by one in the given order.
    /// Keys whose value does not change may be left alone.
    func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws

    /// Throws when `replaceAll` would refuse some entry (a value over the backend's size
    /// limit), so a restore can be refused before it changes anything.
    func checkReplacement(with entries: [StorageEntry]) throws
}

extension SnapshotStorage {
    public var supportsSnapshots: Bool { true }

    public func checkReplacement(with entries: [StorageEntry]) throws {}

    /// What `replaceAll` has to do: the keys to delete, then the entries to write (in the
    /// given order), leaving out entries already stored with the same value.
    public func plannedReplacement(with entries: [StorageEntry]) async throws -> (stale: [String], writes: [StorageEntry]) {
        var wanted: [String: Int] = [:]
        wanted.reserveCapacity(entries.count)
        for (i, e) in entries.enumerated() { wanted[e.key] = i }
        var stale: [String] = []
        var same = Set<Int>()
        try await scan(pageSize: 1000) { page in
            for e in page {
                if let i = wanted[e.key] {
                    if entries[i].value == e.value { same.insert(i) }
                } else {
                    stale.append(e.key)
                }
            }
        }
        let writes = entries.indices.filter { !same.contains($0) }.map { entries[$0] }
        return (stale, writes)
    }
}
