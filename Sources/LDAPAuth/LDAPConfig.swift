import CLDAP
import CofferSDK
import Foundation

/// The method's `config`: the directory, how users and groups are found, TLS, timeouts,
/// and the token fields every login gets. `bindpass` and `client_tls_key` are never shown.
struct LDAPConfig: Codable, Sendable {
    var url = "ldap://127.0.0.1"
    var userDN = ""
    var bindDN = ""
    var bindPassword = ""
    var groupDN = ""
    var groupFilter = "(|(memberUid={{.Username}})(member={{.UserDN}})(uniqueMember={{.UserDN}}))"
    var groupAttr = "cn"
    var userFilter = LDAPConfig.defaultUserFilter
    var upnDomain = ""
    var userAttr = "cn"
    var certificate = ""
    var clientTLSCert = ""
    var clientTLSKey = ""
    var discoverDN = false
    var insecureTLS = false
    var startTLS = false
    var tlsMinVersion = "tls12"
    var tlsMaxVersion = "tls12"
    var denyNullBind = true
    var caseSensitiveNames = false
    var usernameAsAlias = false
    var anonymousGroupSearch = false
    var requestTimeout = 90
    var connectionTimeout = 30
    var token = TokenParameters()

    static let defaultUserFilter = "({{.UserAttr}}={{.Username}})"

    var urls: [String] { url.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

    /// The host of every URL (for the tenant outbound policy).
    var hosts: [String] { urls.compactMap { URLComponents(string: $0)?.host } }

    var tls: LDAPConnection.TLS {
        var t = LDAPConnection.TLS()
        t.caPEM = certificate
        t.clientCertPEM = clientTLSCert
        t.clientKeyPEM = clientTLSKey
        t.insecure = insecureTLS
        t.minimumProtocol = Self.protocols[tlsMinVersion] ?? 0
        return t
    }

    static let protocols: [String: Int32] = [
        "tls10": (3 << 8) + 1, "tls11": (3 << 8) + 2, "tls12": (3 << 8) + 3, "tls13": (3 << 8) + 4,
    ]

    static let fields: [Field] = [
        Field("url", .string, description: "LDAP URL to connect to (several, comma-separated, are tried in order)."),
        Field("userdn", .string, description: "LDAP domain to use for users (eg: ou=People,dc=example,dc=org)."),
        Field("binddn", .string, description: "LDAP DN for searching for the user DN (optional)."),
        Field("bindpass", .string, description: "LDAP password for searching for the user DN (optional; never shown)."),
        Field("groupdn", .string, description: "LDAP search base to use for group membership search."),
        Field("groupfilter", .string, description: "Go template for querying group membership of user."),
        Field("groupattr", .string, description: "LDAP attribute to follow on objects returned by groupfilter."),
        Field("userfilter", .string, description: "Go template for LDAP user search filter."),
        Field("upndomain", .string, description: "Enables userPrincipalDomain login with [username]@UPNDomain."),
        Field("userattr", .string, description: "Attribute used for users."),
        Field("certificate", .string, description: "CA certificate (PEM) to verify the LDAP server's certificate."),
        Field("client_tls_cert", .string, description: "Client certificate (PEM) to present."),
        Field("client_tls_key", .string, description: "Client certificate key (PEM; never shown)."),
        Field("discoverdn", .bool, description: "Use anonymous bind to discover the bind DN of a user."),
        Field("insecure_tls", .bool, description: "Skip LDAP server SSL certificate verification — insecure."),
        Field("starttls", .bool, description: "Issue a StartTLS command after establishing an unencrypted connection."),
        Field("tls_min_version", .string, description: "Minimum TLS version: tls10, tls11, tls12, tls13."),
        Field("tls_max_version", .string, description: "Maximum TLS version."),
        Field("deny_null_bind", .bool, description: "Deny unauthenticated LDAP binds (empty passwords)."),
        Field("case_sensitive_names", .bool, description: "Treat user and group names as case sensitive."),
        Field("username_as_alias", .bool, description: "Use the username as the entity alias name."),
        Field("anonymous_group_search", .bool, description: "Search groups with an anonymous bind."),
        Field("use_token_groups", .bool, description: "Active Directory tokenGroups (not supported)."),
        Field("request_timeout", .duration, description: "Timeout of each request to the server, in seconds."),
        Field("connection_timeout", .duration, description: "Timeout when connecting to a server, before trying the next URL."),
        Field("dereference_aliases", .string, description: "never (the only value supported)."),
        Field("max_page_size", .int, description: "Not used: groups are read without paging."),
    ] + TokenParameters.fields

    var readData: [String: JSONValue] {
        var d = token.json
        d.merge([
            "url": .string(url), "userdn": .string(userDN), "binddn": .string(bindDN), "groupdn": .string(groupDN),
            "groupfilter": .string(groupFilter), "groupattr": .string(groupAttr), "userfilter": .string(userFilter),
            "upndomain": .string(upnDomain), "userattr": .string(userAttr), "certificate": .string(certificate),
            "client_tls_cert": .string(clientTLSCert), "discoverdn": .bool(discoverDN), "insecure_tls": .bool(insecureTLS),
            "starttls": .bool(startTLS), "tls_min_version": .string(tlsMinVersion), "tls_max_version": .string(tlsMaxVersion),
            "deny_null_bind": .bool(denyNullBind), "case_sensitive_names": .bool(caseSensitiveNames),
            "username_as_alias": .bool(usernameAsAlias), "anonymous_group_search": .bool(anonymousGroupSearch),
            "use_token_groups": false, "request_timeout": .int(Int64(requestTimeout)),
            "connection_timeout": .int(Int64(connectionTimeout)), "dereference_aliases": "never", "max_page_size": 0,
            "use_pre111_group_cn_behavior": false,
        ]) { _, new in new }
        return d
    }

    /// Applies a write (absent fields keep their value), with Vault's checks and texts.
    mutating func apply(_ f: FieldValues) throws {
        if f.has("url") {
            url = f.string("url").lowercased()
            guard !urls.isEmpty else { throw CofferError.invalid("invalid LDAP URL \"\": at least one ldap:// or ldaps:// URL is needed") }
            for u in urls {
                guard let c = URLComponents(string: u), let scheme = c.scheme, scheme == "ldap" || scheme == "ldaps", c.host?.isEmpty == false else {
                    throw CofferError.invalid("invalid LDAP URL \"\(u.prefix(128))\": the scheme must be ldap or ldaps, with a host")
                }
            }
        }
        if f.has("userdn") { userDN = f.string("userdn") }
        if f.has("binddn") { bindDN = f.string("binddn") }
        if f.has("bindpass") { bindPassword = f.string("bindpass") }
        if f.has("groupdn") { groupDN = f.string("groupdn") }
        if f.has("groupfilter") {
            try LDAPText.check(f.string("groupfilter"), field: "groupfilter", allowed: ["UserDN", "Username"])
            groupFilter = f.string("groupfilter")
        }
        if f.has("groupattr") { groupAttr = f.string("groupattr") }
        if f.has("userfilter") {
            try LDAPText.check(f.string("userfilter"), field: "userfilter", allowed: ["UserAttr", "Username"])
            userFilter = f.string("userfilter")
        }
        if f.has("upndomain") { upnDomain = f.string("upndomain") }
        if f.has("userattr") { userAttr = f.string("userattr").lowercased() }
        if f.has("certificate") {
            let pem = f.string("certificate")
            if !pem.isEmpty && !(pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----")) {
                throw CofferError.invalid("failed to parse server tls cert: no certificate in PEM data")
            }
            certificate = pem
        }
        if f.has("client_tls_cert") { clientTLSCert = f.string("client_tls_cert") }
        if f.has("client_tls_key") { clientTLSKey = f.string("client_tls_key") }
        if clientTLSCert.isEmpty != clientTLSKey.isEmpty { throw CofferError.invalid("both client_tls_cert and client_tls_key must be set") }
        if f.has("discoverdn") { discoverDN = f.bool("discoverdn") }
        if f.has("insecure_tls") { insecureTLS = f.bool("insecure_tls") }
        if f.has("starttls") { startTLS = f.bool("starttls") }
        if f.has("tls_min_version") {
            guard Self.protocols[f.string("tls_min_version")] != nil else { throw CofferError.invalid("invalid 'tls_min_version'") }
            tlsMinVersion = f.string("tls_min_version")
        }
        if f.has("tls_max_version") {
            guard Self.protocols[f.string("tls_max_version")] != nil else { throw CofferError.invalid("invalid 'tls_max_version'") }
            tlsMaxVersion = f.string("tls_max_version")
        }
        if tlsMaxVersion < tlsMinVersion { throw CofferError.invalid("'tls_max_version' must be greater than or equal to 'tls_min_version'") }
        if f.has("deny_null_bind") { denyNullBind = f.bool("deny_null_bind") }
        if f.has("case_sensitive_names") { caseSensitiveNames = f.bool("case_sensitive_names") }
        if f.has("username_as_alias") { usernameAsAlias = f.bool("username_as_alias") }
        if f.has("anonymous_group_search") { anonymousGroupSearch = f.bool("anonymous_group_search") }
        if f.bool("use_token_groups") { throw CofferError.invalid("use_token_groups (Active Directory tokenGroups) is not supported") }
        if f.has("dereference_aliases"), !["", "never"].contains(f.string("dereference_aliases")) {
            throw CofferError.invalid("dereference_aliases other than never is not supported")
        }
        if f.has("request_timeout") { requestTimeout = min(f.int("request_timeout"), 3600) }
        if f.has("connection_timeout") { connectionTimeout = min(f.int("connection_timeout"), 3600) }
        try token.parse(f)
    }
}
