import ArgumentParser
import AsyncHTTPClient
import CofferSDK
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Connection flags shared by every client command (Vault's spelling: `-address`, `-token`, ...).
struct ClientOptions: ParsableArguments {
    @Option(name: .customLong("address"), help: "Server address (COFFER_ADDR, VAULT_ADDR; default https://127.0.0.1:8200).")
    var address: String?

    @Option(name: .customLong("token"), help: "Token (COFFER_TOKEN, VAULT_TOKEN, then ~/.coffer-token).")
    var token: String?

    @Option(name: .customLong("namespace"), help: "Namespace (COFFER_NAMESPACE, VAULT_NAMESPACE).")
    var namespace: String?

    @Option(name: .customLong("ca-cert"), help: "PEM file of CA certificates to trust (COFFER_CACERT, VAULT_CACERT).")
    var caCert: String?

    @Flag(name: .customLong("tls-skip-verify"), help: "Do not verify the server's TLS certificate (insecure).")
    var tlsSkipVerify = false

    @Option(name: .customLong("wrap-ttl"), help: "Wrap the response in a single-use token with this TTL (\"60s\", \"5m\"; COFFER_WRAP_TTL, VAULT_WRAP_TTL).")
    var wrapTTL: String?
}

/// The resolved connection settings: flags > COFFER_* > VAULT_* > the token file written by `login`.
struct CLIConfig: Sendable {
    static let defaultAddress = "https://127.0.0.1:8200"
    static let tokenFileName = ".coffer-token"

    var address: String
    var token: String?
    var namespace: String?
    var caCert: String?
    var skipVerify: Bool
    /// Asks for the response wrapped (`X-Vault-Wrap-TTL`).
    var wrapTTL: String?

    init(_ o: ClientOptions, environment env: [String: String] = ProcessInfo.processInfo.environment) {
        func pick(_ flag: String?, _ names: String...) -> String? {
            if let flag, !flag.isEmpty { return flag }
            for n in names { if let v = env[n], !v.isEmpty { return v } }
            return nil
        }
        address = pick(o.address, "COFFER_ADDR", "VAULT_ADDR") ?? Self.defaultAddress
        while address.hasSuffix("/") { address.removeLast() }
        token = pick(o.token, "COFFER_TOKEN", "VAULT_TOKEN") ?? Self.readTokenFile(environment: env)
        namespace = pick(o.namespace, "COFFER_NAMESPACE", "VAULT_NAMESPACE")
        caCert = pick(o.caCert, "COFFER_CACERT", "VAULT_CACERT")
        let skipEnv = pick(nil, "COFFER_SKIP_VERIFY", "VAULT_SKIP_VERIFY").map { ["1", "true", "t", "yes"].contains($0.lowercased()) } ?? false
        skipVerify = o.tlsSkipVerify || skipEnv
        wrapTTL = pick(o.wrapTTL, "COFFER_WRAP_TTL", "VAULT_WRAP_TTL")
    }

    static func homeDirectory(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let h = env["HOME"], !h.isEmpty { return h }
        return NSHomeDirectory()
    }

    static func tokenFilePath(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        var home = homeDirectory(environment: env)
        while home.count > 1 && home.hasSuffix("/") { home.removeLast() }
        return home + "/" + tokenFileName
    }

    static func readTokenFile(environment env: [String: String]) -> String? {
        guard let data = FileManager.default.contents(atPath: tokenFilePath(environment: env)) else { return nil }
        let t = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return t.isEmpty ? nil : t
    }

    /// Writes the token file with mode 0600 (also when it already existed with looser permissions).
    static func writeTokenFile(_ token: String) throws {
        let path = tokenFilePath()
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CLIError("could not open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fchmod(fd, 0o600) == 0 else { throw CLIError("could not chmod \(path): \(String(cString: strerror(errno)))") }
        let bytes = Array(token.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw CLIError("could not write \(path): \(String(cString: strerror(errno)))") }
            written += n
        }
    }
}

/// A local failure with a message (printed as `Error ...: message`).
struct CLIError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// One HTTP answer from the server.
struct APIResponse: Sendable {
    var method: String
    var url: String
    var status: Int
    var body: [UInt8]
    var json: JSONValue?

    var ok: Bool { status >= 200 && status < 300 }
    var errors: [String] { json?["errors"]?.arrayValue?.compactMap { $0.stringValue } ?? [] }
    /// `data` of the envelope when it is an object.
    var data: JSONValue? { if let d = json?["data"], !d.isNull { return d } else { return nil } }
    var auth: JSONValue? { if let a = json?["auth"], !a.isNull { return a } else { return nil } }
}

/// The HTTP verbs the CLI sends (`LIST` goes as `GET ?list=true`).
enum Verb: String, Sendable {
    case GET, PUT, POST, DELETE, PATCH

    var http: HTTPMethod {
        switch self {
        case .GET: .GET
        case .PUT: .PUT
        case .POST: .POST
        case .DELETE: .DELETE
        case .PATCH: .PATCH
        }
    }
}

/// The HTTP client of one CLI invocation: one `HTTPClient`, shut down by `API.with`.
struct API: Sendable {
    let http: HTTPClient
    let config: CLIConfig

    /// Runs `body` with a client for `options`, always shutting the client down before returning.
    static func with<T: Sendable>(_ options: ClientOptions, _ body: (API) async throws -> T) async throws -> T {
        let config = CLIConfig(options)
        var tls = TLSConfiguration.makeClientConfiguration()
        if config.skipVerify {
            tls.certificateVerification = .none
        } else if let ca = config.caCert {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            } catch {
                Out.err("Error loading CA certificate \(ca): \(error)")
                throw ExitCode(1)
            }
        }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .seconds(120)))
        configuration.httpVersion = .http1Only
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let api = API(http: http, config: config)
        do {
            let result = try await body(api)
            try? await http.shutdown()
            return result
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    static func encodePath(_ path: String) -> String {
        var p = path
        while p.hasPrefix("/") { p.removeFirst() }
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "?#%")
        return p.addingPercentEncoding(withAllowedCharacters: allowed) ?? p
    }

    static func encodeQuery(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    /// Sends one request; any HTTP status is returned. Connection failures are printed as
    /// `Error <doing>: ...` and end the command with exit code 1.
    func request(
        _ method: Verb, _ path: String, query: [(String, String)] = [], body: JSONValue? = nil,
        contentType: String = "application/json", token overrideToken: String? = nil, doing: String
    ) async throws -> APIResponse {
        var url = config.address + "/v1/" + API.encodePath(path)
        if !query.isEmpty {
            url += "?" + query.map { API.encodeQuery($0.0) + "=" + API.encodeQuery($0.1) }.joined(separator: "&")
        }
        var req = HTTPClientRequest(url: url)
        req.method = method.http
        req.headers.add(name: "X-Vault-Request", value: "true")
        req.headers.add(name: "User-Agent", value: "coffer-cli/\(Coffer.version)")
        if let t = overrideToken ?? config.token, !t.isEmpty { req.headers.add(name: "X-Vault-Token", value: t) }
        if let ns = config.namespace { req.headers.add(name: "X-Vault-Namespace", value: ns) }
        if let ttl = config.wrapTTL { req.headers.add(name: "X-Vault-Wrap-TTL", value: ttl) }
        if let body {
            req.headers.add(name: "Content-Type", value: contentType)
            req.body = .bytes(ByteBuffer(bytes: body.serialized()))
        }
        do {
            let resp = try await http.execute(req, timeout: .seconds(120))
            let buffer = try await resp.body.collect(upTo: 64 << 20)
            let bytes = Array(buffer.readableBytesView)
            let json = bytes.isEmpty ? nil : try? JSONValue.parse(bytes)
            return APIResponse(method: method.rawValue, url: url, status: Int(resp.status.code), body: bytes, json: json)
        } catch {
            Out.err("Error \(doing): \(method.rawValue) \"\(url)\": \(Self.describe(error))")
            throw ExitCode(1)
        }
    }

    /// Like `request`, but a status >= 400 prints Vault's error block and exits 1.
    func call(
        _ method: Verb, _ path: String, query: [(String, String)] = [], body: JSONValue? = nil,
        contentType: String = "application/json", token: String? = nil, doing: String
    ) async throws -> APIResponse {
        let r = try await request(method, path, query: query, body: body, contentType: contentType, token: token, doing: doing)
        if r.status >= 400 { try API.fail(r, doing: doing) }
        return r
    }

    /// Prints Vault's API error block for `r` on stderr and throws exit code 1.
    static func fail(_ r: APIResponse, doing: String) throws -> Never {
        var text = "Error \(doing): Error making API request.\n\nURL: \(r.method) \(r.url)\nCode: \(r.status). Errors:\n\n"
        let errs = r.errors
        if errs.isEmpty, r.json == nil, !r.body.isEmpty {
            text += "* " + String(decoding: r.body.prefix(2048), as: UTF8.self)
        } else {
            text += errs.map { "* " + $0 }.joined(separator: "\n")
        }
        Out.err(text)
        throw ExitCode(1)
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? HTTPClientError { return "\(e)" }
        return String(describing: error)
    }
}
