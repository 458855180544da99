import CofferSDK
import Foundation

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
    /// Lists every key of the prefix into the filter of `term` (`scan`, keys only), then
    /// marks it complete. A failure leaves the filter unused for this term.
    func buildKnownKeys(term: UInt64) async {
        do {
            try await scan(pageSize: configuration.listPageSize, keysOnly: true) { page in
                knownKeys.add(listed: page.map(\.key), term: term)
            }
            knownKeys.finish(term: term)
        } catch {
            // Reads simply keep going to etcd for this term.
        }
    }
}
