import Foundation

/// The token fields every auth method shares (`token_ttl`, `token_policies`, …), as Vault's
/// `tokenutil` declares them: one field group a role or user route adds to its own fields,
/// parsed once, stored with the role, shown on read, and copied into a login's `auth` block.
public struct TokenParameters: StoredJSONRecord, Sendable, Equatable {
    public var boundCIDRs: [String] = []
    public var explicitMaxTTL: Int = 0
    public var maxTTL: Int = 0
    public var noDefaultPolicy: Bool = false
    public var numUses: Int = 0
    public var period: Int = 0
    public var policies: [String] = []
    /// "default", "service" or "batch" (Vault's names; "default" follows the mount's tune).
    public var type: String = "default"
    public var ttl: Int = 0
    public var strictlyBindIP: Bool = false

    public init() {}

    public var storedJSON: JSONValue {
        [
            "boundCIDRs": .storedList(boundCIDRs), "explicitMaxTTL": .int(Int64(explicitMaxTTL)), "maxTTL": .int(Int64(maxTTL)),
            "noDefaultPolicy": .bool(noDefaultPolicy), "numUses": .int(Int64(numUses)), "period": .int(Int64(period)),
            "policies": .storedList(policies), "type": .string(type), "ttl": .int(Int64(ttl)), "strictlyBindIP": .bool(strictlyBindIP),
        ]
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        boundCIDRs = try f.stringList("boundCIDRs")
        explicitMaxTTL = try f.int("explicitMaxTTL")
        maxTTL = try f.int("maxTTL")
        noDefaultPolicy = try f.bool("noDefaultPolicy")
        numUses = try f.int("numUses")
        period = try f.int("period")
        policies = try f.stringList("policies")
        type = try f.string("type")
        ttl = try f.int("ttl")
        strictlyBindIP = try f.bool("strictlyBindIP")
    }

    /// The declared fields, to append to a route's own.
    public static let fields: [Field] = [
        Field("token_bound_cidrs", .commaStringSlice, description: "CIDR blocks allowed to use the generated token."),
        Field("token_explicit_max_ttl", .duration, description: "A hard limit on the generated token's lifetime, renewals included."),
        Field("token_max_ttl", .duration, description: "The maximum lifetime of the generated token."),
        Field("token_no_default_policy", .bool, description: "Do not attach the 'default' policy to generated tokens."),
        Field("token_num_uses", .int, description: "Uses of the generated token before it is revoked; 0 is unlimited."),
        Field("token_period", .duration, description: "Makes the generated token periodic: each renewal resets its TTL to this."),
        Field("token_policies", .commaStringSlice, description: "Policies of the generated token."),
        Field("token_type", .string, default: "default-service", description: "The type of token to generate: service or batch."),
        Field("token_ttl", .duration, description: "The initial TTL of the generated token."),
        Field("token_strictly_bind_ip", .bool, description: "Bind the generated token to the login request's source address."),
    ]

    /// Applies what the request sent (absent fields keep their value), with Vault's checks.
    public mutating func parse(_ f: FieldValues) throws {
        if f.has("token_bound_cidrs") { boundCIDRs = try Self.cidrs(f.strings("token_bound_cidrs"), field: "token_bound_cidrs") }
        if f.has("token_explicit_max_ttl") { explicitMaxTTL = f.int("token_explicit_max_ttl") }
        if f.has("token_max_ttl") { maxTTL = f.int("token_max_ttl") }
        if f.has("token_no_default_policy") { noDefaultPolicy = f.bool("token_no_default_policy") }
        if f.has("token_period") { period = f.int("token_period") }
        if f.has("token_policies") { policies = Self.policyList(f.strings("token_policies")) }
        if f.has("token_type") {
            switch f.string("token_type") {
            case "", "default", "default-service": type = "default"
            case "service": type = "service"
            case "batch": type = "batch"
            case let other: throw CofferError.invalid("invalid 'token_type' value \"\(other.prefix(32))\"")
            }
        }
        if f.has("token_num_uses") { numUses = f.int("token_num_uses") }
        guard numUses >= 0 else { throw CofferError.invalid("'token_num_uses' cannot be negative") }
        if type == "batch" {
            if period != 0 { throw CofferError.invalid("'token_type' cannot be 'batch' or 'default_batch' when set to generate periodic tokens") }
            if numUses != 0 { throw CofferError.invalid("'token_type' cannot be 'batch' or 'default_batch' when set to generate tokens with limited use count") }
        }
        if f.has("token_ttl") { ttl = f.int("token_ttl") }
        if ttl > 0 && maxTTL > 0 && ttl > maxTTL { throw CofferError.invalid("'token_ttl' cannot be greater than 'token_max_ttl'") }
        if f.has("token_strictly_bind_ip") { strictlyBindIP = f.bool("token_strictly_bind_ip") }
        if strictlyBindIP && !boundCIDRs.isEmpty {
            throw CofferError.invalid("'token_strictly_bind_ip' conflicts with 'token_bound_cidrs'; set only one")
        }
    }

    /// The fields as a read shows them.
    public var json: [String: JSONValue] {
        [
            "token_bound_cidrs": .array(boundCIDRs.map { .string($0) }),
            "token_explicit_max_ttl": .int(Int64(explicitMaxTTL)),
            "token_max_ttl": .int(Int64(maxTTL)),
            "token_no_default_policy": .bool(noDefaultPolicy),
            "token_num_uses": .int(Int64(numUses)),
            "token_period": .int(Int64(period)),
            "token_policies": .array(policies.map { .string($0) }),
            "token_type": .string(type),
            "token_ttl": .int(Int64(ttl)),
            "token_strictly_bind_ip": .bool(strictlyBindIP),
        ]
    }

    /// Copies the parameters into a login's `auth` block (the core makes the token from it).
    public func populate(_ auth: inout AuthInfo, remoteAddress: String?) {
        auth.boundCIDRs = boundCIDRs
        if strictlyBindIP, let remoteAddress { auth.boundCIDRs = [remoteAddress] }
        auth.explicitMaxTTL = explicitMaxTTL
        auth.maxTTL = maxTTL
        auth.noDefaultPolicy = noDefaultPolicy
        auth.period = period
        auth.policies = policies
        auth.tokenPolicies = policies
        auth.renewable = true
        auth.tokenType = type
        auth.ttl = ttl
        auth.numUses = numUses
    }

    /// Validated CIDR blocks (bare addresses allowed); a block of one address is kept as the
    /// bare address, as Vault shows it (`127.0.0.1/32` → `127.0.0.1`).
    public static func cidrs(_ list: [String], field: String) throws -> [String] {
        try list.map { c in
            let range: AddressRange
            do { range = try AddressRange(c) } catch { throw CofferError.invalid("invalid \(field): \"\(c.prefix(64))\" is not a CIDR block or address") }
            let text = c.trimmingCharacters(in: .whitespaces)
            if range.isSingleAddress, let slash = text.firstIndex(of: "/") { return String(text[..<slash]) }
            return text
        }
    }

    /// Policy names as Vault keeps them: trimmed, lowercased, unique, sorted.
    public static func policyList(_ names: [String]) -> [String] {
        Array(Set(names.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty })).sorted()
    }

    /// Whether `address` is inside one of `cidrs` (an empty list allows every address).
    public static func allows(_ cidrs: [String], address: String?) -> Bool {
        guard !cidrs.isEmpty else { return true }
        guard let address else { return false }
        return cidrs.contains { (try? AddressRange($0))?.contains(address) ?? false }
    }
}
