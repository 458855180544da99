import ArgumentParser
import CofferSDK
import Foundation

/// Reading `k=v` arguments, files and stdin the way Vault's CLI does.
enum Input {
    static func readStdin() -> [UInt8] {
        Array(FileHandle.standardInput.readDataToEndOfFile())
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            Out.err("Error reading file \(path): no such file or not readable")
            throw ExitCode(1)
        }
        return Array(d)
    }

    /// A secret typed at a prompt: hidden on a terminal, otherwise one line of stdin.
    static func prompt(_ text: String) -> String {
        if isatty(0) == 1, let p = getpass(text) {
            return String(cString: p).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        FileHandle.standardError.write(Data(text.utf8))
        return (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Parses `k=v`, `k=@file`, `k=-` (stdin), or a single `-` / `@file.json` holding a JSON object.
    /// A key given twice becomes a list, as in Vault.
    static func keyValues(_ args: [String]) throws -> [String: JSONValue] {
        if args.count == 1, args[0] == "-" || (args[0].hasPrefix("@") && !args[0].contains("=")) {
            let bytes = args[0] == "-" ? readStdin() : try readFile(String(args[0].dropFirst()))
            do {
                guard case .object(let o) = try JSONValue.parse(bytes) else {
                    Out.err("Error parsing JSON input: expected a JSON object")
                    throw ExitCode(1)
                }
                return o
            } catch let e as ExitCode {
                throw e
            } catch {
                Out.err("Error parsing JSON input: \(error)")
                throw ExitCode(1)
            }
        }
        var out: [String: JSONValue] = [:]
        var stdinUsed = false
        for arg in args {
            guard let eq = arg.firstIndex(of: "="), eq != arg.startIndex else {
                Out.err("Failed to parse K=V data: invalid key/value pair \"\(arg)\"")
                throw ExitCode(1)
            }
            let key = String(arg[..<eq])
            var value = String(arg[arg.index(after: eq)...])
            if value == "-" {
                guard !stdinUsed else {
                    Out.err("Failed to parse K=V data: stdin (-) may be used only once")
                    throw ExitCode(1)
                }
                stdinUsed = true
                value = String(decoding: readStdin(), as: UTF8.self)
                if value.hasSuffix("\n") { value.removeLast() }
            } else if value.hasPrefix("@") {
                value = String(decoding: try readFile(String(value.dropFirst())), as: UTF8.self)
            }
            switch out[key] {
            case nil: out[key] = .string(value)
            case .array(var a)?:
                a.append(.string(value))
                out[key] = .array(a)
            case let old?: out[key] = .array([old, .string(value)])
            }
        }
        return out
    }

    /// Durations are passed through as strings (`1h`, `30m`, `3600`): the server parses them.
    static func duration(_ s: String?) -> JSONValue? {
        guard let s, !s.isEmpty else { return nil }
        if let i = Int64(s) { return .int(i) }
        return .string(s)
    }
}
