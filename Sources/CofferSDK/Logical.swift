import Foundation
import Logging

/// A logical operation, as Vault defines them. HTTP verbs map onto these in the Gateway.
public enum LogicalOperation: String, Sendable, Hashable, CaseIterable {
    case create, read, update, patch, delete, list, help
}

/// What the rate-limit quotas said about a request, in whole seconds, for the response.
public struct RateLimitState: Sendable, Equatable {
    /// The tightest bucket's size, tokens left and seconds until it is full again (nil when
    /// `enable_rate_limit_response_headers` is off).
    public var limit: Int?
    public var remaining: Int?
    public var resetSeconds: Int?
    /// Seconds until a refused request may succeed (nil when it was allowed).
    public var retryAfterSeconds: Int?

    public init(limit: Int? = nil, remaining: Int? = nil, resetSeconds: Int? = nil, retryAfterSeconds: Int? = nil) {
        self.limit = limit
        self.remaining = remaining
        self.resetSeconds = resetSeconds
        self.retryAfterSeconds = retryAfterSeconds
    }
}

/// What a request counts as, for billing (`sys/usage`). A route declares the class of an
/// operation when it is not the plain one of its operation (a login, a credential issued,
/// a cryptographic operation).
public enum RequestClass: String, CaseIterable, Sendable, Codable {
    case read, write, list, delete, login, crypto, credential, certificate
}

/// The token that made a request, as the core resolved it (never the raw token id,
/// except for the token store, which needs it to revoke or look up "self").
public struct RequestToken: Sendable {
    public var accessor: String
    public var policies: [String]
    public var displayName: String
    public var namespacePath: String
    public var entityID: String
    /// The raw token, only handed to `auth/token/` (lookup-self, revoke-self...).
    public var clientToken: String?
    /// Whether the token holds `sudo` on the request's path (or is a root token): what
    /// Vault requires for privileged options such as a token's `period` or `id`.
    public var hasSudo = false
    /// The token's private storage scope, only handed to `cubbyhole/` (an HMAC of the token,
    /// never the token).
    public var cubbyholeID: String? = nil
    public var isRoot: Bool { policies.contains("root") }

    public init(accessor: String, policies: [String], displayName: String, namespacePath: String = "", entityID: String = "", clientToken: String? = nil) {
        self.accessor = accessor
        self.policies = policies
        self.displayName = displayName
        self.namespacePath = namespacePath
        self.entityID = entityID
        self.clientToken = clientToken
    }
}

/// One request to a `LogicalBackend`, already routed and validated.
public struct LogicalRequest: Sendable {
    public var id: String
    public var operation: LogicalOperation
    /// The path relative to the mount point.
    public var path: String
    public var mountPoint: String
    /// The raw request body / query parameters.
    public var data: [String: JSONValue]
    /// Values captured by the route pattern (`:name`, `*name`).
    public var captures: [String: String]
    /// Field values validated against the route declaration (filled by the dispatcher).
    public var fields: FieldValues
    public var token: RequestToken?
    public var remoteAddress: String?

    public init(id: String = RandomID.uuid(), operation: LogicalOperation, path: String, mountPoint: String = "", data: [String: JSONValue] = [:], token: RequestToken? = nil, remoteAddress: String? = nil) {
        self.id = id
        self.operation = operation
        self.path = path
        self.mountPoint = mountPoint
        self.data = data
        self.captures = [:]
        self.fields = FieldValues(values: [:])
        self.token = token
        self.remoteAddress = remoteAddress
    }
}

/// A lease attached to a response (dynamic secrets and renewable reads).
public struct SecretLease: Sendable {
    public var ttl: Int
    public var maxTTL: Int
    public var renewable: Bool
    public var internalData: [String: JSONValue]

    public init(ttl: Int, maxTTL: Int = 0, renewable: Bool = false, internalData: [String: JSONValue] = [:]) {
        self.ttl = ttl
        self.maxTTL = maxTTL
        self.renewable = renewable
        self.internalData = internalData
    }
}

/// The `auth` block of a response: a token that was created (token store) or an identity
/// for which the core should create one (auth methods).
public struct AuthInfo: Sendable {
    public var clientToken: String
    public var accessor: String
    public var policies: [String]
    public var tokenPolicies: [String]
    public var metadata: [String: String]
    public var leaseDuration: Int
    public var renewable: Bool
    public var entityID: String
    public var tokenType: String
    public var orphan: Bool
    public var numUses: Int

    // What an auth method asks of the token the core makes at login (unused once made).
    /// The token's display name, after the mount's prefix (`userpass-alice`).
    public var displayName = ""
    /// The requested TTL (0: the mount's default), the TTL limit (0: the mount's), a hard
    /// limit renewals never pass, and a period (a periodic token).
    public var ttl = 0
    public var maxTTL = 0
    public var explicitMaxTTL = 0
    public var period = 0
    /// CIDR blocks the token may be used from (empty: anywhere).
    public var boundCIDRs: [String] = []
    /// Don't attach the `default` policy.
    public var noDefaultPolicy = false
    /// The name of the login's identity alias (the user name, the role id), and the
    /// metadata the alias carries (AppRole: the role name and the secret id's metadata).
    public var aliasName = ""
    public var aliasMetadata: [String: String] = [:]
    /// The groups the method knows the identity to be in (LDAP groups, an OIDC groups
    /// claim): the external groups aliased by these names on the mount. Nil: not a method
    /// that knows groups.
    public var groupAliases: [String]? = nil
    /// The policies the token's entity and its groups bring (shown, never stored on the token).
    public var identityPolicies: [String] = []

    public init(clientToken: String = "", accessor: String = "", policies: [String] = [], tokenPolicies: [String] = [], metadata: [String: String] = [:], leaseDuration: Int = 0, renewable: Bool = false, entityID: String = "", tokenType: String = "service", orphan: Bool = false, numUses: Int = 0) {
        self.clientToken = clientToken
        self.accessor = accessor
        self.policies = policies
        self.tokenPolicies = tokenPolicies
        self.metadata = metadata
        self.leaseDuration = leaseDuration
        self.renewable = renewable
        self.entityID = entityID
        self.tokenType = tokenType
        self.orphan = orphan
        self.numUses = numUses
    }

    public var json: JSONValue {
        .object([
            "client_token": .string(clientToken),
            "accessor": .string(accessor),
            "policies": .array(policies.map { .string($0) }),
            "token_policies": .array(tokenPolicies.map { .string($0) }),
            "identity_policies": identityPolicies.isEmpty ? .null : .array(identityPolicies.map { .string($0) }),
            "metadata": metadata.isEmpty ? .null : .object(metadata.mapValues { .string($0) }),
            "lease_duration": .int(Int64(leaseDuration)),
            "renewable": .bool(renewable),
            "entity_id": .string(entityID),
            "token_type": .string(tokenType),
            "orphan": .bool(orphan),
            "mfa_requirement": .null,
            "num_uses": .int(Int64(numUses)),
        ])
    }
}

/// What a `LogicalBackend` answers.
public struct LogicalResponse: Sendable {
    public var data: [String: JSONValue]?
    public var secret: SecretLease?
    /// The id the core registered for `secret` (dynamic secrets), or nil.
    public var leaseID: String?
    public var auth: AuthInfo?
    public var warnings: [String]
    public var wrapInfo: JSONValue?
    /// How the answer is shaped (the Gateway maps it onto HTTP).
    public var form: Form
    /// Copy `data` to the top level of the envelope, as Vault does for legacy sys/ paths.
    public var dataAtTopLevel: Bool
    /// The type of the mount that answered (`mount_type` in the envelope); set by the core.
    public var mountType: String?
    /// The mount that answered (`secret/`); set by the core, for logs and audit.
    public var mountPoint: String?
    /// How many billable operations the request did: a batch's items (usage metering
    /// counts them one by one, #19); 1 otherwise.
    public var units = 1

    /// The shape of an answer, in the operation's terms.
    public enum Form: Sendable, Equatable {
        /// The Vault envelope around `data`, `secret`, `auth` and `warnings`.
        case envelope
        /// The object existed and is gone (a deleted or destroyed version): the envelope
        /// with what is left of it (its metadata), answered as not found.
        case gone
        /// Done, with nothing to say (even for an operation that usually answers data).
        case done
        /// A JSON document as is, without the envelope (help).
        case document(JSONValue)
        /// A document that is not JSON (CSV), with its media type.
        case text(contentType: String, body: String)
        /// Bytes as they are (a DER certificate, a CRL, an OCSP response), with their media
        /// type and HTTP status (an OCSP refusal is a 401 or 400 with a DER body).
        case bytes(contentType: String, body: [UInt8], status: Int)
    }

    public init(data: [String: JSONValue]? = nil, secret: SecretLease? = nil, auth: AuthInfo? = nil, warnings: [String] = [], form: Form = .envelope) {
        self.data = data
        self.secret = secret
        self.auth = auth
        self.warnings = warnings
        self.form = form
        self.wrapInfo = nil
        self.dataAtTopLevel = false
        self.mountType = nil
        self.mountPoint = nil
    }

    /// Done, nothing to answer.
    public static var done: LogicalResponse { LogicalResponse(form: .done) }

    /// A JSON document without the envelope.
    public static func document(_ body: JSONValue) -> LogicalResponse { LogicalResponse(form: .document(body)) }

    public static func list(_ keys: [String]) -> LogicalResponse {
        LogicalResponse(data: ["keys": .array(keys.map { .string($0) })])
    }

    /// A page of sorted keys, as Vault's `after` and `limit` list parameters choose it.
    public static func list(_ keys: [String], after: String, limit: Int) -> LogicalResponse {
        var page = keys.sorted()
        if !after.isEmpty { page = page.filter { $0 > after } }
        if limit > 0 && page.count > limit { page = Array(page.prefix(limit)) }
        return list(page)
    }
}

/// Engine-wide facts the core gives a backend when it is mounted.
public struct BackendConfiguration: Sendable {
    public var storage: StorageView
    public var mountPath: String
    public var mountType: String
    public var options: [String: String]
    public var defaultLeaseTTL: Int
    public var maxLeaseTTL: Int
    public var logger: Logger
    /// A password from the namespace's password policy of that name (`sys/policies/password`);
    /// throws `CofferError.invalid` when there is no such policy.
    public var generatePassword: @Sendable (_ policy: String) async throws -> String = { name in
        throw CofferError.invalid("password policy \"\(name.prefix(128))\" not found")
    }

    /// Where the engine may connect (unrestricted in the root namespace; the operator's
    /// tenant policy elsewhere). Engines check every outbound host against it.
    public var outbound = OutboundPolicy.unrestricted

    /// Asks the core to call the backend's `periodic()` soon (new timed work: a static role
    /// was written). Does nothing on an HA standby, where no periodic work runs.
    public var wakePeriodic: @Sendable () -> Void = {}

    /// The core's clock (`WallClock.system` outside tests).
    public var clock = WallClock.system

    public init(storage: StorageView, mountPath: String, mountType: String, options: [String: String] = [:], defaultLeaseTTL: Int = 2_764_800, maxLeaseTTL: Int = 2_764_800, logger: Logger = Logger(label: "coffer.engine")) {
        self.storage = storage
        self.mountPath = mountPath
        self.mountType = mountType
        self.options = options
        self.defaultLeaseTTL = defaultLeaseTTL
        self.maxLeaseTTL = maxLeaseTTL
        self.logger = logger
    }
}

/// A secret engine or auth method: it declares its routes and answers requests on them.
///
/// The dispatcher (`LogicalBackend.handle`) matches the path against the declared
/// routes, refuses unsupported operations (405), validates fields (400), then calls the
/// route's handler. Engines see only their own `StorageView`.
public protocol LogicalBackend: Sendable {
    /// The routes, matched in order: the first pattern that matches wins. One table per
    /// type (a `static let`), shared by every instance: handlers get the instance as argument.
    static var routes: [Route<Self>] { get }
    /// One paragraph of help for the whole backend.
    var backendHelp: String { get }
    /// Paths (relative, glob with trailing `*`) that need `sudo` besides the capability.
    var rootPaths: [String] { get }
    /// Paths reachable without a token (logins).
    var unauthenticatedPaths: [String] { get }
    /// Called once after mounting (and after unseal) before the first request.
    func setup() async throws
    /// Called when the mount goes away from this process (unmount, seal, namespace
    /// eviction or deletion): close connection pools. Must not throw or hang.
    func teardown() async
    /// Routes, validates and runs a request (the shared dispatcher, `Route.swift`).
    func handle(_ request: LogicalRequest) async throws -> LogicalResponse?
    /// Whether the object behind a create/update request exists (nil: the route has no check).
    func exists(_ request: LogicalRequest) async throws -> Bool?
    /// The identity a login request names, before it runs (the user name, the role id):
    /// what the core's user lockout counts failed logins against. nil: not a login, or a
    /// method without lockout.
    func loginAlias(_ request: LogicalRequest) -> String?
    /// A token this auth method's login made is being renewed: throw to refuse (the user or
    /// role is gone, its policies changed), as Vault's methods check at renewal.
    func renewLogin(_ renewal: LoginRenewal) async throws
    /// Whether the backend has timed work (`periodic`); most have none.
    var runsPeriodicWork: Bool { get }
    /// The backend's timed work (rotation, tidy): the core calls it on the active node only
    /// (never on an HA standby), never twice at once for one mount, and stops calling it
    /// before `teardown`. Answers when to be called again (nil: only after `wakePeriodic`).
    func periodic() async -> Duration?
}

extension LogicalBackend {
    public var rootPaths: [String] { [] }
    public var unauthenticatedPaths: [String] { [] }
    public func setup() async throws {}
    public func teardown() async {}
    public var backendHelp: String { "" }
    public var runsPeriodicWork: Bool { false }
    public func loginAlias(_ request: LogicalRequest) -> String? { nil }
    public func renewLogin(_ renewal: LoginRenewal) async throws {}
    public func periodic() async -> Duration? { nil }
}

/// What an auth method sees of a login token at its renewal: the metadata its login set
/// and the token's policies (without `default`, which the core adds).
public struct LoginRenewal: Sendable {
    public var metadata: [String: String]
    public var policies: [String]

    public init(metadata: [String: String], policies: [String]) {
        self.metadata = metadata
        self.policies = policies
    }
}

/// Builds a backend for a mount: the executable's engine catalog holds one per type name.
public typealias BackendFactory = @Sendable (BackendConfiguration) async throws -> any LogicalBackend
