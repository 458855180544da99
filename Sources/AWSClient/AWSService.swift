import AsyncHTTPClient
import CofferSDK
import Foundation
import NIOCore
import NIOHTTP1

extension AWSCredentials {
    /// The standard AWS variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` (nil when the first two are not both set).
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> AWSCredentials? {
        guard let id = env["AWS_ACCESS_KEY_ID"], !id.isEmpty, let secret = env["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else { return nil }
        let token = env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }
}

/// An error from an AWS service or from reaching it. The description never holds a
/// credential: it names the service, the action, AWS's error code and its message.
public struct AWSError: Error, CustomStringConvertible, Sendable {
    /// AWS's error code (`AccessDeniedException`, `NotFoundException`, `Throttling`...);
    /// nil when there was no answer (connection refused, timeout).
    public var code: String?
    public var message: String
    /// The HTTP status of the answer (nil: none).
    public var status: UInt?
    /// What was being done: `kms Decrypt`.
    public var context: String

    public init(code: String?, message: String, status: UInt?, context: String) {
        self.code = code
        self.message = message
        self.status = status
        self.context = context
    }

    public var description: String {
        guard let code else { return "\(context): \(message)" }
        return message.isEmpty ? "\(context): \(code)" : "\(context): \(code): \(message)"
    }

    /// Throttling and server-side errors, and no answer at all: worth another try.
    public var isRetryable: Bool {
        guard let status else { return true }
        if status >= 500 { return true }
        guard let code else { return false }
        return ["Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
                "TooManyRequestsException", "ServiceUnavailable", "KMSInternalException"].contains(code)
    }
}

/// One AWS service endpoint: signs each request with SigV4 and sends it with bounded time
/// and size. The HTTP client is shared by every endpoint in the process.
public struct AWSService: Sendable {
    public let endpoint: URL
    public let region: String
    public let service: String
    public let credentials: AWSCredentials
    /// The whole call, connection retries included (AsyncHTTPClient retries a refused
    /// connection until this deadline).
    public var timeout: TimeAmount = .seconds(10)
    public var maxResponseBytes = 4 << 20

    static let client = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10))))

    /// `endpoint` must be an http(s) URL with a host (nil: `https://<service>.<region>.amazonaws.com`).
    public init(service: String, region: String, credentials: AWSCredentials, endpoint: String? = nil) throws {
        let raw = endpoint.flatMap { $0.isEmpty ? nil : $0 } ?? "https://\(service).\(region).amazonaws.com"
        guard let url = URL(string: raw), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http",
              let host = url.host, !host.isEmpty else {
            throw AWSError(code: nil, message: "the endpoint \"\(raw.prefix(128))\" is not an http or https URL", status: nil, context: service)
        }
        self.endpoint = url
        self.region = region
        self.service = service
        self.credentials = credentials
    }

    /// The Host header: the endpoint's host, with its port when it is not the scheme's default.
    var hostHeader: String {
        let host = endpoint.host ?? ""
        guard let port = endpoint.port else { return host }
        let scheme = endpoint.scheme?.lowercased()
        if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) { return host }
        return "\(host):\(port)"
    }

    /// The AWS JSON protocol (KMS, STS's JSON flavour...): `POST /` with `X-Amz-Target:
    /// <targetPrefix>.<action>`. Returns the parsed answer; an error answer becomes an
    /// `AWSError` with AWS's `__type` as the code.
    public func json(targetPrefix: String, action: String, body: JSONValue, now: Date = Date()) async throws -> JSONValue {
        let (status, bytes) = try await send(method: "POST", path: "/", query: "",
                                             headers: [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "\(targetPrefix).\(action)")],
                                             body: body.serialized(), now: now, action: action)
        let parsed = try? JSONValue.parse(bytes)
        guard (200...299).contains(status) else { throw Self.error(status: status, body: bytes, json: parsed, service: service, action: action) }
        guard let parsed, parsed.objectValue != nil else {
            throw AWSError(code: nil, message: "the answer is not a JSON object", status: status, context: "\(service) \(action)")
        }
        return parsed
    }

    /// Signs and sends one request; (status, body). Transport failures become `AWSError`
    /// with no code and no status.
    public func send(method: String, path: String, query: String, headers: [(String, String)], body: [UInt8], now: Date = Date(),
                     action: String) async throws -> (UInt, [UInt8]) {
        let signer = SigV4Signer(credentials: credentials, region: region, service: service)
        let signed = signer.sign(method: method, path: path, query: query, headers: [("host", hostHeader)] + headers, body: body, date: now)
        var base = endpoint.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        var request = HTTPClientRequest(url: base + path + (query.isEmpty ? "" : "?" + query))
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in signed { request.headers.replaceOrAdd(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response: HTTPClientResponse
            do {
                response = try await Self.client.execute(request, timeout: timeout)
            } catch let e as HTTPClientError where e == .remoteConnectionClosed {
                // A pooled connection the peer had closed: once more, on a fresh one.
                response = try await Self.client.execute(request, timeout: timeout)
            }
            let collected = try await response.body.collect(upTo: maxResponseBytes)
            return (response.status.code, Array(collected.readableBytesView))
        } catch is NIOTooManyBytesError {
            throw AWSError(code: nil, message: "the answer is larger than \(maxResponseBytes >> 20) MiB", status: nil, context: "\(service) \(action)")
        } catch let e as HTTPClientError where "\(e)".contains("deadlineExceeded") || "\(e)".contains("readTimeout") || "\(e)".contains("connectTimeout") {
            throw AWSError(code: nil, message: "\(hostHeader) did not answer in time", status: nil, context: "\(service) \(action)")
        } catch {
            throw AWSError(code: nil, message: "cannot reach \(hostHeader): \(String("\(error)".prefix(160)))", status: nil, context: "\(service) \(action)")
        }
    }

    /// AWS's error shapes: JSON `{"__type": "...#Code", "message": "..."}` or the query
    /// protocol's XML `<Error><Code>..</Code><Message>..</Message></Error>`.
    static func error(status: UInt, body: [UInt8], json: JSONValue?, service: String, action: String) -> AWSError {
        var code: String?
        var message = ""
        if let json, json.objectValue != nil {
            code = json["__type"]?.stringValue.map { t in t.split(separator: "#").last.map(String.init) ?? t }
            message = json["message"]?.stringValue ?? json["Message"]?.stringValue ?? ""
        } else {
            let text = String(decoding: body.prefix(8192), as: UTF8.self)
            code = xmlElement("Code", in: text)
            message = xmlElement("Message", in: text) ?? ""
        }
        return AWSError(code: code ?? "HTTP \(status)", message: String(message.prefix(300)), status: status, context: "\(service) \(action)")
    }

    static func xmlElement(_ name: String, in text: String) -> String? {
        guard let open = text.range(of: "<\(name)>"), let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
    }
}
