/// The one error type of Coffer.
///
/// `code` is opaque and stable: the Gateway maps it to an HTTP status in one switch, and
/// nothing ever matches on `message`. `message` is safe to show to a client: it never
/// carries a secret, token, key or password. `cause` is kept for logs (also secret-free).
public struct CofferError: Error, Sendable, CustomStringConvertible {
    /// The error class; equality of errors is equality of codes. An enum, so the one switch
    /// that maps codes to HTTP statuses (Gateway) is exhaustive: a new code can't silently
    /// become a 500.
    public enum Code: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
        /// Malformed or invalid input (400).
        case invalidRequest = "invalid_request"
        /// A login's credentials are wrong (400): counts towards the user's lockout.
        case invalidCredentials = "invalid_credentials"
        /// The token is missing, invalid or lacks the capability (403).
        case permissionDenied = "permission_denied"
        /// No route or no such object (404).
        case notFound = "not_found"
        /// The route exists but does not support the operation (405).
        case unsupportedOperation = "unsupported_operation"
        /// Check-and-set or version conflict (400, as Vault's KV answers it).
        case conflict
        /// The object already exists and a Coffer-only API refuses to touch it (409).
        case alreadyExists = "already_exists"
        /// Request body over the configured limit (413).
        case payloadTooLarge = "payload_too_large"
        /// Rate limit or lease quota exceeded (429).
        case rateLimited = "rate_limited"
        /// The core is sealed (503).
        case sealed
        /// A dependency is unavailable (503).
        case unavailable
        /// A standby node was asked to write: the request must go to the active node (503
        /// when it can't be forwarded).
        case standbyWrite = "standby_write"
        /// This node lost (or never had) the HA lock while writing (503).
        case notActive = "not_active"
        /// No audit device accepted an entry, so the request was refused (500).
        case auditFailed = "audit_failed"
        /// Corrupt or undecryptable stored data, or an internal fault (500).
        case `internal`

        public var name: String { rawValue }
        public var description: String { rawValue }
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?
    public let file: String
    public let line: Int
    /// A refused request's rate-limit state (a 429): the Gateway answers `Retry-After`
    /// and, when enabled, `X-RateLimit-*` from it.
    public var rateLimit: RateLimitState?
    /// What a refused request still answers beside its errors (a transit batch's per-item
    /// results, as Vault sends them with its 400).
    public var data: [String: JSONValue]?

    public init(
        _ code: Code, _ message: String, cause: (any Error)? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.cause = cause
        self.file = file
        self.line = line
    }

    public var description: String { "\(code): \(message)" }

    public static func invalid(_ message: String, file: String = #fileID, line: Int = #line) -> CofferError {
        CofferError(.invalidRequest, message, file: file, line: line)
    }
    public static func denied(file: String = #fileID, line: Int = #line) -> CofferError {
        CofferError(.permissionDenied, "permission denied", file: file, line: line)
    }
    public static func notFound(_ message: String = "not found", file: String = #fileID, line: Int = #line) -> CofferError {
        CofferError(.notFound, message, file: file, line: line)
    }
    public static func internalError(_ message: String, cause: (any Error)? = nil, file: String = #fileID, line: Int = #line) -> CofferError {
        CofferError(.internal, message, cause: cause, file: file, line: line)
    }
}

extension CofferError: Equatable {
    public static func == (lhs: CofferError, rhs: CofferError) -> Bool { lhs.code == rhs.code }
}
