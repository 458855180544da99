import CofferSDK
import Foundation

/// A Vault password policy (`sys/policies/password/:name`): HCL with a `length` and
/// `rule "charset" { charset = "…", min-chars = N }` blocks.
///
/// Generation: the `min-chars` of every rule are drawn from that rule's charset, the rest
/// from the union of all charsets, then the whole is shuffled, every draw from the system
/// CSPRNG. So every rule is met by construction, with no retry loop.
public struct PasswordPolicy: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        public var charset: [Character]
        public var minChars: Int
    }

    public var length: Int
    public var rules: [Rule]
    /// The HCL as given (what a read returns).
    public var source: String

    static let maxLength = 4_096

    public init(parsing text: String) throws {
        let body: HCLBody
        do {
            body = try HCL.parseBody(text)
        } catch let e as CofferError {
            throw CofferError.invalid("invalid password policy: \(e.message)")
        }
        guard let length = body.attribute("length")?.intValue else {
            throw CofferError.invalid("invalid password policy: length is required")
        }
        guard length >= 4, length <= Self.maxLength else {
            throw CofferError.invalid("invalid password policy: length must be between 4 and \(Self.maxLength)")
        }
        for attr in body.attributes where attr.name != "length" {
            throw CofferError.invalid("invalid password policy: unknown attribute \"\(attr.name.prefix(64))\"")
        }
        var rules: [Rule] = []
        for block in body.blocks {
            guard block.type == "rule", block.labels == ["charset"] else {
                throw CofferError.invalid("invalid password policy: unsupported block \"\(block.type) \(block.labels.joined(separator: " "))\" (only rule \"charset\")")
            }
            guard let charset = block.body.attribute("charset")?.stringValue, !charset.isEmpty else {
                throw CofferError.invalid("invalid password policy: a charset rule needs a non-empty charset")
            }
            let chars = Array(Set(charset)).sorted()
            guard chars.allSatisfy({ $0.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F } }) else {
                throw CofferError.invalid("invalid password policy: charsets cannot hold control characters")
            }
            let minChars = block.body.attribute("min-chars")?.intValue ?? 0
            guard minChars >= 0 else { throw CofferError.invalid("invalid password policy: min-chars cannot be negative") }
            guard minChars <= Self.maxLength else {
                throw CofferError.invalid("invalid password policy: min-chars must be at most \(Self.maxLength)")
            }
            for attr in block.body.attributes where attr.name != "charset" && attr.name != "min-chars" {
                throw CofferError.invalid("invalid password policy: unknown rule attribute \"\(attr.name.prefix(64))\"")
            }
            rules.append(Rule(charset: chars, minChars: Int(minChars)))
        }
        guard !rules.isEmpty else { throw CofferError.invalid("invalid password policy: at least one charset rule is required") }
        // Each min-chars is at most maxLength, so the sum cannot overflow.
        let required = rules.reduce(0) { $0 + $1.minChars }
        guard required <= length else {
            throw CofferError.invalid("invalid password policy: the rules need \(required) characters but length is \(length)")
        }
        self.length = Int(length)
        self.rules = rules
        self.source = text
    }

    public func generate() -> String {
        var g = SystemRandomNumberGenerator()
        var out: [Character] = []
        out.reserveCapacity(length)
        for rule in rules {
            for _ in 0..<rule.minChars { out.append(rule.charset.randomElement(using: &g)!) }
        }
        let all = Array(Set(rules.flatMap(\.charset))).sorted()
        while out.count < length { out.append(all.randomElement(using: &g)!) }
        out.shuffle(using: &g)
        return String(out)
    }
}

extension NamespaceCore {
    static let passwordPolicyPrefix = "sys/password-policy/"

    func passwordPolicy(_ name: String) async throws -> PasswordPolicy? {
        guard Self.validPolicyName(name) else { return nil }
        guard let text = try await rootView.getJSON(Self.passwordPolicyPrefix + name)?["policy"]?.stringValue else { return nil }
        return try PasswordPolicy(parsing: text)
    }

    /// A password from this namespace's policy `name` (engines reach it through
    /// `BackendConfiguration.generatePassword`).
    func generatePassword(policy name: String) async throws -> String {
        guard let policy = try await passwordPolicy(name) else {
            throw CofferError.invalid("password policy \"\(name.prefix(128))\" not found")
        }
        return policy.generate()
    }

    static func validPolicyName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 128 && !name.contains("/") && !name.contains("..")
    }
}

/// `sys/policies/password[/:name[/generate]]`, Vault's shapes.
extension SystemBackend {
    static var passwordPolicyRoutes: [Route<SystemBackend>] {
        [
            Route("policies/password/?", operations: [.list: { try await $0.listPasswordPolicies($1) }], summary: "List password policies."),
            Route("policies/password/:name/generate", fields: [Field("name", .string)], operations: [.read: { try await $0.generatePassword($1) }],
                  summary: "Generate a password from a password policy."),
            Route("policies/password/:name", fields: [Field("name", .string), Field("policy", .string)], operations: [
                .read: { try await $0.readPasswordPolicy($1) }, .update: { try await $0.writePasswordPolicy($1) }, .delete: { try await $0.deletePasswordPolicy($1) },
            ], summary: "Create, read, update or delete a password policy (HCL: length, rule \"charset\")."),
        ]
    }

    func policyName(_ req: LogicalRequest) throws -> String {
        let name = req.fields.string("name")
        guard NamespaceCore.validPolicyName(name) else { throw CofferError.invalid("invalid password policy name") }
        return name
    }

    func listPasswordPolicies(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let names = try await ns.rootView.list(prefix: NamespaceCore.passwordPolicyPrefix).filter { !$0.hasSuffix("/") }
        return names.isEmpty ? nil : .list(names.sorted())
    }

    func readPasswordPolicy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let p = try await ns.passwordPolicy(try policyName(req)) else { return nil }
        return LogicalResponse(data: ["policy": .string(p.source)])
    }

    func writePasswordPolicy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try policyName(req)
        var text = req.fields.string("policy")
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw CofferError.invalid("missing policy") }
        // Vault also takes the HCL base64-encoded.
        if !text.contains("="), let data = Data(base64Encoded: text), let decoded = String(data: data, encoding: .utf8) { text = decoded }
        let policy = try PasswordPolicy(parsing: text)
        // Vault refuses a policy that cannot produce a password; ours always can once parsed.
        _ = policy.generate()
        try await ns.rootView.putJSON(NamespaceCore.passwordPolicyPrefix + name, ["policy": .string(text)])
        return nil
    }

    func deletePasswordPolicy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await ns.rootView.delete(NamespaceCore.passwordPolicyPrefix + (try policyName(req)))
        return nil
    }

    func generatePassword(_ req: LogicalRequest) async throws -> LogicalResponse? {
        LogicalResponse(data: ["password": .string(try await ns.generatePassword(policy: try policyName(req)))])
    }
}
