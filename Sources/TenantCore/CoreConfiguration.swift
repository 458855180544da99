import CofferSDK

/// Defaults that come from the server configuration.
public struct CoreConfiguration: Sendable {
    public var defaultLeaseTTL: Int
    public var maxLeaseTTL: Int
    public var clusterName: String
    public var version: String
    /// Lease revocation retries and concurrency.
    public var leases = LeaseManager.Configuration()
    /// Where engines of tenant (non-root) namespaces may connect: `database_allowed_hosts`
    /// and `database_denied_cidrs` of the server configuration.
    public var tenantOutbound = OutboundPolicy.defaultTenant
    /// The address clients reach this node at (`api_addr`, or the listener's): the default
    /// issuer of identity tokens.
    public var apiAddress = "http://127.0.0.1:8200"
    /// The time tokens, leases, lockouts and engines read; tests pass a `ManualClock`'s.
    public var clock = WallClock.system

    public init(defaultLeaseTTL: Int = 2_764_800, maxLeaseTTL: Int = 2_764_800, clusterName: String = "coffer-cluster", version: String = "0.1.0") {
        self.defaultLeaseTTL = defaultLeaseTTL
        self.maxLeaseTTL = maxLeaseTTL
        self.clusterName = clusterName
        self.version = version
    }
}
