import Foundation

/// A lease as the core hands it back to the engine that created it, to renew or revoke it.
///
/// The core registers a lease for every response with a `secret` from a `LeasingBackend`:
/// it keeps the lease (through the barrier) with the engine's `internalData`, schedules its
/// expiry, and calls the engine back with this value when the lease is renewed, revoked or
/// expires. Nothing in `internalData` ever reaches a client.
public struct LeaseInfo: Sendable {
    /// `<mount path><request path>/<random id>` (plus `.<namespace id>` below the root).
    public var leaseID: String
    /// The request path the lease was created at, relative to the mount (`creds/readonly`).
    public var path: String
    /// What the engine put in `SecretLease.internalData` when it created the secret.
    public var internalData: [String: JSONValue]
    public var issueTime: Date
    public var expireTime: Date
    /// When the lease was last renewed, if ever.
    public var lastRenewalTime: Date?

    public init(leaseID: String, path: String, internalData: [String: JSONValue], issueTime: Date, expireTime: Date, lastRenewalTime: Date? = nil) {
        self.leaseID = leaseID
        self.path = path
        self.internalData = internalData
        self.issueTime = issueTime
        self.expireTime = expireTime
        self.lastRenewalTime = lastRenewalTime
    }
}

/// An engine whose secrets are leased: dynamic credentials that must be undone.
///
/// The core calls these on the mount's backend instance, possibly after a restart (the
/// lease outlives the process), possibly concurrently for different leases.
public protocol LeasingBackend: LogicalBackend {
    /// Undoes what the lease granted (drops the database user). Throwing makes the core
    /// retry later with backoff; after a bounded number of attempts the lease is marked
    /// irrevocable (kept and listed, never silently dropped). Revoking something that is
    /// already gone must succeed.
    func revokeLease(_ lease: LeaseInfo) async throws

    /// Extends a lease by `increment` seconds (0: the engine's default). Answers the lease
    /// to keep: `ttl` from now and `maxTTL` counted from `lease.issueTime`; the core caps it
    /// further by the mount's and the system's maximum. Throw `CofferError.invalid` when the
    /// secret cannot be renewed.
    func renewLease(_ lease: LeaseInfo, increment: Int) async throws -> SecretLease

    /// Whether `request` may answer with a leased secret: lease-count quotas reserve a
    /// lease before such a request runs and refuse it (429) when full. Default: reads.
    func mayCreateLease(_ request: LogicalRequest) -> Bool
}

extension LeasingBackend {
    public func mayCreateLease(_ request: LogicalRequest) -> Bool { request.operation == .read }
}
