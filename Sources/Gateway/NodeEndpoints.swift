import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TenantCore

/// Stage 3: what the node answers itself, before any namespace: `sys/health`,
/// `sys/seal-status`, init and unseal (sealed or not), `sys/leader`, `sys/step-down`,
/// `sys/metrics`, `sys/ha-status`, the OpenAPI document, snapshots, and on the cluster
/// listener a standby's echo and usage counts.
struct NodeEndpointStage: RouterMiddleware {
    typealias Context = CofferRequestContext
    let gateway: VaultGateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let vault = context.vault, let response = try await gateway.nodeEndpoint(request, vault, context: context) else {
            return try await next(request, context)
        }
        return response
    }
}

extension VaultGateway {
    /// The node's own answer to `vault`, or nil when the request goes on to a namespace.
    func nodeEndpoint(_ request: Request, _ vault: VaultRequest, context: CofferRequestContext) async throws -> Response? {
        let path = vault.path
        let operation = vault.operation
        let token = vault.token
        // Binary bodies: answered before any JSON (SnapshotEndpoint.swift).
        if Self.snapshotPaths.contains(path) {
            context.record.set(mountType: "system")
            return try await snapshotEndpoint(request, path: path, operation: operation, requestID: context.requestID, context: context)
        }
        if path == "sys/internal/specs/openapi" && operation != .help {
            guard operation == .read else { throw CofferError(.unsupportedOperation, "unsupported operation") }
            context.record.set(mountType: "system")
            // It names the root namespace's mounts: not for callers without a token.
            guard try await core.isLiveToken(token) else { throw CofferError.denied() }
            return Self.json(.ok, OpenAPIDocument.build(try core.root(), version: core.configuration.version))
        }
        if path == "sys/metrics" && operation != .help {
            context.record.set(mountType: "system")
            return try await metricsEndpoint(token: token, operation: operation, params: vault.params)
        }
        if path == "sys/ha-status" && operation != .help {
            context.record.set(mountType: "system")
            return try await haStatus(request, context: context, operation: operation, token: token, requestID: context.requestID, body: vault.body)
        }
        // Node-level endpoints that answer whether or not the core is sealed.
        if let r = try await sealEndpoint(path: path, method: request.method, operation: operation, data: vault.data, params: vault.params, token: token) {
            return r
        }
        if configuration.clusterListener && path == ClusterLink.echoPath && operation == .update {
            // A standby is alive (its peer certificate is the authentication).
            guard let echo = try? JSONDecoder().decode(HANodeEcho.self, from: Data(vault.body.readableBytesView)) else {
                throw CofferError.invalid("invalid echo")
            }
            core.recordEcho(echo)
            return Response(status: .noContent)
        }
        if configuration.clusterListener && path == ClusterLink.usagePath && operation == .update {
            // A standby's usage counts (its peer certificate is the authentication).
            try core.mergeUsage(Array(vault.body.readableBytesView))
            return Response(status: .noContent)
        }
        return nil
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
    func haStatus(_ request: Request, context: CofferRequestContext, operation: LogicalOperation, token: String?, requestID: String, body: ByteBuffer) async throws -> Response {
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

    func sealEndpoint(path: String, method: HTTPRequest.Method, operation: LogicalOperation, data: [String: JSONValue], params: [String: JSONValue], token: String?) async throws -> Response? {
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
                if Self.givesPGPKeys(data["pgp_keys"]) {
                    throw CofferError.invalid("pgp_keys are not supported: the key shares are returned in the response")
                }
                if Self.givesPGPKeys(data["recovery_pgp_keys"]) {
                    throw CofferError.invalid("recovery_pgp_keys are not supported: the recovery shares are returned in the response")
                }
                if core.autoSeal == nil, try Self.intField(data, "stored_shares") ?? 0 > 0 {
                    throw CofferError.invalid("stored_shares is not supported with the shamir seal")
                }
                let r = try await core.initialize(shares: shares ?? 0, threshold: threshold ?? 0,
                                                  recoveryShares: try Self.intField(data, "recovery_shares"),
                                                  recoveryThreshold: try Self.intField(data, "recovery_threshold"))
                var o: [String: JSONValue] = [
                    "keys": Self.hexShares(r.keys), "keys_base64": Self.base64Shares(r.keys),
                    "root_token": .string(r.rootToken),
                ]
                if core.autoSeal != nil {
                    o["recovery_keys"] = Self.hexShares(r.recoveryKeys)
                    o["recovery_keys_base64"] = Self.base64Shares(r.recoveryKeys)
                }
                return Self.json(.ok, .object(o))
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
            _ = try await core.unseal(key: data["key"]?.stringValue, reset: reset, migrate: Self.flag(data["migrate"]))
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
            if let r = try await keyCeremonyEndpoint(path: path, operation: operation, data: data) { return r }
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
            "type": .string(s.type), "initialized": .bool(s.initialized), "sealed": .bool(s.sealed),
            "t": .int(Int64(s.threshold)), "n": .int(Int64(s.shares)), "progress": .int(Int64(s.progress)),
            "nonce": .string(s.nonce), "version": .string(core.configuration.version), "build_date": "2026-11-29T00:00:00Z",
            "migration": .bool(s.migration), "recovery_seal": .bool(s.recoverySeal), "storage_type": .string(core.storageType),
        ]
        // Coffer's addition: why an auto seal has not unsealed the node (no secret in it).
        if s.sealed, let e = s.autoUnsealError { o["auto_unseal_error"] = .string(e) }
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
