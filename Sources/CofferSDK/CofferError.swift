/// The one error type of Coffer.
///
/// `code` is opaque and stable: the Gateway maps it to an HTTP status in one switch, and
/// nothing ever matches on `message`. `message` is safe to show to a client: it never
/// carries a secret, token, key or password. `cause` is kept for logs (also secret-free).
public struct CofferError: Error, Sendable, CustomStringConvertible {
    /// Opaque error class; equality of errors is equality of codes.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Malformed or invalid input (400).
        public static let invalidRequest = Code("invalid_request")
        /// The token is missing, invalid or lacks the capability (403).
        public static let permissionDenied = Code("permission_denied")
        /// No route or no such object (404).
        public static let notFound = Code("not_found")
        /// The route exists but does not support the operation (405).
        public static let unsupportedOperation = Code("unsupported_operation")
        /// Check-and-set or version conflict (400, as Vault's KV answers it).
        public static let conflict = Code("conflict")
        /// The object already exists and a Coffer-only API refuses to touch it (409).
        public static let alreadyExists = Code("already_exists")
        /// Request body over the configured limit (413).
        public static let payloadTooLarge = Code("payload_too_large")
        /// Rate limit or lease quota exceeded (429).
        public static let rateLimited = Code("rate_limited")
        /// The core is sealed (503).
        public static let sealed = Code("sealed")
        /// A dependency is unavailable (503).
        public static let unavailable = Code("unavailable")
        /// Corrupt or undecryptable stored data, or an internal fault (500).
        public static let `internal` = Code("internal")
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?
    public let file: String
    public let line: Int
    /// HTTP response headers that go with the error (e.g. `Retry-After` on a 429).
    public var headers: [String: String] = [:]

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
