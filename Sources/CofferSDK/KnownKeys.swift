import Synchronization

/// Every key a single-writer store holds, as a Bloom filter: "certainly absent" answers
/// a read of a key that was never written without asking the store.
///
/// A store whose only writer is this process (SQLite; etcd while this node holds the HA
/// lock and fences its writes) lists its keys into the filter once (`begin`, `add(listed:)`,
/// `finish`) and records every key it is about to write (`insert`, before the write is sent;
/// deletes are not removed, so a deleted key is read from the store as before). Until the
/// listing is complete, nothing is answered from the filter. A filter may be trusted only
/// until an instant (the HA lease): after it, reads go to the store again.
public final class KnownKeys: Sendable {
    struct State {
        /// Bumped by every acquisition and release: a build for an older term is discarded.
        var term: UInt64 = 0
        /// Complete: every existing key was listed into it.
        var ready: BloomFilter?
        /// Being listed; puts are recorded in it too.
        var building: BloomFilter?
        /// When set, nothing is answered from this instant on.
        var trustedUntil: ContinuousClock.Instant?
        /// Lookups answered without etcd (for tests and the benchmark's figures).
        var answered: Int = 0
    }

    let state = Mutex(State())

    public init() {}

    /// A new term: a new filter is built (the old one is dropped). With `trustedUntil`, it
    /// answers only before that instant (`extendTrust` moves it); without, always.
    public func begin(trustedUntil: ContinuousClock.Instant? = nil) -> UInt64 {
        state.withLock { s in
            s.term += 1
            s.ready = nil
            s.building = BloomFilter()
            s.trustedUntil = trustedUntil
            return s.term
        }
    }

    /// Moves the end of trust later (never earlier).
    public func extendTrust(until instant: ContinuousClock.Instant) {
        state.withLock { s in
            guard let until = s.trustedUntil else { return }
            s.trustedUntil = max(until, instant)
        }
    }

    /// Stops answering until the next `begin`.
    public func end() {
        state.withLock { s in
            s.term += 1
            s.ready = nil
            s.building = nil
            s.trustedUntil = nil
        }
    }

    /// Records a key about to be written.
    public func insert(_ key: String) {
        let h = BloomFilter.hashes(key)
        state.withLock { s in
            s.ready?.insert(h)
            s.building?.insert(h)
        }
    }

    /// Adds listed keys to the filter being built for `term`.
    public func add(listed keys: [String], term: UInt64) {
        let hashes = keys.map(BloomFilter.hashes)
        state.withLock { s in
            guard s.term == term else { return }
            for h in hashes { s.building?.insert(h) }
        }
    }

    /// The listing of `term` is complete.
    public func finish(term: UInt64) {
        state.withLock { s in
            guard s.term == term, let b = s.building else { return }
            s.ready = b
        }
    }

    /// True when `key` certainly does not exist.
    public func certainlyAbsent(_ key: String) -> Bool {
        let h = BloomFilter.hashes(key)
        return state.withLock { s in
            guard let ready = s.ready else { return false }
            if let until = s.trustedUntil, ContinuousClock.now >= until { return false }
            guard !ready.mayContain(h) else { return false }
            s.answered += 1
            return true
        }
    }

    public var isReady: Bool { state.withLock { $0.ready != nil } }
    public var answered: Int { state.withLock { $0.answered } }
}

/// A growable Bloom filter: segments of doubling capacity, about 1% false positives each
/// (10 bits and 7 probes per key); a key is added to the newest segment.
public struct BloomFilter: Sendable {
    struct Segment: Sendable {
        var bits: [UInt64]
        var capacity: Int
        var count = 0

        init(capacity: Int) {
            self.capacity = capacity
            bits = [UInt64](repeating: 0, count: max(1, capacity * 10 / 64))
        }

        var bitCount: UInt64 { UInt64(bits.count * 64) }

        mutating func insert(_ h: (UInt64, UInt64)) {
            var x = h.0
            for _ in 0..<BloomFilter.probes {
                let bit = x % bitCount
                bits[Int(bit >> 6)] |= 1 << (bit & 63)
                x &+= h.1
            }
            count += 1
        }

        func mayContain(_ h: (UInt64, UInt64)) -> Bool {
            var x = h.0
            for _ in 0..<BloomFilter.probes {
                let bit = x % bitCount
                if bits[Int(bit >> 6)] & (1 << (bit & 63)) == 0 { return false }
                x &+= h.1
            }
            return true
        }
    }

    static let probes = 7
    var segments = [Segment(capacity: 1 << 16)]

    public init() {}

    public mutating func insert(_ h: (UInt64, UInt64)) {
        if segments[segments.count - 1].count >= segments[segments.count - 1].capacity {
            segments.append(Segment(capacity: segments[segments.count - 1].capacity * 2))
        }
        segments[segments.count - 1].insert(h)
    }

    public func mayContain(_ h: (UInt64, UInt64)) -> Bool {
        segments.contains { $0.mayContain(h) }
    }

    /// Two 64-bit hashes of the key's UTF-8 (FNV-1a, then two different finalizers), for
    /// double hashing.
    public static func hashes(_ key: String) -> (UInt64, UInt64) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return (mix(h), mix(h ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    static func mix(_ v: UInt64) -> UInt64 {
        var z = v
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

