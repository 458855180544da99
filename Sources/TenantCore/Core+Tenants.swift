import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

extension Core {
    // MARK: tenants

    static let tenantPrefix = "sys/tenants/"

    /// The default `tenant-admin` policy: everything inside the tenant's namespace, and by
    /// construction nothing outside it (policies only ever reach their own namespace and
    /// its descendants).
    public static let tenantAdminPolicy = """
        path "*" {
          capabilities = ["create", "read", "update", "delete", "list", "sudo", "patch"]
        }
        """

    /// `PUT sys/tenants/:name`: namespace + admin policy + orphan periodic admin token, in one call.
    func provisionTenant(name: String, metadata: [String: String], adminPolicy: String?, quotas: JSONValue?) async throws -> (record: JSONValue, auth: AuthInfo) {
        guard NamespacePath.isValidName(Substring(name)), !NamespacePath.reserved.contains(name) else {
            throw CofferError.invalid("invalid tenant name \"\(name.prefix(64))\"")
        }
        let root = try root()
        let tenantExists = try await root.rootView.get(Self.tenantPrefix + name) != nil
        let namespaceExists = try await root.child(name) != nil
        if tenantExists || namespaceExists {
            throw CofferError(.alreadyExists, "tenant \"\(name)\" already exists")
        }
        let policyText = adminPolicy ?? Self.tenantAdminPolicy
        _ = try Policy.parse(name: "tenant-admin", text: policyText)  // refuse a bad override before creating anything
        let record = try await createNamespace(parentPath: "", relative: name, metadata: metadata)
        do {
            guard let ns = try await namespace(path: record.path) else { throw CofferError.internalError("tenant namespace vanished") }
            try await ns.policies.write(name: "tenant-admin", text: policyText)
            let now = ns.tokens.now()
            let period = 24 * 3600
            let template = TokenEntry(
                idHash: "", accessor: "", parentHash: "", policies: ["default", "tenant-admin"], meta: ["tenant": name],
                displayName: "token-tenant-admin", numUses: 0, creationTime: now, creationTTL: period,
                expireTime: now + Int64(period), explicitMaxTTL: 0, period: period, renewable: true, orphan: true,
                path: "sys/tenants/\(name)", role: "", type: "service", entityID: "", namespacePath: record.path, lastRenewalTime: 0)
            let (token, entry) = try await ns.tokens.create(template)
            var tenant: [String: JSONValue] = [
                "name": .string(name), "namespace_id": .string(record.id), "namespace_path": .string(record.path),
                "custom_metadata": .object(metadata.mapValues { .string($0) }), "admin_policy": "tenant-admin",
                "created_time": .string(RFC3339.format(record.createdAt)),
            ]
            if let quotas {
                let applied = try await applyTenantQuotas(quotas, in: ns)
                tenant["quotas"] = .array(applied.map { .object($0.json) })
            }
            try await root.rootView.putJSON(Self.tenantPrefix + name, .object(tenant))
            logger.info("tenant provisioned", metadata: ["ns.path": "\(record.path)", "ns.id": "\(record.id)"])
            return (.object(tenant), entry.authInfo(token: token))
        } catch {
            try? await deleteNamespace(parentPath: "", relative: name)
            throw error
        }
    }

    /// The `quotas` of `PUT sys/tenants/:name`: rate-limit quotas (a list of Vault quota
    /// objects, or `{"rate_limit": [...]}`), created in the tenant's namespace as managed by
    /// the root: the tenant's admins can read them, not change them, and their own quotas
    /// only ever add limits.
    func applyTenantQuotas(_ spec: JSONValue, in ns: NamespaceCore) async throws -> [RateLimitQuota] {
        let items: [JSONValue]
        if let list = spec.arrayValue {
            items = list
        } else if let object = spec.objectValue {
            if let list = object["rate_limit"]?.arrayValue ?? object["rate-limit"]?.arrayValue {
                items = list
            } else if object["rate"] != nil {
                items = [spec]
            } else {
                throw CofferError.invalid("quotas must be a list of rate-limit quotas or {\"rate_limit\": [...]}")
            }
        } else {
            throw CofferError.invalid("quotas must be a list of rate-limit quotas or {\"rate_limit\": [...]}")
        }
        var made: [RateLimitQuota] = []
        for (i, item) in items.enumerated() {
            guard let object = item.objectValue else { throw CofferError.invalid("quotas[\(i)] must be an object") }
            let fields = try FieldValues.validate(SystemBackend.quotaFields, data: object, captures: [:])
            let name = fields.optionalString("name") ?? (i == 0 ? "tenant" : "tenant-\(i)")
            guard !made.contains(where: { $0.name == name }) else { throw CofferError.invalid("duplicate quota name \"\(name.prefix(64))\"") }
            made.append(try await ns.makeQuota(name: name, fields: fields, existing: nil, managed: true))
        }
        let quotas = made
        try await ns.updateQuotas { table in for q in quotas { table[q.name] = q } }
        return made
    }

    func tenant(name: String) async throws -> JSONValue? {
        guard NamespacePath.isValidName(Substring(name)) else { return nil }
        guard var t = try await root().rootView.getJSON(Self.tenantPrefix + name)?.objectValue else { return nil }
        t["locked"] = .bool(try await root().child(name)?.lockHash != nil)
        if let ns = try await namespace(path: name + "/") {
            t["mounts"] = .array(ns.mounts(kind: .secret).map { .string($0.routePath) }.sorted { ($0.stringValue ?? "") < ($1.stringValue ?? "") })
            t["policies_count"] = .int(Int64(try await ns.policies.list().count))
            t["child_namespaces"] = .int(Int64(try await ns.childNames().count))
            let managed = ns.rateLimitQuotas.values.filter(\.managed).sorted { $0.name < $1.name }
            t["quotas"] = .array(managed.map { .object($0.json) })
        }
        // This month so far, the tenant's whole subtree.
        if let month = try? await usageReport(callerPath: name + "/", query: UsageQuery()).data?["totals"] {
            t["usage_this_month"] = month
        }
        return .object(t)
    }

    func tenantNames() async throws -> [String] {
        try await root().rootView.list(prefix: Self.tenantPrefix).filter { !$0.hasSuffix("/") }.sorted()
    }

    /// Deprovisions: descendants first, then the tenant's namespace (each a crypto-shred).
    func deprovisionTenant(name: String) async throws {
        guard NamespacePath.isValidName(Substring(name)), try await root().rootView.get(Self.tenantPrefix + name) != nil else { return }
        try await deleteTree(path: name + "/")
        try await root().rootView.delete(Self.tenantPrefix + name)
    }

    func deleteTree(path: String) async throws {
        guard let ns = try await namespace(path: path) else { return }
        for child in try await ns.childNames() {
            try await deleteTree(path: path + child + "/")
        }
        try await deleteNamespace(parentPath: "", relative: path)
    }
}
