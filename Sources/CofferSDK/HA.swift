/// The HA lock a storage tier offers (etcd: a lease plus a create-only transaction).
///
/// One holder at a time: `acquire` succeeds only while nobody holds the lock, the holder
/// keeps its lease alive, and a holder that stops renewing (killed, partitioned) loses the
/// lock when the lease's TTL runs out. While `fence` is set, every write the storage makes
/// is conditional on the lock still holding that value, so a deposed holder can never
/// write: a lost lock turns its writes into errors, never into a split brain.
public protocol HALock: Sendable {
    /// Tries to take the lock with `value` (the holder's advertisement) on a fresh lease
    /// of `ttlSeconds`. Returns the lease when taken, or the current holder's value.
    func acquire(value: [UInt8], ttlSeconds: Int) async throws -> HALockAttempt
    /// Renews the lease; `false` when it is gone (expired or revoked): the lock is lost.
    func keepAlive(lease: Int64) async throws -> Bool
    /// Gives the lock up (revokes the lease, which deletes the lock key).
    func release(lease: Int64) async throws
    /// The current holder's value, or nil when nobody holds the lock.
    func holder() async throws -> [UInt8]?
    /// Makes every later write conditional on the lock holding `value` (nil: unconditional).
    func fence(_ value: [UInt8]?)
}

public enum HALockAttempt: Sendable, Equatable {
    case acquired(lease: Int64)
    case held(by: [UInt8]?)
}

/// A storage whose change feed can be followed as it happens (etcd: one long-lived watch)
/// instead of being polled.
public protocol ChangeFeedWatching: Sendable {
    /// Every change after `revision`, whole revisions at a time, as they are committed. A
    /// `.compacted` element means the reader must re-list; the stream then ends. The stream
    /// ends with an error when the connection is lost: the reader resumes from the last
    /// revision it got.
    func watchChanges(after revision: UInt64) -> AsyncThrowingStream<StorageChanges, any Error>
}
