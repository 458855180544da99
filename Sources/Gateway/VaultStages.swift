import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TenantCore
import Audit

/// A Vault request as the decoding stage read it off the wire. A class: every stage passes
/// its context on by value, and one reference is cheaper to copy than the fields it holds.
public final class VaultRequest: Sendable {
    /// The path below `/v1/` (checked: one spelling per path), relative to the namespace of
    /// `X-Vault-Namespace` (a path prefix may still name child namespaces).
    public let path: String
    public let operation: LogicalOperation
    /// The query parameters (`list` and `help` removed).
    public let params: [String: JSONValue]
    /// The JSON body of a write (or the query parameters of a read).
    public let data: [String: JSONValue]
    /// The body as received (forwarding, the cluster listener's endpoints); empty for a
    /// read, and for a snapshot upload (its node endpoint streams it).
    public let body: ByteBuffer
    public let token: String?
    public let namespaceHeader: String?
    public let remoteAddress: String?
    /// `X-Vault-Wrap-TTL` in seconds (nil: not asked).
    public let wrapTTL: Int?

    init(path: String, operation: LogicalOperation, params: [String: JSONValue], data: [String: JSONValue], body: ByteBuffer, token: String?, namespaceHeader: String?, remoteAddress: String?, wrapTTL: Int? = nil) {
        self.path = path
        self.operation = operation
        self.params = params
        self.data = data
        self.body = body
        self.token = token
        self.namespaceHeader = namespaceHeader
        self.remoteAddress = remoteAddress
        self.wrapTTL = wrapTTL
    }
}

/// Stage 2: HTTP to a `VaultRequest`. A path outside `/v1/` is Vault's bare 404; a verb
/// Vault does not know is 405.
struct DecodingStage: RouterMiddleware {
    typealias Context = CofferRequestContext
    let gateway: VaultGateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        guard let vault = try await decode(request, context: context) else { return VaultGateway.error(.notFound, []) }
        context.record.set(operation: vault.operation)
        context.vault = vault
        return try await next(request, context)
    }

    func decode(_ request: Request, context: Context) async throws -> VaultRequest? {
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
        guard pathPart.hasPrefix("/v1/") else { return nil }
        var path = VaultGateway.percentDecode(pathPart.dropFirst(4))
        while path.hasPrefix("/") { path.removeFirst() }
        // One spelling per path, for every stage after this one (DESIGN §8).
        try RequestPath.check(path)
        var params = query.isEmpty ? [:] : VaultGateway.parseQuery(query)

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
                default: throw CofferError.invalid("invalid value for \"list\": \"\(s.prefix(16))\"")
                }
            }
        case .post, .put: operation = .update
        case .patch: operation = .patch
        case .delete: operation = .delete
        default:
            guard method.rawValue == "LIST" else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            operation = .list
        }
        if params["help"] != nil { operation = .help }
        // Like Vault: a LIST always addresses a folder.
        if operation == .list && !path.hasSuffix("/") && !path.isEmpty { path += "/" }
        params["list"] = nil
        params["help"] = nil

        var data = params
        var body = ByteBuffer()
        // A snapshot upload is binary: its node endpoint reads the body itself.
        if !VaultGateway.snapshotPaths.contains(path) {
            if operation == .patch {
                let ct = request.headers[.contentType] ?? ""
                guard ct.lowercased().hasPrefix("application/merge-patch+json") else {
                    throw HTTPError(.unsupportedMediaType, message: "PATCH requires Content-Type of application/merge-patch+json, got \"\(ct.prefix(64))\"")
                }
            }
            if operation == .update || operation == .patch {
                body = try await request.body.collect(upTo: gateway.maxRequestSize)
                if body.readableBytes > 0, (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/ocsp-request") {
                    // A binary OCSP request (RFC 6960 over HTTP POST): the engine reads it as `request`.
                    data = ["request": .string(Data(body.readableBytesView).base64EncodedString())]
                } else if body.readableBytes > 0, (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/x-www-form-urlencoded"),
                   body.readableBytesView.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }) != UInt8(ascii: "{") {
                    // A form, as an OIDC provider's form_post sends one. Like Vault, a body that
                    // starts as JSON is JSON whatever its Content-Type (curl -d sends the form type).
                    data = VaultGateway.parseQuery(Substring(String(decoding: body.readableBytesView, as: UTF8.self)))
                } else if body.readableBytes > 0 {
                    guard case .object(let obj) = try JSONValue.parse(body.readableBytesView) else {
                        throw CofferError.invalid("failed to parse JSON input: request body must be a JSON object")
                    }
                    data = obj
                } else {
                    data = [:]
                }
            } else if method == .delete {
                body = try await request.body.collect(upTo: gateway.maxRequestSize)
            }
        }
        var wrapTTL: Int?
        if let raw = request.headers[VaultGateway.wrapTTLHeader] {
            guard let secs = GoDuration.parseSeconds(raw), secs >= 0 else {
                throw CofferError.invalid("error parsing X-Vault-Wrap-TTL: invalid duration \"\(raw.prefix(32))\"")
            }
            wrapTTL = secs > 0 ? Int(secs) : nil
        }
        return VaultRequest(
            path: path, operation: operation, params: params, data: data, body: body,
            token: VaultGateway.clientToken(request), namespaceHeader: request.headers[VaultGateway.vaultNamespaceHeader],
            remoteAddress: gateway.clientAddress(request, context), wrapTTL: wrapTTL)
    }
}

/// Stage 4: an HA standby serves reads from caches the change feed keeps fresh; a request
/// that writes (or issues a lease) goes to the active node unchanged — at once when its
/// verb writes, or when a read turns out to need the active node (`standbyWrite`).
struct ForwardingStage: RouterMiddleware {
    typealias Context = CofferRequestContext
    let gateway: VaultGateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard gateway.core.haRole == .standby, let vault = context.vault else { return try await next(request, context) }
        if gateway.configuration.clusterListener {
            throw CofferError(.notActive, "this node is no longer the active node; retry")
        }
        guard let link = gateway.configuration.cluster, !VaultGateway.servedByEveryNode(path: vault.path, operation: vault.operation) else {
            return try await next(request, context)
        }
        switch vault.operation {
        case .read, .list, .help:
            do {
                return try await next(request, context)
            } catch let e as CofferError where e.code == .standbyWrite {
                context.record.set(mountType: "forwarded")
                return try await link.forward(request, body: vault.body, clientAddress: vault.remoteAddress)
            }
        default:
            context.record.set(mountType: "forwarded")
            return try await link.forward(request, body: vault.body, clientAddress: vault.remoteAddress)
        }
    }
}

/// Stage 5: the namespace (`X-Vault-Namespace`, then leading path segments naming child
/// namespaces, loaded on first use), held against idle eviction until the response is out.
struct NamespaceStage: RouterMiddleware {
    typealias Context = CofferRequestContext
    let gateway: VaultGateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let vault = context.vault else { return try await next(request, context) }
        let (ns, rel) = try await gateway.core.resolve(header: vault.namespaceHeader ?? Self.namespaceInState(vault), path: vault.path)
        context.record.set(namespace: ns.path)
        var context = context
        context.resolved = ResolvedRequest(namespace: ns, path: rel)
        return try await gateway.core.withNamespaceInUse(ns) { try await next(request, context) }
    }
}

extension NamespaceStage {
    /// An OIDC provider sends the browser back to `…/oidc/callback` without the namespace
    /// header; with `namespace_in_state` the namespace rides in the state as `<state>,ns=<path>`
    /// (Vault's form), so one redirect URI serves every namespace.
    static func namespaceInState(_ vault: VaultRequest) -> String? {
        guard vault.path.hasSuffix("/oidc/callback"),
              let state = vault.params["state"]?.stringValue ?? vault.data["state"]?.stringValue,
              let r = state.range(of: ",ns=") else { return nil }
        let ns = String(state[r.upperBound...])
        return ns.isEmpty ? nil : ns
    }
}

/// Stage 6: the request counts in its namespace's usage, by the class its route declares
/// (logins, credentials, crypto) or its operation's; throttled and failed requests count
/// as such. A request forwarded to the active node counts there.
struct MeteringStage: RouterMiddleware {
    typealias Context = NamespacedContext
    let gateway: VaultGateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let core = gateway.core
        let ns = context.namespace
        let kind = core.requestClass(ns: ns, rel: context.path, operation: context.vault.operation)
        let bytesIn = context.vault.body.readableBytes
        do {
            let response = try await next(request, context)
            core.usage.record(namespace: ns.path, storagePrefix: ns.storagePrefix, class: kind, outcome: .ok, bytesIn: bytesIn, units: context.record.units)
            return response
        } catch let e as CofferError where e.code == .standbyWrite {
            throw e
        } catch let e as CofferError {
            core.usage.record(namespace: ns.path, storagePrefix: ns.storagePrefix, class: kind, outcome: e.code == .rateLimited ? .throttled : .error, bytesIn: bytesIn)
            throw e
        } catch {
            core.usage.record(namespace: ns.path, storagePrefix: ns.storagePrefix, class: kind, outcome: .error, bytesIn: bytesIn)
            throw error
        }
    }
}

/// Stage 7: one token from every applicable rate-limit quota's bucket (`RateLimitQuotas`);
/// a refusal is 429 with `Retry-After` (audited when `enable_rate_limit_audit_logging`).
struct RateLimitStage: RouterMiddleware {
    typealias Context = NamespacedContext
    let gateway: VaultGateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let limiter = gateway.configuration.rateLimiter else { return try await next(request, context) }
        let core = gateway.core
        let vault = context.vault
        var context = context
        do {
            context.rateLimit = try await RateLimitQuotas.enforce(
                core: core, limiter: limiter, namespace: context.namespace, path: context.path, request: vault)
        } catch let e as CofferError where e.code == .rateLimited {
            if core.quotaConfig.enableAuditLogging, core.audit.hasDevices {
                var info = AuditRequestInfo(
                    id: context.requestID, operation: vault.operation, path: context.path,
                    namespace: AuditNamespace(id: context.namespace.id, path: context.namespace.path),
                    clientToken: vault.token ?? "", data: vault.data, remoteAddress: vault.remoteAddress ?? "")
                info.error = e.message
                try? await core.audit.logRequest(info)
            }
            throw e
        }
        return try await next(request, context)
    }
}
