#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferSDK
import Synchronization
@preconcurrency import Crypto

extension CofferError.Code {
    /// No audit device accepted an entry, so the request was refused (500).
    public static let auditFailed = CofferError.Code("audit_failed")
}

/// The namespace a request ran in, as audit entries show it (`request.namespace`).
public struct AuditNamespace: Sendable, Hashable {
    /// Vault-style short id; "root" for the root namespace.
    public var id: String
    /// Full path with a trailing slash; "" for the root namespace.
    public var path: String

    public init(id: String = "root", path: String = "") {
        self.id = id
        self.path = path
    }
}

/// A token's identity in an entry: the caller's (`auth`) or a token a response created
/// (`response.auth`). `clientToken` and `accessor` are HMAC'd unless the device logs raw.
public struct AuditAuth: Sendable, Hashable {
    public var clientToken: String
    public var accessor: String
    public var displayName: String
    public var policies: [String]
    public var tokenPolicies: [String]
    public var identityPolicies: [String]
    public var metadata: [String: String]
    public var entityID: String
    public var tokenType: String
    /// Seconds.
    public var tokenTTL: Int64
    /// RFC 3339, or "" when unknown.
    public var tokenIssueTime: String
    public var numUses: Int
    public var remainingUses: Int

    public init(
        clientToken: String = "", accessor: String = "", displayName: String = "", policies: [String] = [],
        tokenPolicies: [String] = [], identityPolicies: [String] = [], metadata: [String: String] = [:],
        entityID: String = "", tokenType: String = "", tokenTTL: Int64 = 0, tokenIssueTime: String = "",
        numUses: Int = 0, remainingUses: Int = 0
    ) {
        self.clientToken = clientToken
        self.accessor = accessor
        self.displayName = displayName
        self.policies = policies
        self.tokenPolicies = tokenPolicies
        self.identityPolicies = identityPolicies
        self.metadata = metadata
        self.entityID = entityID
        self.tokenType = tokenType
        self.tokenTTL = tokenTTL
        self.tokenIssueTime = tokenIssueTime
        self.numUses = numUses
        self.remainingUses = remainingUses
    }

    /// The caller of a request, from the token the core resolved. `clientToken` is the raw
    /// token the request carried (the core hands it to audit only, which HMACs it).
    public init(token: RequestToken, clientToken: String, tokenType: String = "service", tokenTTL: Int64 = 0) {
        self.init(
            clientToken: clientToken, accessor: token.accessor, displayName: token.displayName,
            policies: token.policies, tokenPolicies: token.policies, entityID: token.entityID,
            tokenType: tokenType, tokenTTL: tokenTTL)
    }

    /// A token a response created (login, `auth/token/create`).
    public init(_ auth: AuthInfo) {
        self.init(
            clientToken: auth.clientToken, accessor: auth.accessor, policies: auth.policies,
            tokenPolicies: auth.tokenPolicies, metadata: auth.metadata, entityID: auth.entityID,
            tokenType: auth.tokenType, tokenTTL: Int64(auth.leaseDuration), numUses: auth.numUses)
    }
}

/// A request as audit sees it; the integrator fills it from `CoreRequest` and the route.
///
/// `mountPoint` and `path` are relative to the namespace, as in Vault's entries.
public struct AuditRequestInfo: Sendable {
    public var id: String
    public var operation: LogicalOperation
    public var path: String
    public var namespace: AuditNamespace
    public var mountType: String
    public var mountPoint: String
    public var mountAccessor: String
    /// The raw token the request carried ("" for unauthenticated requests).
    public var clientToken: String
    public var clientTokenAccessor: String
    /// The request body / query parameters.
    public var data: [String: JSONValue]?
    public var remoteAddress: String
    public var remotePort: Int
    /// Seconds, when the client asked for response wrapping.
    public var wrapTTL: Int
    /// The caller; nil for unauthenticated requests.
    public var auth: AuditAuth?
    /// Set when the request was refused before it ran (e.g. "permission denied").
    public var error: String?

    public init(
        id: String = RandomID.uuid(), operation: LogicalOperation, path: String,
        namespace: AuditNamespace = AuditNamespace(), mountType: String = "", mountPoint: String = "",
        mountAccessor: String = "", clientToken: String = "", clientTokenAccessor: String = "",
        data: [String: JSONValue]? = nil, remoteAddress: String = "", remotePort: Int = 0, wrapTTL: Int = 0,
        auth: AuditAuth? = nil, error: String? = nil
    ) {
        self.id = id
        self.operation = operation
        self.path = path
        self.namespace = namespace
        self.mountType = mountType
        self.mountPoint = mountPoint
        self.mountAccessor = mountAccessor
        self.clientToken = clientToken
        self.clientTokenAccessor = clientTokenAccessor
        self.data = data
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.wrapTTL = wrapTTL
        self.auth = auth
        self.error = error
    }

    /// What a device's `filter` sees.
    public var filterFields: AuditFilter.Fields {
        AuditFilter.Fields(
            namespace: namespace.path, mountType: mountType, mountPoint: mountPoint,
            operation: operation.rawValue, path: path)
    }
}

/// `response.wrap_info` of an entry; `token`, `accessor` and `wrappedAccessor` are HMAC'd.
public struct AuditWrapInfo: Sendable, Hashable {
    public var token: String
    public var accessor: String
    public var ttl: Int
    public var creationTime: String
    public var creationPath: String
    public var wrappedAccessor: String

    public init(token: String, accessor: String = "", ttl: Int = 0, creationTime: String = "", creationPath: String = "", wrappedAccessor: String = "") {
        self.token = token
        self.accessor = accessor
        self.ttl = ttl
        self.creationTime = creationTime
        self.creationPath = creationPath
        self.wrappedAccessor = wrappedAccessor
    }

    /// From the `wrap_info` object of a response envelope; nil when it has no token.
    public init?(_ json: JSONValue?) {
        guard let token = json?["token"]?.stringValue else { return nil }
        self.init(
            token: token, accessor: json?["accessor"]?.stringValue ?? "", ttl: Int(json?["ttl"]?.intValue ?? 0),
            creationTime: json?["creation_time"]?.stringValue ?? "", creationPath: json?["creation_path"]?.stringValue ?? "",
            wrappedAccessor: json?["wrapped_accessor"]?.stringValue ?? "")
    }
}

/// A response as audit sees it, with the request it answers.
public struct AuditResponseInfo: Sendable {
    public var request: AuditRequestInfo
    public var data: [String: JSONValue]?
    /// A token the response created.
    public var auth: AuditAuth?
    /// `response.secret.lease_id`, for responses that registered a lease.
    public var leaseID: String?
    public var wrapInfo: AuditWrapInfo?
    public var warnings: [String]
    public var redirect: String
    /// Set when the operation failed; the entry then carries the error, not data.
    public var error: String?

    public init(
        request: AuditRequestInfo, data: [String: JSONValue]? = nil, auth: AuditAuth? = nil, leaseID: String? = nil,
        wrapInfo: AuditWrapInfo? = nil, warnings: [String] = [], redirect: String = "", error: String? = nil
    ) {
        self.request = request
        self.data = data
        self.auth = auth
        self.leaseID = leaseID
        self.wrapInfo = wrapInfo
        self.warnings = warnings
        self.redirect = redirect
        self.error = error
    }

    /// From what a backend answered. `rawBody` stands in for `data` when the route answers
    /// without the envelope (sys/ paths).
    public init(request: AuditRequestInfo, response: LogicalResponse, leaseID: String? = nil) {
        var data = response.data
        if data == nil, let raw = response.rawBody?.objectValue { data = raw }
        self.init(
            request: request, data: data, auth: response.auth.map(AuditAuth.init), leaseID: leaseID,
            wrapInfo: AuditWrapInfo(response.wrapInfo), warnings: response.warnings)
    }
}

/// How one device renders entries (its `log_raw`, `hmac_accessor`, `elide_list_responses`).
public struct AuditFormat: Sendable, Hashable {
    public var logRaw: Bool
    public var hmacAccessor: Bool
    public var elideListResponses: Bool

    public init(logRaw: Bool = false, hmacAccessor: Bool = true, elideListResponses: Bool = false) {
        self.logRaw = logRaw
        self.hmacAccessor = hmacAccessor
        self.elideListResponses = elideListResponses
    }
}

/// A device's HMAC key: 32 random bytes made at enable and kept behind the barrier.
public struct AuditSalt: Sendable {
    let key: SymmetricKey
    /// Recent short values (tokens, accessors, paths repeat on every request) → their HMAC.
    /// Bounded; holds only HMACs and values the process has in memory anyway.
    let memo = AuditHMACMemo()

    public init(_ bytes: [UInt8]) { key = SymmetricKey(data: bytes) }

    /// `hmac-sha256:<hex>` of `value`: what entries carry instead of the value, and what
    /// `sys/audit-hash` answers.
    public func hmac(_ value: String) -> String {
        let memoize = value.utf8.count <= 128
        if memoize, let hit = memo.table.withLock({ $0[value] }) { return hit }
        let mac = HMAC<SHA256>.authenticationCode(for: Array(value.utf8), using: key)
        let result = "hmac-sha256:" + Hex.encode(Array(mac))
        if memoize {
            memo.table.withLock { t in
                if t.count >= 4_096 { t.removeAll(keepingCapacity: true) }
                t[value] = result
            }
        }
        return result
    }
}

final class AuditHMACMemo: Sendable {
    let table = Mutex<[String: String]>([:])
}

/// Builds Vault-shaped audit entries (`time`, `type`, `auth`, `request`, `response`,
/// `error`) as JSON objects, without the `chain` member that the device adds.
///
/// Empty strings, empty lists and zero numbers are left out, as Vault's `omitempty` does.
/// Unless the device logs raw, every string value inside request and response `data`
/// (recursively; object keys are kept), every client token, wrapping token and — with
/// `hmac_accessor` (the default) — every accessor becomes `hmac-sha256:<hex>`.
public enum AuditEntry {
    public static func request(_ info: AuditRequestInfo, time: String, format: AuditFormat, salt: AuditSalt) -> [String: JSONValue] {
        var entry: [String: JSONValue] = [
            "time": .string(time),
            "type": "request",
            "auth": authJSON(info.auth, format: format, salt: salt),
            "request": requestJSON(info, format: format, salt: salt),
        ]
        if let error = info.error, !error.isEmpty { entry["error"] = .string(error) }
        return entry
    }

    public static func response(_ info: AuditResponseInfo, time: String, format: AuditFormat, salt: AuditSalt) -> [String: JSONValue] {
        let req = info.request
        var response = Builder()
        response.string("mount_point", req.mountPoint)
        response.string("mount_type", req.mountType)
        response.string("mount_accessor", req.mountAccessor)
        if let auth = info.auth { response.object["auth"] = authJSON(auth, format: format, salt: salt) }
        if let lease = info.leaseID, !lease.isEmpty { response.object["secret"] = ["lease_id": .string(lease)] }
        if var data = info.data, !data.isEmpty {
            if format.elideListResponses && req.operation == .list { elideList(&data) }
            response.object["data"] = format.logRaw ? .object(data) : hashValues(.object(data), salt)
        }
        if !info.warnings.isEmpty { response.object["warnings"] = .array(info.warnings.map { .string($0) }) }
        response.string("redirect", info.redirect)
        if let wrap = info.wrapInfo {
            var w = Builder()
            w.int("ttl", Int64(wrap.ttl))
            w.string("token", secret(wrap.token, format.logRaw, salt))
            w.string("accessor", accessor(wrap.accessor, format, salt))
            w.string("creation_time", wrap.creationTime)
            w.string("creation_path", wrap.creationPath)
            w.string("wrapped_accessor", accessor(wrap.wrappedAccessor, format, salt))
            response.object["wrap_info"] = .object(w.object)
        }
        var entry: [String: JSONValue] = [
            "time": .string(time),
            "type": "response",
            "auth": authJSON(req.auth, format: format, salt: salt),
            "request": requestJSON(req, format: format, salt: salt),
            "response": .object(response.object),
        ]
        if let error = info.error ?? req.error, !error.isEmpty { entry["error"] = .string(error) }
        return entry
    }

    /// Now, as Go's `time.RFC3339Nano` prints it in UTC (fraction without trailing zeros).
    public static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return timestamp(seconds: Int(ts.tv_sec), nanoseconds: Int(ts.tv_nsec))
    }

    public static func timestamp(seconds: Int, nanoseconds: Int) -> String {
        var secs = time_t(seconds)
        var t = tm()
        gmtime_r(&secs, &t)
        var out = pad(Int(t.tm_year) + 1900, 4) + "-" + pad(Int(t.tm_mon) + 1, 2) + "-" + pad(Int(t.tm_mday), 2)
        out += "T" + pad(Int(t.tm_hour), 2) + ":" + pad(Int(t.tm_min), 2) + ":" + pad(Int(t.tm_sec), 2)
        if nanoseconds > 0 {
            var frac = pad(nanoseconds, 9)
            while frac.hasSuffix("0") { frac.removeLast() }
            out += "." + frac
        }
        return out + "Z"
    }

    static func pad(_ v: Int, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    // MARK: parts

    static func authJSON(_ auth: AuditAuth?, format: AuditFormat, salt: AuditSalt) -> JSONValue {
        guard let auth else { return .object([:]) }
        var b = Builder()
        b.string("client_token", secret(auth.clientToken, format.logRaw, salt))
        b.string("accessor", accessor(auth.accessor, format, salt))
        b.string("display_name", auth.displayName)
        b.strings("policies", auth.policies)
        b.strings("token_policies", auth.tokenPolicies)
        b.strings("identity_policies", auth.identityPolicies)
        if !auth.metadata.isEmpty { b.object["metadata"] = .object(auth.metadata.mapValues { .string($0) }) }
        b.int("num_uses", Int64(auth.numUses))
        b.int("remaining_uses", Int64(auth.remainingUses))
        b.string("entity_id", auth.entityID)
        b.string("token_type", auth.tokenType)
        b.int("token_ttl", auth.tokenTTL)
        b.string("token_issue_time", auth.tokenIssueTime)
        return .object(b.object)
    }

    static func requestJSON(_ info: AuditRequestInfo, format: AuditFormat, salt: AuditSalt) -> JSONValue {
        var b = Builder()
        b.string("id", info.id)
        b.string("operation", info.operation.rawValue)
        b.string("mount_point", info.mountPoint)
        b.string("mount_type", info.mountType)
        b.string("mount_accessor", info.mountAccessor)
        b.string("client_token", secret(info.clientToken, format.logRaw, salt))
        b.string("client_token_accessor", accessor(info.clientTokenAccessor, format, salt))
        var ns = Builder()
        ns.string("id", info.namespace.id)
        ns.string("path", info.namespace.path)
        b.object["namespace"] = .object(ns.object)
        b.string("path", info.path)
        if let data = info.data, !data.isEmpty {
            b.object["data"] = format.logRaw ? .object(data) : hashValues(.object(data), salt)
        }
        b.string("remote_address", info.remoteAddress)
        b.int("remote_port", Int64(info.remotePort))
        b.int("wrap_ttl", Int64(info.wrapTTL))
        return .object(b.object)
    }

    static func secret(_ value: String, _ raw: Bool, _ salt: AuditSalt) -> String {
        value.isEmpty || raw ? value : salt.hmac(value)
    }

    static func accessor(_ value: String, _ format: AuditFormat, _ salt: AuditSalt) -> String {
        value.isEmpty || format.logRaw || !format.hmacAccessor ? value : salt.hmac(value)
    }

    /// Every string value, at any depth, replaced by its HMAC; keys, numbers, booleans and
    /// nulls are kept.
    static func hashValues(_ value: JSONValue, _ salt: AuditSalt) -> JSONValue {
        switch value {
        case .string(let s): .string(salt.hmac(s))
        case .array(let a): .array(a.map { hashValues($0, salt) })
        case .object(let o): .object(o.mapValues { hashValues($0, salt) })
        default: value
        }
    }

    /// Vault's `elide_list_responses`: a list answer keeps only the number of its keys.
    static func elideList(_ data: inout [String: JSONValue]) {
        if let keys = data["keys"]?.arrayValue { data["keys"] = .int(Int64(keys.count)) }
        if let info = data["key_info"]?.objectValue { data["key_info"] = .int(Int64(info.count)) }
    }

    /// An object that leaves out empty values.
    struct Builder {
        var object: [String: JSONValue] = [:]

        mutating func string(_ key: String, _ value: String) {
            if !value.isEmpty { object[key] = .string(value) }
        }

        mutating func strings(_ key: String, _ value: [String]) {
            if !value.isEmpty { object[key] = .array(value.map { .string($0) }) }
        }

        mutating func int(_ key: String, _ value: Int64) {
            if value != 0 { object[key] = .int(value) }
        }
    }
}
