import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import TenantCore

/// The request context: the client address, carried explicitly.
public struct CofferRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}

/// Maps Vault's HTTP API onto the core: verbs to operations, the response envelope,
/// `{"errors": [...]}` with Vault's status codes, and the node-level `sys/` endpoints
/// that answer while sealed.
public struct VaultResponder: HTTPResponder {
    public typealias Context = CofferRequestContext

    let core: Core
    let configuration: GatewayConfiguration
    let logger: Logger
    let metrics = RequestMetrics()
    var maxRequestSize: Int { configuration.maxRequestSize }

    public init(core: Core, configuration: GatewayConfiguration = GatewayConfiguration(), logger: Logger) {
        self.core = core
        self.configuration = configuration
        self.logger = logger
    }

    static let jsonHeaders: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
    static let vaultTokenHeader = HTTPField.Name("X-Vault-Token")!
    static let vaultNamespaceHeader = HTTPField.Name("X-Vault-Namespace")!
    static let forwardedForHeader = HTTPField.Name("X-Forwarded-For")!

    /// The request's token: `X-Vault-Token`, else an `Authorization: Bearer` value.
    static func clientToken(_ request: Request) -> String? {
        if let token = request.headers[vaultTokenHeader] { return token }
        guard let auth = request.headers[.authorization], auth.lowercased().hasPrefix("bearer ") else { return nil }
        return String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)
    }

    /// The client's address: on the cluster listener, the one a standby forwarding the
    /// request names (it proved its cluster certificate); elsewhere the peer, or
    /// `X-Forwarded-For` from a trusted proxy (`x_forwarded_for_authorized_addrs`).
    func clientAddress(_ request: Request, _ context: Context) -> String? {
        if configuration.clusterListener {
            return request.headers[ClusterLink.forwardedForHeader] ?? context.remoteAddress?.ipAddress
        }
        return ClientAddress.resolve(
            peer: context.remoteAddress?.ipAddress, forwardedFor: request.headers[Self.forwardedForHeader],
            trusted: configuration.forwardedForAuthorized)
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let start = ContinuousClock.now
        let requestID = RandomID.uuid()
        var info = RequestInfo()
        let response = await respond(request, context: context, requestID: requestID, info: &info)
        metrics.record(operation: info.operation, mountType: info.mountType, code: Int(response.status.code), start: start)
        if let ns = info.trace.namespacePath, let n = response.body.contentLength { core.usage.addBytesOut(namespace: ns, n) }
        if logger.logLevel <= .debug {
            logger.debug("request", metadata: [
                "request.id": "\(requestID)", "ns.path": "\(info.namespace)", "mount.path": "\(info.mountPath)",
                "operation": "\(info.operation)", "status": "\(response.status.code)",
            ])
        }
        return response
    }

    /// What the metrics and the request log learn about a request (bounded values only).
    struct RequestInfo {
        var operation = "unknown"
        var mountType = ""
        var mountPath = ""
        var namespace = "root"
        /// Filled by the core: the namespace that served the request (for metering).
        let trace = RequestTrace()
    }

    func respond(_ request: Request, context: Context, requestID: String, info: inout RequestInfo) async -> Response {
        do {
            return try await handle(request, context: context, requestID: requestID, info: &info)
        } catch let e as CofferError {
            if e.code == .internal {
                logger.error("request failed", metadata: ["request.id": "\(requestID)", "error": "\(e.message)", "at": "\(e.file):\(e.line)"])
            }
            return (try? e.response(from: request, context: context)) ?? Self.error(.internalServerError, ["internal error"])
        } catch is NIOTooManyBytesError {
            return Self.error(.contentTooLarge, ["http: request body too large"])
        } catch let e as HTTPError where e.status == .contentTooLarge {
            return Self.error(.contentTooLarge, ["http: request body too large"])
        } catch {
            logger.error("request failed", metadata: ["request.id": "\(requestID)", "error": "\(type(of: error))"])
            return Self.error(.internalServerError, ["internal error"])
        }
    }

    static func error(_ status: HTTPResponse.Status, _ messages: [String]) -> Response {
        let body = JSONValue.object(["errors": .array(messages.map { .string($0) })]).serialized()
        return Response(status: status, headers: jsonHeaders, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    static let rateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    static let rateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    static let rateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
    static let retryAfter = HTTPField.Name("Retry-After")!

    /// `X-RateLimit-*` (when the node enabled them) and `Retry-After` (on a 429).
    static func addHeaders(_ state: RateLimitState?, to response: inout Response) {
        guard let state else { return }
        if let v = state.limit { response.headers[rateLimitLimit] = String(v) }
        if let v = state.remaining { response.headers[rateLimitRemaining] = String(v) }
        if let v = state.resetSeconds { response.headers[rateLimitReset] = String(v) }
        if let v = state.retryAfterSeconds { response.headers[retryAfter] = String(v) }
    }

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue, head: Bool = false) -> Response {
        if head { return Response(status: status, headers: jsonHeaders) }
        var bytes = value.serialized()
        bytes.append(10)
        return Response(status: status, headers: jsonHeaders, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Decodes `%xx` in a path segment string.
    static func percentDecode(_ s: Substring) -> String {
        guard s.utf8.contains(UInt8(ascii: "%")) else { return String(s) }
        return s.removingPercentEncoding ?? String(s)
    }

    static func parseQuery(_ q: Substring) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = (kv[0].replacingOccurrences(of: "+", with: " ")).removingPercentEncoding ?? String(kv[0])
            let v = kv.count > 1 ? ((kv[1].replacingOccurrences(of: "+", with: " ")).removingPercentEncoding ?? String(kv[1])) : ""
            out[k] = .string(v)
        }
        return out
    }

    func handle(_ request: Request, context: Context, requestID: String, info: inout RequestInfo) async throws -> Response {
        let uri = request.head.path ?? "/"
        let pathPart: Substring
        let query: Substring
        if let q = uri.firstIndex(of: "?") {
            pathPart = uri[..<q]
            query = uri[uri.index(after: q)...]
        } else {
            pathPart = Substring(uri)
            query = ""
        }
        guard pathPart.hasPrefix("/v1/") else {
            return Self.error(.notFound, [])
        }
        var path = Self.percentDecode(pathPart.dropFirst(4))
        while path.hasPrefix("/") { path.removeFirst() }
        // One spelling per path, for every stage after this one (DESIGN §8).
        try RequestPath.check(path)
        var params = query.isEmpty ? [:] : Self.parseQuery(query)

        let method = request.method
        var operation: LogicalOperation
        switch method {
        case .get, .head:
            // `?list=` is parsed as Go's strconv.ParseBool, as Vault does (hvac sends "True").
            operation = .read
            if let s = params["list"]?.stringValue, !s.isEmpty {
                switch s {
                case "1", "t", "T", "TRUE", "true", "True": operation = .list
                case "0", "f", "F", "FALSE", "false", "False": break
                default: return Self.error(.badRequest, ["invalid value for \"list\": \"\(s.prefix(16))\""])
                }
            }
        case .post, .put: operation = .update
        case .patch: operation = .patch
        case .delete: operation = .delete
        default:
            if method.rawValue == "LIST" { operation = .list } else { return Self.error(.methodNotAllowed, ["unsupported operation"]) }
        }
        if params["help"] != nil { operation = .help }
        info.operation = operation.rawValue
        // Like Vault: a LIST always addresses a folder.
        if operation == .list && !path.hasSuffix("/") && !path.isEmpty { path += "/" }
        params["list"] = nil
        params["help"] = nil
        // snapshot endpoint: a binary body, answered before the JSON body parsing below (SnapshotEndpoint.swift)
        if Self.snapshotPaths.contains(path) { return try await snapshotEndpoint(request, path: path, operation: operation, requestID: requestID, context: context, info: &info) }

        if operation == .patch {
            let ct = request.headers[.contentType] ?? ""
            guard ct.lowercased().hasPrefix("application/merge-patch+json") else {
                return Self.error(.unsupportedMediaType, ["PATCH requires Content-Type of application/merge-patch+json, got \"\(ct.prefix(64))\""])
            }
        }
        var data: [String: JSONValue] = params
        var bodyBytes = 0
        var rawBody = ByteBuffer()
        if operation == .update || operation == .patch {
            let body = try await request.body.collect(upTo: maxRequestSize)
            rawBody = body
            bodyBytes = body.readableBytes
            if body.readableBytes > 0 {
                let parsed = try JSONValue.parse(body.readableBytesView)
                guard case .object(let obj) = parsed else {
                    throw CofferError.invalid("failed to parse JSON input: request body must be a JSON object")
                }
                data = obj
            } else {
                data = [:]
            }
        } else if method == .delete {
            rawBody = try await request.body.collect(upTo: maxRequestSize)
        }

        let token = Self.clientToken(request)

        if path == "sys/internal/specs/openapi" && operation != .help {
            guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            info.mountType = "system"
            // It names the root namespace's mounts: not for callers without a token.
            guard try await core.isLiveToken(token) else { throw CofferError.denied() }
            return Self.json(.ok, OpenAPIDocument.build(try core.root(), version: core.configuration.version))
        }
        if path == "sys/metrics" && operation != .help {
            info.mountType = "system"
            return try await metricsEndpoint(token: token, operation: operation, params: params)
        }

        if path == "sys/ha-status" && operation != .help {
            info.mountType = "system"
            return try await haStatus(request, context: context, operation: operation, token: token, requestID: requestID, body: rawBody)
        }

        // Node-level endpoints that answer whether or not the core is sealed.
        if let r = try await nodeEndpoint(path: path, method: method, operation: operation, data: data, params: params, token: token) {
            return r
        }

        let remote = clientAddress(request, context)
        if configuration.clusterListener && path == ClusterLink.echoPath && operation == .update {
            // A standby is alive (its peer certificate is the authentication).
            guard let echo = try? JSONDecoder().decode(HANodeEcho.self, from: Data(rawBody.readableBytesView)) else {
                throw CofferError.invalid("invalid echo")
            }
            core.recordEcho(echo)
            return Response(status: .noContent)
        }
        if configuration.clusterListener && path == ClusterLink.usagePath && operation == .update {
            // A standby's usage counts (its peer certificate is the authentication).
            try core.mergeUsage(Array(rawBody.readableBytesView))
            return Response(status: .noContent)
        }
        // HA standby: reads are served here from caches the change feed keeps fresh; a
        // request that would write (or issue a lease) goes to the active node unchanged.
        var forwardOnWrite = false
        if core.haRole == .standby {
            if configuration.clusterListener {
                throw CofferError(.notActive, "this node is no longer the active node; retry")
            }
            if let link = configuration.cluster, !Self.servedByEveryNode(path: path, operation: operation) {
                guard operation == .read || operation == .list || operation == .help else {
                    info.mountType = "forwarded"
                    return try await link.forward(request, body: rawBody, clientAddress: remote)
                }
                forwardOnWrite = true
            }
        }
        let nsHeader = request.headers[Self.vaultNamespaceHeader]
        var coreRequest = CoreRequest(id: requestID, operation: operation, path: path, data: data, clientToken: token, remoteAddress: remote)
        coreRequest.bytesIn = bodyBytes
        coreRequest.trace = info.trace
        let response: LogicalResponse
        do {
            response = try await core.handle(coreRequest, namespace: nsHeader)
        } catch let e as CofferError where e.code == .notFound && (operation == .read || operation == .list) && e.message == "" {
            return Self.error(.notFound, [])
        } catch let e as CofferError where e.code == .standbyWrite && forwardOnWrite {
            info.mountType = "forwarded"
            return try await configuration.cluster!.forward(request, body: rawBody, clientAddress: remote)
        }
        info.mountType = response.mountType ?? ""
        info.mountPath = response.mountPoint ?? ""
        info.namespace = response.namespacePath.map { $0.isEmpty ? "root" : $0 } ?? "root"
        var rendered = render(response, requestID: requestID, operation: operation, head: method == .head, mountType: response.mountType)
        Self.addHeaders(response.rateLimit, to: &rendered)
        return rendered
    }

    func render(_ r: LogicalResponse, requestID: String, operation: LogicalOperation, head: Bool, mountType: String?) -> Response {
        if let text = r.rawText {
            var headers: HTTPFields = [.cacheControl: "no-store"]
            headers[.contentType] = text.contentType
            if head { return Response(status: .ok, headers: headers) }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text.body)))
        }
        if let raw = r.rawBody {
            return Self.json(HTTPResponse.Status(code: r.statusCode ?? 200), raw, head: head)
        }
        if r.statusCode == 204 && r.data == nil && r.auth == nil && r.warnings.isEmpty {
            return Response(status: .noContent)
        }
        // Vault: a LIST with no keys is a 404, whatever the backend (an empty folder, no roles).
        if operation == .list && r.warnings.isEmpty && (r.data?["keys"]?.arrayValue?.isEmpty ?? true) {
            return Self.error(.notFound, [])
        }
        if r.data == nil && r.auth == nil && r.secret == nil && r.warnings.isEmpty {
            if operation == .read || operation == .list { return Self.error(.notFound, []) }
            return Response(status: .noContent)
        }
        let status = HTTPResponse.Status(code: r.statusCode ?? 200)
        if head { return Response(status: status, headers: Self.jsonHeaders) }
        return Response(status: status, headers: Self.jsonHeaders, body: ResponseBody(byteBuffer: ByteBuffer(bytes: Self.envelope(r, requestID: requestID, mountType: mountType))))
    }

    static let envelopeKeys: Set<String> = ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth", "mount_type"]

    /// Vault's response envelope, written directly in Vault's key order.
    static func envelope(_ r: LogicalResponse, requestID: String, mountType: String?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func key(_ k: StaticString, first: Bool = false) {
            if !first { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            k.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        }
        out.append(UInt8(ascii: "{"))
        key("request_id", first: true)
        JSONValue.writeString(requestID, into: &out)
        key("lease_id")
        JSONValue.writeString(r.leaseID ?? "", into: &out)
        key("renewable")
        out.append(contentsOf: (r.secret?.renewable ?? false ? "true" : "false").utf8)
        key("lease_duration")
        out.append(contentsOf: String(r.secret?.ttl ?? 0).utf8)
        key("data")
        if let d = r.data { JSONValue.object(d).write(into: &out) } else { out.append(contentsOf: "null".utf8) }
        key("wrap_info")
        (r.wrapInfo ?? .null).write(into: &out)
        key("warnings")
        if r.warnings.isEmpty { out.append(contentsOf: "null".utf8) } else { JSONValue.array(r.warnings.map { .string($0) }).write(into: &out) }
        key("auth")
        if let a = r.auth { a.json.write(into: &out) } else { out.append(contentsOf: "null".utf8) }
        if let mountType {
            key("mount_type")
            JSONValue.writeString(mountType, into: &out)
        }
        if r.dataAtTopLevel, let d = r.data {
            for k in d.keys.sorted() where !envelopeKeys.contains(k) {
                out.append(UInt8(ascii: ","))
                JSONValue.writeString(k, into: &out)
                out.append(UInt8(ascii: ":"))
                d[k]!.write(into: &out)
            }
        }
        out.append(contentsOf: [UInt8(ascii: "}"), 10])
        return out
    }

    // MARK: metrics

    func metricsEndpoint(token: String?, operation: LogicalOperation, params: [String: JSONValue]) async throws -> Response {
        guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
        if !configuration.unauthenticatedMetricsAccess {
            try await core.root().authorize(clientToken: token, operation: .read, path: "sys/metrics")
        }
        let text = await configuration.metricsExporter()
        if params["format"]?.stringValue == "prometheus" {
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        return Self.json(.ok, PrometheusText.summary(text))
    }

    // MARK: sys/ha-status

    /// `GET sys/ha-status`: the active node and the standbys that echoed to it recently
    /// (Vault's shape: `nodes`, at the top level and in `data`). A standby forwards it, so
    /// the answer is always the active node's view.
    func haStatus(_ request: Request, context: Context, operation: LogicalOperation, token: String?, requestID: String, body: ByteBuffer) async throws -> Response {
        guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
        if core.isSealed { throw CofferError(.sealed, "Vault is sealed") }
        if core.haRole == .standby, !configuration.clusterListener, let link = configuration.cluster {
            return try await link.forward(request, body: body, clientAddress: clientAddress(request, context))
        }
        try await core.root().authorize(clientToken: token, operation: .read, path: "sys/ha-status", requestID: requestID, remoteAddress: clientAddress(request, context))
        let hostname = ProcessInfo.processInfo.hostName
        var nodes: [JSONValue] = [[
            "hostname": .string(hostname), "api_address": .string(configuration.apiAddress),
            "cluster_address": .string(core.haConfiguration?.clusterAddress ?? ""), "active_node": true, "last_echo": .null,
            "version": .string(core.configuration.version),
        ]]
        for s in core.recentStandbys() {
            nodes.append([
                "hostname": .string(s.hostname), "api_address": .string(s.apiAddr), "cluster_address": .string(s.clusterAddr),
                "active_node": false, "last_echo": .string(RFC3339.format(Date(timeIntervalSince1970: s.lastEcho))),
                "version": .string(s.version),
            ])
        }
        var r = LogicalResponse(data: ["nodes": .array(nodes)])
        r.dataAtTopLevel = true
        return render(r, requestID: requestID, operation: .read, head: request.method == .head, mountType: "system")
    }

    // MARK: sys/ endpoints that work while sealed

    /// Requests a standby answers itself even though they are writes: sealing this node.
    static func servedByEveryNode(path: String, operation: LogicalOperation) -> Bool {
        path == "sys/seal"
    }

    func nodeEndpoint(path: String, method: HTTPRequest.Method, operation: LogicalOperation, data: [String: JSONValue], params: [String: JSONValue], token: String?) async throws -> Response? {
        if operation == .help, let entry = OpenAPIDocument.nodePaths.first(where: { $0.0 == "/" + path }) {
            return Self.json(.ok, ["help": .string(entry.2)])
        }
        switch path {
        case "sys/init":
            switch operation {
            case .read:
                let initialized = try await core.sealConfiguration() != nil
                return Self.json(.ok, ["initialized": .bool(initialized)])
            case .update:
                let shares = try Self.intField(data, "secret_shares")
                let threshold = try Self.intField(data, "secret_threshold")
                if data["pgp_keys"].map({ !$0.isNull }) == true || data["stored_shares"]?.intValue ?? 0 > 0 {
                    throw CofferError.invalid("pgp_keys and stored_shares are not supported with the shamir seal")
                }
                let (keys, root) = try await core.initialize(shares: shares ?? 0, threshold: threshold ?? 0)
                return Self.json(.ok, [
                    "keys": .array(keys.map { .string(Hex.encode($0)) }),
                    "keys_base64": .array(keys.map { .string(Data($0).base64EncodedString()) }),
                    "root_token": .string(root),
                ])
            default:
                throw CofferError(.unsupportedOperation, "unsupported operation")
            }
        case "sys/seal-status":
            guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            return Self.json(.ok, try await sealStatusJSON())
        case "sys/unseal":
            guard operation == .update else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            let reset = data["reset"]?.boolValue ?? (data["reset"]?.stringValue == "true")
            if let k = data["key"], !k.isNull, k.stringValue == nil {
                throw CofferError.invalid("'key' must be a string")
            }
            _ = try await core.unseal(key: data["key"]?.stringValue, reset: reset)
            return Self.json(.ok, try await sealStatusJSON())
        case "sys/health":
            guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            return try await health(params: params, head: method == .head)
        case "sys/leader":
            guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            if core.isSealed { throw CofferError(.sealed, "Vault is sealed") }
            let leader = core.haLeader
            let isSelf = core.haRole == .active
            return Self.json(.ok, [
                "ha_enabled": .bool(core.haEnabled), "is_self": .bool(isSelf),
                "active_time": .string(isSelf ? leader.map { RFC3339.format(Date(timeIntervalSince1970: $0.since)) } ?? "0001-01-01T00:00:00Z" : "0001-01-01T00:00:00Z"),
                "leader_address": .string(leader?.apiAddr ?? ""), "leader_cluster_address": .string(leader?.clusterAddr ?? ""),
                "performance_standby": false, "performance_standby_last_remote_wal": 0,
            ])
        case "sys/step-down" where core.haRole != .standby:
            guard operation == .update else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            try await core.root().authorize(clientToken: token, operation: .update, path: "sys/step-down", needsSudo: true)
            try await core.stepDown()
            return Response(status: .noContent)
        default:
            if path.hasPrefix("sys/") && core.isSealed { throw CofferError(.sealed, "Vault is sealed") }
            return nil
        }
    }

    static func intField(_ data: [String: JSONValue], _ name: String) throws -> Int? {
        guard let v = data[name], !v.isNull else { return nil }
        if let i = v.intValue { return Int(i) }
        if let s = v.stringValue, let i = Int(s) { return i }
        throw CofferError.invalid("error converting input for field \"\(name)\": expected integer, got \(v.kindName)")
    }

    func sealStatusJSON() async throws -> JSONValue {
        let s = try await core.status()
        var o: [String: JSONValue] = [
            "type": "shamir", "initialized": .bool(s.initialized), "sealed": .bool(s.sealed),
            "t": .int(Int64(s.threshold)), "n": .int(Int64(s.shares)), "progress": .int(Int64(s.progress)),
            "nonce": .string(s.nonce), "version": .string(core.configuration.version), "build_date": "2026-11-29T00:00:00Z",
            "migration": false, "recovery_seal": false, "storage_type": .string(core.storageType),
        ]
        if !s.sealed {
            o["cluster_name"] = .string(core.configuration.clusterName)
            o["cluster_id"] = .string(core.clusterID)
        }
        return .object(o)
    }

    func health(params: [String: JSONValue], head: Bool) async throws -> Response {
        let s = try await core.status()
        func code(_ name: String, _ dflt: Int) -> Int {
            if let v = params[name]?.stringValue, let i = Int(v), (100...599).contains(i) { return i }
            return dflt
        }
        let status: Int
        if !s.initialized {
            status = code("uninitcode", 501)
        } else if s.sealed {
            status = code("sealedcode", 503)
        } else if core.haRole == .standby && !(params["standbyok"]?.stringValue == "true" || params["perfstandbyok"]?.stringValue == "true") {
            status = code("standbycode", 429)
        } else {
            status = code("activecode", 200)
        }
        let body: JSONValue = [
            "initialized": .bool(s.initialized), "sealed": .bool(s.sealed), "standby": .bool(!s.sealed && core.haRole == .standby),
            "performance_standby": false, "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled", "server_time_utc": .int(Int64(Date().timeIntervalSince1970)),
            "version": .string(core.configuration.version), "cluster_name": .string(core.configuration.clusterName),
            "cluster_id": .string(s.sealed ? "" : core.clusterID), "enterprise": false, "echo_duration_ms": 0,
            "clock_skew_ms": 0, "replication_primary_canary_age_ms": 0,
        ]
        return Self.json(HTTPResponse.Status(code: status), body, head: head)
    }
}
