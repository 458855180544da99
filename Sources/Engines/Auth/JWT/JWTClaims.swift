import CofferSDK
import Foundation
import JOSE

/// A claim value as bound claims compare it: Vault compares strings with strings, booleans
/// with booleans, and numbers by their integer text.
enum ClaimValue: Hashable, CustomStringConvertible {
    case string(String)
    case bool(Bool)
    case number(String)

    init?(_ v: JSONValue) {
        switch v {
        case .string(let s): self = .string(s)
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .number(String(i))
        case .double(let d):
            guard let i = Checked.int64(truncating: d) else { return nil }
            self = .number(String(i))
        default: return nil
        }
    }

    /// A claim or bound value as a list: one scalar, or an array of scalars.
    static func list(_ v: JSONValue) -> [ClaimValue]? {
        if case .array(let a) = v {
            var out: [ClaimValue] = []
            for e in a {
                guard let c = ClaimValue(e) else { return nil }
                out.append(c)
            }
            return out
        }
        return ClaimValue(v).map { [$0] }
    }

    var description: String {
        switch self {
        case .string(let s): String(s.prefix(64))
        case .bool(let b): String(b)
        case .number(let n): n
        }
    }
}

/// What a token must satisfy besides its signature.
struct JWTExpectations {
    var issuer = ""
    var subject = ""
    var audiences: [String] = []
    var algorithms: Set<JWSAlgorithm> = Set(JWSAlgorithm.allCases)
    var expirationLeeway = 0
    var notBeforeLeeway = 0
    var clockSkewLeeway = 0
    /// The OIDC nonce the ID token must carry (the flow's), if any.
    var nonce: String?
}

enum JWTClaims {
    /// A claim by name, or by JSON pointer (RFC 6901) when it starts with `/`.
    static func claim(_ claims: [String: JSONValue], _ name: String) -> JSONValue? {
        guard name.hasPrefix("/") else { return claims[name] }
        var node: JSONValue = .object(claims)
        for raw in name.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch node {
            case .object(let o):
                guard let next = o[token] else { return nil }
                node = next
            case .array(let a):
                guard let i = Int(token), i >= 0, i < a.count else { return nil }
                node = a[i]
            default: return nil
            }
        }
        return node
    }

    /// The `aud` claim as a list (a string is one audience).
    static func audiences(_ claims: [String: JSONValue]) -> [String] {
        switch claims["aud"] {
        case .string(let s)?: [s]
        case .array(let a)?: a.compactMap(\.stringValue)
        default: []
        }
    }

    /// Leeway in seconds: 0 means the default, -1 none.
    static func leeway(_ configured: Int, default d: Int) -> Double {
        configured == 0 ? Double(d) : configured < 0 ? 0 : Double(configured)
    }

    /// Checks the registered claims (iss, sub, aud, exp, nbf, iat, nonce) of verified claims.
    static func validate(_ claims: [String: JSONValue], _ e: JWTExpectations, now: Double) throws {
        func fail(_ why: String) -> CofferError { CofferError.invalid("error validating token: \(why)") }
        if !e.issuer.isEmpty, claims["iss"]?.stringValue != e.issuer { throw fail("invalid issuer (iss) claim") }
        if !e.subject.isEmpty, claims["sub"]?.stringValue != e.subject { throw fail("invalid subject (sub) claim") }
        if !e.audiences.isEmpty {
            let aud = audiences(claims)
            guard e.audiences.contains(where: aud.contains) else { throw fail("invalid audience (aud) claim: audience claim does not match any expected audience") }
        }
        let skew = leeway(e.clockSkewLeeway, default: 60)
        func time(_ name: String) throws -> Double? {
            switch claims[name] {
            case nil, .null?: return nil
            case .int(let i)?: return Double(i)
            case .double(let d)? where d.isFinite: return d
            default: throw fail("invalid \(name) claim: not a number")
            }
        }
        let exp = try time("exp"), nbf = try time("nbf"), iat = try time("iat")
        if exp == nil && nbf == nil && iat == nil { throw fail("no issued at (iat), not before (nbf), or expiration time (exp) claims in token") }
        if let exp, now > exp + leeway(e.expirationLeeway, default: 150) + skew { throw fail("token is expired (exp)") }
        if let nbf, now < nbf - leeway(e.notBeforeLeeway, default: 150) - skew { throw fail("token not yet valid (nbf)") }
        if let iat, iat > now + skew { throw fail("token issued in the future (iat)") }
        if let nonce = e.nonce, claims["nonce"]?.stringValue != nonce { throw fail("invalid ID token nonce") }
    }

    /// Vault's bound claims: every bound claim must be present and one of its values must
    /// match one of the token's (exactly, or as a `*` glob).
    static func checkBound(_ bound: [String: JSONValue], glob: Bool, _ claims: [String: JSONValue]) throws {
        for name in bound.keys.sorted() {
            guard let actual = claim(claims, name), !actual.isNull else {
                throw CofferError.invalid("error validating claims: claim \"\(name.prefix(64))\" is missing")
            }
            guard let actualValues = ClaimValue.list(actual) else {
                throw CofferError.invalid("error validating claims: received claim is not a string, bool, int or list")
            }
            let expected = ClaimValue.list(bound[name]!) ?? []
            let found = expected.contains { exp in
                actualValues.contains { act in
                    if glob, case .string(let pattern) = exp, case .string(let s) = act { return Glob.match(pattern, s) }
                    return exp == act
                }
            }
            if !found { throw CofferError.invalid("error validating claims: claim \"\(name.prefix(64))\" does not match any associated bound claim values") }
        }
    }

    /// The entity alias, its metadata and the group aliases of a login, as Vault's
    /// `createIdentity` makes them.
    static func identity(_ claims: [String: JSONValue], role: JWTRole, roleName: String) throws -> (name: String, metadata: [String: String], groups: [String]) {
        let raw = role.userClaimJSONPointer ? claim(claims, role.userClaim) : claims[role.userClaim]
        guard let raw, !raw.isNull else { throw CofferError.invalid("claim \"\(role.userClaim.prefix(64))\" not found in token") }
        guard let name = raw.stringValue else { throw CofferError.invalid("claim \"\(role.userClaim.prefix(64))\" could not be converted to string") }
        var metadata: [String: String] = [:]
        for (source, target) in role.claimMappings {
            guard let v = claim(claims, source), !v.isNull else { continue }
            guard let s = v.stringValue else { throw CofferError.invalid("error converting claim '\(source.prefix(64))' to string") }
            metadata[target] = s
        }
        metadata["role"] = roleName
        var groups: [String] = []
        if !role.groupsClaim.isEmpty {
            guard let g = claim(claims, role.groupsClaim), !g.isNull else {
                throw CofferError.invalid("failed to fetch groups: \"\(role.groupsClaim.prefix(64))\" claim not found in token")
            }
            let list: [JSONValue] = g.arrayValue ?? [g]
            for item in list {
                guard let s = item.stringValue else {
                    throw CofferError.invalid("failed to fetch groups: value in groups claim could not be parsed as string")
                }
                if !s.isEmpty { groups.append(s) }
            }
        }
        return (name, metadata, groups)
    }
}
