import ArgumentParser
import CofferSDK
import Foundation

/// `-format` and `-field`, shared by the commands that print a response.
struct OutputOptions: ParsableArguments {
    @Option(name: .customLong("format"), help: "Output format: table or json (COFFER_FORMAT, VAULT_FORMAT).")
    var formatFlag: String?

    @Option(name: .customLong("field"), help: "Print only this field of the response data.")
    var field: String?

    /// The resolved format: flag, then COFFER_FORMAT, then VAULT_FORMAT, then table.
    var format: String {
        let env = ProcessInfo.processInfo.environment
        return (formatFlag ?? env["COFFER_FORMAT"] ?? env["VAULT_FORMAT"] ?? "table").lowercased()
    }

    var json: Bool { format == "json" }

    func validate() throws {
        guard ["table", "json"].contains(format) else {
            throw ValidationError("Invalid output format: \(format) (use table or json)")
        }
    }
}

/// Printing: Vault's aligned tables, pretty JSON, single fields.
enum Out {
    static func print(_ s: String) {
        FileHandle.standardOutput.write(Data((s.hasSuffix("\n") ? s : s + "\n").utf8))
    }

    static func err(_ s: String) {
        FileHandle.standardError.write(Data((s.hasSuffix("\n") ? s : s + "\n").utf8))
    }

    // MARK: tables

    /// Columns separated by four spaces, like Vault's `columnize` output.
    static func columns(_ rows: [[String]]) -> String {
        guard let n = rows.map(\.count).max(), n > 0 else { return "" }
        var widths = [Int](repeating: 0, count: n)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        var lines: [String] = []
        for r in rows {
            var line = ""
            for (i, c) in r.enumerated() {
                if i == r.count - 1 {
                    line += c
                } else {
                    line += c + String(repeating: " ", count: widths[i] - c.count + 4)
                }
            }
            while line.hasSuffix(" ") { line.removeLast() }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// A table with a header row underlined by dashes (`Key  Value` / `---  -----`).
    static func table(header: [String], _ rows: [[String]]) -> String {
        let underline = header.map { String(repeating: "-", count: $0.count) }
        return columns([header, underline] + rows)
    }

    static func keyValue(_ rows: [(String, String)]) -> String {
        table(header: ["Key", "Value"], rows.map { [$0.0, $0.1] })
    }

    /// `=== Header ===` padded to the width of the text below it.
    static func header(_ title: String, width: Int) -> String {
        let pad = max(3, (width - title.count - 2) / 2)
        let eq = String(repeating: "=", count: pad)
        return "\(eq) \(title) \(eq)"
    }

    /// The width of a table's header line (what Vault centres section titles on).
    static func width(_ text: String) -> Int {
        text.split(separator: "\n").first.map(\.count) ?? 0
    }

    // MARK: values

    /// Formats a value like Go's `%v`, which is what Vault's table output shows.
    static func display(_ v: JSONValue?, humanize key: String? = nil) -> String {
        guard let v else { return "<nil>" }
        if let key, isDurationKey(key), let i = v.intValue { return duration(i, infinite: false) }
        switch v {
        case .null: return "<nil>"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d):
            if d.rounded() == d && abs(d) < 1e15 { return String(Int64(d)) }
            return String(d)
        case .string(let s): return s.isEmpty ? "n/a" : s
        case .array(let a): return "[" + a.map { inner($0) }.joined(separator: " ") + "]"
        case .object(let o): return "map[" + o.keys.sorted().map { "\($0):\(inner(o[$0]!))" }.joined(separator: " ") + "]"
        }
    }

    private static func inner(_ v: JSONValue) -> String {
        if case .string(let s) = v { return s }
        return display(v)
    }

    /// `["a" "b"]`, Vault's `%q` rendering of policy lists.
    static func quotedList(_ v: JSONValue?) -> String {
        let items = v?.arrayValue?.map { "\"" + ($0.stringValue ?? display($0)) + "\"" } ?? []
        return "[" + items.joined(separator: " ") + "]"
    }

    static func isDurationKey(_ key: String) -> Bool {
        key == "ttl" || key == "period" || key.hasSuffix("_ttl")
    }

    /// Go's `time.Duration` string without trailing `0s`/`0m`: 3600 → `1h`, 90 → `1m30s`.
    static func duration(_ seconds: Int64, infinite: Bool = true) -> String {
        if seconds == 0 { return infinite ? "∞" : "0s" }
        var s = seconds
        let neg = s < 0
        if neg { s = -s }
        let h = s / 3600, m = (s % 3600) / 60, sec = s % 60
        var out = ""
        if h > 0 { out = "\(h)h\(m)m\(sec)s" } else if m > 0 { out = "\(m)m\(sec)s" } else { out = "\(sec)s" }
        if out.hasSuffix("m0s") { out.removeLast(2) }
        if out.hasSuffix("h0m") { out.removeLast(2) }
        return (neg ? "-" : "") + out
    }

    // MARK: JSON

    /// Indented JSON (two spaces, sorted keys), Vault's `-format=json`.
    static func prettyJSON(_ v: JSONValue) -> String {
        var out: [UInt8] = []
        writePretty(v, indent: 0, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static func writePretty(_ v: JSONValue, indent: Int, into out: inout [UInt8]) {
        let pad = { (n: Int) in [UInt8](repeating: UInt8(ascii: " "), count: n * 2) }
        switch v {
        case .array(let a) where !a.isEmpty:
            out.append(contentsOf: "[\n".utf8)
            for (i, e) in a.enumerated() {
                out.append(contentsOf: pad(indent + 1))
                writePretty(e, indent: indent + 1, into: &out)
                out.append(contentsOf: (i < a.count - 1 ? ",\n" : "\n").utf8)
            }
            out.append(contentsOf: pad(indent))
            out.append(UInt8(ascii: "]"))
        case .object(let o) where !o.isEmpty:
            out.append(contentsOf: "{\n".utf8)
            let keys = o.keys.sorted()
            for (i, k) in keys.enumerated() {
                out.append(contentsOf: pad(indent + 1))
                JSONValue.writeString(k, into: &out)
                out.append(contentsOf: ": ".utf8)
                writePretty(o[k]!, indent: indent + 1, into: &out)
                out.append(contentsOf: (i < keys.count - 1 ? ",\n" : "\n").utf8)
            }
            out.append(contentsOf: pad(indent))
            out.append(UInt8(ascii: "}"))
        default:
            v.write(into: &out)
        }
    }

    // MARK: secrets

    /// The rows Vault shows for an `auth` block (token create, renew, login).
    static func authRows(_ auth: JSONValue) -> [(String, String)] {
        var rows: [(String, String)] = [
            ("token", auth["client_token"]?.stringValue ?? ""),
            ("token_accessor", auth["accessor"]?.stringValue ?? ""),
            ("token_duration", duration(auth["lease_duration"]?.intValue ?? 0)),
            ("token_renewable", display(auth["renewable"] ?? .bool(false))),
            ("token_policies", quotedList(auth["token_policies"] ?? auth["policies"])),
            ("identity_policies", quotedList(auth["identity_policies"])),
            ("policies", quotedList(auth["policies"])),
        ]
        if let meta = auth["metadata"]?.objectValue {
            for k in meta.keys.sorted() { rows.append(("token_meta_\(k)", display(meta[k]))) }
        }
        return rows
    }

    /// Vault's `-field` lookup in an auth block: the table names and the raw keys.
    static func authField(_ auth: JSONValue, _ name: String) -> JSONValue? {
        switch name {
        case "token": return auth["client_token"]
        case "token_accessor": return auth["accessor"]
        case "token_duration": return .string(duration(auth["lease_duration"]?.intValue ?? 0))
        case "token_renewable": return auth["renewable"]
        default:
            if name.hasPrefix("token_meta_") { return auth["metadata"]?[String(name.dropFirst("token_meta_".count))] }
            return auth[name]
        }
    }

    /// Prints a response the way `vault read`/`write` do: `-field`, `-format=json` or a table.
    /// `data` overrides the data shown (KV v2 nests it); `humanizeTTL` renders ttl fields as durations.
    /// A wrapped response's `wrap_info` as Vault's CLI names its rows.
    static func wrapRows(_ w: JSONValue) -> [(String, JSONValue)] {
        [
            ("wrapping_token", w["token"] ?? ""), ("wrapping_accessor", w["accessor"] ?? ""),
            ("wrapping_token_ttl", .string(duration(w["ttl"]?.intValue ?? 0))),
            ("wrapping_token_creation_time", w["creation_time"] ?? ""), ("wrapping_token_creation_path", w["creation_path"] ?? ""),
        ] + ((w["wrapped_accessor"]?.stringValue ?? "").isEmpty ? [] : [("wrapped_accessor", w["wrapped_accessor"]!)])
    }

    static func secret(_ r: APIResponse, _ o: OutputOptions, data overrideData: JSONValue? = nil, humanizeTTL: Bool = false) throws {
        if let wrap = r.json?["wrap_info"], wrap.objectValue != nil {
            let rows = wrapRows(wrap)
            if let name = o.field {
                guard let v = rows.first(where: { $0.0 == name })?.1 ?? wrap[name] else {
                    err("Field \"\(name)\" not present in secret")
                    throw ExitCode(1)
                }
                print(v.stringValue ?? display(v))
            } else if o.json {
                print(prettyJSON(r.json ?? .null))
            } else {
                warnings(r)
                print(keyValue(rows.map { ($0.0, $0.1.stringValue ?? display($0.1)) }))
            }
            return
        }
        let data = overrideData ?? r.data ?? (r.auth == nil ? topLevelFields(r) : nil)
        if let name = o.field {
            var value: JSONValue?
            if let auth = r.auth { value = authField(auth, name) }
            if value == nil { value = data?[name] }
            if value == nil { value = r.json?[name] }
            guard let value else {
                err("Field \"\(name)\" not present in secret")
                throw ExitCode(1)
            }
            if o.json {
                print(prettyJSON(value))
            } else if case .string(let s) = value {
                print(s)
            } else {
                print(display(value))
            }
            return
        }
        if o.json {
            print(prettyJSON(r.json ?? .null))
            return
        }
        warnings(r)
        var rows: [(String, String)] = []
        if let auth = r.auth {
            rows = authRows(auth)
        } else {
            let leaseID = r.json?["lease_id"]?.stringValue ?? ""
            let leaseDuration = r.json?["lease_duration"]?.intValue ?? 0
            if !leaseID.isEmpty {
                rows.append(("lease_id", leaseID))
                rows.append(("lease_duration", duration(leaseDuration)))
                rows.append(("lease_renewable", display(r.json?["renewable"] ?? .bool(false))))
            } else if leaseDuration > 0 {
                rows.append(("refresh_interval", duration(leaseDuration)))
            }
            if let obj = data?.objectValue {
                for k in obj.keys.sorted() { rows.append((k, display(obj[k], humanize: humanizeTTL ? k : nil))) }
            }
        }
        if !rows.isEmpty { print(keyValue(rows)) }
    }

    /// The keys of Vault's response envelope (what every logical response carries).
    static let envelopeKeys: Set<String> = [
        "request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth", "mount_type",
    ]

    /// Vault's legacy `sys/` endpoints (`sys/leader`, `sys/health`, `sys/seal-status`, ...) answer
    /// with their fields at the top level and no `data`: those fields, without the envelope's.
    static func topLevelFields(_ r: APIResponse) -> JSONValue? {
        guard var obj = r.json?.objectValue else { return nil }
        for k in envelopeKeys { obj[k] = nil }
        return obj.isEmpty ? nil : .object(obj)
    }

    /// Vault prints response warnings on stderr in table mode.
    static func warnings(_ r: APIResponse) {
        guard let ws = r.json?["warnings"]?.arrayValue?.compactMap(\.stringValue), !ws.isEmpty else { return }
        err("WARNING! The following warnings were returned from Coffer:\n\n" + ws.map { "  * " + $0 }.joined(separator: "\n") + "\n")
    }

    /// `Keys` / `----` and one key a line (LIST output); JSON: the array of keys.
    static func keys(_ r: APIResponse, _ o: OutputOptions) {
        let keys = r.data?["keys"]?.arrayValue ?? []
        if o.json {
            print(prettyJSON(.array(keys)))
            return
        }
        warnings(r)
        print(table(header: ["Keys"], keys.map { [$0.stringValue ?? display($0)] }))
    }
}
