import CofferSDK
import HTTPTypes
import Hummingbird
import NIOCore

extension CofferError.Code {
    /// The one switch from error code to HTTP status (Vault's codes). Exhaustive: a new
    /// code does not compile until it has a status.
    var httpStatus: HTTPResponse.Status {
        switch self {
        case .invalidRequest, .conflict, .invalidCredentials: .badRequest
        case .alreadyExists: .conflict
        case .permissionDenied: .forbidden
        case .notFound: .notFound
        case .unsupportedOperation: .methodNotAllowed
        case .payloadTooLarge: .contentTooLarge
        case .rateLimited: .tooManyRequests
        case .sealed, .unavailable, .notActive, .standbyWrite: .serviceUnavailable
        case .auditFailed, .internal: .internalServerError
        }
    }
}

/// A `CofferError` thrown anywhere below a Hummingbird route renders as Vault renders
/// errors: the status of its code and `{"errors": [message]}` (an empty list for a bare
/// 404), with the headers of its rate-limit state (`Retry-After`, `X-RateLimit-*`).
extension CofferError: HTTPResponseError {
    public var status: HTTPResponse.Status { code.httpStatus }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = VaultGateway.error(status, message.isEmpty ? [] : [message], data: data)
        VaultGateway.addHeaders(rateLimit, to: &response)
        return response
    }
}
