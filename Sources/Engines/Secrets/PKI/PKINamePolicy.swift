import CofferSDK
import Foundation

/// What names a role lets into a certificate (Vault's `validateNames` and
/// `validateCommonName`): hostnames and wildcards, localhost, allowed domains as bare names,
/// subdomains or globs, e-mail addresses by their domain, URI and other SANs by glob.
struct PKINamePolicy {
    let role: PKIRole

    static func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) }

    /// One DNS label: letters, digits, inner hyphens (on the bytes).
    static func isLabel(_ s: Substring) -> Bool { isLabel(s.utf8) }

    static func isLabel(_ u: Substring.UTF8View) -> Bool {
        guard let f = u.first, let l = u.last, u.count <= 63 else { return false }
        return alnum(f) && alnum(l) && u.allSatisfy { alnum($0) || $0 == 0x2d }
    }

    /// `^(\*\.)?(label\.)*label\.?$`
    static func isHostname(_ name: String) -> Bool {
        var n = Substring(name)
        guard !n.isEmpty, n.utf8.count <= 253 else { return false }
        if n.hasPrefix("*.") { n = n.dropFirst(2) }
        if n.utf8.last == 0x2e { n = n.dropLast() }
        guard !n.isEmpty else { return false }
        var u = n.utf8
        while let dot = u.firstIndex(of: 0x2e) {
            guard isLabel(u[..<dot]) else { return false }
            u = u[u.index(after: dot)...]
        }
        return isLabel(u)
    }

    /// A wildcard label: `*`, `*x`, `x*`, `x*y` with labels around the star.
    static func isWildcardLabel(_ s: Substring) -> Bool {
        guard let star = s.firstIndex(of: "*") else { return false }
        let before = s[..<star], after = s[s.index(after: star)...]
        return (before.isEmpty || isLabel(before)) && (after.isEmpty || isLabel(after))
    }

    /// Whether `name` (a common name or DNS/e-mail SAN) is allowed; nil when it is, else the
    /// name itself (Vault reports the first name refused).
    func allows(_ name: String) -> Bool {
        var reduced = name
        var emailDomain = ""
        let isEmail = name.contains("@")
        if isEmail {
            let parts = name.split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count == 2 else { return false }
            reduced = String(parts[1])
            emailDomain = reduced
        }
        let isWildcard = reduced.contains("*")
        var wildcardLabel = Substring("")
        if isWildcard {
            guard role.allowWildcardCertificates, !isEmail, reduced.filter({ $0 == "*" }).count == 1 else { return false }
            if let dot = reduced.firstIndex(of: ".") {
                wildcardLabel = reduced[..<dot]
                reduced = String(reduced[reduced.index(after: dot)...])
            } else {
                wildcardLabel = Substring(reduced)
                reduced = ""
            }
            guard !reduced.contains("*") else { return false }
        }
        if role.enforceHostnames {
            if !reduced.isEmpty && !Self.isHostname(reduced) { return false }
            if isWildcard && !Self.isWildcardLabel(wildcardLabel) { return false }
        }
        if role.allowAnyName { return true }
        if role.allowLocalhost {
            let local = ["localhost", "localdomain"]
            if local.contains(reduced) && !isWildcard { return true }
            if role.allowSubdomains {
                if local.contains(where: { reduced.hasSuffix("." + $0) }) { return true }
                if isWildcard && local.contains(reduced) { return true }
            }
        }
        for d in role.allowedDomains where !d.isEmpty {
            if role.allowBareDomains && (name.caseInsensitiveCompare(d) == .orderedSame || (isEmail && emailDomain.caseInsensitiveCompare(d) == .orderedSame)) {
                return true
            }
            if role.allowSubdomains {
                let base = d.hasPrefix("*.") ? String(d.dropFirst(2)) : d
                if reduced.hasSuffix("." + base) || (isWildcard && reduced.caseInsensitiveCompare(base) == .orderedSame) { return true }
            }
            if role.allowGlobDomains && d.contains("*") && Glob.match(d, name) { return true }
        }
        return false
    }

    /// The common name's own check (`cn_validations`).
    func allowsCommonName(_ cn: String) -> Bool {
        if role.cnValidations == ["disabled"] { return true }
        guard allows(cn) else { return false }
        if role.cnValidations.isEmpty { return true }
        return cn.contains("@") ? role.cnValidations.contains("email") : role.cnValidations.contains("hostname")
    }

    func allowsURI(_ uri: String) -> Bool { role.allowedURISANs.contains { Glob.match($0, uri) } }

    /// `<oid>;UTF8:<value>` against `allowed_other_sans` (`*` allows any).
    static func parseOtherSAN(_ text: String) throws -> (oid: String, value: String) {
        guard let semi = text.firstIndex(of: ";") else { throw CofferError.invalid("could not parse requested other SAN: expected a semicolon in other SAN \"\(text.prefix(64))\"") }
        let oid = String(text[..<semi])
        let rest = text[text.index(after: semi)...]
        guard let colon = rest.firstIndex(of: ":") else { throw CofferError.invalid("could not parse requested other SAN: expected a colon in other SAN \"\(text.prefix(64))\"") }
        let kind = rest[..<colon].uppercased()
        guard kind == "UTF8" || kind == "UTF-8" else { throw CofferError.invalid("could not parse requested other SAN: only utf8 other SANs are supported; found non-utf8 type in other SAN \"\(text.prefix(64))\"") }
        return (oid, String(rest[rest.index(after: colon)...]))
    }

    func checkOtherSAN(oid: String, value: String) throws {
        if role.allowedOtherSANs == ["*"] { return }
        var oidKnown = false
        for entry in role.allowedOtherSANs {
            guard let (o, v) = try? Self.parseOtherSAN(entry), o == oid else { continue }
            oidKnown = true
            if v == "*" || Glob.match(v, value) { return }
        }
        if oidKnown { throw CofferError.invalid("other SAN \(value.prefix(64)) not allowed for OID \(oid.prefix(64)) by this role") }
        throw CofferError.invalid("other SAN OID \(oid.prefix(64)) not allowed by this role")
    }
}
