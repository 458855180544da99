import CofferSDK
import Foundation

/// `identity/`: Vault's identity store API over one namespace's `IdentityStore`, built into
/// every namespace. Entities and groups (`IdentityBackend+Entities.swift`,
/// `+Groups.swift`), their aliases (`+Aliases.swift`) and lookups (`+Lookup.swift`). Field
/// names, status codes and error texts are Vault's; where Vault answers a 500 for bad input
/// (metadata limits, unknown member ids), this answers a 400 with Vault's text.
public struct IdentityBackend: LogicalBackend {
    public let store: IdentityStore
    /// The namespace's path ("" for the root) and the node's API address: the issuer of its
    /// identity tokens is built from them unless `oidc/config` names one.
    let namespacePath: String
    let apiAddress: String

    public init(store: IdentityStore, namespacePath: String = "", apiAddress: String = "") {
        self.store = store
        self.namespacePath = namespacePath
        self.apiAddress = apiAddress
    }

    public var backendHelp: String { "The identity store holds the entities, aliases and groups of a namespace, and signs its identity tokens." }
    public var unauthenticatedPaths: [String] { ["oidc/.well-known/*"] }

    static let entityFields: [Field] = [
        Field("id", .string, description: "ID of the entity. If set, updates the corresponding existing entity."),
        Field("name", .string, description: "Name of the entity."),
        Field("metadata", .keyValuePairs, description: "Metadata to be associated with the entity."),
        Field("policies", .commaStringSlice, description: "Policies to be tied to the entity."),
        Field("disabled", .bool, description: "If set true, tokens tied to this identity will not be able to be used (but will not be revoked)."),
    ]
    static let entityAliasFields: [Field] = [
        Field("id", .string, description: "ID of the entity alias. If set, updates the corresponding entity alias."),
        Field("name", .string, description: "Name of the alias."),
        Field("mount_accessor", .string, description: "Mount accessor to which this alias belongs to."),
        Field("canonical_id", .string, description: "Entity ID to which this alias belongs to."),
        Field("entity_id", .string, description: "Entity ID to which this alias belongs to (deprecated: canonical_id)."),
        Field("custom_metadata", .keyValuePairs, description: "User provided key-value pairs."),
    ]
    static let groupFields: [Field] = [
        Field("id", .string, description: "ID of the group. If set, updates the corresponding existing group."),
        Field("name", .string, description: "Name of the group."),
        Field("type", .string, description: "Type of the group, 'internal' or 'external'. Defaults to 'internal'."),
        Field("metadata", .keyValuePairs, description: "Metadata to be associated with the group."),
        Field("policies", .commaStringSlice, description: "Policies to be tied to the group."),
        Field("member_group_ids", .commaStringSlice, description: "Group IDs to be assigned as group members."),
        Field("member_entity_ids", .commaStringSlice, description: "Entity IDs to be assigned as group members."),
    ]
    static let groupAliasFields: [Field] = [
        Field("id", .string, description: "ID of the group alias."),
        Field("name", .string, description: "Alias of the group."),
        Field("mount_accessor", .string, description: "Mount accessor to which this alias belongs to."),
        Field("canonical_id", .string, description: "ID of the group to which this is an alias."),
    ]
    static let lookupFields: [Field] = [
        Field("id", .string), Field("name", .string), Field("alias_id", .string),
        Field("alias_name", .string), Field("alias_mount_accessor", .string),
    ]

    public static let routes: [Route<IdentityBackend>] = [
        // Entities.
        Route("entity", fields: entityFields, operations: [.update: { try await $0.upsertEntity($1, id: $1.fields.string("id"), name: $1.fields.string("name")) }],
              summary: "Create a new entity, or update one by id."),
        Route("entity/id/?", operations: [.list: { b, _ in try await b.listEntities(byID: true) }], summary: "List entities by id."),
        Route("entity/id/:id", fields: entityFields, operations: [
            .read: { try await $0.readEntity(id: $1.fields.string("id")) },
            .update: { try await $0.upsertEntity($1, id: $1.fields.string("id"), name: $1.fields.string("name")) },
            .delete: { try await $0.deleteEntity(id: $1.fields.string("id")) },
        ], summary: "Read, update or delete an entity by id."),
        Route("entity/name/?", operations: [.list: { b, _ in try await b.listEntities(byID: false) }], summary: "List entities by name."),
        Route("entity/name/*name", fields: entityFields, operations: [
            .read: { try await $0.readEntity(name: $1.fields.string("name")) },
            .update: { try await $0.upsertEntity($1, id: "", name: try Self.required($1, "name", "missing entity name")) },
            .delete: { try await $0.deleteEntity(name: $1.fields.string("name")) },
        ], summary: "Create, read, update or delete an entity by name."),
        Route("entity/batch-delete", fields: [Field("entity_ids", .commaStringSlice, description: "Entity IDs to delete.")],
              operations: [.update: { try await $0.batchDeleteEntities($1) }], summary: "Delete entities by id."),
        Route("entity/merge", fields: [
            Field("from_entity_ids", .commaStringSlice, description: "Entity IDs which need to get merged."),
            Field("to_entity_id", .string, description: "Entity ID into which all the other entities need to get merged."),
            Field("force", .bool, description: "Merge even when the entities' MFA secrets conflict."),
            Field("conflicting_alias_ids_to_keep", .commaStringSlice, description: "Alias IDs to keep in case of conflicting aliases."),
        ], operations: [.update: { try await $0.mergeEntities($1) }], summary: "Merge entities into one."),

        // Entity aliases.
        Route("entity-alias", fields: entityAliasFields, operations: [.update: { try await $0.upsertEntityAlias($1) }],
              summary: "Create a new alias, or update one by id."),
        Route("entity-alias/id/?", operations: [.list: { b, _ in try await b.listEntityAliases() }], summary: "List entity aliases by id."),
        Route("entity-alias/id/:id", fields: entityAliasFields, operations: [
            .read: { try await $0.readEntityAlias(id: $1.fields.string("id")) },
            .update: { try await $0.upsertEntityAlias($1) },
            .delete: { try await $0.deleteEntityAlias(id: $1.fields.string("id")) },
        ], summary: "Read, update or delete an entity alias by id."),

        // Groups.
        Route("group", fields: groupFields, operations: [.update: { try await $0.upsertGroup($1) }],
              summary: "Create a new group, or update one by id or name."),
        Route("group/id/?", operations: [.list: { b, _ in try await b.listGroups(byID: true) }], summary: "List groups by id."),
        Route("group/id/:id", fields: groupFields, operations: [
            .read: { try await $0.readGroup(id: $1.fields.string("id")) },
            .update: { try await $0.upsertGroup($1, byID: true) },
            .delete: { try await $0.deleteGroup(id: $1.fields.string("id")) },
        ], summary: "Read, update or delete a group by id."),
        Route("group/name/?", operations: [.list: { b, _ in try await b.listGroups(byID: false) }], summary: "List groups by name."),
        Route("group/name/*name", fields: groupFields, operations: [
            .read: { try await $0.readGroup(name: try Self.required($1, "name", "empty group name")) },
            .update: { try await $0.upsertGroup($1, byName: true) },
            .delete: { try await $0.deleteGroup(name: try Self.required($1, "name", "empty group name")) },
        ], summary: "Create, read, update or delete a group by name."),

        // Group aliases.
        Route("group-alias", fields: groupAliasFields, operations: [.update: { try await $0.upsertGroupAlias($1) }],
              summary: "Create a new group alias, or update one by id."),
        Route("group-alias/id/?", operations: [.list: { b, _ in try await b.listGroupAliases() }], summary: "List group aliases by id."),
        Route("group-alias/id/:id", fields: groupAliasFields, operations: [
            .read: { try await $0.readGroupAlias(id: $1.fields.string("id")) },
            .update: { try await $0.upsertGroupAlias($1, byID: true) },
            .delete: { try await $0.deleteGroupAlias(id: $1.fields.string("id")) },
        ], summary: "Read, update or delete a group alias by id."),

        // Lookups.
        Route("lookup/entity", fields: lookupFields, operations: [.update: { try await $0.lookupEntity($1) }],
              summary: "Query an entity by id, name or alias."),
        Route("lookup/group", fields: lookupFields, operations: [.update: { try await $0.lookupGroup($1) }],
              summary: "Query a group by id, name or alias."),
    ] + oidcRoutes

    // MARK: shared helpers

    static func required(_ req: LogicalRequest, _ field: String, _ message: String) throws -> String {
        let v = req.fields.string(field)
        if v.isEmpty { throw CofferError.invalid(message) }
        return v
    }

    /// Vault's policy list of an entity or group: trimmed, lowercased, no duplicates, sorted.
    static func policyList(_ raw: [String]) -> [String] {
        Array(Set(raw.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty })).sorted()
    }

    /// Trimmed, de-duplicated and sorted ids (case kept).
    static func idList(_ raw: [String]) -> [String] {
        Array(Set(raw.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })).sorted()
    }

    /// Vault's limits on entity, group and alias metadata.
    static func checkMetadata(_ m: [String: String], kind: String) throws {
        func fail(_ why: String) -> CofferError { CofferError.invalid("invalid \(kind) metadata: \(why)") }
        if m.count > 64 { throw fail("metadata cannot contain more than 64 key/value pairs") }
        for (k, v) in m.sorted(by: { $0.key < $1.key }) {
            let pair = "failed to load metadata pair (\"\(k.prefix(128))\", \"\(v.prefix(64))\"): "
            if k.isEmpty { throw fail(pair + "key cannot be blank") }
            if k.count > 128 { throw fail(pair + "key is too long (limit: 128 characters)") }
            if k.hasPrefix("vault-") { throw fail(pair + "key prefix \"vault-\" is reserved for internal use") }
            let ok = k.unicodeScalars.allSatisfy { c in
                (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || "=/+_-".unicodeScalars.contains(c)
            }
            if !ok { throw fail(pair + "key contains invalid characters") }
            if v.count > 512 { throw fail(pair + "value is too long (limit: 512 characters)") }
        }
    }

    /// Vault's limits on an alias's custom metadata.
    static func checkCustomMetadata(_ m: [String: String]) throws {
        func fail(_ why: String) -> CofferError { CofferError.invalid("custom_metadata validation failed: " + why) }
        if m.count > 64 { throw fail("metadata cannot contain more than 64 key/value pairs") }
        for (k, v) in m.sorted(by: { $0.key < $1.key }) {
            let key = String(k.prefix(128))
            if k.isEmpty || k.count > 128 { throw fail("length of key \"\(key)\" is \(k.count) but must be 0 < len(key) <= 128") }
            if v.isEmpty || v.count > 512 { throw fail("length of value for key \"\(key)\" is \(v.count) but must be 0 < len(value) <= 512") }
            let printable = { (s: String) in s.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7f } }
            if !printable(k) { throw fail("key \"\(key)\" contains unprintable characters") }
            if !printable(v) { throw fail("value for key \"\(key)\" contains unprintable characters") }
        }
    }

    /// `entity_1a2b3c4d` / `group_1a2b3c4d`, as Vault names what is created without a name.
    static func generatedName(_ prefix: String, taken: (String) -> Bool) -> String {
        while true {
            let name = prefix + "_" + Hex.encode(SecureRandom.bytes(4))
            if !taken(name) { return name }
        }
    }

    static func time(_ d: Date) -> JSONValue { .string(RFC3339.format(d)) }

    static func strings(_ list: [String]) -> JSONValue { .array(list.map { .string($0) }) }
    /// A list, or null when empty (how Vault shows lists that were never set).
    static func stringsOrNull(_ list: [String]) -> JSONValue { list.isEmpty ? .null : strings(list) }
    static func map(_ m: [String: String]) -> JSONValue { m.isEmpty ? .null : .object(m.mapValues { .string($0) }) }

    /// `mount_type` and `mount_path` of an alias, when its mount still exists.
    func addMount(_ accessor: String, to out: inout [String: JSONValue]) {
        guard let m = store.mount(accessor: accessor) else { return }
        out["mount_type"] = .string(m.type)
        out["mount_path"] = .string(m.path)
    }
}
