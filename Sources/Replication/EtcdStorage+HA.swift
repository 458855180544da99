import CofferSDK
import Foundation
import Synchronization

/// The HA lock on etcd: the lock key `<path>ha/lock` is created only when absent, attached
/// to a lease the holder keeps alive; when the holder dies the lease runs out and etcd
/// deletes the key, and the next standby's create succeeds. Every data write of the holder
/// carries a compare on the lock key's value (`fencedTxn`), so once its lease is gone the
/// old holder cannot write any more, even if it has not noticed yet.
extension EtcdStorage: HALock {
    public func acquire(value: [UInt8], ttlSeconds: Int) async throws -> HALockAttempt {
        let sent = ContinuousClock.now
        let grant = try await call("/v3/lease/grant", body: Array(#"{"TTL":"\#(max(2, ttlSeconds))"}"#.utf8), LeaseGrantReply.self, retryable: true)
        guard let lease = grant.ID?.value, lease != 0 else {
            throw CofferError(.unavailable, "etcd: lease grant failed: \(Self.clip(grant.error ?? "no lease id"))")
        }
        let txn = TxnRequest(
            compare: [Compare(result: "EQUAL", target: "CREATE", key: Data(lockKey), createRevision: 0)],
            success: [RequestOp(requestPut: PutRequest(key: Data(lockKey), value: Data(value), lease: String(lease)))],
            failure: [RequestOp(requestRange: RangeRequest(key: Data(lockKey)))])
        let reply: TxnReply
        do {
            reply = try await call("/v3/kv/txn", txn, TxnReply.self, retryable: false)
        } catch {
            try? await release(lease: lease)
            throw error
        }
        if reply.succeeded == true {
            let trust = Duration.seconds(max(2, ttlSeconds)) * 2 / 3
            state.withLock { $0.lockTrust = trust }
            let term = knownKeys.begin(trustedUntil: sent + trust)
            Task { await self.buildKnownKeys(term: term) }
            return .acquired(lease: lease)
        }
        try? await release(lease: lease)
        let current = reply.responses?.first?.responseRange?.kvs?.first?.value.map { Array($0) }
        return .held(by: current)
    }

    public func keepAlive(lease: Int64) async throws -> Bool {
        let sent = ContinuousClock.now
        let reply = try await call("/v3/lease/keepalive", body: Self.leaseBody(lease), LeaseKeepAliveReply.self, retryable: true)
        guard (reply.result?.TTL?.value ?? 0) > 0 else {
            knownKeys.end()
            return false
        }
        knownKeys.extendTrust(until: sent + state.withLock { $0.lockTrust })
        return true
    }

    public func release(lease: Int64) async throws {
        knownKeys.end()
        do {
            _ = try await call("/v3/lease/revoke", body: Self.leaseBody(lease), LeaseRevokeReply.self, retryable: true)
        } catch let e as CofferError where e.cause as? EtcdStatus == .notFound {
            // Already gone (expired, or revoked by an earlier attempt).
            return
        }
    }

    public func holder() async throws -> [UInt8]? {
        let reply = try await call("/v3/kv/range", RangeRequest(key: Data(lockKey)), RangeReply.self, retryable: true)
        return reply.kvs?.first?.value.map { Array($0) }
    }

    static func leaseBody(_ lease: Int64) -> [UInt8] { Array(#"{"ID":"\#(lease)"}"#.utf8) }

    public func fence(_ value: [UInt8]?) {
        state.withLock { $0.fence = value }
    }

    /// Runs a write transaction, conditional on the fence when one is set. Returns whether
    /// the transaction's own compares held; throws `.notActive` when the fence did not.
    func fencedTxn(_ txn: TxnRequest, retryable: Bool) async throws -> Bool {
        guard let fence = state.withLock({ $0.fence }) else {
            return try await self.txn(txn, retryable: retryable).succeeded ?? false
        }
        var guarded = txn
        guarded.compare.append(Compare(result: "EQUAL", target: "VALUE", key: Data(lockKey), value: Data(fence)))
        guarded.failure = [RequestOp(requestRange: RangeRequest(key: Data(lockKey)))]
        let reply = try await self.txn(guarded, retryable: retryable)
        if reply.succeeded == true { return true }
        let holder = reply.responses?.first?.responseRange?.kvs?.first?.value.map { Array($0) }
        guard holder == fence else {
            throw CofferError(.notActive, "this node is no longer the active node; the write was not applied")
        }
        return false
    }
}

struct LeaseGrantReply: Decodable, Sendable {
    var ID: EtcdInt?
    var TTL: EtcdInt?
    var error: String?
    enum CodingKeys: String, CodingKey { case ID, TTL, error }
}

struct LeaseKeepAliveReply: Decodable, Sendable {
    struct Result: Decodable, Sendable {
        var TTL: EtcdInt?
        enum CodingKeys: String, CodingKey { case TTL }
    }
    var result: Result?
}

struct LeaseRevokeReply: Decodable, Sendable {}
