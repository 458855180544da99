import CofferSDK
import Foundation

/// One namespace's identities, as Vault's identity store keeps them: entities (a person or
/// a workload) with their aliases (one per auth mount that knows them), and groups of
/// entities and of other groups, internal (members set by hand) or external (members
/// from an auth method's group alias). Each record is stored whole under
/// `sys/identity/` of its namespace, behind the barrier.

/// An entity. Its aliases are stored with it, as in Vault.
public struct Entity: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var metadata: [String: String]
    public var policies: [String]
    public var disabled: Bool
    public var aliases: [EntityAlias]
    public var mergedEntityIDs: [String]
    public var creationTime: Date
    public var lastUpdateTime: Date

    public init(id: String, name: String, metadata: [String: String] = [:], policies: [String] = [], disabled: Bool = false, aliases: [EntityAlias] = [], mergedEntityIDs: [String] = [], creationTime: Date, lastUpdateTime: Date) {
        self.id = id
        self.name = name
        self.metadata = metadata
        self.policies = policies
        self.disabled = disabled
        self.aliases = aliases
        self.mergedEntityIDs = mergedEntityIDs
        self.creationTime = creationTime
        self.lastUpdateTime = lastUpdateTime
    }
}

/// An entity's alias: its name on one auth mount (the user name, the role id).
public struct EntityAlias: Codable, Sendable, Equatable {
    public var id: String
    public var canonicalID: String
    public var mountAccessor: String
    public var name: String
    /// Set by the auth method at login.
    public var metadata: [String: String]
    /// Set through the API.
    public var customMetadata: [String: String]
    public var mergedFromCanonicalIDs: [String]
    public var local: Bool
    public var creationTime: Date
    public var lastUpdateTime: Date

    public init(id: String, canonicalID: String, mountAccessor: String, name: String, metadata: [String: String] = [:], customMetadata: [String: String] = [:], mergedFromCanonicalIDs: [String] = [], local: Bool = false, creationTime: Date, lastUpdateTime: Date) {
        self.id = id
        self.canonicalID = canonicalID
        self.mountAccessor = mountAccessor
        self.name = name
        self.metadata = metadata
        self.customMetadata = customMetadata
        self.mergedFromCanonicalIDs = mergedFromCanonicalIDs
        self.local = local
        self.creationTime = creationTime
        self.lastUpdateTime = lastUpdateTime
    }
}

/// A group. Internal groups name their members; an external group's members are the
/// entities whose logins carried its alias.
public struct Group: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var type: String
    public var metadata: [String: String]
    public var policies: [String]
    public var memberEntityIDs: [String]
    /// The groups this group contains (its members); a member's parents are derived.
    public var memberGroupIDs: [String]
    public var alias: GroupAlias?
    public var creationTime: Date
    public var lastUpdateTime: Date
    public var modifyIndex: Int

    public init(id: String, name: String, type: String, metadata: [String: String] = [:], policies: [String] = [], memberEntityIDs: [String] = [], memberGroupIDs: [String] = [], alias: GroupAlias? = nil, creationTime: Date, lastUpdateTime: Date, modifyIndex: Int = 0) {
        self.id = id
        self.name = name
        self.type = type
        self.metadata = metadata
        self.policies = policies
        self.memberEntityIDs = memberEntityIDs
        self.memberGroupIDs = memberGroupIDs
        self.alias = alias
        self.creationTime = creationTime
        self.lastUpdateTime = lastUpdateTime
        self.modifyIndex = modifyIndex
    }
}

/// An external group's alias: the group's name in an auth method (an LDAP group, an OIDC
/// groups claim value).
public struct GroupAlias: Codable, Sendable, Equatable {
    public var id: String
    public var canonicalID: String
    public var mountAccessor: String
    public var name: String
    public var creationTime: Date
    public var lastUpdateTime: Date

    public init(id: String, canonicalID: String, mountAccessor: String, name: String, creationTime: Date, lastUpdateTime: Date) {
        self.id = id
        self.canonicalID = canonicalID
        self.mountAccessor = mountAccessor
        self.name = name
        self.creationTime = creationTime
        self.lastUpdateTime = lastUpdateTime
    }
}

/// What the identity store needs to know of an auth mount: its accessor, path and type
/// (shown in alias reads, checked when an alias names the mount).
public struct AuthMountInfo: Sendable, Equatable {
    public var accessor: String
    public var path: String
    public var type: String
    public var local: Bool

    public init(accessor: String, path: String, type: String, local: Bool = false) {
        self.accessor = accessor
        self.path = path
        self.type = type
        self.local = local
    }
}
