import CofferSDK
import Foundation
import Synchronization

/// Group commit of puts. Every put is a transaction (the value plus the change-feed
/// marker), and one etcd transaction is one Raft proposal, so concurrent writers would each
/// pay a full consensus round on the same marker key. Instead, puts that arrive while
/// `maxBatchesInFlight` transactions are out wait and go together in the next one: one
/// proposal carries many values and one marker listing their keys (one revision). A put
/// returns when its transaction is committed, as before; a failed transaction fails every
/// put in it (none of them is acknowledged).
final class EtcdPutBatcher: Sendable {
    /// One put, or a `putAll` group: its entries always travel in the same transaction.
    struct Pending {
        struct Entry {
            let key: String
            let etcdKey: [UInt8]
            let value: [UInt8]
        }
        let entries: [Entry]
        let done: CheckedContinuation<Void, any Error>

        var size: Int { entries.reduce(0) { $0 + $1.etcdKey.count * 2 + $1.value.count + $1.key.utf8.count + 64 } }
    }

    struct State {
        var queue: [Pending] = []
        var inFlight = 0
    }

    let state = Mutex(State())
    /// etcd's default `--max-txn-ops` is 128; two ops are reserved (marker, fence).
    static let maxOpsPerBatch = 100
    static let maxBatchesInFlight = 2

    /// Queues a put and starts a transaction when one may go out now.
    func submit(_ item: Pending, storage: EtcdStorage) {
        let start = state.withLock { s -> Bool in
            s.queue.append(item)
            guard s.inFlight < Self.maxBatchesInFlight else { return false }
            s.inFlight += 1
            return true
        }
        if start { Task { await self.drain(storage) } }
    }

    /// Sends batches until the queue is empty, then gives its in-flight slot back. A
    /// transaction still unanswered after `slowAfter` gives its slot up early, so one hung
    /// request (a member killed mid-call waits for the request timeout) cannot hold back
    /// the puts queued behind it while other members answer.
    func drain(_ storage: EtcdStorage) async {
        while true {
            let batch = state.withLock { s -> [Pending] in
                let batch = Self.take(&s.queue, byteLimit: storage.batchByteLimit)
                if batch.isEmpty { s.inFlight -= 1 }
                return batch
            }
            guard !batch.isEmpty else { return }
            // 0: running, 1: finished first, 2: the slot was given up
            let race = Mutex(0)
            let watchdog = Task {
                try? await Task.sleep(for: Self.slowAfter)
                guard !Task.isCancelled, race.withLock({ r -> Bool in
                    guard r == 0 else { return false }
                    r = 2
                    return true
                }) else { return }
                self.releaseSlot(storage)
            }
            do {
                try await storage.commit(batch)
                for p in batch { p.done.resume() }
            } catch {
                for p in batch { p.done.resume(throwing: error) }
            }
            watchdog.cancel()
            let gaveUp = race.withLock { r -> Bool in
                if r == 2 { return true }
                r = 1
                return false
            }
            if gaveUp { return }
        }
    }

    static let slowAfter = Duration.milliseconds(200)

    /// A slow transaction's slot: another drain takes it when puts are waiting.
    func releaseSlot(_ storage: EtcdStorage) {
        let start = state.withLock { s -> Bool in
            if s.queue.isEmpty {
                s.inFlight -= 1
                return false
            }
            return true
        }
        if start { Task { await self.drain(storage) } }
    }

    /// The next batch: oldest first, distinct keys (etcd refuses a key twice in one
    /// transaction; a later put of the same key waits for the next batch, keeping order),
    /// within the op and byte limits. Always at least one pending put (or group).
    static func take(_ queue: inout [Pending], byteLimit: Int) -> [Pending] {
        guard !queue.isEmpty else { return [] }
        var batch: [Pending] = []
        var ops = 0
        var keys = Set<String>()
        var blocked = Set<String>()
        var bytes = 0
        var rest: [Pending] = []
        for p in queue {
            let size = p.size
            let fits = batch.isEmpty || (ops + p.entries.count <= maxOpsPerBatch && bytes + size <= byteLimit)
            if fits, p.entries.allSatisfy({ !keys.contains($0.key) && !blocked.contains($0.key) }) {
                batch.append(p)
                ops += p.entries.count
                for e in p.entries { keys.insert(e.key) }
                bytes += size
            } else {
                // Later puts of a key that stays behind stay behind too (per-key order).
                for e in p.entries { blocked.insert(e.key) }
                rest.append(p)
            }
        }
        queue = rest
        return batch
    }
}

extension EtcdStorage {
    /// A transaction's budget for values and keys (`maxRequestBytes` less the marker).
    var batchByteLimit: Int { max(1, configuration.maxRequestBytes / 2) }

    func submitPut(_ entries: [EtcdPutBatcher.Pending.Entry]) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            batcher.submit(EtcdPutBatcher.Pending(entries: entries, done: done), storage: self)
        }
    }

    /// One transaction for a batch: every value, and one marker naming every key.
    func commit(_ batch: [EtcdPutBatcher.Pending]) async throws {
        let entries = batch.flatMap(\.entries)
        let marker = entries.count == 1 ? Self.feedEntry(deleted: false, entries[0].key) : Self.batchFeedEntry(entries.map(\.key))
        let txn = TxnRequest(success: entries.map { .put($0.etcdKey, $0.value) } + [.put(feedKey, marker)])
        _ = try await fencedTxn(txn, retryable: true)
    }
}
