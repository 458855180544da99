import Foundation

/// Where an engine of a tenant namespace may connect (database servers today; later LDAP,
/// OIDC, AWS endpoints): the operator's guard against tenant admins using Coffer to probe
/// the node's own network (loopback services, cloud metadata on link-local addresses).
///
/// The root namespace is the operator's and is `unrestricted`. For tenant namespaces the
/// server configuration sets `database_allowed_hosts` (host names, addresses or CIDRs; when
/// set, nothing else is reachable, and what it names is reachable even inside a denied
/// range) and `database_denied_cidrs` (default: loopback, link-local and unspecified
/// addresses). Unix sockets are the node's own: never reachable
/// from a tenant namespace. Every refusal has one text, whatever the reason, so the answer
/// says nothing about the network behind it.
public struct OutboundPolicy: Sendable, Equatable {
    public var restricted: Bool
    /// Host names (lower case) allowed by name, whatever they resolve to.
    public var allowedNames: Set<String>
    /// Address ranges allowed; with `allowedNames`, empty means "anything not denied".
    public var allowedRanges: [AddressRange]
    public var deniedRanges: [AddressRange]

    public static let unrestricted = OutboundPolicy(restricted: false, allowedNames: [], allowedRanges: [], deniedRanges: [])

    /// Loopback, link-local (cloud metadata lives at 169.254.169.254) and unspecified addresses.
    public static let defaultDeniedCIDRs = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128"]

    public init(restricted: Bool, allowedNames: Set<String>, allowedRanges: [AddressRange], deniedRanges: [AddressRange]) {
        self.restricted = restricted
        self.allowedNames = allowedNames
        self.allowedRanges = allowedRanges
        self.deniedRanges = deniedRanges
    }

    /// The tenant policy without configuration: nothing allowed by name, the default
    /// denied ranges. (They are constants that parse; the fallback denies every address.)
    public static let defaultTenant: OutboundPolicy = (try? tenant(allowed: []))
        ?? OutboundPolicy(restricted: true, allowedNames: [], allowedRanges: [], deniedRanges: [(try? AddressRange("0.0.0.0/0")), (try? AddressRange("::/0"))].compactMap { $0 })

    /// A tenant policy from the configuration's lists (host names, addresses, CIDRs).
    public static func tenant(allowed: [String], denied: [String] = defaultDeniedCIDRs) throws -> OutboundPolicy {
        var names = Set<String>()
        var ranges: [AddressRange] = []
        for entry in allowed.map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            if let range = try? AddressRange(entry) { ranges.append(range) } else { names.insert(entry.lowercased()) }
        }
        return OutboundPolicy(restricted: true, allowedNames: names, allowedRanges: ranges, deniedRanges: try denied.map { try AddressRange($0) })
    }

    /// The one answer to a refused target.
    public static let refusal = CofferError.invalid(
        "the database host is not allowed from this namespace (the operator's database_allowed_hosts / database_denied_cidrs)")

    /// Checks a TCP host (a name or an address). Blocking (it resolves the name): call it
    /// where the connection itself is made, off the event loops.
    public func check(host rawHost: String) throws {
        guard restricted else { return }
        var host = rawHost.trimmingCharacters(in: .whitespaces).lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw Self.refusal }
        if allowedNames.contains(host) { return }
        let addresses = AddressRange.parse(host) != nil ? [host] : Self.resolve(host)
        guard !addresses.isEmpty else { throw Self.refusal }
        for raw in addresses {
            // A scoped IPv6 address (`fe80::1%eth0`) is judged by its address.
            let a = String(raw.prefix { $0 != "%" })
            guard AddressRange.parse(a) != nil else { throw Self.refusal }
            // An address the operator allowed is allowed, even inside a denied range
            // (`database_allowed_hosts = ["127.0.0.1"]` for a database on the node itself).
            if allowedRanges.contains(where: { $0.contains(a) }) { continue }
            if deniedRanges.contains(where: { $0.contains(a) }) { throw Self.refusal }
            if !(allowedNames.isEmpty && allowedRanges.isEmpty) { throw Self.refusal }
        }
    }

    /// A unix socket path: refused whenever the policy is restricted.
    public func checkUnixSocket() throws {
        if restricted { throw Self.refusal }
    }

    /// Every address `name` resolves to (numeric strings), or none.
    static func resolve(_ name: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let n = node {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if let addr = n.pointee.ai_addr,
               getnameinfo(addr, n.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                out.append(String(cString: buffer))
            }
            node = n.pointee.ai_next
        }
        return out
    }
}
