import CofferSDK
import Foundation
import Synchronization

/// Answers "this key does not exist" without asking etcd, on the HA lock holder.
///
/// A write of a new secret first reads its metadata, which is not there; on etcd that read is
/// a full Range round trip for nothing. While this node holds the HA lock it is the only
/// writer of the prefix (every other node's writes are fenced off), so it can know every key
/// that exists: at acquisition it lists the prefix's keys (keys only, in the background) into
/// `KnownKeys`, and every put, `putAll` and compare-and-set of this node adds its key before
/// it is sent.
///
/// The filter is used only while the lease is certainly alive: until two thirds of the TTL
/// after the send of the last successful renewal, the same rule `Core.holdLock` uses to stop
/// writing, so a deposed holder stops trusting it before another node can take the lock. A
/// release drops it; a new acquisition builds a new one.
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
