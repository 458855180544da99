import AsyncHTTPClient
import CofferSDK
import Foundation
import JOSE
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Outbound HTTP of the JWT/OIDC method: discovery documents, key sets, the token and
/// userinfo endpoints. Every call is bounded (10 s, 1 MiB), follows no redirect (a redirect
/// could lead past the namespace's outbound policy), and checks the host against that
/// policy first, so a tenant cannot make the node fetch from its own loopback or metadata
/// addresses.
enum HTTPSource {
    static let timeout = TimeAmount.seconds(10)
    static let maxBody = 1 << 20

    static let client = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10))))

    /// An http(s) URL with a host, or a 400 naming the field.
    static func checkURL(_ raw: String, field: String) throws {
        guard let u = URLComponents(string: raw), let scheme = u.scheme?.lowercased(), scheme == "https" || scheme == "http",
              let host = u.host, !host.isEmpty else {
            throw CofferError.invalid("invalid \(field): \"\(raw.prefix(128))\" is not an http or https URL")
        }
    }

    /// The CA certificates of a `*_ca_pem` field (nil when empty: the system's roots).
    static func trustRoots(_ pem: String, field: String) throws -> [NIOSSLCertificate]? {
        guard !pem.isEmpty else { return nil }
        guard let certs = try? NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)), !certs.isEmpty else {
            throw CofferError.invalid("invalid \(field): could not parse CA PEM value successfully")
        }
        return certs
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// The HTTP status of an answer that was not 200 (nil when there was no answer).
        var status: UInt? = nil
        /// The namespace's outbound policy refused the host (the caller's mistake: a 400).
        var refused = false
    }

    /// Fetches `url` and parses its JSON body. `form` makes it a POST of that form.
    static func json(_ url: String, caPEM: String, outbound: OutboundPolicy, form: [(String, String)]? = nil, jsonBody: JSONValue? = nil, headers: [(String, String)] = []) async throws -> JSONValue {
        guard let u = URLComponents(string: url), let host = u.host else { throw Failure(description: "invalid URL") }
        if outbound.restricted {
            let h = host
            do {
                try await NIOThreadPool.singleton.runIfActive { try outbound.check(host: h) }
            } catch {
                throw Failure(description: "the host \"\(host.prefix(64))\" is not allowed from this namespace (the operator's database_allowed_hosts / database_denied_cidrs)", refused: true)
            }
        }
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        if let form {
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: encodeForm(form)))
        } else if let jsonBody {
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: jsonBody.serialized()))
        }
        if let roots = try trustRoots(caPEM, field: "ca_pem") {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(roots)
            request.tlsConfiguration = tls
        }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            do {
                response = try await client.execute(request, timeout: timeout)
            } catch let e as HTTPClientError where e == .remoteConnectionClosed {
                // A pooled connection the peer had closed: once more, on a fresh one.
                response = try await client.execute(request, timeout: timeout)
            }
            body = try await response.body.collect(upTo: maxBody)
        } catch let e as NIOTooManyBytesError {
            _ = e
            throw Failure(description: "the response from \(host.prefix(64)) is larger than 1 MiB")
        } catch {
            throw Failure(description: "cannot reach \(host.prefix(64)): \(Self.describe(error))")
        }
        guard let value = try? JSONValue.parse(body.readableBytesView) else {
            throw Failure(description: "\(response.status.code) from \(host.prefix(64)), not JSON", status: response.status.code)
        }
        guard (200...206).contains(response.status.code) else {
            let why = value["error"]?.stringValue.map { " (\($0.prefix(64)))" } ?? ""
            throw Failure(description: "\(response.status.code) \(response.status.reasonPhrase) from \(host.prefix(64))\(why)", status: response.status.code)
        }
        return value
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case is HTTPClientError where "\(error)".contains("deadlineExceeded") || "\(error)".contains("readTimeout"): "timed out"
        case let e as NIOSSLError: "TLS: \(e)"
        case let e as NIOSSLExtraError: "TLS: \(e)"
        default: String("\(error)".prefix(160))
        }
    }

    static func encodeForm(_ pairs: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return pairs.map { k, v in
            (k.addingPercentEncoding(withAllowedCharacters: allowed) ?? "") + "=" + (v.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
        }.joined(separator: "&")
    }
}

/// The provider's discovery document, as far as Coffer uses it.
struct Discovery: Sendable {
    var issuer: String
    var authorizationEndpoint: String
    var tokenEndpoint: String
    var userinfoEndpoint: String
    var jwksURI: String

    init(_ doc: JSONValue, expectedIssuer: String) throws {
        guard let iss = doc["issuer"]?.stringValue, let jwks = doc["jwks_uri"]?.stringValue else {
            throw HTTPSource.Failure(description: "the discovery document has no issuer or jwks_uri")
        }
        // OIDC Discovery §4.3: the issuer must be the URL it was discovered at.
        guard iss.trimmingSuffix("/") == expectedIssuer.trimmingSuffix("/") else {
            throw HTTPSource.Failure(description: "issuer did not match the issuer returned by provider, expected \"\(expectedIssuer.prefix(128))\" got \"\(iss.prefix(128))\"")
        }
        issuer = iss
        jwksURI = jwks
        authorizationEndpoint = doc["authorization_endpoint"]?.stringValue ?? ""
        tokenEndpoint = doc["token_endpoint"]?.stringValue ?? ""
        userinfoEndpoint = doc["userinfo_endpoint"]?.stringValue ?? ""
    }
}

extension String {
    func trimmingSuffix(_ s: String) -> Substring { hasSuffix(s) ? dropLast(s.count) : Substring(self) }
}

/// Keys fetched from providers, per mount: key sets by URL (refetched when a token names a
/// key id the set lacks, at most every few seconds, and after an hour), discovery documents,
/// and parsed static PEM keys.
final class KeySetCache: Sendable {
    struct Entry {
        var keys: [(kid: String?, key: JWSPublicKey)]
        var fetchedAt: Double
        /// When a refetch for an unknown kid last found nothing.
        var lastMiss: Double?
    }

    let sets = Mutex<[String: Entry]>([:])
    let discoveries = Mutex<[String: (Discovery, Double)]>([:])
    let pems = Mutex<[String: JWSPublicKey]>([:])

    static let refetchAfter = 5.0
    static let maxAge = 3600.0

    func staticKey(_ pem: String) throws -> JWSPublicKey {
        if let k = pems.withLock({ $0[pem] }) { return k }
        let k = try JWSPublicKey(pem: pem)
        pems.withLock { p in
            if p.count > 256 { p.removeAll() }
            p[pem] = k
        }
        return k
    }

    func discovery(_ base: String, caPEM: String, outbound: OutboundPolicy, now: Double) async throws -> Discovery {
        if let (d, at) = discoveries.withLock({ $0[base] }), now - at < Self.maxAge { return d }
        let url = String(base.trimmingSuffix("/")) + "/.well-known/openid-configuration"
        let d = try Discovery(try await HTTPSource.json(url, caPEM: caPEM, outbound: outbound), expectedIssuer: base)
        discoveries.withLock { $0[base] = (d, now) }
        return d
    }

    /// The keys of the set at `url` that may have signed a token with `kid`, fetching the
    /// set when it is not cached, is old, or lacks `kid` (a key rotated in). A kid the
    /// provider does not know either refetches at most once every few seconds, so tokens
    /// with made-up key ids cannot make the node hammer the provider.
    func keys(_ url: String, kid: String?, caPEM: String, outbound: OutboundPolicy, now: Double) async throws -> [JWSPublicKey] {
        func pick(_ e: Entry) -> [JWSPublicKey] {
            guard let kid else { return e.keys.map(\.key) }
            return e.keys.filter { $0.kid == kid }.map(\.key)
        }
        let cached = sets.withLock { $0[url] }
        if let cached, now - cached.fetchedAt < Self.maxAge {
            let found = pick(cached)
            if !found.isEmpty { return found }
            if let miss = cached.lastMiss, now - miss < Self.refetchAfter { return [] }
        }
        let doc = try await HTTPSource.json(url, caPEM: caPEM, outbound: outbound)
        guard let list = doc["keys"]?.arrayValue else { throw HTTPSource.Failure(description: "the JWKS has no \"keys\"") }
        var keys: [(kid: String?, key: JWSPublicKey)] = []
        for jwk in list {
            guard let o = jwk.objectValue, o["use"]?.stringValue ?? "sig" == "sig", let key = try? JWSPublicKey(jwk: o) else { continue }
            keys.append((o["kid"]?.stringValue, key))
        }
        var entry = Entry(keys: keys, fetchedAt: now)
        let found = pick(entry)
        if found.isEmpty && cached != nil { entry.lastMiss = now }
        sets.withLock { s in
            if s.count > 64 { s.removeAll() }
            s[url] = entry
        }
        return found
    }

    func forget() {
        sets.withLock { $0.removeAll() }
        discoveries.withLock { $0.removeAll() }
    }
}
