import CofferSDK
import Foundation
import HeapModule
import Logging
import Synchronization

/// Scheduled expiry of tokens: a token is revoked (with its children and its leases) when
/// its TTL runs out, whether or not anyone presents it again.
///
/// Every token with an expiry has a row in the root barrier at
/// `core/token-expiry/<hour>/<namespace id>.<token hash>`, where `<hour>` is the hour of
/// its expiry (unix seconds / 3600, zero-padded so buckets list in order). The active node
/// holds only the next hour's tokens in memory: at start it loads every bucket up to the
/// coming hour (so tokens that expired while no node was active are revoked at once), then
/// one bucket per hour. A renewal writes a row in its new bucket and leaves the old one,
/// which is dropped when it comes due and the token turns out to live on: rows are never
/// rewritten in place, and a due row always re-reads the token before it acts.
extension LeaseManager {
    static let tokenExpiryPrefix = "core/token-expiry/"

    /// One scheduled token expiry.
    struct TokenDue: Comparable, Sendable {
        /// When to act (the expiry, or a retry time).
        var at: Int64
        /// The bucket of its row.
        var hour: Int64
        var namespaceID: String
        var tokenHash: String
        static func < (a: TokenDue, b: TokenDue) -> Bool { a.at < b.at }
        var row: String { LeaseManager.tokenExpiryRow(hour: hour, namespaceID: namespaceID, tokenHash: tokenHash) }
    }

    static func bucket(_ hour: Int64) -> String {
        let digits = String(max(0, hour))
        return String(repeating: "0", count: max(0, 10 - digits.count)) + digits
    }

    static func tokenExpiryRow(hour: Int64, namespaceID: String, tokenHash: String) -> String {
        tokenExpiryPrefix + bucket(hour) + "/" + namespaceID + "." + tokenHash
    }

    /// Records that the token `tokenHash` of namespace `namespaceID` expires at `at` (unix
    /// seconds). Called by the token store whenever a token gets an expiry or a new one.
    func scheduleTokenExpiry(namespaceID: String, tokenHash: String, at: Int64) async throws {
        let due = TokenDue(at: at, hour: at / 3600, namespaceID: namespaceID, tokenHash: tokenHash)
        try await registry().put(due.row, Array(String(at).utf8))
        state.withLock { s in
            if s.tokenHorizon >= 0 && due.hour <= s.tokenHorizon { s.tokenHeap.insert(due) }
        }
    }

    /// Loads the buckets up to the coming hour into the heap (all of the overdue ones the
    /// first time), once per hour.
    func loadTokenBuckets(now: Int64) async {
        let through = now / 3600 + 1
        let loaded = state.withLock { $0.tokenHorizon }
        guard loaded < through else { return }
        do {
            let view = try await registry()
            var buckets: [Int64] = []
            if loaded < 0 {
                buckets = try await view.list(prefix: Self.tokenExpiryPrefix)
                    .compactMap { $0.hasSuffix("/") ? Int64($0.dropLast()) : nil }
                    .filter { $0 <= through }
            } else {
                buckets = Array((loaded + 1)...through)
            }
            var due: [TokenDue] = []
            for hour in buckets.sorted() {
                let prefix = Self.tokenExpiryPrefix + Self.bucket(hour) + "/"
                for name in try await view.list(prefix: prefix) where !name.hasSuffix("/") {
                    guard let dot = name.firstIndex(of: "."),
                          let raw = try await view.get(prefix + name), let at = Int64(String(decoding: raw, as: UTF8.self))
                    else { continue }
                    due.append(TokenDue(at: at, hour: hour, namespaceID: String(name[..<dot]), tokenHash: String(name[name.index(after: dot)...])))
                }
            }
            state.withLock { s in
                for d in due { s.tokenHeap.insert(d) }
                s.tokenHorizon = max(s.tokenHorizon, through)
            }
        } catch {
            // Storage failed: the next tick tries again.
            logger.warning("cannot load the token expiry schedule", metadata: ["error": "\(error)"])
        }
    }

    /// The tokens due now, taken off the heap (at most `limit`).
    func dueTokens(now: Int64, limit: Int) -> [TokenDue] {
        state.withLock { s in
            var out: [TokenDue] = []
            while out.count < limit, let top = s.tokenHeap.min, top.at <= now {
                out.append(s.tokenHeap.popMin()!)
            }
            return out
        }
    }

    /// A token's expiry came: revoke it (its tree and leases) unless it was renewed, then
    /// drop the row. A failure leaves the row and retries in a few seconds.
    func expireToken(_ due: TokenDue) async {
        do {
            let view = try await registry()
            guard let ns = try await resolveID(due.namespaceID) else {
                // The namespace is gone, and its tokens with it.
                try await view.delete(due.row)
                return
            }
            // `lookup` revokes an expired token with its children (and, through the store's
            // revocation hook, its leases), and answers nil.
            _ = try await ns.tokens.lookup(hash: due.tokenHash)
            try await view.delete(due.row)
        } catch {
            logger.warning("token expiry failed; will retry", metadata: ["error": "\(error)"])
            var retry = due
            retry.at = Int64(now()) + 5
            state.withLock { $0.tokenHeap.insert(retry) }
        }
    }

    /// One pass of token expiry, from the manager's timer loop: answers whether it did work.
    func runTokenExpiry() async -> Bool {
        let now = Int64(now())
        await loadTokenBuckets(now: now)
        let due = dueTokens(now: now, limit: configuration.concurrency * 4)
        guard !due.isEmpty else { return false }
        await withTaskGroup(of: Void.self) { group in
            for d in due { group.addTask { await self.expireToken(d) } }
        }
        return true
    }

    /// The time of the next token expiry in memory.
    var nextTokenExpiry: Double? { state.withLock { $0.tokenHeap.min.map { Double($0.at) } } }
}
