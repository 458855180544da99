import CofferSDK
import Foundation
import Synchronization

/// Answers "this key does not exist" without asking etcd, on the HA lock holder.
///
/// A write of a new secret first reads its metadata, which is not there; on etcd that read is
/// a full Range round trip for nothing. While this node holds the HA lock it is the only
/// writer of the prefix (every other node's writes are fenced off), so it can know every key
/// that exists: at acquisition it lists the prefix's keys (keys only, in the background) into
/// a Bloom filter, and every put, `putAll` and compare-and-set of this node adds its key
/// before it is sent. A key the filter has never seen does not exist; a key it may have seen
/// is read from etcd as before (false positives only cost that read; deletes are not removed).
///
/// The filter is used only while the lease is certainly alive: until two thirds of the TTL
/// after the send of the last successful renewal, the same rule `Core.holdLock` uses to stop
/// writing, so a deposed holder stops trusting it before another node can take the lock. A
/// release drops it; a new acquisition builds a new one.
final class AbsentKeyFilter: Sendable {
    struct State {
        /// Bumped by every acquisition and release: a build for an older term is discarded.
        var term: UInt64 = 0
        /// Complete: every existing key was listed into it.
        var ready: BloomFilter?
        /// Being listed; puts are recorded in it too.
        var building: BloomFilter?
        var ttl: Swift.Duration = .seconds(0)
        var trustedUntil: ContinuousClock.Instant?
        /// Lookups answered without etcd (for tests and the benchmark's figures).
        var answered: Int = 0
    }

    let state = Mutex(State())

    /// A new term: the lease was just granted (at `granted`, before the request was sent).
    func begin(ttlSeconds: Int, granted: ContinuousClock.Instant) -> UInt64 {
        state.withLock { s in
            s.term += 1
            s.ready = nil
            s.building = BloomFilter()
            s.ttl = .seconds(ttlSeconds)
            s.trustedUntil = granted + s.ttl * 2 / 3
            return s.term
        }
    }

    func renewed(sentAt: ContinuousClock.Instant) {
        state.withLock { s in
            guard s.building != nil || s.ready != nil else { return }
            s.trustedUntil = max(s.trustedUntil ?? sentAt, sentAt + s.ttl * 2 / 3)
        }
    }

    func end() {
        state.withLock { s in
            s.term += 1
            s.ready = nil
            s.building = nil
            s.trustedUntil = nil
        }
    }

    /// Records a key about to be written.
    func insert(_ key: String) {
        state.withLock { s in
            guard s.ready != nil || s.building != nil else { return }
            let h = BloomFilter.hashes(key)
            s.ready?.insert(h)
            s.building?.insert(h)
        }
    }

    /// Adds listed keys to the filter being built for `term`.
    func add(listed keys: [String], term: UInt64) {
        let hashes = keys.map(BloomFilter.hashes)
        state.withLock { s in
            guard s.term == term else { return }
            for h in hashes { s.building?.insert(h) }
        }
    }

    /// The listing of `term` is complete.
    func finish(term: UInt64) {
        state.withLock { s in
            guard s.term == term, let b = s.building else { return }
            s.ready = b
        }
    }

    /// True when `key` certainly does not exist.
    func certainlyAbsent(_ key: String) -> Bool {
        let h = BloomFilter.hashes(key)
        return state.withLock { s in
            guard let ready = s.ready, let until = s.trustedUntil, ContinuousClock.now < until else { return false }
            guard !ready.mayContain(h) else { return false }
            s.answered += 1
            return true
        }
    }

    var isReady: Bool { state.withLock { $0.ready != nil } }
    var answered: Int { state.withLock { $0.answered } }
}

/// A growable Bloom filter: segments of doubling capacity, about 1% false positives each
/// (10 bits and 7 probes per key); a key is added to the newest segment.
struct BloomFilter: Sendable {
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

    mutating func insert(_ h: (UInt64, UInt64)) {
        if segments[segments.count - 1].count >= segments[segments.count - 1].capacity {
            segments.append(Segment(capacity: segments[segments.count - 1].capacity * 2))
        }
        segments[segments.count - 1].insert(h)
    }

    func mayContain(_ h: (UInt64, UInt64)) -> Bool {
        segments.contains { $0.mayContain(h) }
    }

    var count: Int { segments.reduce(0) { $0 + $1.count } }

    /// Two 64-bit hashes of the key's UTF-8 (FNV-1a, then two different finalizers), for
    /// double hashing.
    static func hashes(_ key: String) -> (UInt64, UInt64) {
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

extension EtcdStorage {
    /// Whether the absent-key filter is complete, and how many lookups it answered.
    public var absentKeyFilter: (ready: Bool, answered: Int) { (absentKeys.isReady, absentKeys.answered) }

    /// Lists every key of the prefix into the filter of `term` (keys only, in pages), then
    /// marks it complete. A failure leaves the filter unused for this term.
    func buildAbsentKeyFilter(term: UInt64) async {
        let end = Self.rangeEnd(of: dataPrefix)
        var from = dataPrefix
        do {
            while true {
                let request = RangeRequest(key: Data(from), rangeEnd: Data(end), limit: Int64(max(1, configuration.listPageSize)), keysOnly: true)
                let reply = try await call("/v3/kv/range", request, RangeReply.self, retryable: true)
                let page = reply.kvs ?? []
                absentKeys.add(listed: page.compactMap { kv in
                    guard let full = kv.key, full.count >= dataPrefix.count else { return nil }
                    return String(decoding: full.dropFirst(dataPrefix.count), as: UTF8.self)
                }, term: term)
                guard reply.more == true, let last = page.last?.key else { break }
                from = Array(last) + [0]
            }
            absentKeys.finish(term: term)
        } catch {
            // Reads simply keep going to etcd for this term.
        }
    }
}
