/// An ordered set of keys for `MemoryStorage`: sorted chunks of at most `chunkLimit` keys, so
/// an insert or a removal moves one chunk's keys, not every key (one sorted array cost the
/// dev server a memmove of every key on each new token; with 100,000 keys, most of a login).
struct SortedKeys: Sendable {
    static let chunkLimit = 512
    private(set) var chunks: [[String]] = []
    private(set) var count = 0

    /// The chunk that would hold `key` (the first whose last key is ≥ it), or the last one.
    private func chunkIndex(_ key: String) -> Int {
        var lo = 0, hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if chunks[mid][chunks[mid].count - 1] < key { lo = mid + 1 } else { hi = mid }
        }
        return min(lo, max(0, chunks.count - 1))
    }

    private static func lowerBound(_ keys: [String], _ key: String) -> Int {
        var lo = 0, hi = keys.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if keys[mid] < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Adds `key` (which must not be present).
    mutating func insert(_ key: String) {
        count += 1
        guard !chunks.isEmpty else { chunks = [[key]]; return }
        let c = chunkIndex(key)
        chunks[c].insert(key, at: Self.lowerBound(chunks[c], key))
        if chunks[c].count > Self.chunkLimit {
            let upper = Array(chunks[c][(Self.chunkLimit / 2)...])
            chunks[c].removeLast(chunks[c].count - Self.chunkLimit / 2)
            chunks.insert(upper, at: c + 1)
        }
    }

    /// Removes `key` if present.
    mutating func remove(_ key: String) {
        guard !chunks.isEmpty else { return }
        let c = chunkIndex(key)
        let i = Self.lowerBound(chunks[c], key)
        guard i < chunks[c].count, chunks[c][i] == key else { return }
        chunks[c].remove(at: i)
        count -= 1
        if chunks[c].isEmpty { chunks.remove(at: c) }
    }

    /// The keys that start with `prefix`, in order.
    func withPrefix(_ prefix: String) -> [String] {
        guard !chunks.isEmpty else { return [] }
        var out: [String] = []
        var c = chunkIndex(prefix)
        var i = Self.lowerBound(chunks[c], prefix)
        while c < chunks.count {
            let chunk = chunks[c]
            while i < chunk.count {
                guard chunk[i].hasPrefix(prefix) else { return out }
                out.append(chunk[i])
                i += 1
            }
            c += 1
            i = 0
        }
        return out
    }

    /// Every key, in order.
    var all: [String] { chunks.flatMap { $0 } }
}
