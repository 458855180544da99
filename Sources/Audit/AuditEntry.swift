#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferSDK
import Synchronization
@preconcurrency import Crypto

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
    /// Top-level keys of the request and response data its mount logs as they are (the
    /// mount's `audit_non_hmac_request_keys` / `audit_non_hmac_response_keys`).
    public var nonHMACRequestKeys: [String] = []
    public var nonHMACResponseKeys: [String] = []
    /// The `auth` and `request` members as each device rendered them for the request
    /// entry, reused by the response entry: copies of this value share it, so the fields
    /// must not change between `logRequest` and `logResponse` (only `error` may, which is
    /// outside those members).
    let renderMemo = AuditRenderMemo()

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

    /// From what a backend answered. A `.document` answer (no envelope, as help and some
    /// sys/ paths answer) stands in for `data`.
    public init(request: AuditRequestInfo, response: LogicalResponse, leaseID: String? = nil) {
        var data = response.data
        if data == nil, case .document(let doc) = response.form, let raw = doc.objectValue { data = raw }
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

/// An entry in canonical form (see `AuditChain`), ready for a device to chain and write:
/// the JSON object without its `chain` member, and where that member goes.
public struct AuditBody: Sendable {
    /// Compact, key-sorted JSON of the entry without `chain`.
    public var bytes: [UInt8]
    /// Byte offset at which `"chain":{…}` is inserted (a comma follows or precedes it as
    /// needed; see `AuditChain.render`).
    public var chainAt: Int

    public init(bytes: [UInt8], chainAt: Int) {
        self.bytes = bytes
        self.chainAt = chainAt
    }

    /// From an object in any key order (link records, tests).
    public init(_ entry: [String: JSONValue]) {
        var w = CanonicalJSONWriter()
        var chainAt: Int?
        w.open()
        for key in entry.keys.sorted() where key != "chain" {
            if chainAt == nil && key > "chain" { chainAt = w.out.count }
            w.value(key, entry[key]!)
        }
        w.close()
        self.init(bytes: w.out, chainAt: chainAt ?? w.out.count - 1)
    }

    /// The entry as a JSON value (for tests and tools).
    public var json: JSONValue { (try? JSONValue.parse(bytes)) ?? .null }
}

/// The audit entry's writer: `JSONWriter` with members in sorted key order, so the bytes
/// are the canonical form of `AuditChain` (what `JSONValue.serialized()` gives for the
/// same value). Callers emit members in ascending key order (checked in debug builds);
/// Vault's `omitempty` members are left out when empty, and `hashed` writes a value with
/// every string replaced by its HMAC.
struct CanonicalJSONWriter {
    var json = JSONWriter(capacity: 1024)
    var out: [UInt8] { json.bytes }
    #if DEBUG
    /// The last key of every open object (the order check).
    private var lastKeys: [String] = []
    #endif

    init() {}

    mutating func open() {
        json.beginObject()
        #if DEBUG
        lastKeys.append("")
        #endif
    }

    mutating func close() {
        json.endObject()
        #if DEBUG
        lastKeys.removeLast()
        #endif
    }

    mutating func key(_ k: String) {
        #if DEBUG
        let i = lastKeys.count - 1
        assert(lastKeys[i].isEmpty || lastKeys[i] < k, "canonical JSON members out of order: \(lastKeys[i]) before \(k)")
        lastKeys[i] = k
        #endif
        json.key(k)
    }

    /// A member that is left out when empty (Vault's `omitempty`).
    mutating func string(_ k: String, _ v: String) {
        guard !v.isEmpty else { return }
        key(k)
        json.string(v)
    }

    mutating func int(_ k: String, _ v: Int64) {
        guard v != 0 else { return }
        key(k)
        json.int(v)
    }

    mutating func strings(_ k: String, _ v: [String]) {
        guard !v.isEmpty else { return }
        key(k)
        json.beginArray()
        for s in v { json.string(s) }
        json.endArray()
    }

    mutating func value(_ k: String, _ v: JSONValue) {
        key(k)
        json.value(v)
    }

    /// Bytes rendered before (a memo of this writer's output) as the value of `k`.
    mutating func raw(_ k: String, _ bytes: some Sequence<UInt8>) {
        key(k)
        json.raw(bytes)
    }

    /// `v` with every string at any depth replaced by its HMAC (keys, numbers, booleans
    /// and nulls kept).
    mutating func hashed(_ k: String, _ v: JSONValue, _ salt: AuditSalt, keeping plain: [String] = []) {
        key(k)
        guard !plain.isEmpty, case .object(let o) = v else { return writeHashed(v, salt) }
        // The mount's non-HMAC keys are written as they are, at the top level only (Vault's rule).
        json.beginObject()
        for name in o.keys.sorted() {
            json.key(name)
            if plain.contains(name) { json.value(o[name]!) } else { writeHashed(o[name]!, salt) }
        }
        json.endObject()
    }

    private mutating func writeHashed(_ v: JSONValue, _ salt: AuditSalt) {
        switch v {
        case .string(let s): json.string(salt.hmac(s))
        case .array(let a):
            json.beginArray()
            for e in a { writeHashed(e, salt) }
            json.endArray()
        case .object(let o):
            json.beginObject()
            for k in o.keys.sorted() {
                json.key(k)
                writeHashed(o[k]!, salt)
            }
            json.endObject()
        default: json.value(v)
        }
    }

    mutating func object(_ k: String, _ body: (inout CanonicalJSONWriter) -> Void) {
        key(k)
        open()
        body(&self)
        close()
    }
}

/// What one device rendered of a request: the `auth` and `request` members, which the
/// response entry repeats unchanged, so they are rendered once per request and device.
final class AuditRenderMemo: Sendable {
    let sections = Mutex<[String: ArraySlice<UInt8>]>([:])
}

/// Builds Vault-shaped audit entries (`time`, `type`, `auth`, `request`, `response`,
/// `error`) directly in canonical form, without the `chain` member that the device adds.
///
/// Empty strings, empty lists and zero numbers are left out, as Vault's `omitempty` does.
/// Unless the device logs raw, every string value inside request and response `data`
/// (recursively; object keys are kept), every client token, wrapping token and — with
/// `hmac_accessor` (the default) — every accessor becomes `hmac-sha256:<hex>`.
///
/// Members are written in ascending key order by hand (the canonical order); the top
/// level is `auth`, (`chain`), `error`, `request`, `response`, `time`, `type`.
public enum AuditEntry {
    public static func request(_ info: AuditRequestInfo, time: String, format: AuditFormat, salt: AuditSalt) -> AuditBody {
        entry(info, error: info.error, time: time, type: "request", format: format, salt: salt, memo: nil, memoKey: "", response: nil)
    }

    public static func response(_ info: AuditResponseInfo, time: String, format: AuditFormat, salt: AuditSalt) -> AuditBody {
        entry(info.request, error: info.error ?? info.request.error, time: time, type: "response", format: format, salt: salt, memo: nil, memoKey: "", response: info)
    }

    /// `memo` (keyed by device) carries the `auth` + `request` members from the request
    /// entry to the response entry of the same request.
    static func entry(
        _ req: AuditRequestInfo, error: String?, time: String, type: String, format: AuditFormat, salt: AuditSalt,
        memo: AuditRenderMemo?, memoKey: String, response: AuditResponseInfo?
    ) -> AuditBody {
        var w = CanonicalJSONWriter()
        w.open()
        w.key("auth")
        writeAuth(req.auth, format: format, salt: salt, into: &w)
        let chainAt = w.out.count
        w.string("error", error ?? "")
        if let cached = memo?.sections.withLock({ $0[memoKey] }) {
            w.raw("request", cached)
        } else {
            w.key("request")
            let start = w.out.count
            writeRequest(req, format: format, salt: salt, into: &w)
            if let memo { memo.sections.withLock { $0[memoKey] = w.out[start...] } }
        }
        if let response { writeResponse(response, format: format, salt: salt, into: &w) }
        w.string("time", time)
        w.string("type", type)
        w.close()
        return AuditBody(bytes: w.out, chainAt: chainAt)
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

    // MARK: parts (members in ascending key order)

    static func writeAuth(_ auth: AuditAuth?, format: AuditFormat, salt: AuditSalt, into w: inout CanonicalJSONWriter) {
        w.open()
        if let auth {
            w.string("accessor", accessor(auth.accessor, format, salt))
            w.string("client_token", secret(auth.clientToken, format.logRaw, salt))
            w.string("display_name", auth.displayName)
            w.string("entity_id", auth.entityID)
            w.strings("identity_policies", auth.identityPolicies)
            if !auth.metadata.isEmpty { w.value("metadata", .object(auth.metadata.mapValues { .string($0) })) }
            w.int("num_uses", Int64(auth.numUses))
            w.strings("policies", auth.policies)
            w.int("remaining_uses", Int64(auth.remainingUses))
            w.string("token_issue_time", auth.tokenIssueTime)
            w.strings("token_policies", auth.tokenPolicies)
            w.int("token_ttl", auth.tokenTTL)
            w.string("token_type", auth.tokenType)
        }
        w.close()
    }

    static func writeRequest(_ info: AuditRequestInfo, format: AuditFormat, salt: AuditSalt, into w: inout CanonicalJSONWriter) {
        w.open()
        w.string("client_token", secret(info.clientToken, format.logRaw, salt))
        w.string("client_token_accessor", accessor(info.clientTokenAccessor, format, salt))
        if let data = info.data, !data.isEmpty {
            if format.logRaw { w.value("data", .object(data)) } else { w.hashed("data", .object(data), salt, keeping: info.nonHMACRequestKeys) }
        }
        w.string("id", info.id)
        w.string("mount_accessor", info.mountAccessor)
        w.string("mount_point", info.mountPoint)
        w.string("mount_type", info.mountType)
        w.object("namespace") { ns in
            ns.string("id", info.namespace.id)
            ns.string("path", info.namespace.path)
        }
        w.string("operation", info.operation.rawValue)
        w.string("path", info.path)
        w.string("remote_address", info.remoteAddress)
        w.int("remote_port", Int64(info.remotePort))
        w.int("wrap_ttl", Int64(info.wrapTTL))
        w.close()
    }

    static func writeResponse(_ info: AuditResponseInfo, format: AuditFormat, salt: AuditSalt, into w: inout CanonicalJSONWriter) {
        let req = info.request
        w.object("response") { r in
            if let auth = info.auth {
                r.key("auth")
                writeAuth(auth, format: format, salt: salt, into: &r)
            }
            if var data = info.data, !data.isEmpty {
                if format.elideListResponses && req.operation == .list { elideList(&data) }
                if format.logRaw { r.value("data", .object(data)) } else { r.hashed("data", .object(data), salt, keeping: req.nonHMACResponseKeys) }
            }
            r.string("mount_accessor", req.mountAccessor)
            r.string("mount_point", req.mountPoint)
            r.string("mount_type", req.mountType)
            r.string("redirect", info.redirect)
            if let lease = info.leaseID, !lease.isEmpty { r.object("secret") { $0.string("lease_id", lease) } }
            r.strings("warnings", info.warnings)
            if let wrap = info.wrapInfo {
                r.object("wrap_info") { x in
                    x.string("accessor", accessor(wrap.accessor, format, salt))
                    x.string("creation_path", wrap.creationPath)
                    x.string("creation_time", wrap.creationTime)
                    x.string("token", secret(wrap.token, format.logRaw, salt))
                    x.int("ttl", Int64(wrap.ttl))
                    x.string("wrapped_accessor", accessor(wrap.wrappedAccessor, format, salt))
                }
            }
        }
    }

    static func secret(_ value: String, _ raw: Bool, _ salt: AuditSalt) -> String {
        value.isEmpty || raw ? value : salt.hmac(value)
    }

    static func accessor(_ value: String, _ format: AuditFormat, _ salt: AuditSalt) -> String {
        value.isEmpty || format.logRaw || !format.hmacAccessor ? value : salt.hmac(value)
    }

    /// Vault's `elide_list_responses`: a list answer keeps only the number of its keys.
    static func elideList(_ data: inout [String: JSONValue]) {
        if let keys = data["keys"]?.arrayValue { data["keys"] = .int(Int64(keys.count)) }
        if let info = data["key_info"]?.objectValue { data["key_info"] = .int(Int64(info.count)) }
    }
}
