import ArgumentParser
import CofferSDK
import Foundation

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Tokens: create, lookup, renew, revoke, capabilities.",
        subcommands: [TokenCreate.self, TokenLookup.self, TokenRenew.self, TokenRevoke.self, TokenCapabilities.self])
}

struct TokenCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a token.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("policy"), help: "A policy to attach (repeatable).") var policies: [String] = []
    @Option(name: .customLong("ttl"), help: "Initial TTL (e.g. 1h).") var ttl: String?
    @Option(name: .customLong("explicit-max-ttl"), help: "Hard cap on the TTL, renewals included.") var explicitMaxTTL: String?
    @Option(name: .customLong("period"), help: "Periodic token: renewals reset the TTL to this.") var period: String?
    @Flag(name: .customLong("orphan"), help: "Create a token with no parent.") var orphan = false
    @Option(name: .customLong("num-uses"), help: "Number of uses (0: unlimited).") var numUses: Int?
    @Option(name: .customLong("display-name"), help: "Display name.") var displayName: String?
    @Option(name: .customLong("role"), help: "Create against this token role.") var role: String?
    @Option(name: .customLong("renewable"), help: "Whether the token is renewable (true/false).") var renewable: Bool?
    @Option(name: .customLong("metadata"), help: "key=value metadata (repeatable).") var metadata: [String] = []
    @Option(name: .customLong("type"), help: "Token type (service or batch).") var type: String?
    @Option(name: .customLong("id"), help: "The token id (root only).") var id: String?

    func run() async throws {
        var body: [String: JSONValue] = [:]
        let pols = policies.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
        if !pols.isEmpty { body["policies"] = .array(pols.map { .string($0) }) }
        if let v = Input.duration(ttl) { body["ttl"] = v }
        if let v = Input.duration(explicitMaxTTL) { body["explicit_max_ttl"] = v }
        if let v = Input.duration(period) { body["period"] = v }
        if orphan { body["no_parent"] = true }
        if let numUses { body["num_uses"] = .int(Int64(numUses)) }
        if let displayName { body["display_name"] = .string(displayName) }
        if let renewable { body["renewable"] = .bool(renewable) }
        if let type { body["type"] = .string(type) }
        if let id { body["id"] = .string(id) }
        if !metadata.isEmpty {
            body["meta"] = .object(try Input.keyValues(metadata).mapValues { .string($0.stringValue ?? Out.display($0)) })
        }
        let path = role.map { "auth/token/create/\($0)" } ?? "auth/token/create"
        try await API.with(client) { api in
            let r = try await api.call(.POST, path, body: .object(body), doing: "creating token")
            try Out.secret(r, output)
        }
    }
}

struct TokenLookup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lookup", abstract: "Show a token's properties (default: your own).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("accessor"), help: "The argument is an accessor, not a token.") var accessor = false
    @Argument(help: "The token (or accessor) to look up.") var target: String?

    func run() async throws {
        if accessor && target == nil {
            Out.err("Not enough arguments (expected an accessor with -accessor)")
            throw ExitCode(2)
        }
        try await API.with(client) { api in
            let r: APIResponse
            if let target {
                if accessor {
                    r = try await api.call(.POST, "auth/token/lookup-accessor", body: ["accessor": .string(target)], doing: "looking up token")
                } else {
                    r = try await api.call(.POST, "auth/token/lookup", body: ["token": .string(target)], doing: "looking up token")
                }
            } else {
                r = try await api.call(.GET, "auth/token/lookup-self", doing: "looking up token")
            }
            try Out.secret(r, output, humanizeTTL: true)
        }
    }
}

struct TokenRenew: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "renew", abstract: "Renew a token (default: your own).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("accessor"), help: "The argument is an accessor, not a token.") var accessor = false
    @Option(name: .customLong("increment"), help: "Requested TTL increment (e.g. 1h).") var increment: String?
    @Argument(help: "The token (or accessor) to renew.") var target: String?

    func run() async throws {
        var body: [String: JSONValue] = [:]
        if let v = Input.duration(increment) { body["increment"] = v }
        let path: String
        if let target {
            if accessor { body["accessor"] = .string(target); path = "auth/token/renew-accessor" }
            else { body["token"] = .string(target); path = "auth/token/renew" }
        } else {
            if accessor {
                Out.err("Not enough arguments (expected an accessor with -accessor)")
                throw ExitCode(2)
            }
            path = "auth/token/renew-self"
        }
        try await API.with(client) { api in
            let r = try await api.call(.PUT, path, body: .object(body), doing: "renewing token")
            try Out.secret(r, output)
        }
    }
}

struct TokenRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a token and its children.")
    @OptionGroup var client: ClientOptions
    @Flag(name: .customLong("self"), help: "Revoke the token in use.") var revokeSelf = false
    @Flag(name: .customLong("accessor"), help: "The argument is an accessor, not a token.") var accessor = false
    @Option(name: .customLong("mode"), help: "orphan: revoke only this token, its children become orphans.") var mode: String?
    @Argument(help: "The token (or accessor) to revoke.") var target: String?

    func validate() throws {
        if revokeSelf && target != nil { throw ValidationError("-self takes no token argument") }
        if !revokeSelf && target == nil { throw ValidationError("Not enough arguments (expected a token, or -self)") }
        if let mode, !["orphan", "path", ""].contains(mode) { throw ValidationError("invalid -mode \"\(mode)\" (orphan)") }
        if mode == "orphan" && accessor { throw ValidationError("-mode=orphan cannot be combined with -accessor") }
    }

    func run() async throws {
        try await API.with(client) { api in
            if revokeSelf {
                _ = try await api.call(.PUT, "auth/token/revoke-self", doing: "revoking token")
            } else if accessor {
                _ = try await api.call(.PUT, "auth/token/revoke-accessor", body: ["accessor": .string(target!)], doing: "revoking token")
            } else if mode == "orphan" {
                _ = try await api.call(.PUT, "auth/token/revoke-orphan", body: ["token": .string(target!)], doing: "revoking token")
            } else {
                _ = try await api.call(.PUT, "auth/token/revoke", body: ["token": .string(target!)], doing: "revoking token")
            }
            Out.print("Success! Revoked token (if it existed)")
        }
    }
}

struct TokenCapabilities: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "capabilities", abstract: "A token's capabilities on a path (default: your own).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "[TOKEN] PATH") var args: [String] = []

    func validate() throws {
        if args.isEmpty { throw ValidationError("Not enough arguments (expected [TOKEN] PATH)") }
        if args.count > 2 { throw ValidationError("Too many arguments (expected [TOKEN] PATH)") }
    }

    func run() async throws {
        let path = cleanPath(args.last!)
        try await API.with(client) { api in
            let r: APIResponse
            if args.count == 2 {
                r = try await api.call(.POST, "sys/capabilities", body: ["token": .string(args[0]), "paths": [.string(path)]], doing: "listing capabilities")
            } else {
                r = try await api.call(.POST, "sys/capabilities-self", body: ["paths": [.string(path)]], doing: "listing capabilities")
            }
            let caps = (r.data?[path] ?? r.data?["capabilities"] ?? r.json?[path] ?? r.json?["capabilities"])?.arrayValue ?? []
            if output.json {
                Out.print(Out.prettyJSON(.array(caps)))
            } else {
                Out.print(caps.compactMap(\.stringValue).sorted().joined(separator: ", "))
            }
        }
    }
}
