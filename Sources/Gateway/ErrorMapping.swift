import CofferSDK
import HTTPTypes

extension CofferError.Code {
    /// The one switch from error code to HTTP status (Vault's codes).
    var httpStatus: HTTPResponse.Status {
        switch self {
        case .invalidRequest, .conflict: .badRequest
        case .alreadyExists: .conflict
        case .permissionDenied: .forbidden
        case .notFound: .notFound
        case .unsupportedOperation: .methodNotAllowed
        case .payloadTooLarge: .contentTooLarge
        case .rateLimited: .tooManyRequests
        case .sealed, .unavailable, .notActive, .standbyWrite: .serviceUnavailable
        default: .internalServerError
        }
    }
}
