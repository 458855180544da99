import CofferSDK
import Foundation
import Logging
import Synchronization

/// A request as the Gateway hands it to the core: a Vault path, an operation and a token.
public struct CoreRequest: Sendable {
    public var id: String
    public var operation: LogicalOperation
    /// The path below `/v1/`, relative to the namespace.
    public var path: String
    public var data: [String: JSONValue]
    public var clientToken: String?
    public var remoteAddress: String?
    /// Request body size, for usage metering.
    public var bytesIn = 0
    /// Filled by the node for the caller (which namespace served the request).
    public var trace: RequestTrace?

    public init(id: String = RandomID.uuid(), operation: LogicalOperation, path: String, data: [String: JSONValue] = [:], clientToken: String? = nil, remoteAddress: String? = nil) {
        self.id = id
        self.operation = operation
        self.path = path
        self.data = data
        self.clientToken = clientToken
        self.remoteAddress = remoteAddress
    }
}

/// What the node learned while serving a request, for the HTTP tier (metering, logs).
public final class RequestTrace: Sendable {
    let namespace = Mutex<String?>(nil)
    public init() {}
    /// The namespace path that served the request ("" = root), once resolved.
    public var namespacePath: String? { namespace.withLock { $0 } }
}
