import ArgumentParser
import CofferSDK
import Foundation
import TenantCore

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "ACL policies: list, read, write, delete, fmt.",
        subcommands: [PolicyList.self, PolicyRead.self, PolicyWrite.self, PolicyDelete.self, PolicyFmt.self])
}

struct PolicyList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List policy names.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await API.with(client) { api in
            let r = try await api.call(.GET, "sys/policies/acl", query: [("list", "true")], doing: "listing policies")
            let keys = r.data?["keys"]?.arrayValue ?? []
            if output.json {
                Out.print(Out.prettyJSON(.array(keys)))
            } else {
                for k in keys { Out.print(k.stringValue ?? Out.display(k)) }
            }
        }
    }
}

struct PolicyRead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "read", abstract: "Print a policy's text.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The policy name.") var name: String

    func run() async throws {
        let name = self.name.lowercased()
        try await API.with(client) { api in
            let r = try await api.request(.GET, "sys/policies/acl/\(name)", doing: "reading policy named \(name)")
            if r.status == 404 {
                Out.err("No policy named: \(name)")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "reading policy named \(name)") }
            if output.json || output.field != nil {
                try Out.secret(r, output)
                return
            }
            Out.print(r.data?["policy"]?.stringValue ?? "")
        }
    }
}

struct PolicyWrite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write", abstract: "Upload a policy from a file or - (stdin).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The policy name.") var name: String
    @Argument(help: "The policy file (HCL or JSON), or - for stdin.") var file: String

    func run() async throws {
        let name = self.name.lowercased()
        let bytes = file == "-" ? Input.readStdin() : try Input.readFile(file)
        let text = String(decoding: bytes, as: UTF8.self)
        try await API.with(client) { api in
            _ = try await api.call(.PUT, "sys/policies/acl/\(name)", body: ["policy": .string(text)], doing: "uploading policy")
            Out.print("Success! Uploaded policy: \(name)")
        }
    }
}

struct PolicyDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a policy.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The policy name.") var name: String

    func run() async throws {
        let name = self.name.lowercased()
        try await API.with(client) { api in
            _ = try await api.call(.DELETE, "sys/policies/acl/\(name)", doing: "deleting \(name)")
            Out.print("Success! Deleted policy: \(name)")
        }
    }
}

/// `policy fmt FILE`: validates locally with the server's HCL parser and rewrites the file
/// as canonical HCL (`path "x" { ... }` blocks, two-space indent, sorted).
struct PolicyFmt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fmt", abstract: "Validate and canonically format a policy file.")
    @Argument(help: "The policy file.") var file: String

    func run() async throws {
        let text = String(decoding: try Input.readFile(file), as: UTF8.self)
        let parsed: JSONValue
        do {
            parsed = try HCL.parseHCLOrJSON(text)
        } catch let e as CofferError {
            Out.err("Error parsing policy: \(e.message)")
            throw ExitCode(1)
        } catch {
            Out.err("Error parsing policy: \(error)")
            throw ExitCode(1)
        }
        let formatted: String
        do {
            formatted = try PolicyFormatter.format(parsed)
        } catch {
            Out.err("Error parsing policy: \(error)")
            throw ExitCode(1)
        }
        do {
            try Data(formatted.utf8).write(to: URL(fileURLWithPath: file))
        } catch {
            Out.err("Error writing formatted policy to \(file): \(error)")
            throw ExitCode(1)
        }
        Out.print("Success! Formatted policy: \(file)")
    }
}

enum PolicyFormatter {
    /// Canonical HCL from the JSON mapping of a policy.
    static func format(_ policy: JSONValue) throws -> String {
        guard case .object(let top) = policy else { throw CLIError("a policy must be an object") }
        var out: [String] = []
        for key in top.keys.sorted() where key != "path" {
            out.append("\(ident(key)) = \(value(top[key]!, indent: 0))")
        }
        if let paths = top["path"] {
            guard case .object(let byPath) = paths else { throw CLIError("\"path\" must be a block: path \"...\" { ... }") }
            for p in byPath.keys.sorted() {
                guard case .object(let body) = byPath[p]! else {
                    throw CLIError("path \"\(p)\": expected a block body")
                }
                var block = "path \(quote(p)) {\n"
                for k in body.keys.sorted() {
                    block += "  \(ident(k)) = \(value(body[k]!, indent: 1))\n"
                }
                block += "}"
                out.append(block)
            }
        }
        return out.joined(separator: "\n\n") + "\n"
    }

    static func ident(_ k: String) -> String {
        let ok = k.first.map { $0.isLetter || $0 == "_" } ?? false
            && k.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
        return ok ? k : quote(k)
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for ch in s.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\""
    }

    static func value(_ v: JSONValue, indent: Int) -> String {
        switch v {
        case .string(let s): return quote(s)
        case .array(let a): return "[" + a.map { value($0, indent: indent) }.joined(separator: ", ") + "]"
        case .object(let o):
            if o.isEmpty { return "{}" }
            let pad = String(repeating: "  ", count: indent + 1)
            var s = "{\n"
            for k in o.keys.sorted() { s += "\(pad)\(quote(k)) = \(value(o[k]!, indent: indent + 1))\n" }
            return s + String(repeating: "  ", count: indent) + "}"
        default:
            return String(decoding: v.serialized(), as: UTF8.self)
        }
    }
}
