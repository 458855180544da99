import CLDAP
import CofferSDK
import Foundation

/// One connection to an LDAP server through libldap. Every call blocks: make them on a
/// thread pool (`LDAPBackend` runs a whole login in one `NIOThreadPool` job), never on an
/// event loop or the concurrency pool. Not shared between threads; closed at deinit.
final class LDAPConnection: @unchecked Sendable {
    let ld: OpaquePointer
    let requestTimeout: Int

    /// Why a call failed: the server is unreachable (answered as 503), refused a bind
    /// (invalid credentials), or another LDAP error.
    enum Failure: Error, CustomStringConvertible {
        case unreachable(String)
        case invalidCredentials
        case ldap(Int32, String)

        var description: String {
            switch self {
            case .unreachable(let s): s
            case .invalidCredentials: "LDAP Result Code 49 \"Invalid Credentials\""
            case .ldap(let code, let s): "LDAP Result Code \(code) \"\(s)\""
            }
        }
    }

    struct TLS {
        var caPEM = ""
        var clientCertPEM = ""
        var clientKeyPEM = ""
        var insecure = false
        /// LDAP_OPT_X_TLS_PROTOCOL_* of the lowest version allowed.
        var minimumProtocol: Int32 = 0
    }

    private init(_ ld: OpaquePointer, requestTimeout: Int) {
        self.ld = ld
        self.requestTimeout = requestTimeout
    }

    deinit { _ = ldap_unbind_ext_s(ld, nil, nil) }

    static func message(_ rc: Int32) -> String { String(cString: ldap_err2string(rc)) }

    static func isUnreachable(_ rc: Int32) -> Bool {
        rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT || rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY
    }

    /// Connects to the first of `urls` that answers (ldap:// with optional StartTLS, or
    /// ldaps://), within `connectTimeout` seconds each.
    static func open(urls: [String], startTLS: Bool, tls: TLS, connectTimeout: Int, requestTimeout: Int) throws -> LDAPConnection {
        var errors: [String] = []
        for url in urls {
            do {
                return try openOne(url, startTLS: startTLS, tls: tls, connectTimeout: connectTimeout, requestTimeout: requestTimeout)
            } catch {
                errors.append("error connecting to host \"\(url.prefix(128))\": \(error)")
            }
        }
        throw Failure.unreachable(errors.isEmpty ? "no LDAP URL configured" : errors.joined(separator: "; "))
    }

    static func openOne(_ url: String, startTLS: Bool, tls: TLS, connectTimeout: Int, requestTimeout: Int) throws -> LDAPConnection {
        var handle: OpaquePointer?
        let rc = ldap_initialize(&handle, url)
        guard rc == LDAP_SUCCESS, let handle else { throw Failure.ldap(rc, message(rc)) }
        let c = LDAPConnection(handle, requestTimeout: requestTimeout)
        _ = coffer_ldap_set_int(handle, LDAP_OPT_PROTOCOL_VERSION, LDAP_VERSION3)
        _ = coffer_ldap_referrals_off(handle)
        _ = coffer_ldap_set_seconds(handle, LDAP_OPT_NETWORK_TIMEOUT, connectTimeout > 0 ? connectTimeout : 30)
        _ = coffer_ldap_set_seconds(handle, LDAP_OPT_TIMEOUT, requestTimeout > 0 ? requestTimeout : 90)
        let secure = url.lowercased().hasPrefix("ldaps://") || startTLS
        if secure { try c.configureTLS(tls) }
        let connected = startTLS ? ldap_start_tls_s(handle, nil, nil) : ldap_connect(handle)
        guard connected == LDAP_SUCCESS else {
            throw isUnreachable(connected) ? Failure.unreachable(message(connected)) : Failure.ldap(connected, message(connected))
        }
        return c
    }

    /// This handle's own TLS context: the CA, client certificate and key are written to a
    /// private temporary directory only while the context is made, then removed.
    func configureTLS(_ tls: TLS) throws {
        _ = coffer_ldap_set_int(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, tls.insecure ? LDAP_OPT_X_TLS_NEVER : LDAP_OPT_X_TLS_HARD)
        if tls.minimumProtocol > 0 { _ = coffer_ldap_set_int(ld, LDAP_OPT_X_TLS_PROTOCOL_MIN, tls.minimumProtocol) }
        var dir: String?
        defer { if let dir { try? FileManager.default.removeItem(atPath: dir) } }
        func file(_ name: String, _ pem: String) throws -> String {
            if dir == nil {
                var template = Array((NSTemporaryDirectory() + "/coffer-ldap-XXXXXX").utf8CString)
                guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                    throw Failure.ldap(-1, "cannot make a temporary directory for TLS material")
                }
                dir = String(cString: made)
            }
            let path = dir! + "/" + name
            guard FileManager.default.createFile(atPath: path, contents: Data(pem.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw Failure.ldap(-1, "cannot write TLS material")
            }
            return path
        }
        if !tls.caPEM.isEmpty { _ = coffer_ldap_set_string(ld, LDAP_OPT_X_TLS_CACERTFILE, try file("ca.pem", tls.caPEM)) }
        if !tls.clientCertPEM.isEmpty && !tls.clientKeyPEM.isEmpty {
            _ = coffer_ldap_set_string(ld, LDAP_OPT_X_TLS_CERTFILE, try file("cert.pem", tls.clientCertPEM))
            _ = coffer_ldap_set_string(ld, LDAP_OPT_X_TLS_KEYFILE, try file("key.pem", tls.clientKeyPEM))
        }
        let rc = coffer_ldap_set_int(ld, LDAP_OPT_X_TLS_NEWCTX, 0)
        guard rc == LDAP_OPT_SUCCESS else { throw Failure.ldap(rc, "cannot make the TLS context: \(Self.message(rc))") }
    }

    /// A simple bind; an empty password makes an unauthenticated bind.
    func bind(_ dn: String, _ password: String) throws {
        let rc = password.withCString { coffer_ldap_simple_bind(ld, dn, $0, password.utf8.count) }
        switch rc {
        case LDAP_SUCCESS: return
        case LDAP_INVALID_CREDENTIALS: throw Failure.invalidCredentials
        default: throw Self.isUnreachable(rc) ? Failure.unreachable(Self.message(rc)) : Failure.ldap(rc, Self.message(rc))
        }
    }

    struct Entry {
        var dn: String
        var attributes: [String: [String]]
    }

    /// A subtree search for `filter` below `base`, returning `attributes` of at most `limit`
    /// entries (0: the server's limit).
    func search(base: String, filter: String, attributes: [String], limit: Int32 = 0) throws -> [Entry] {
        var cStrings = attributes.map { strdup($0) }
        cStrings.append(nil)
        defer { for p in cStrings { free(p) } }
        var result: OpaquePointer?
        let rc = cStrings.withUnsafeMutableBufferPointer { attrs in
            coffer_ldap_search(ld, base, filter, attrs.baseAddress, requestTimeout > 0 ? requestTimeout : 90, limit, &result)
        }
        defer { if let result { ldap_msgfree(result) } }
        guard rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED || rc == LDAP_NO_SUCH_OBJECT else {
            throw Self.isUnreachable(rc) ? Failure.unreachable(Self.message(rc)) : Failure.ldap(rc, Self.message(rc))
        }
        guard let result else { return [] }
        var out: [Entry] = []
        var entry = ldap_first_entry(ld, result)
        while let e = entry {
            var dn = ""
            if let raw = ldap_get_dn(ld, e) {
                dn = String(cString: raw)
                ldap_memfree(raw)
            }
            var attrs: [String: [String]] = [:]
            for name in attributes {
                guard let values = ldap_get_values_len(ld, e, name) else { continue }
                var list: [String] = []
                var i = 0
                while let v = values[i] {
                    list.append(String(decoding: UnsafeRawBufferPointer(start: v.pointee.bv_val, count: Int(v.pointee.bv_len)), as: UTF8.self))
                    i += 1
                }
                ldap_value_free_len(values)
                attrs[name.lowercased()] = list
            }
            out.append(Entry(dn: dn, attributes: attrs))
            entry = ldap_next_entry(ld, e)
        }
        return out
    }
}

/// RFC 4515 and RFC 4514 escaping, the LDAP-injection guard of every filter and DN a
/// username reaches, and Vault's filter templates.
enum LDAPText {
    /// A value inside a search filter: `*`, `(`, `)`, `\` and NUL (and every byte outside
    /// printable ASCII) become `\xx`.
    static func escapeFilter(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "*"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "\\"), 0, 0x80...0xFF:
                out += "\\" + String(format: "%02x", b)
            default: out.unicodeScalars.append(Unicode.Scalar(b))
            }
        }
        return out
    }

    /// A value inside a DN, as Vault's `EscapeLDAPValue`.
    static func escapeDNValue(_ s: String) -> String {
        let bytes = Array(s.utf8)
        var out = ""
        for (i, b) in bytes.enumerated() {
            let c = Character(Unicode.Scalar(b))
            if (i == 0 && (c == " " || c == "#")) || (i == bytes.count - 1 && c == " ") || "\"+,;<>\\".contains(c) {
                out += "\\" + String(c)
            } else if b < 0x20 || b > 0x7E {
                out += "\\" + String(format: "%02x", b)
            } else {
                out.append(c)
            }
        }
        return out
    }

    static let placeholders = ["Username", "UserAttr", "UserDN"]

    /// Renders a Vault filter template (`{{.Username}}`, `{{.UserAttr}}`, `{{.UserDN}}`)
    /// with values already escaped for filters.
    static func render(_ template: String, _ values: [String: String]) throws -> String {
        var out = ""
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else { throw CofferError.invalid("LDAP search failed due to template parsing error: unclosed action") }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            guard name.hasPrefix("."), let v = values[String(name.dropFirst())] else {
                throw CofferError.invalid("LDAP search failed due to template parsing error: unknown field \"\(name.prefix(32))\"")
            }
            out += v
            rest = rest[close.upperBound...]
        }
        return out + rest
    }

    /// Checks a template for the fields it may use.
    static func check(_ template: String, field: String, allowed: [String]) throws {
        do {
            _ = try render(template, Dictionary(uniqueKeysWithValues: allowed.map { ($0, "x") }))
        } catch let e as CofferError {
            throw CofferError.invalid("invalid \(field): \(e.message)")
        }
    }

    /// The value of the first CN in a DN, or the text itself when it is not a DN with one
    /// (Vault's getCN).
    static func commonName(_ dn: String) -> String {
        for rdn in splitDN(dn) {
            guard let eq = rdn.firstIndex(of: "=") else { return dn }
            if rdn[..<eq].trimmingCharacters(in: .whitespaces).lowercased() == "cn" {
                return unescape(String(rdn[rdn.index(after: eq)...]).trimmingCharacters(in: .whitespaces))
            }
        }
        return dn
    }

    static func splitDN(_ dn: String) -> [String] {
        var parts: [String] = [], cur = "", escaped = false
        for c in dn {
            if escaped { cur.append(c); escaped = false; continue }
            if c == "\\" { cur.append(c); escaped = true; continue }
            if c == "," || c == ";" { parts.append(cur); cur = ""; continue }
            cur.append(c)
        }
        if !cur.isEmpty { parts.append(cur) }
        return parts
    }

    static func unescape(_ s: String) -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            guard b == UInt8(ascii: "\\"), let n = it.first else { bytes.append(b); continue }
            if it.count >= 2, let hex = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(hex)
                it = it.dropFirst(2)
            } else {
                bytes.append(n)
                it = it.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
