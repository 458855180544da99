import CofferSDK
import Synchronization

/// One namespace's ACL policies: stored behind the barrier, parsed once, cached; compiled
/// ACLs are cached per policy set and dropped whenever a policy changes.
public final class PolicyStore: Sendable {
    let view: StorageView
    let parsed = Mutex<[String: Policy]>([:])
    let acls = Mutex<[String: ACL]>([:])
    /// Bumped (under `parsed`'s lock) by every change and cache drop: a read of storage
    /// that began before it does not put what it read (or compiled) into a cache.
    let generation = Atomic<UInt64>(0)

    public init(view: StorageView) { self.view = view }

    static func normalize(_ name: String) -> String { name.lowercased() }

    /// The stock `default` policy, parsed once per process. A namespace stores `default` only
    /// once it is changed; until then it reads as this (Vault creates it in every namespace,
    /// and it can be updated but not deleted). New tenants then write no policy row: the
    /// stock text was ~1.3 KB of every namespace's rows.
    static let stockDefault = try! Policy.parse(name: "default", text: Policy.defaultPolicyText)

    public func get(_ name: String) async throws -> Policy? {
        let name = Self.normalize(name)
        if name == "root" { return Policy(name: "root", text: "", rules: []) }
        if name == NamespaceCore.wrappingPolicy { return Self.responseWrapping }
        if let p = parsed.withLock({ $0[name] }) { return p }
        let before = generation.load(ordering: .acquiring)
        guard let rec = try await view.getJSON(name), let text = rec["policy"]?.stringValue else {
            return name == "default" ? Self.stockDefault : nil
        }
        let p = try Policy.parse(name: name, text: text)
        parsed.withLock { if generation.load(ordering: .acquiring) == before { $0[name] = p } }
        return p
    }

    /// A policy as stored: its name and its text.
    static func record(name: String, text: String) -> JSONValue {
        ["name": .string(name), "policy": .string(text)]
    }

    /// The policy of wrapping tokens (Vault's text): built in, never stored or changed.
    static let responseWrapping = try! Policy.parse(name: NamespaceCore.wrappingPolicy, text: """
        path "cubbyhole/response" {
            capabilities = ["create", "read"]
        }
        path "sys/wrapping/unwrap" {
            capabilities = ["update"]
        }
        """)

    public func write(name: String, text: String) async throws {
        let name = Self.normalize(name)
        guard name != "root", name != NamespaceCore.wrappingPolicy else { throw CofferError.invalid("cannot update \"\(name)\" policy") }
        guard !name.isEmpty, name.count <= 128, !name.contains("/"), !name.contains("..") else {
            throw CofferError.invalid("invalid policy name")
        }
        let p = try Policy.parse(name: name, text: text)
        // One writer per policy: the stored text and the cached one are the same write's.
        try await view.withLock(name) {
            try await view.putJSON(name, Self.record(name: name, text: text))
            changed { $0[name] = p }
        }
    }

    /// Applies a change to the parsed cache, drops every compiled ACL, and moves the
    /// generation on, so reads that started before it cache nothing.
    func changed(_ change: (inout [String: Policy]) -> Void) {
        parsed.withLock {
            change(&$0)
            generation.add(1, ordering: .releasing)
        }
        acls.withLock { $0.removeAll() }
    }


    public func delete(_ name: String) async throws {
        let name = Self.normalize(name)
        guard name != "root", name != "default", name != NamespaceCore.wrappingPolicy else {
            throw CofferError.invalid("cannot delete \"\(name)\" policy")
        }
        try await view.withLock(name) {
            try await view.delete(name)
            changed { _ = $0.removeValue(forKey: name) }
        }
    }

    public func list() async throws -> [String] {
        var names = try await view.list(prefix: "").filter { !$0.hasSuffix("/") }
        names += ["root", "default"]
        return Array(Set(names)).sorted()
    }

    /// The compiled ACL for a set of policy names (unknown names contribute nothing).
    public func acl(for names: [String]) async throws -> ACL {
        let key = names.joined(separator: "\u{0}")
        if let a = acls.withLock({ $0[key] }) { return a }
        let before = generation.load(ordering: .acquiring)
        var policies: [Policy] = []
        for n in names {
            if let p = try await get(n) { policies.append(p) }
        }
        let acl = ACL(policies: policies)
        acls.withLock { c in
            guard generation.load(ordering: .acquiring) == before else { return }
            if c.count > 10_000 { c.removeAll() }
            c[key] = acl
        }
        return acl
    }
}
