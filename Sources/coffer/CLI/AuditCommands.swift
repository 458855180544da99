import ArgumentParser
import CofferSDK
import Foundation
import TenantCore
import Audit

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Audit devices: list, enable, disable, and verify a log's hash chain.",
        subcommands: [AuditList.self, AuditEnable.self, AuditDisable.self, AuditVerify.self])
}

struct AuditList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List enabled audit devices.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.call(.GET, "sys/audit", doing: "listing audit devices")
            let devices = r.data?.objectValue ?? [:]
            if output.json {
                Out.print(Out.prettyJSON(.object(devices)))
            } else {
                for (path, info) in devices.sorted(by: { $0.key < $1.key }) {
                    Out.print("\(path)\t\(info["type"]?.stringValue ?? "")\t\(info["description"]?.stringValue ?? "")")
                }
            }
        }
    }
}

struct AuditEnable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable", abstract: "Enable an audit device: coffer audit enable file file_path=/var/log/coffer/audit.log")
    @OptionGroup var client: ClientOptions
    @Option(name: .long, help: "Where to enable it (default: the type).") var path: String?
    @Option(name: .long, help: "A description.") var description: String = ""
    @Argument(help: "Device type: file, syslog or socket.") var type: String
    @Argument(help: "Device options as key=value.") var options: [String] = []

    func run() async throws {
        let opts = try stringPairs(options, what: "options")
        let at = (path ?? type).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        try await API.with(client) { api in
            _ = try await api.call(.PUT, "sys/audit/\(at)", body: ["type": .string(type), "description": .string(description), "options": .object(opts)], doing: "enabling audit device")
            Out.print("Success! Enabled the \(type) audit device at: \(at)/")
        }
    }
}

struct AuditDisable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Disable an audit device.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The device path.") var path: String

    func run() async throws {
        let at = path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        try await API.with(client) { api in
            _ = try await api.call(.DELETE, "sys/audit/\(at)", doing: "disabling audit device")
            Out.print("Success! Disabled audit device (if it was enabled) at: \(at)/")
        }
    }
}

/// Offline: reads the files, needs no server. Exit 0 with "ok, N entries", else 1 with the
/// first missing, altered or reordered entry.
struct AuditVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Verify the hash chain of audit log files (oldest first, rotated files included).")
    @Option(name: .long, help: "The device's `prefix` option, if it has one.") var prefix: String?
    @Option(name: .long, help: "The expected chain head (seq:hash, from GET sys/audit-chain/<path>) to detect a truncated tail.") var head: String?
    @Argument(help: "Audit log files, oldest first.") var files: [String]

    func run() throws {
        guard !files.isEmpty else { throw ValidationError("at least one file is required") }
        var expected: AuditChainHead?
        if let head {
            guard let h = AuditChainHead(head) else { throw ValidationError("--head must be seq:hash") }
            expected = h
        }
        let result: AuditChainVerification
        do {
            result = try AuditChainVerifier.verify(files: files, prefix: prefix, expectedHead: expected)
        } catch let e as CofferError {
            FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
            throw ExitCode(1)
        }
        switch result {
        case .ok(let entries, _, _):
            Out.print("ok, \(entries) entries")
        case .failed(let problem):
            FileHandle.standardError.write(Data("\(problem.description)\n".utf8))
            throw ExitCode(1)
        }
    }
}
