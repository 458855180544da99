import ArgumentParser
import CofferSDK
import Foundation

/// `key=value` arguments as a JSON object of strings.
func stringPairs(_ pairs: [String], what: String) throws -> [String: JSONValue] {
    var out: [String: JSONValue] = [:]
    for pair in pairs {
        guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
            throw ValidationError("\(what) must be key=value, got \"\(pair)\"")
        }
        out[String(pair[..<eq])] = .string(String(pair[pair.index(after: eq)...]))
    }
    return out
}

struct NamespaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "namespace", abstract: "Namespaces: create, list, lookup, patch, delete, lock, unlock, seal, unseal, seal-status (relative to -namespace).",
        subcommands: [NamespaceCreate.self, NamespaceList.self, NamespaceLookup.self, NamespacePatch.self,
                      NamespaceDelete.self, NamespaceLock.self, NamespaceUnlock.self,
                      NamespaceSealCommand.self, NamespaceUnsealCommand.self, NamespaceSealStatusCommand.self])
}

struct NamespaceCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a namespace.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("custom-metadata"), help: "key=value, repeatable.") var metadata: [String] = []
    @Option(name: .customLong("key-shares"), help: "A sealable namespace: its own unseal key in this many Shamir shares.") var keyShares: Int?
    @Option(name: .customLong("key-threshold"), help: "Shares needed to unseal it (with -key-shares).") var keyThreshold: Int?
    @Argument(help: "The namespace path (e.g. acme or acme/payments).") var path: String

    func run() async throws {
        var o: [String: JSONValue] = ["custom_metadata": .object(try stringPairs(metadata, what: "-custom-metadata"))]
        if keyShares != nil || keyThreshold != nil {
            guard let n = keyShares, let t = keyThreshold else {
                Out.err("-key-shares and -key-threshold go together")
                throw ExitCode(2)
            }
            o["seal"] = .string("seal \"shamir\" {\n  shares = \(n)\n  threshold = \(t)\n}\n")
        }
        let body = JSONValue.object(o)
        try await API.with(client) { api in
            let r = try await api.call(.PUT, "sys/namespaces/\(cleanPath(path))", body: body, doing: "creating namespace")
            if output.format != "json", let shares = r.json?["data"]?["key_shares"]?.arrayValue {
                for (i, k) in shares.enumerated() { Out.print("Unseal Key \(i + 1): \(k.stringValue ?? "")") }
                Out.print("")
                Out.print("Namespace initialized with \(shares.count) key shares and a key threshold of \(keyThreshold ?? 0). It is sealed:")
                Out.print("unseal it with `coffer namespace unseal \(cleanPath(path)) KEY` (from its parent namespace).")
                Out.print("")
            }
            try Out.secret(r, output)
        }
    }
}

struct NamespaceList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List child namespaces.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.request(.GET, "sys/namespaces", query: [("list", "true")], doing: "listing namespaces")
            if r.status == 404 {
                Out.err("No namespaces found")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "listing namespaces") }
            Out.keys(r, output)
        }
    }
}

struct NamespaceLookup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lookup", abstract: "Show a namespace (id, path, custom metadata).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The namespace path.") var path: String

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.request(.GET, "sys/namespaces/\(cleanPath(path))", doing: "looking up namespace")
            if r.status == 404 {
                Out.err("Namespace not found: \(path)")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "looking up namespace") }
            try Out.secret(r, output)
        }
    }
}

struct NamespacePatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "patch", abstract: "Set or remove custom metadata keys of a namespace.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("custom-metadata"), help: "key=value to set, repeatable.") var metadata: [String] = []
    @Option(name: .customLong("remove-custom-metadata"), help: "Key to remove, repeatable.") var remove: [String] = []
    @Argument(help: "The namespace path.") var path: String

    func run() async throws {
        var patch = try stringPairs(metadata, what: "-custom-metadata")
        for key in remove { patch[key] = .null }
        guard !patch.isEmpty else { throw ValidationError("nothing to change: give -custom-metadata or -remove-custom-metadata") }
        try await API.with(client) { api in
            let r = try await api.call(.PATCH, "sys/namespaces/\(cleanPath(path))", body: ["custom_metadata": .object(patch)],
                                       contentType: "application/merge-patch+json", doing: "patching namespace")
            try Out.secret(r, output)
        }
    }
}

struct NamespaceDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a namespace (crypto-shred; refused while it has children).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The namespace path.") var path: String

    func run() async throws {
        try await API.with(client) { api in
            _ = try await api.call(.DELETE, "sys/namespaces/\(cleanPath(path))", doing: "deleting namespace")
            Out.print("Success! Namespace deleted at: \(cleanPath(path))/")
        }
    }
}

struct NamespaceLock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lock", abstract: "Lock the API of the current namespace or a descendant; prints the unlock key.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "A descendant to lock (default: the current namespace).") var path: String?

    func run() async throws {
        let at = path.map { "sys/namespaces/api-lock/lock/\(cleanPath($0))" } ?? "sys/namespaces/api-lock/lock"
        try await API.with(client) { api in
            let r = try await api.call(.POST, at, doing: "locking namespace")
            try Out.secret(r, output)
        }
    }
}

struct NamespaceUnlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unlock", abstract: "Unlock with the unlock key (or a root token).")
    @OptionGroup var client: ClientOptions
    @Option(name: .customLong("unlock-key"), help: "The key `lock` printed.") var unlockKey: String?
    @Argument(help: "A descendant to unlock (default: the current namespace).") var path: String?

    func run() async throws {
        let at = path.map { "sys/namespaces/api-lock/unlock/\(cleanPath($0))" } ?? "sys/namespaces/api-lock/unlock"
        let body: JSONValue = unlockKey.map { ["unlock_key": .string($0)] } ?? [:]
        try await API.with(client) { api in
            _ = try await api.call(.POST, at, body: body, doing: "unlocking namespace")
            Out.print("Success! Namespace unlocked")
        }
    }
}

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant", abstract: "Tenants (root namespace): create, list, show, delete.",
        subcommands: [TenantCreate.self, TenantList.self, TenantShow.self, TenantDelete.self])
}

struct TenantCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Provision a tenant: namespace, tenant-admin policy, admin token (printed once).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("custom-metadata"), help: "key=value, repeatable (plan, owner...).") var metadata: [String] = []
    @Option(name: .customLong("admin-policy"), help: "A policy file replacing the default tenant-admin policy (- for stdin).") var adminPolicy: String?
    @Option(name: .customLong("quotas"), help: "A JSON file of rate-limit quotas (- for stdin).") var quotas: String?
    @Argument(help: "The tenant name.") var name: String

    func run() async throws {
        var body: [String: JSONValue] = ["custom_metadata": .object(try stringPairs(metadata, what: "-custom-metadata"))]
        if let adminPolicy { body["admin_policy"] = .string(try readText(adminPolicy)) }
        if let quotas { body["quotas"] = try JSONValue.parse(Array(try readText(quotas).utf8)) }
        try await API.with(client) { api in
            let r = try await api.call(.PUT, "sys/tenants/\(cleanPath(name))", body: .object(body), doing: "provisioning tenant")
            try Out.secret(r, output)
        }
    }

    func readText(_ source: String) throws -> String {
        if source == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
        guard let data = FileManager.default.contents(atPath: source) else { throw ValidationError("cannot read \(source)") }
        return String(decoding: data, as: UTF8.self)
    }
}

struct TenantList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List tenants.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.request(.GET, "sys/tenants", query: [("list", "true")], doing: "listing tenants")
            if r.status == 404 {
                Out.err("No tenants found")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "listing tenants") }
            Out.keys(r, output)
        }
    }
}

struct TenantShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a tenant: metadata, mounts, quotas, usage this month.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The tenant name.") var name: String

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.request(.GET, "sys/tenants/\(cleanPath(name))", doing: "reading tenant")
            if r.status == 404 {
                Out.err("Tenant not found: \(name)")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "reading tenant") }
            try Out.secret(r, output)
        }
    }
}

struct TenantDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Deprovision a tenant (revoke + crypto-shred).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The tenant name.") var name: String

    func run() async throws {
        try await API.with(client) { api in
            _ = try await api.call(.DELETE, "sys/tenants/\(cleanPath(name))", doing: "deprovisioning tenant")
            Out.print("Success! Tenant deprovisioned: \(cleanPath(name))")
        }
    }
}

struct NamespaceSealCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "seal", abstract: "Seal a sealable child namespace (its keys leave memory).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The child namespace (relative to -namespace).") var path: String

    func run() async throws {
        try await API.with(client) { api in
            _ = try await api.call(.PUT, "sys/namespaces/\(cleanPath(path))/seal", doing: "sealing namespace")
            Out.print("Success! Namespace \"\(cleanPath(path))\" is sealed.")
        }
    }
}

struct NamespaceUnsealCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unseal", abstract: "Submit one unseal key share of a sealable child namespace (prompted when omitted).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("reset"), help: "Discard the shares submitted so far.") var reset = false
    @Argument(help: "The child namespace (relative to -namespace).") var path: String
    @Argument(help: "The key share (hex or base64).") var key: String?

    func run() async throws {
        var body: JSONValue = ["reset": true]
        if !reset {
            let k = key ?? Input.prompt("Unseal Key (will be hidden): ")
            guard !k.isEmpty else {
                Out.err("Error unsealing: no unseal key provided")
                throw ExitCode(2)
            }
            body = ["key": .string(k)]
        }
        try await API.with(client) { api in
            let r = try await api.call(.PUT, "sys/namespaces/\(cleanPath(path))/unseal", body: body, doing: "unsealing namespace")
            try Out.secret(r, output)
        }
    }
}

struct NamespaceSealStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "seal-status", abstract: "Seal status of a sealable child namespace.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The child namespace (relative to -namespace).") var path: String

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.call(.GET, "sys/namespaces/\(cleanPath(path))/seal-status", doing: "reading namespace seal status")
            try Out.secret(r, output)
        }
    }
}
