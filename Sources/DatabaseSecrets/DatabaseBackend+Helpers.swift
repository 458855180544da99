import CofferSDK
import Foundation
import Logging
import Synchronization

// MARK: - helpers

extension DatabaseBackend {
    static func listResponse(_ keys: [String]) -> LogicalResponse? {
        keys.isEmpty ? nil : .list(keys)
    }

    static func stringArray(_ a: [String]) -> JSONValue { .array(a.map { .string($0) }) }

    /// Vault's `GenericNameRegex`: word characters, `-` and `.`, starting and ending with a
    /// word character.
    @discardableResult
    static func checkName(_ name: String, what: String = "name") throws(CofferError) -> String {
        func word(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
        }
        let b = Array(name.utf8)
        guard let first = b.first, let last = b.last, word(first), word(last),
              b.allSatisfy({ word($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }), b.count <= 256 else {
            throw CofferError.invalid("invalid \(what) \"\(name.prefix(64))\": use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'")
        }
        return name
    }

    /// Refuses a user name that could break out of the quotes of a statement template.
    ///
    /// Creation, revocation and rotation statements are admin-written templates such as
    /// `ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'`: values are substituted as text,
    /// inside whatever quotes the template uses. Generated names and passwords only hold
    /// letters, digits, `-` and `_`; a name that comes from a request (a static role's
    /// `username`, the connection's own user) must not hold a quote, a backslash, a `;`
    /// or a control character, or it could end the quoted name and inject SQL.
    static func checkSafeName(_ s: String, what: String) throws(CofferError) {
        guard !s.isEmpty else { throw CofferError.invalid("\(what) is empty") }
        let unsafe = s.unicodeScalars.contains { c in
            c == "'" || c == "\"" || c == "`" || c == "\\" || c == ";" || c.value < 0x20 || c.value == 0x7F
        }
        guard !unsafe else {
            throw CofferError.invalid("\(what) must not contain quotes, backslashes, ';' or control characters: statements embed it between quotes")
        }
    }

    static func checkCredentialType(_ t: String) throws(CofferError) -> String {
        guard t == "password" else {
            throw CofferError.invalid("credential_type \"\(t.prefix(64))\" is not supported: only \"password\"")
        }
        return t
    }

    /// `credential_config` only configures what Coffer does not support yet (per-role
    /// password policies, RSA keys, certificates): refused rather than ignored.
    static func refuseCredentialConfig(_ f: FieldValues) throws(CofferError) {
        switch f["credential_config"] {
        case nil, .null?: return
        case .object(let o)? where o.isEmpty: return
        case .string(let s)? where s.isEmpty: return
        default: throw CofferError.invalid("credential_config is not supported yet (password policies and key credentials are not available)")
        }
    }

    /// A statements field: a list of strings or one string (Vault's `TypeStringSlice`).
    /// Empty entries are dropped.
    static func statementList(_ v: JSONValue?, field: String) throws(CofferError) -> [String] {
        switch v {
        case nil, .null?: return []
        case .string(let s)?: return s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? [] : [s]
        case .array(let a)?:
            var out: [String] = []
            for e in a {
                guard case .string(let s) = e else { throw CofferError.invalid("\(field) must be a list of strings") }
                if !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { out.append(s) }
            }
            return out
        default:
            throw CofferError.invalid("\(field) must be a string or a list of strings")
        }
    }

    /// Statement templates → SQL statements: each template is split as Vault does (a JSON
    /// array, or base64 of one, or text split on `;` outside quotes; a PostgreSQL block with
    /// `END` is kept whole), then `{{key}}` is replaced by each value.
    static func expand(_ templates: [String], _ values: [String: String]) -> [String] {
        var out: [String] = []
        for t in templates {
            for piece in splitStatements(t) {
                var s = piece
                for (k, v) in values { s = s.replacingOccurrences(of: "{{\(k)}}", with: v) }
                s = s.trimmingCharacters(in: .whitespacesAndNewlines)
                if !s.isEmpty { out.append(s) }
            }
        }
        return out
    }

    static func splitStatements(_ template: String) -> [String] {
        var text = template.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { return [] }
        if let data = Data(base64Encoded: text), let decoded = String(data: data, encoding: .utf8) { text = decoded }
        if text.hasPrefix("["), case .array(let a)? = try? JSONValue.parse(text) {
            let strings = a.compactMap(\.stringValue)
            if strings.count == a.count { return strings }
        }
        var pieces: [String] = []
        var current = String.UnicodeScalarView()
        var outside = String.UnicodeScalarView()
        var quote: Unicode.Scalar?
        var dollarTag: [Unicode.Scalar]?
        let s = Array(text.unicodeScalars)
        var i = 0
        while i < s.count {
            let c = s[i]
            if let tag = dollarTag {
                if c == "$", i + tag.count <= s.count, Array(s[i..<(i + tag.count)]) == tag {
                    current.append(contentsOf: tag)
                    i += tag.count
                    dollarTag = nil
                    continue
                }
            } else if let q = quote {
                if c == q { quote = nil }
            } else if c == "'" || c == "\"" || c == "`" {
                quote = c
            } else if c == "$", let end = s[(i + 1)...].firstIndex(of: "$"),
                      s[(i + 1)..<end].allSatisfy({ $0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0) }),
                      !(i > 0 && (s[i - 1].properties.isAlphabetic || ("0"..."9").contains(s[i - 1]))) {
                let tag = Array(s[i...end])
                current.append(contentsOf: tag)
                i = end + 1
                dollarTag = tag
                continue
            } else if c == ";" {
                pieces.append(String(current))
                current = String.UnicodeScalarView()
                outside.append(" ")
                i += 1
                continue
            } else {
                outside.append(c)
            }
            current.append(c)
            i += 1
        }
        pieces.append(String(current))
        // Vault keeps a PostgreSQL statement with an END keyword (outside literals) whole.
        let bare = " " + String(outside).uppercased() + " "
        var from = bare.startIndex
        while let r = bare.range(of: "END", range: from..<bare.endIndex) {
            if !bare[bare.index(before: r.lowerBound)].isLetterOrDigitOrUnderscore, !bare[r.upperBound].isLetterOrDigitOrUnderscore {
                return [text]
            }
            from = r.upperBound
        }
        return pieces
    }

    /// Replaces every occurrence of a secret in a message coming back from a database.
    static func scrub(_ message: String, secrets: [String]) -> String {
        var m = message
        for s in secrets where s.count >= 4 { m = m.replacingOccurrences(of: s, with: "[redacted]") }
        return m
    }

    static func databaseMessage(_ error: any Error) -> String {
        switch error {
        case let e as DatabaseError: e.message
        case let e as CofferError: e.message
        case is CancellationError: "the request was cancelled"
        default: "internal error running the database call"
        }
    }

    /// Maps a failure of a database call to a client-safe `CofferError`: unreachable →
    /// `.unavailable` (503), refused statement or bad configuration → `.invalid` (400).
    static func failure(_ error: any Error, database: String, action: String, secrets: [String]) -> CofferError {
        let message = scrub(databaseMessage(error), secrets: secrets)
        switch error {
        case let e as CofferError:
            return e
        case let e as DatabaseError:
            switch e.kind {
            case .unavailable: return CofferError(.unavailable, "database \"\(database)\" is unavailable: \(message)")
            case .statement: return CofferError.invalid("\(action): \(message)")
            case .configuration: return CofferError.invalid("database \"\(database)\" is misconfigured: \(message)")
            }
        default:
            return CofferError(.unavailable, "database \"\(database)\" is unavailable: \(message)")
        }
    }

    /// Where a literal password sits in a connection string (URL or DSN userinfo, or a
    /// `password=` parameter); nil when there is none or it is the `{{password}}` placeholder.
    static func passwordRange(in url: String) -> Range<String.Index>? { passwordRanges(in: url).first }

    static func passwordRanges(in url: String) -> [Range<String.Index>] {
        var ranges: [Range<String.Index>] = []
        let query = url.firstIndex(of: "?") ?? url.endIndex
        let head = url[..<query]
        let start = head.range(of: "://")?.upperBound ?? head.startIndex
        if let at = head[start...].lastIndex(of: "@"), let colon = head[start..<at].firstIndex(of: ":") {
            let r = head.index(after: colon)..<at
            if !r.isEmpty && url[r] != "{{password}}" { ranges.append(r) }
        }
        var searchFrom = url.startIndex
        while let key = url.range(of: "password=", options: .caseInsensitive, range: searchFrom..<url.endIndex) {
            searchFrom = key.upperBound
            if key.lowerBound > url.startIndex {
                let before = url[url.index(before: key.lowerBound)]
                guard before == "?" || before == "&" || before == " " || before == ";" else { continue }
            }
            var end = key.upperBound
            if end < url.endIndex, url[end] == "'" {
                end = url[url.index(after: end)...].firstIndex(of: "'").map { url.index(after: $0) } ?? url.endIndex
            } else {
                end = url[key.upperBound...].firstIndex(where: { $0 == "&" || $0 == " " || $0 == ";" }) ?? url.endIndex
            }
            let r = key.upperBound..<end
            if !r.isEmpty && url[r] != "{{password}}" && url[r] != "'{{password}}'",
               !ranges.contains(where: { $0.overlaps(r) }) {
                ranges.append(r)
            }
        }
        return ranges.sorted { $0.lowerBound < $1.lowerBound }
    }

    /// The connection string with any literal password replaced by `xxxxx` (Go's `URL.Redacted`).
    static func redactConnectionURL(_ url: String) -> String {
        var u = url
        for r in passwordRanges(in: url).reversed() { u.replaceSubrange(r, with: "xxxxx") }
        return u
    }
}

extension Character {
    fileprivate var isLetterOrDigitOrUnderscore: Bool { isLetter || isNumber || self == "_" }
}
