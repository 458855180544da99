import ArgumentParser
import CofferSDK
import Foundation

/// The seal-status table shared by `status` and `operator unseal`.
/// A seal-status document (status, unseal): one field, raw JSON, or the table.
func printSealDocument(_ s: JSONValue, _ output: OutputOptions) throws {
    if let f = output.field {
        guard let v = s[f] else {
            Out.err("Field \"\(f)\" not present in secret")
            throw ExitCode(1)
        }
        Out.print(output.json ? Out.prettyJSON(v) : Out.display(v))
    } else if output.json {
        Out.print(Out.prettyJSON(s))
    } else {
        printSealStatus(s)
    }
}

func printSealStatus(_ s: JSONValue) {
    let sealed = s["sealed"]?.boolValue ?? true
    // Under an auto seal the shares are recovery shares (Vault's wording).
    let recovery = s["recovery_seal"]?.boolValue ?? false
    var rows: [(String, String)] = [("Seal Type", s["type"]?.stringValue ?? "shamir")]
    if recovery { rows.append(("Recovery Seal Type", "shamir")) }
    rows += [
        ("Initialized", Out.display(s["initialized"] ?? false)),
        ("Sealed", Out.display(s["sealed"] ?? true)),
        (recovery ? "Total Recovery Shares" : "Total Shares", Out.display(s["n"] ?? 0)),
        ("Threshold", Out.display(s["t"] ?? 0)),
    ]
    if sealed {
        rows.append(("Unseal Progress", "\(s["progress"]?.intValue ?? 0)/\(s["t"]?.intValue ?? 0)"))
        rows.append(("Unseal Nonce", Out.display(s["nonce"] ?? "")))
        if let why = s["auto_unseal_error"]?.stringValue, !why.isEmpty { rows.append(("Auto-unseal Error", why)) }
        if s["migration"]?.boolValue == true { rows.append(("Seal Migration in Progress", "true")) }
    }
    rows.append(("Version", Out.display(s["version"] ?? "")))
    rows.append(("Build Date", Out.display(s["build_date"] ?? "")))
    rows.append(("Storage Type", Out.display(s["storage_type"] ?? "")))
    if !sealed {
        rows.append(("Cluster Name", Out.display(s["cluster_name"] ?? "")))
        rows.append(("Cluster ID", Out.display(s["cluster_id"] ?? "")))
    }
    let ha = s["ha_enabled"]?.boolValue ?? false
    rows.append(("HA Enabled", ha ? "true" : "false"))
    if ha, !sealed {
        // Filled by `status` from sys/leader, as `vault status` shows them.
        rows.append(("HA Cluster", Out.display(s["leader_cluster_address"] ?? "n/a")))
        rows.append(("HA Mode", s["is_self"]?.boolValue == true ? "active" : "standby"))
        if s["is_self"]?.boolValue != true { rows.append(("Active Node Address", Out.display(s["leader_address"] ?? ""))) }
    }
    Out.print(Out.keyValue(rows))
}

/// `status`: exit 0 unsealed, 2 sealed, 1 on error (like `vault status`).
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Print the seal status (exit 2 when sealed).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let sealed: Bool = try await API.with(client) { api in
            let r = try await api.call(.GET, "sys/seal-status", doing: "checking seal status")
            guard var s = r.json else {
                Out.err("Error checking seal status: empty response")
                throw ExitCode(1)
            }
            // HA: who is active (sys/leader answers without a token once unsealed).
            if s["sealed"]?.boolValue == false, case .object(var o) = s,
               let leader = try? await api.request(.GET, "sys/leader", doing: "reading the HA status").json,
               leader["ha_enabled"]?.boolValue == true {
                for key in ["ha_enabled", "is_self", "leader_address", "leader_cluster_address"] { o[key] = leader[key] }
                s = .object(o)
            }
            try printSealDocument(s, output)
            return s["sealed"]?.boolValue ?? true
        }
        if sealed { throw ExitCode(2) }
    }
}

struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Operator commands: init, unseal, seal, rotate, key-status, snapshot.",
        subcommands: [OperatorInit.self, OperatorUnseal.self, OperatorSeal.self, OperatorRotate.self, OperatorKeyStatus.self, OperatorSnapshot.self,
                      OperatorGenerateRoot.self])
}

struct OperatorInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Initialize the server: key shares and the initial root token.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("key-shares"), help: "Number of key shares.") var keyShares = 5
    @Option(name: .customLong("key-threshold"), help: "Shares needed to unseal.") var keyThreshold = 3
    @Option(name: .customLong("recovery-shares"), help: "Recovery key shares (auto seals).") var recoveryShares = 5
    @Option(name: .customLong("recovery-threshold"), help: "Recovery shares needed for quorum operations (auto seals).") var recoveryThreshold = 3
    @Flag(name: .customLong("status"), help: "Only check: exit 0 if initialized, 2 if not.") var statusOnly = false

    func run() async throws {
        if statusOnly {
            let initialized: Bool = try await API.with(client) { api in
                let r = try await api.call(.GET, "sys/init", doing: "checking init status")
                return r.json?["initialized"]?.boolValue ?? false
            }
            Out.print(initialized ? "Coffer is initialized" : "Coffer is not initialized")
            if !initialized { throw ExitCode(2) }
            return
        }
        try await API.with(client) { api in
            let body: JSONValue = ["secret_shares": .int(Int64(keyShares)), "secret_threshold": .int(Int64(keyThreshold)),
                                   "recovery_shares": .int(Int64(recoveryShares)), "recovery_threshold": .int(Int64(recoveryThreshold))]
            let r = try await api.call(.PUT, "sys/init", body: body, doing: "initializing")
            guard let j = r.json else {
                Out.err("Error initializing: empty response")
                throw ExitCode(1)
            }
            if let f = output.field {
                guard let v = j[f] else {
                    Out.err("Field \"\(f)\" not present in secret")
                    throw ExitCode(1)
                }
                Out.print(v.stringValue ?? (output.json ? Out.prettyJSON(v) : Out.display(v)))
                return
            }
            if output.json {
                Out.print(Out.prettyJSON(j))
                return
            }
            let keys = (j["keys_base64"] ?? j["keys"])?.arrayValue ?? []
            let recovery = (j["recovery_keys_base64"] ?? j["recovery_keys"])?.arrayValue ?? []
            var text = ""
            for (i, k) in keys.enumerated() { text += "Unseal Key \(i + 1): \(k.stringValue ?? "")\n" }
            for (i, k) in recovery.enumerated() { text += "Recovery Key \(i + 1): \(k.stringValue ?? "")\n" }
            if keys.isEmpty && !recovery.isEmpty {
                text += "\nInitial Root Token: \(j["root_token"]?.stringValue ?? "")\n\n"
                text += "Coffer initialized with \(recovery.count) recovery key shares and a key threshold of \(recoveryThreshold).\n"
                text += "The auto seal unseals the server; recovery keys authorize rekey and generate-root.\n"
                Out.print(text)
                return
            }
            text += "\nInitial Root Token: \(j["root_token"]?.stringValue ?? "")\n\n"
            text += """
                Coffer initialized with \(keyShares) key shares and a key threshold of \(keyThreshold). Please
                securely distribute the key shares printed above. When the server is re-sealed,
                restarted, or stopped, you must supply at least \(keyThreshold) of these keys to unseal it
                before it can start servicing requests.
                """
            Out.print(text)
        }
    }
}

struct OperatorUnseal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unseal", abstract: "Submit one unseal key share (prompted for when omitted).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("reset"), help: "Discard the shares submitted so far.") var reset = false
    @Flag(name: .customLong("migrate"), help: "Complete a seal migration with the old seal's shares.") var migrate = false
    @Argument(help: "The unseal key share (hex or base64).") var key: String?

    func run() async throws {
        var body: JSONValue
        if reset {
            body = ["reset": true]
        } else {
            var key = self.key ?? Input.prompt("Unseal Key (will be hidden): ")
            if key == "-" { key = String(decoding: Input.readStdin(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
            guard !key.isEmpty else {
                Out.err("Error unsealing: no unseal key provided")
                throw ExitCode(2)
            }
            body = ["key": .string(key)]
            if migrate { body = ["key": .string(key), "migrate": true] }
        }
        try await API.with(client) { api in
            let r = try await api.call(.PUT, "sys/unseal", body: body, doing: "unsealing")
            let s = r.json ?? .null
            try printSealDocument(s, output)
        }
    }
}

struct OperatorSeal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "seal", abstract: "Seal the server.")
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await API.with(client) { api in
            _ = try await api.call(.PUT, "sys/seal", doing: "sealing")
            Out.print("Success! Coffer is sealed.")
        }
    }
}

func printKeyStatus(_ r: APIResponse, _ output: OutputOptions) throws {
    let d = r.data ?? r.json ?? .null
    if output.field != nil || output.json {
        try Out.secret(r, output)
        return
    }
    Out.print(Out.columns([
        ["Key Term", Out.display(d["term"] ?? 0)],
        ["Install Time", Out.display(d["install_time"] ?? "")],
        ["Encryption Count", Out.display(d["encryptions"] ?? 0)],
    ]))
}

struct OperatorRotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rotate", abstract: "Rotate the barrier encryption key.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await API.with(client) { api in
            _ = try await api.call(.PUT, "sys/rotate", doing: "rotating key")
            let r = try await api.call(.GET, "sys/key-status", doing: "reading key status")
            if output.field == nil && !output.json { Out.print("Success! Rotated key\n") }
            try printKeyStatus(r, output)
        }
    }
}

struct OperatorKeyStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "key-status", abstract: "Show the active barrier key term.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.call(.GET, "sys/key-status", doing: "reading key status")
            try printKeyStatus(r, output)
        }
    }
}
