import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import TenantCore

/// What every stage of the Gateway's request path shares (`VaultPipeline`): the core, the
/// listener's configuration, the logger and the request metrics; and the wire helpers
/// (token, client address, path and query decoding).
public struct VaultGateway: Sendable {
    let core: Core
    let configuration: GatewayConfiguration
    let logger: Logger
    let metrics = RequestMetrics()
    var maxRequestSize: Int { configuration.maxRequestSize }

    public init(core: Core, configuration: GatewayConfiguration = GatewayConfiguration(), logger: Logger) {
        self.core = core
        self.configuration = configuration
        self.logger = logger
    }

    static let jsonHeaders: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
    static let vaultTokenHeader = HTTPField.Name("X-Vault-Token")!
    static let vaultNamespaceHeader = HTTPField.Name("X-Vault-Namespace")!
    static let wrapTTLHeader = HTTPField.Name("X-Vault-Wrap-TTL")!
    static let forwardedForHeader = HTTPField.Name("X-Forwarded-For")!

    /// The request's token: `X-Vault-Token`, else an `Authorization: Bearer` value.
    static func clientToken(_ request: Request) -> String? {
        if let token = request.headers[vaultTokenHeader] { return token }
        guard let auth = request.headers[.authorization], auth.lowercased().hasPrefix("bearer ") else { return nil }
        return String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)
    }

    /// The client's address: on the cluster listener, the one a standby forwarding the
    /// request names (it proved its cluster certificate); elsewhere the peer, or
    /// `X-Forwarded-For` from a trusted proxy (`x_forwarded_for_authorized_addrs`).
    func clientAddress(_ request: Request, _ context: CofferRequestContext) -> String? {
        if configuration.clusterListener {
            return request.headers[ClusterLink.forwardedForHeader] ?? context.remoteAddress?.ipAddress
        }
        return ClientAddress.resolve(
            peer: context.remoteAddress?.ipAddress, forwardedFor: request.headers[Self.forwardedForHeader],
            trusted: configuration.forwardedForAuthorized)
    }

    /// Decodes `%xx` in a path segment string.
    static func percentDecode(_ s: Substring) -> String {
        guard s.utf8.contains(UInt8(ascii: "%")) else { return String(s) }
        return s.removingPercentEncoding ?? String(s)
    }

    static func parseQuery(_ q: Substring) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = (kv[0].replacingOccurrences(of: "+", with: " ")).removingPercentEncoding ?? String(kv[0])
            let v = kv.count > 1 ? ((kv[1].replacingOccurrences(of: "+", with: " ")).removingPercentEncoding ?? String(kv[1])) : ""
            out[k] = .string(v)
        }
        return out
    }
}
