import CofferSDK

/// Replication between nodes and regions (etcd storage, HA, DR and performance
/// replication) lands here in later issues; for now it only names the node roles.
public enum ReplicationRole: String, Sendable {
    case standalone
    case active
    case standby
}
