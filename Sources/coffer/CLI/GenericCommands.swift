import ArgumentParser
import CofferSDK
import Foundation

/// Strips leading slashes; Vault accepts `/secret/foo` as well as `secret/foo`.
func cleanPath(_ p: String) -> String {
    var s = p
    while s.hasPrefix("/") { s.removeFirst() }
    return s
}

/// `read PATH`: GET, print the secret; a missing path is "No value found", exit 2.
struct ReadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "read", abstract: "Read data from a path.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The path to read.") var path: String

    func run() async throws {
        let path = cleanPath(self.path)
        try await API.with(client) { api in
            let r = try await api.request(.GET, path, doing: "reading \(path)")
            if r.status == 404 && r.data == nil {
                Out.err("No value found at \(path)")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "reading \(path)") }
            if r.json == nil {
                Out.err("No value found at \(path)")
                throw ExitCode(2)
            }
            try Out.secret(r, output)
        }
    }
}

/// Shared by `write` and `patch`: send data, print the response or "Success! ...".
func writeData(_ api: API, method: Verb, path: String, data: [String: JSONValue], output: OutputOptions) async throws {
    let merge = method == .PATCH
    let r = try await api.call(
        method, path, body: .object(data), contentType: merge ? "application/merge-patch+json" : "application/json",
        doing: "writing to \(path)")
    if r.data != nil || r.auth != nil || r.json?["wrap_info"]?.objectValue != nil {
        try Out.secret(r, output)
    } else if output.json {
        if let j = r.json { Out.print(Out.prettyJSON(j)) }
    } else {
        if r.json != nil { Out.warnings(r) }
        Out.print("Success! Data written to: \(path)")
    }
}

/// `write PATH k=v k2=@file ...` or `write PATH -` (JSON object on stdin).
struct WriteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write", abstract: "Write data to a path.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The path to write.") var path: String
    @Argument(help: "key=value pairs, key=@file, key=-, or - for a JSON object on stdin.")
    var pairs: [String] = []
    @Flag(name: [.customShort("f"), .customLong("force")], help: "Write even with no data (accepted as Vault's CLI accepts it).")
    var force = false

    func run() async throws {
        let data = try Input.keyValues(pairs)
        let path = cleanPath(self.path)
        try await API.with(client) { api in
            try await writeData(api, method: .PUT, path: path, data: data, output: output)
        }
    }
}

/// `patch PATH k=v`: HTTP PATCH with a JSON merge patch.
struct PatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "patch", abstract: "Patch data at a path (JSON merge patch).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The path to patch.") var path: String
    @Argument(help: "key=value pairs, key=@file, or - for a JSON object on stdin.")
    var pairs: [String] = []

    func run() async throws {
        let data = try Input.keyValues(pairs)
        let path = cleanPath(self.path)
        try await API.with(client) { api in
            try await writeData(api, method: .PATCH, path: path, data: data, output: output)
        }
    }
}

/// `list PATH`: the `Keys` table; nothing there is "No value found", exit 2.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the keys under a path.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The path to list.") var path: String

    func run() async throws {
        var path = cleanPath(self.path)
        if !path.hasSuffix("/") { path += "/" }
        try await listPath(client, output, path)
    }
}

func listPath(_ client: ClientOptions, _ output: OutputOptions, _ path: String) async throws {
    try await API.with(client) { api in
        let r = try await api.request(.GET, path, query: [("list", "true")], doing: "listing \(path)")
        if r.status == 404 || (r.ok && r.data?["keys"] == nil) {
            Out.err("No value found at \(path)")
            throw ExitCode(2)
        }
        if r.status >= 400 { try API.fail(r, doing: "listing \(path)") }
        if output.field != nil {
            try Out.secret(r, output)
        } else {
            Out.keys(r, output)
        }
    }
}

/// `delete PATH`.
struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete data at a path.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The path to delete.") var path: String

    func run() async throws {
        let path = cleanPath(self.path)
        try await API.with(client) { api in
            let r = try await api.call(.DELETE, path, doing: "deleting \(path)")
            if output.json, let j = r.json { Out.print(Out.prettyJSON(j)); return }
            Out.print("Success! Data deleted (if it existed) at: \(path)")
        }
    }
}

/// `path-help PATH`: GET PATH?help=1, print data.help.
struct PathHelpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "path-help", abstract: "Show the help of a path.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The path.") var path: String

    func run() async throws {
        let path = cleanPath(self.path)
        try await API.with(client) { api in
            let r = try await api.call(.GET, path, query: [("help", "1")], doing: "retrieving help for \(path)")
            if output.json { Out.print(Out.prettyJSON(r.json ?? .null)); return }
            let help = r.data?["help"]?.stringValue ?? r.json?["help"]?.stringValue ?? ""
            Out.print(help)
        }
    }
}

/// `login [TOKEN]` or `login -method=M [-path=P] k=v...`: a token is checked with
/// lookup-self; any other method logs in at `auth/<path>/login` (userpass and ldap at
/// `login/<username>`, the password prompted for when not given; oidc through the browser
/// flow, `OIDCLogin.swift`; jwt with `role=R jwt=@file`). The token is stored in
/// ~/.coffer-token (0600).
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login", abstract: "Authenticate (a token, userpass, approle, any auth method) and store the token in ~/.coffer-token.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("method"), help: "Auth method: token (default), userpass, approle, or any mounted method's type.") var method = "token"
    @Option(name: .customLong("path"), help: "Where the auth method is mounted (default: its type).") var path: String?
    @Flag(name: .customLong("no-store"), help: "Do not write the token file.") var noStore = false
    @Flag(name: .customLong("no-print"), help: "Print nothing on success.") var noPrint = false
    @Argument(help: "The token (prompted for when omitted, or - to read stdin); for other methods, key=value pairs (username=U password=P, role_id=R secret_id=S, role=R jwt=@file; oidc: role=R port=8250 listenaddress=localhost skip_browser=true).")
    var args: [String] = []

    func run() async throws {
        if method != "token" { return try await loginWithMethod() }
        var token = args.first.map { $0.hasPrefix("token=") ? String($0.dropFirst(6)) : $0 } ?? Input.prompt("Token (will be hidden): ")
        if token == "-" {
            token = String(decoding: Input.readStdin(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard !token.isEmpty else {
            Out.err("Error authenticating: no token provided")
            throw ExitCode(2)
        }
        let tok = token
        try await API.with(client) { api in
            let r = try await api.call(.GET, "auth/token/lookup-self", token: tok, doing: "authenticating")
            guard let d = r.data else {
                Out.err("Error authenticating: empty response from token lookup")
                throw ExitCode(1)
            }
            try store(tok)
            if noPrint { return }
            // Present the lookup as an auth block, like `vault login` does.
            var auth: [String: JSONValue] = [
                "client_token": .string(tok),
                "accessor": d["accessor"] ?? "",
                "policies": d["policies"] ?? .array([]),
                "token_policies": d["policies"] ?? .array([]),
                "identity_policies": d["identity_policies"] ?? .array([]),
                "lease_duration": d["ttl"] ?? 0,
                "renewable": d["renewable"] ?? false,
                "orphan": d["orphan"] ?? false,
                "entity_id": d["entity_id"] ?? "",
                "token_type": d["type"] ?? "service",
                "num_uses": d["num_uses"] ?? 0,
            ]
            if let meta = d["meta"], !meta.isNull { auth["metadata"] = meta } else { auth["metadata"] = .null }
            var env = r.json?.objectValue ?? [:]
            env["data"] = .null
            env["auth"] = .object(auth)
            let shaped = APIResponse(method: r.method, url: r.url, status: r.status, body: [], json: .object(env))
            try printSuccess(shaped)
        }
    }

    /// A login through an auth method: its answer's token is the one stored.
    func loginWithMethod() async throws {
        var data = try Input.keyValues(args)
        let mount = cleanPath(path ?? method).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        var loginPath = "auth/\(mount)/login"
        if method == "userpass" || method == "ldap" {
            guard let user = data.removeValue(forKey: "username")?.stringValue, !user.isEmpty else {
                Out.err("Error authenticating: username=... is required for the \(method) method")
                throw ExitCode(2)
            }
            loginPath += "/" + user
            if data["password"] == nil { data["password"] = .string(Input.prompt("Password (will be hidden): ")) }
        }
        let body = data
        let oidc = method == "oidc"
        try await API.with(client) { api in
            let r = oidc
                ? try await OIDCLogin.run(api: api, mount: mount, options: body)
                : try await api.call(.POST, loginPath, body: .object(body), token: "", doing: "authenticating")
            if r.json?["wrap_info"]?.objectValue != nil {
                try Out.secret(r, output)  // wrapped (-wrap-ttl): nothing to store
                return
            }
            guard let token = r.auth?["client_token"]?.stringValue, !token.isEmpty else {
                Out.err("Error authenticating: the response holds no token")
                throw ExitCode(1)
            }
            try store(token)
            if noPrint { return }
            try printSuccess(r)
        }
    }

    func store(_ token: String) throws {
        guard !noStore else { return }
        do {
            try CLIConfig.writeTokenFile(token)
        } catch {
            Out.err("Error storing token: \(error)")
            throw ExitCode(1)
        }
    }

    func printSuccess(_ r: APIResponse) throws {
        if output.field == nil && !output.json {
            let stored = noStore ? "" : " The token is stored in \(CLIConfig.tokenFilePath()); future\ncommands will use it unless a token is given with -token or COFFER_TOKEN/VAULT_TOKEN."
            Out.print("Success! You are now authenticated.\(stored)\n")
        }
        try Out.secret(r, output)
    }
}

/// `unwrap [TOKEN]`: the response a wrapping token holds (the token given, or the client's
/// own token when none is), once.
struct UnwrapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unwrap", abstract: "Unwrap a wrapped response (once).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The wrapping token (default: the client's token).") var token: String?

    func run() async throws {
        try await API.with(client) { api in
            let r: APIResponse
            if let token, !token.isEmpty {
                r = try await api.call(.POST, "sys/wrapping/unwrap", body: ["token": .string(token)], doing: "unwrapping")
            } else {
                r = try await api.call(.POST, "sys/wrapping/unwrap", doing: "unwrapping")
            }
            guard r.json != nil else {
                Out.err("Error unwrapping: the wrapped response was empty")
                throw ExitCode(2)
            }
            try Out.secret(r, output)
        }
    }
}
