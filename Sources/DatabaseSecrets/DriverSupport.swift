import Foundation

// MARK: - Shared by the PostgreSQL and MySQL drivers

/// Secrets a driver keeps out of every message it returns: the connection's password (as
/// given and percent-encoded, as it may appear in a URL) and, for a failed statement, the
/// contents of the statement's string literals (a password being set or checked).
struct DriverSecrets: Sendable {
    let values: [String]

    init(_ secrets: [String]) {
        var all = Set<String>()
        for s in secrets where !s.isEmpty {
            all.insert(s)
            for allowed in [CharacterSet.alphanumerics, .urlUserAllowed, .urlPasswordAllowed] {
                if let encoded = s.addingPercentEncoding(withAllowedCharacters: allowed) { all.insert(encoded) }
            }
        }
        // Longest first, so that a secret containing another is removed whole.
        values = all.sorted { $0.count > $1.count }
    }

    /// Secrets this short are replaced only where a connection string or statement would
    /// hold them, not everywhere: replacing every `p` of a message would both mangle it and,
    /// by the gaps, show where the password's letters were.
    static let freeMatchLength = 8

    /// `message` trimmed, each secret replaced by `[password]` and each literal of at
    /// least four characters by `[redacted]`.
    func scrub(_ message: String, literals: [String] = []) -> String {
        var m = message
        for s in values {
            if s.count >= Self.freeMatchLength {
                m = m.replacingOccurrences(of: s, with: "[password]")
            } else {
                // The fields of a connection string: `:secret@` (URL), `password=secret`,
                // `password='secret'` and a quoted `"secret"` / `'secret'`.
                for (before, after) in [(":", "@"), ("password=", " "), ("password=", ""), ("password='", "'"), ("'", "'"), ("\"", "\"")] {
                    let whole = before + s + after
                    if after.isEmpty {
                        if m.hasSuffix(whole) { m = String(m.dropLast(whole.count)) + before + "[password]" }
                    } else {
                        m = m.replacingOccurrences(of: whole, with: before + "[password]" + after)
                    }
                }
            }
        }
        for l in Set(literals).filter({ $0.count >= 4 }).sorted(by: { $0.count > $1.count }) {
            m = m.replacingOccurrences(of: l, with: "[redacted]")
        }
        return m.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Just enough SQL lexing to find string literals.
enum SQLText {
    enum Dialect {
        /// `'...'` (`''` escapes a quote; `E'...'` also takes backslash escapes), `$tag$...$tag$`;
        /// `"..."` is an identifier.
        case postgreSQL
        /// `'...'` and `"..."` are strings (doubled quotes and backslash escapes);
        /// `` `...` `` is an identifier.
        case mySQL
    }

    /// The contents of every string literal in `sql`, both as written and unescaped;
    /// comments and quoted identifiers are skipped.
    static func stringLiterals(in sql: String, dialect: Dialect) -> [String] {
        let s = Array(sql.unicodeScalars)
        var out: [String] = []
        var i = 0
        func isWord(_ c: Unicode.Scalar) -> Bool { c == "_" || c.properties.isAlphabetic || ("0"..."9").contains(c) }
        /// Reads a quoted run starting after the opening quote at `i`; answers (raw, unescaped).
        func quoted(_ q: Unicode.Scalar, backslash: Bool) -> (String, String) {
            var raw = String.UnicodeScalarView()
            var plain = String.UnicodeScalarView()
            i += 1
            while i < s.count {
                let c = s[i]
                if backslash && c == "\\" && i + 1 < s.count {
                    raw.append(c)
                    raw.append(s[i + 1])
                    plain.append(s[i + 1])
                    i += 2
                    continue
                }
                if c == q {
                    if i + 1 < s.count && s[i + 1] == q {
                        raw.append(c)
                        raw.append(c)
                        plain.append(c)
                        i += 2
                        continue
                    }
                    i += 1
                    break
                }
                raw.append(c)
                plain.append(c)
                i += 1
            }
            return (String(raw), String(plain))
        }
        while i < s.count {
            let c = s[i]
            let next: Unicode.Scalar? = i + 1 < s.count ? s[i + 1] : nil
            if c == "-" && next == "-" {
                while i < s.count && s[i] != "\n" { i += 1 }
            } else if c == "/" && next == "*" {
                i += 2
                while i + 1 < s.count && !(s[i] == "*" && s[i + 1] == "/") { i += 1 }
                i += 2
            } else if c == "'" || (c == "\"" && dialect == .mySQL) {
                let escaped = dialect == .mySQL
                    || (i > 0 && (s[i - 1] == "E" || s[i - 1] == "e") && (i < 2 || !isWord(s[i - 2])))
                let (raw, plain) = quoted(c, backslash: escaped)
                out.append(raw)
                if plain != raw { out.append(plain) }
            } else if c == "\"" || (c == "`" && dialect == .mySQL) {
                _ = quoted(c, backslash: false)
            } else if c == "$" && dialect == .postgreSQL && !(i > 0 && isWord(s[i - 1])),
                      let end = s[(i + 1)...].firstIndex(of: "$"), s[(i + 1)..<end].allSatisfy(isWord) {
                let tag = Array(s[i...end])
                var j = end + 1
                var body = String.UnicodeScalarView()
                while j < s.count && !(s[j] == "$" && j + tag.count <= s.count && Array(s[j..<(j + tag.count)]) == tag) {
                    body.append(s[j])
                    j += 1
                }
                out.append(String(body))
                i = min(j + tag.count, s.count)
            } else {
                i += 1
            }
        }
        return out
    }
}
