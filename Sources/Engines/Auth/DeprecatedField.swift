import CofferSDK

/// Deprecated role and user fields (`policies`, `ttl`, `period`, `bound_cidrs`…) as Vault's
/// `tokenutil.UpgradeValue` treats them: the new name wins (the old one then mirrors it if
/// it was sent too, else is cleared); the old name given alone sets both.
enum DeprecatedField {
    static func upgrade<T: EmptyDefault>(_ f: FieldValues, old: String, new: String, oldValue: inout T, newValue: inout T, read: (FieldValues) throws -> T) throws {
        if f.has(new) {
            oldValue = f.has(old) ? newValue : T.emptyValue
        } else if f.has(old) {
            oldValue = try read(f)
            newValue = oldValue
        }
    }
}

/// The value a deprecated field takes when its new name is given alone.
protocol EmptyDefault { static var emptyValue: Self { get } }
extension Int: EmptyDefault { static var emptyValue: Int { 0 } }
extension Array: EmptyDefault { static var emptyValue: [Element] { [] } }

/// A role's deprecated token fields (`policies`, `ttl`, `max_ttl`, `period`, `num_uses`,
/// `bound_cidrs`) as written, beside the `token_*` fields they mirror — the JWT and
/// Kubernetes roles keep all six, as Vault's do.
struct DeprecatedTokenFields: Codable, Sendable, Equatable {
    var policies: [String] = []
    var ttl = 0
    var maxTTL = 0
    var period = 0
    var numUses = 0
    var boundCIDRs: [String] = []

    static let fields: [Field] = [
        Field("policies", .commaStringSlice, description: "Deprecated: use token_policies."),
        Field("ttl", .duration, description: "Deprecated: use token_ttl."),
        Field("max_ttl", .duration, description: "Deprecated: use token_max_ttl."),
        Field("period", .duration, description: "Deprecated: use token_period."),
        Field("num_uses", .int, description: "Deprecated: use token_num_uses."),
        Field("bound_cidrs", .commaStringSlice, description: "Deprecated: use token_bound_cidrs."),
    ]

    /// Applies a write's deprecated and new names to both (Vault's `tokenutil.UpgradeValue`).
    mutating func upgrade(_ f: FieldValues, _ token: inout TokenParameters) throws {
        try DeprecatedField.upgrade(f, old: "policies", new: "token_policies", oldValue: &policies, newValue: &token.policies) { TokenParameters.policyList($0.strings("policies")) }
        try DeprecatedField.upgrade(f, old: "bound_cidrs", new: "token_bound_cidrs", oldValue: &boundCIDRs, newValue: &token.boundCIDRs) {
            try TokenParameters.cidrs($0.strings("bound_cidrs"), field: "bound_cidrs")
        }
        try DeprecatedField.upgrade(f, old: "num_uses", new: "token_num_uses", oldValue: &numUses, newValue: &token.numUses) { $0.int("num_uses") }
        try DeprecatedField.upgrade(f, old: "ttl", new: "token_ttl", oldValue: &ttl, newValue: &token.ttl) { $0.int("ttl") }
        try DeprecatedField.upgrade(f, old: "max_ttl", new: "token_max_ttl", oldValue: &maxTTL, newValue: &token.maxTTL) { $0.int("max_ttl") }
        try DeprecatedField.upgrade(f, old: "period", new: "token_period", oldValue: &period, newValue: &token.period) { $0.int("period") }
    }

    /// A read shows the deprecated names that are set.
    func show(in d: inout [String: JSONValue]) {
        if !policies.isEmpty { d["policies"] = d["token_policies"] }
        if !boundCIDRs.isEmpty { d["bound_cidrs"] = d["token_bound_cidrs"] }
        if ttl > 0 { d["ttl"] = .int(Int64(ttl)) }
        if maxTTL > 0 { d["max_ttl"] = .int(Int64(maxTTL)) }
        if period > 0 { d["period"] = .int(Int64(period)) }
        if numUses > 0 { d["num_uses"] = .int(Int64(numUses)) }
    }
}

/// A role name of a request (`name`), lowercased, as the JWT and Kubernetes methods take it.
enum RoleName {
    static func parse(_ req: LogicalRequest) throws -> String {
        let name = req.fields.string("name").lowercased()
        guard !name.isEmpty else { throw CofferError.invalid("missing role name") }
        guard name.utf8.count <= 256, !name.contains("/") else { throw CofferError.invalid("invalid role name") }
        return name
    }

    /// Vault's renewal check of role-based methods: the login's role (token metadata `role`) must still exist.
    static func checkRenewal(_ renewal: LoginRenewal, exists: (String) async throws -> Bool) async throws {
        guard let name = renewal.metadata["role"], try await exists(name) else {
            throw CofferError.invalid("role \(renewal.metadata["role"]?.prefix(64) ?? "") does not exist during renewal")
        }
    }
}
