import ArgumentParser
import CofferSDK
import Foundation

/// Which table a mount command works on: `sys/mounts` (secrets) or `sys/auth`.
enum MountKind: Sendable {
    case secrets, auth
    var api: String { self == .secrets ? "sys/mounts" : "sys/auth" }
    var noun: String { self == .secrets ? "secrets engine" : "auth method" }
}

func mountPath(_ p: String) -> String {
    var s = cleanPath(p)
    while s.hasSuffix("/") { s.removeLast() }
    return s
}

/// `secrets list` / `auth list`: Path, Type, Accessor, Description (more with -detailed).
func listMounts(_ client: ClientOptions, _ output: OutputOptions, kind: MountKind, detailed: Bool) async throws {
    try await API.with(client) { api in
        let r = try await api.call(.GET, kind.api, doing: "listing \(kind == .secrets ? "secrets engines" : "enabled authentications")")
        if output.json {
            Out.print(Out.prettyJSON(r.data ?? r.json ?? .null))
            return
        }
        let mounts = (r.data ?? .null).objectValue ?? [:]
        var header = ["Path", "Type", "Accessor", "Description"]
        if detailed { header = ["Path", "Plugin", "Accessor", "Default TTL", "Max TTL", "Force No Cache", "Replication", "Seal Wrap", "External Entropy Access", "Options", "Description", "UUID"] }
        var rows: [[String]] = []
        for path in mounts.keys.sorted() {
            let m = mounts[path]!
            let type = m["type"]?.stringValue ?? ""
            let accessor = m["accessor"]?.stringValue ?? ""
            let desc = m["description"]?.stringValue ?? ""
            if detailed {
                let cfg = m["config"]
                let ttl = { (v: JSONValue?) -> String in
                    let i = v?.intValue ?? 0
                    return i == 0 ? "system" : Out.duration(i)
                }
                let opts = m["options"].map { $0.isNull ? "map[]" : Out.display($0) } ?? "map[]"
                rows.append([
                    path, type, accessor, ttl(cfg?["default_lease_ttl"]), ttl(cfg?["max_lease_ttl"]),
                    Out.display(cfg?["force_no_cache"] ?? false), (m["local"]?.boolValue ?? false) ? "local" : "replicated",
                    Out.display(m["seal_wrap"] ?? false), Out.display(m["external_entropy_access"] ?? false), opts,
                    desc.isEmpty ? "n/a" : desc, m["uuid"]?.stringValue ?? "",
                ])
            } else {
                rows.append([path, type, accessor, desc.isEmpty ? "n/a" : desc])
            }
        }
        Out.print(Out.table(header: header, rows))
    }
}

/// `secrets tune` / `auth tune`.
func tuneMount(_ client: ClientOptions, kind: MountKind, path: String, defaultTTL: String?, maxTTL: String?, description: String?, options: [String]) async throws {
    var body: [String: JSONValue] = [:]
    if let v = Input.duration(defaultTTL) { body["default_lease_ttl"] = v }
    if let v = Input.duration(maxTTL) { body["max_lease_ttl"] = v }
    if let description { body["description"] = .string(description) }
    if !options.isEmpty { body["options"] = .object(try Input.keyValues(options)) }
    let p = mountPath(path)
    try await API.with(client) { api in
        _ = try await api.call(.POST, "\(kind.api)/\(p)/tune", body: .object(body), doing: "tuning \(kind.noun) \(p)/")
        Out.print("Success! Tuned the \(kind.noun) at: \(p)/")
    }
}

struct SecretsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets", abstract: "Secrets engines: enable, disable, list, tune, move.",
        subcommands: [SecretsEnable.self, SecretsDisable.self, SecretsList.self, SecretsTune.self, SecretsMove.self])
}

struct SecretsEnable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Enable a secrets engine.")
    @OptionGroup var client: ClientOptions
    @Option(name: .customLong("path"), help: "Where to mount it (default: the type).") var path: String?
    @Option(name: .customLong("description"), help: "Human-friendly description.") var description: String?
    @Option(name: .customLong("version"), help: "KV version (1 or 2); same as -options=version=N.") var version: Int?
    @Option(name: .customLong("default-lease-ttl"), help: "Default lease TTL.") var defaultLeaseTTL: String?
    @Option(name: .customLong("max-lease-ttl"), help: "Maximum lease TTL.") var maxLeaseTTL: String?
    @Option(name: .customLong("options"), help: "key=value mount options (repeatable).") var options: [String] = []
    @Flag(name: .customLong("local"), help: "Local mount (not replicated).") var local = false
    @Argument(help: "The engine type (kv, ...).") var type: String

    func run() async throws {
        let p = mountPath(path ?? type)
        var body: [String: JSONValue] = ["type": .string(type)]
        if let description { body["description"] = .string(description) }
        var opts: [String: JSONValue] = options.isEmpty ? [:] : try Input.keyValues(options)
        if let version { opts["version"] = .string(String(version)) }
        if !opts.isEmpty { body["options"] = .object(opts) }
        var config: [String: JSONValue] = [:]
        if let v = Input.duration(defaultLeaseTTL) { config["default_lease_ttl"] = v }
        if let v = Input.duration(maxLeaseTTL) { config["max_lease_ttl"] = v }
        if !config.isEmpty { body["config"] = .object(config) }
        if local { body["local"] = true }
        try await API.with(client) { api in
            _ = try await api.call(.POST, "sys/mounts/\(p)", body: .object(body), doing: "enabling")
            Out.print("Success! Enabled the \(type) secrets engine at: \(p)/")
        }
    }
}

struct SecretsDisable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Disable a secrets engine (its data is deleted).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The mount path.") var path: String

    func run() async throws {
        let p = mountPath(path)
        try await API.with(client) { api in
            _ = try await api.call(.DELETE, "sys/mounts/\(p)", doing: "disabling secrets engine at \(p)/")
            Out.print("Success! Disabled the secrets engine (if it existed) at: \(p)/")
        }
    }
}

struct SecretsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List enabled secrets engines.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("detailed"), help: "More columns.") var detailed = false

    func run() async throws {
        try await listMounts(client, output, kind: .secrets, detailed: detailed)
    }
}

struct SecretsTune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tune", abstract: "Tune a secrets engine's settings.")
    @OptionGroup var client: ClientOptions
    @Option(name: .customLong("default-lease-ttl"), help: "Default lease TTL.") var defaultLeaseTTL: String?
    @Option(name: .customLong("max-lease-ttl"), help: "Maximum lease TTL.") var maxLeaseTTL: String?
    @Option(name: .customLong("description"), help: "Description.") var description: String?
    @Option(name: .customLong("options"), help: "key=value mount options (repeatable).") var options: [String] = []
    @Argument(help: "The mount path.") var path: String

    func run() async throws {
        try await tuneMount(client, kind: .secrets, path: path, defaultTTL: defaultLeaseTTL, maxTTL: maxLeaseTTL, description: description, options: options)
    }
}

struct SecretsMove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "move", abstract: "Move a secrets engine to a new path.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The current mount path.") var source: String
    @Argument(help: "The new mount path.") var destination: String

    func run() async throws {
        let from = mountPath(source), to = mountPath(destination)
        try await API.with(client) { api in
            _ = try await api.call(.POST, "sys/remount", body: ["from": .string(from), "to": .string(to)], doing: "moving secrets engine \(from)/ to \(to)/")
            Out.print("Success! Finished moving secrets engine \(from)/ to \(to)/")
        }
    }
}

struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth", abstract: "Auth methods: enable, disable, list, tune.",
        subcommands: [AuthEnable.self, AuthDisable.self, AuthList.self, AuthTune.self])
}

struct AuthEnable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Enable an auth method.")
    @OptionGroup var client: ClientOptions
    @Option(name: .customLong("path"), help: "Where to mount it (default: the type).") var path: String?
    @Option(name: .customLong("description"), help: "Human-friendly description.") var description: String?
    @Option(name: .customLong("default-lease-ttl"), help: "Default lease TTL.") var defaultLeaseTTL: String?
    @Option(name: .customLong("max-lease-ttl"), help: "Maximum lease TTL.") var maxLeaseTTL: String?
    @Argument(help: "The auth method type.") var type: String

    func run() async throws {
        let p = mountPath(path ?? type)
        var body: [String: JSONValue] = ["type": .string(type)]
        if let description { body["description"] = .string(description) }
        var config: [String: JSONValue] = [:]
        if let v = Input.duration(defaultLeaseTTL) { config["default_lease_ttl"] = v }
        if let v = Input.duration(maxLeaseTTL) { config["max_lease_ttl"] = v }
        if !config.isEmpty { body["config"] = .object(config) }
        try await API.with(client) { api in
            _ = try await api.call(.POST, "sys/auth/\(p)", body: .object(body), doing: "enabling \(type) auth")
            Out.print("Success! Enabled \(type) auth method at: \(p)/")
        }
    }
}

struct AuthDisable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Disable an auth method.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The mount path.") var path: String

    func run() async throws {
        let p = mountPath(path)
        try await API.with(client) { api in
            _ = try await api.call(.DELETE, "sys/auth/\(p)", doing: "disabling auth method at \(p)/")
            Out.print("Success! Disabled the auth method (if it existed) at: \(p)/")
        }
    }
}

struct AuthList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List enabled auth methods.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("detailed"), help: "More columns.") var detailed = false

    func run() async throws {
        try await listMounts(client, output, kind: .auth, detailed: detailed)
    }
}

struct AuthTune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tune", abstract: "Tune an auth method's settings.")
    @OptionGroup var client: ClientOptions
    @Option(name: .customLong("default-lease-ttl"), help: "Default lease TTL.") var defaultLeaseTTL: String?
    @Option(name: .customLong("max-lease-ttl"), help: "Maximum lease TTL.") var maxLeaseTTL: String?
    @Option(name: .customLong("description"), help: "Description.") var description: String?
    @Option(name: .customLong("options"), help: "key=value options (repeatable).") var options: [String] = []
    @Argument(help: "The mount path.") var path: String

    func run() async throws {
        try await tuneMount(client, kind: .auth, path: path, defaultTTL: defaultLeaseTTL, maxTTL: maxLeaseTTL, description: description, options: options)
    }
}
