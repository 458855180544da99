import CofferSDK
import Foundation
import Logging

/// A request as the Gateway hands it to the core: a Vault path, an operation and a token.
public struct CoreRequest: Sendable {
    public var id: String
    public var operation: LogicalOperation
    /// The path below `/v1/`, relative to the namespace.
    public var path: String
    public var data: [String: JSONValue]
    public var clientToken: String?
    public var remoteAddress: String?
    /// `X-Vault-Wrap-TTL` in seconds: answer a wrapping token instead of the response.
    public var wrapTTL: Int?

    public init(id: String = RandomID.uuid(), operation: LogicalOperation, path: String, data: [String: JSONValue] = [:], clientToken: String? = nil, remoteAddress: String? = nil, wrapTTL: Int? = nil) {
        self.id = id
        self.operation = operation
        self.path = path
        self.data = data
        self.clientToken = clientToken
        self.remoteAddress = remoteAddress
        self.wrapTTL = wrapTTL
    }
}
