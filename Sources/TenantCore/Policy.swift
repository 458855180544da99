import CofferSDK

/// A capability a policy grants on a path.
public struct Capabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let deny = Capabilities(rawValue: 1 << 0)
    public static let create = Capabilities(rawValue: 1 << 1)
    public static let read = Capabilities(rawValue: 1 << 2)
    public static let update = Capabilities(rawValue: 1 << 3)
    public static let delete = Capabilities(rawValue: 1 << 4)
    public static let list = Capabilities(rawValue: 1 << 5)
    public static let sudo = Capabilities(rawValue: 1 << 6)
    public static let patch = Capabilities(rawValue: 1 << 7)
    public static let subscribe = Capabilities(rawValue: 1 << 8)

    static let names: [(String, Capabilities)] = [
        ("create", .create), ("delete", .delete), ("deny", .deny), ("list", .list), ("patch", .patch),
        ("read", .read), ("sudo", .sudo), ("update", .update), ("subscribe", .subscribe),
    ]

    public init(name: String) throws {
        guard let c = Self.names.first(where: { $0.0 == name })?.1 else {
            throw CofferError.invalid("failed to parse policy: invalid capability \"\(name.prefix(32))\"")
        }
        self = c
    }

    /// Names in Vault's order (sorted), or ["deny"].
    public var names: [String] {
        if contains(.deny) { return ["deny"] }
        return Self.names.filter { contains($0.1) }.map(\.0)
    }

    public static func required(for op: LogicalOperation) -> Capabilities {
        switch op {
        case .create: .create
        case .read: .read
        case .update: .update
        case .patch: .patch
        case .delete: .delete
        case .list: .list
        case .help: []
        }
    }
}

/// One `path` block of a policy.
public struct PathRule: Sendable {
    public var pattern: String
    public var capabilities: Capabilities
    public var allowedParameters: [String: [JSONValue]]?
    public var deniedParameters: [String: [JSONValue]]?
    public var requiredParameters: [String]

    /// The pattern without its trailing `*`.
    let stem: String
    let isGlob: Bool
    let plusCount: Int
    let firstWildcard: Int
    let segments: [Substring]

    public init(pattern: String, capabilities: Capabilities, allowedParameters: [String: [JSONValue]]? = nil, deniedParameters: [String: [JSONValue]]? = nil, requiredParameters: [String] = []) {
        var p = pattern
        if p.hasPrefix("/") { p.removeFirst() }
        self.pattern = p
        self.capabilities = capabilities
        self.allowedParameters = allowedParameters
        self.deniedParameters = deniedParameters
        self.requiredParameters = requiredParameters
        self.isGlob = p.hasSuffix("*")
        self.stem = isGlob ? String(p.dropLast()) : p
        self.segments = stem.split(separator: "/", omittingEmptySubsequences: false)
        self.plusCount = segments.filter { $0.utf8.elementsEqual("+".utf8) }.count
        var first = p.utf8.count
        if let i = p.utf8.firstIndex(where: { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "+") }) {
            // A '+' only counts as a wildcard when it is a whole segment.
            first = p.utf8.distance(from: p.utf8.startIndex, to: i)
        }
        self.firstWildcard = first
    }

    public var isExact: Bool { !isGlob && plusCount == 0 }

    /// Does this rule cover `path`? Paths compare as bytes (UTF-8), as storage compares
    /// keys: Swift's `==` and `hasPrefix` compare by canonical equivalence, so
    /// `admin*` would miss `admin\u{301}` while storage files it below `admin`.
    public func matches(_ path: String) -> Bool {
        if isExact { return path.utf8.elementsEqual(stem.utf8) }
        if plusCount == 0 { return path.utf8.starts(with: stem.utf8) }
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        if isGlob {
            guard parts.count >= segments.count else { return false }
            for (i, seg) in segments.enumerated() {
                if seg == "+" && i == segments.count - 1 { return true }
                if i == segments.count - 1 {
                    // The rest of the path from this segment on, as bytes.
                    let rest = path.utf8[parts[i].startIndex...]
                    return rest.starts(with: seg.utf8)
                }
                if seg != "+" && !seg.utf8.elementsEqual(parts[i]) { return false }
            }
            return true
        }
        guard parts.count == segments.count else { return false }
        for (seg, part) in zip(segments, parts) where seg != "+" && !seg.utf8.elementsEqual(part) { return false }
        return true
    }

    /// Vault's priority: is `self` more specific than `other`?
    func outranks(_ other: PathRule) -> Bool {
        if firstWildcard != other.firstWildcard { return firstWildcard > other.firstWildcard }
        if isGlob != other.isGlob { return !isGlob }
        if plusCount != other.plusCount { return plusCount < other.plusCount }
        if pattern.utf8.count != other.pattern.utf8.count { return pattern.utf8.count > other.pattern.utf8.count }
        return pattern > other.pattern
    }
}

/// A parsed ACL policy.
public struct Policy: Sendable {
    public var name: String
    public var text: String
    public var rules: [PathRule]

    public init(name: String, text: String, rules: [PathRule]) {
        self.name = name
        self.text = text
        self.rules = rules
    }

    /// Parses HCL or JSON policy text; a clear 400 on any syntax or schema error.
    public static func parse(name: String, text: String) throws -> Policy {
        let doc: JSONValue
        do {
            doc = try HCL.parseHCLOrJSON(text)
        } catch let e as CofferError {
            throw CofferError.invalid("failed to parse policy: \(e.message)")
        }
        guard let obj = doc.objectValue else { throw CofferError.invalid("failed to parse policy: not an object") }
        for key in obj.keys where key != "path" && key != "name" {
            throw CofferError.invalid("failed to parse policy: invalid key \"\(key.prefix(32))\"")
        }
        var rules: [PathRule] = []
        if let paths = obj["path"] {
            guard let pathObj = paths.objectValue else {
                throw CofferError.invalid("failed to parse policy: \"path\" must be blocks")
            }
            for (pattern, body) in pathObj {
                rules.append(try parseRule(pattern: pattern, body: body))
            }
        }
        return Policy(name: name, text: text, rules: rules)
    }

    static func parseRule(pattern: String, body: JSONValue) throws -> PathRule {
        guard let b = body.objectValue else {
            throw CofferError.invalid("failed to parse policy: path \"\(pattern.prefix(64))\" must be a block")
        }
        var caps: Capabilities = []
        for key in b.keys {
            switch key {
            case "capabilities", "policy", "allowed_parameters", "denied_parameters", "required_parameters",
                "min_wrapping_ttl", "max_wrapping_ttl", "mfa_methods", "control_group", "subscribe_event_types", "pagination_limit":
                continue
            default:
                throw CofferError.invalid("failed to parse policy: path \"\(pattern.prefix(64))\": invalid key \"\(key.prefix(32))\"")
            }
        }
        if let list = b["capabilities"] {
            guard let arr = list.arrayValue else { throw CofferError.invalid("failed to parse policy: capabilities must be a list") }
            for c in arr {
                guard let s = c.stringValue else { throw CofferError.invalid("failed to parse policy: capabilities must be strings") }
                caps.insert(try Capabilities(name: s))
            }
        }
        if let legacy = b["policy"]?.stringValue {
            switch legacy {
            case "deny": caps.insert(.deny)
            case "read": caps.formUnion([.read, .list])
            case "write": caps.formUnion([.create, .read, .update, .delete, .list])
            case "sudo": caps.formUnion([.create, .read, .update, .delete, .list, .sudo])
            default: throw CofferError.invalid("failed to parse policy: invalid policy \"\(legacy.prefix(16))\"")
            }
        }
        func params(_ key: String) throws -> [String: [JSONValue]]? {
            guard let v = b[key] else { return nil }
            guard let o = v.objectValue else { throw CofferError.invalid("failed to parse policy: \(key) must be a map") }
            return o.mapValues { $0.arrayValue ?? [$0] }
        }
        var required: [String] = []
        if let r = b["required_parameters"] {
            guard let arr = r.arrayValue else { throw CofferError.invalid("failed to parse policy: required_parameters must be a list") }
            required = arr.compactMap(\.stringValue)
        }
        return PathRule(pattern: pattern, capabilities: caps, allowedParameters: try params("allowed_parameters"),
                        deniedParameters: try params("denied_parameters"), requiredParameters: required)
    }
}

/// The merged, compiled ACL of a token's policies: answers "may this operation run here".
public struct ACL: Sendable {
    public let isRoot: Bool
    var exact: [String: PathRule] = [:]
    var wildcard: [PathRule] = []

    public init(policies: [Policy]) {
        isRoot = policies.contains { $0.name == "root" }
        var merged: [String: PathRule] = [:]
        for policy in policies {
            for rule in policy.rules {
                if var existing = merged[rule.pattern] {
                    if existing.capabilities.contains(.deny) || rule.capabilities.contains(.deny) {
                        existing.capabilities = .deny
                    } else {
                        existing.capabilities.formUnion(rule.capabilities)
                    }
                    existing.allowedParameters = Self.mergeParams(existing.allowedParameters, rule.allowedParameters)
                    existing.deniedParameters = Self.mergeParams(existing.deniedParameters, rule.deniedParameters)
                    existing.requiredParameters = Array(Set(existing.requiredParameters + rule.requiredParameters))
                    merged[rule.pattern] = existing
                } else {
                    merged[rule.pattern] = rule
                }
            }
        }
        for (_, r) in merged {
            if r.isExact { exact[r.stem] = r } else { wildcard.append(r) }
        }
        wildcard.sort { $0.outranks($1) }
    }

    static func mergeParams(_ a: [String: [JSONValue]]?, _ b: [String: [JSONValue]]?) -> [String: [JSONValue]]? {
        guard let a else { return b }
        guard let b else { return a }
        var out = a
        for (k, v) in b {
            if let existing = out[k] {
                // An empty list means "any value": it stays "any value".
                out[k] = existing.isEmpty || v.isEmpty ? [] : existing + v
            } else {
                out[k] = v
            }
        }
        return out
    }

    /// The rule that governs `path`, if any.
    public func rule(for path: String) -> PathRule? {
        // The dictionary finds canonically equal keys; only a byte-equal one is the rule.
        if let r = exact[path], r.stem.utf8.elementsEqual(path.utf8) { return r }
        return wildcard.first { $0.matches(path) }
    }

    /// Capabilities granted on `path`.
    public func capabilities(_ path: String) -> Capabilities {
        if isRoot { return [.create, .read, .update, .delete, .list, .sudo, .patch] }
        return rule(for: path)?.capabilities ?? []
    }

    /// Checks an operation; throws 403 when not allowed. Answers the capabilities granted
    /// on `path` (all of them for a root token; none looked up for help), so a caller that
    /// needs them (`sudo` for privileged token options) does not look the rule up again.
    @discardableResult
    public func authorize(_ op: LogicalOperation, path: String, data: [String: JSONValue], needsSudo: Bool) throws -> Capabilities {
        if isRoot { return capabilities(path) }
        if op == .help { return [] }
        guard let r = rule(for: path), !r.capabilities.contains(.deny) else { throw CofferError.denied() }
        guard r.capabilities.contains(Capabilities.required(for: op)) else { throw CofferError.denied() }
        if needsSudo && !r.capabilities.contains(.sudo) { throw CofferError.denied() }
        guard op == .create || op == .update || op == .patch else { return r.capabilities }
        for req in r.requiredParameters where data[req] == nil { throw CofferError.denied() }
        if let denied = r.deniedParameters {
            for (k, v) in data {
                if let values = denied[k] ?? denied["*"] {
                    if values.isEmpty || values.contains(v) { throw CofferError.denied() }
                }
            }
        }
        if let allowed = r.allowedParameters, !allowed.isEmpty {
            for (k, v) in data {
                guard let values = allowed[k] ?? allowed["*"] else { throw CofferError.denied() }
                if !values.isEmpty && !values.contains(v) { throw CofferError.denied() }
            }
        }
        return r.capabilities
    }
}

extension Policy {
    /// The built-in `default` policy attached to every token unless asked otherwise.
    public static let defaultPolicyText = """
    # Look up, renew and revoke the calling token itself.
    path "auth/token/lookup-self" {
        capabilities = ["read"]
    }
    path "auth/token/renew-self" {
        capabilities = ["update"]
    }
    path "auth/token/revoke-self" {
        capabilities = ["update"]
    }
    # What may the calling token do?
    path "sys/capabilities-self" {
        capabilities = ["update"]
    }
    # Look up the calling token's own leases.
    path "sys/leases/lookup" {
        capabilities = ["update"]
    }
    path "sys/leases/renew" {
        capabilities = ["update"]
    }
    path "sys/renew" {
        capabilities = ["update"]
    }
    # Per-token private storage.
    path "cubbyhole/*" {
        capabilities = ["create", "read", "update", "delete", "list"]
    }
    # Response wrapping.
    path "sys/wrapping/wrap" {
        capabilities = ["update"]
    }
    path "sys/wrapping/lookup" {
        capabilities = ["update"]
    }
    path "sys/wrapping/unwrap" {
        capabilities = ["update"]
    }
    # Tools.
    path "sys/tools/hash" {
        capabilities = ["update"]
    }
    path "sys/tools/hash/*" {
        capabilities = ["update"]
    }
    path "sys/control-group/request" {
        capabilities = ["update"]
    }
    """
}
