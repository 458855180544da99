import CofferSDK
import Foundation
import Logging
import Synchronization

/// Node-level operations a namespace's `sys/` backend reaches through: seal, its keyring,
/// and its child namespaces (the node keeps the registry of loaded namespaces).
public struct NodeHooks: Sendable {
    public var seal: @Sendable () async throws -> Void
    public var rotate: @Sendable () async throws -> Void
    public var keyStatus: @Sendable () async throws -> [String: JSONValue]
    /// Creates a child (path relative to this namespace, may be nested under existing ones).
    public var createNamespace: @Sendable (_ relativePath: String, _ metadata: [String: String]) async throws -> NamespaceRecord
    public var updateNamespace: @Sendable (_ relativePath: String, _ metadataPatch: [String: JSONValue]) async throws -> NamespaceRecord
    public var deleteNamespace: @Sendable (_ relativePath: String) async throws -> Void
    /// The token store of an ancestor namespace (by path).
    public var tokenStore: @Sendable (_ path: String) async throws -> TokenStore?
    /// A descendant namespace by full path (loading it), or nil.
    public var childNamespace: @Sendable (_ path: String) async throws -> NamespaceCore? = { _ in nil }
    /// `sys/quotas/config` (root namespace).
    public var quotaConfig: @Sendable () -> QuotaConfig = { QuotaConfig() }
    public var setQuotaConfig: @Sendable (QuotaConfig) async throws -> Void = { _ in }
    /// `sys/usage` for this namespace and its descendants.
    public var usageReport: @Sendable (_ query: UsageQuery) async throws -> LogicalResponse = { _ in LogicalResponse() }
    /// The node's audit broker (devices are enabled in the root namespace, entries come from all).
    public var audit: AuditBroker?
    /// The node's lease manager (leases of every namespace).
    public var leases: LeaseManager?
    /// The node's runner of the engines' timed work.
    public var periodic: PeriodicWork?
    /// Reserves lease-count quota room for a request that may create a lease (`Core`).
    public var reserveLeaseQuotas: @Sendable (_ ns: NamespaceCore, _ rel: String) async throws -> [String] = { _, _ in [] }
    /// API lock of this namespace or a descendant: returns the unlock key.
    public var lock: @Sendable (_ relativePath: String) async throws -> String
    public var unlock: @Sendable (_ relativePath: String, _ key: String?, _ callerIsRoot: Bool) async throws -> Void
    /// Tenant provisioning (`sys/tenants`), root namespace only.
    public var tenants: TenantHooks?
    /// Is this node an HA standby (serves reads, runs no background work)?
    public var isStandby: @Sendable () -> Bool = { false }

    public init(
        seal: @escaping @Sendable () async throws -> Void,
        rotate: @escaping @Sendable () async throws -> Void,
        keyStatus: @escaping @Sendable () async throws -> [String: JSONValue],
        createNamespace: @escaping @Sendable (String, [String: String]) async throws -> NamespaceRecord,
        updateNamespace: @escaping @Sendable (String, [String: JSONValue]) async throws -> NamespaceRecord,
        deleteNamespace: @escaping @Sendable (String) async throws -> Void,
        tokenStore: @escaping @Sendable (String) async throws -> TokenStore?,
        lock: @escaping @Sendable (String) async throws -> String,
        unlock: @escaping @Sendable (String, String?, Bool) async throws -> Void,
        tenants: TenantHooks?
    ) {
        self.lock = lock
        self.unlock = unlock
        self.tokenStore = tokenStore
        self.tenants = tenants
        self.seal = seal
        self.rotate = rotate
        self.keyStatus = keyStatus
        self.createNamespace = createNamespace
        self.updateNamespace = updateNamespace
        self.deleteNamespace = deleteNamespace
    }
}

/// One-call tenant provisioning, answered by the node (it spans namespaces).
public struct TenantHooks: Sendable {
    public var provision: @Sendable (_ name: String, _ metadata: [String: String], _ adminPolicy: String?, _ quotas: JSONValue?) async throws -> (record: JSONValue, auth: AuthInfo)
    public var read: @Sendable (_ name: String) async throws -> JSONValue?
    public var list: @Sendable () async throws -> [String]
    public var deprovision: @Sendable (_ name: String) async throws -> Void
}

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

    public init(defaultLeaseTTL: Int = 2_764_800, maxLeaseTTL: Int = 2_764_800, clusterName: String = "coffer-cluster", version: String = "0.1.0") {
        self.defaultLeaseTTL = defaultLeaseTTL
        self.maxLeaseTTL = maxLeaseTTL
        self.clusterName = clusterName
        self.version = version
    }
}
