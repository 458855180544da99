import CofferSDK
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import TenantCore

/// A TCP listener, as in Vault's `listener "tcp"` stanza.
public struct ListenerConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var tlsDisable: Bool
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    /// `telemetry { unauthenticated_metrics_access = true }` inside the listener.
    public var unauthenticatedMetricsAccess = false
    /// Proxies whose `X-Forwarded-For` is believed (`x_forwarded_for_authorized_addrs`).
    public var forwardedForAuthorized: [AddressRange] = []
    /// HA: where other nodes forward requests to (`cluster_address`; default: port + 1).
    public var clusterAddress: String?

    public init(address: String, tlsDisable: Bool, tlsCertFile: String? = nil, tlsKeyFile: String? = nil) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw CofferError.invalid("listener address \"\(address)\" must be host:port")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
        self.tlsDisable = tlsDisable
        self.tlsCertFile = tlsCertFile
        self.tlsKeyFile = tlsKeyFile
    }
}

/// Builds the HTTP application (a ServiceLifecycle `Service`) for a core and a listener.
public enum CofferServer {
    public static func application(core: Core, listener: ListenerConfiguration, gateway: GatewayConfiguration = GatewayConfiguration(), logger: Logger, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        var gateway = gateway
        gateway.unauthenticatedMetricsAccess = gateway.unauthenticatedMetricsAccess || listener.unauthenticatedMetricsAccess
        gateway.forwardedForAuthorized += listener.forwardedForAuthorized
        let pipeline = VaultPipeline(VaultGateway(core: core, configuration: gateway, logger: logger))
        let server: HTTPServerBuilder
        if listener.tlsDisable {
            server = .cofferHTTP1()
        } else {
            guard let cert = listener.tlsCertFile, let key = listener.tlsKeyFile else {
                throw CofferError.invalid("listener: tls_cert_file and tls_key_file are required unless tls_disable = true")
            }
            let chain: [NIOSSLCertificate]
            let privateKey: NIOSSLPrivateKey
            do {
                chain = try NIOSSLCertificate.fromPEMFile(cert)
                privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            } catch {
                throw CofferError.invalid("listener: cannot load TLS certificate or key: \(error)")
            }
            var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
            tls.minimumTLSVersion = .tlsv12
            server = try .tls(.cofferHTTP1(), tlsConfiguration: tls)
        }
        return Application(
            responder: pipeline,
            server: server,
            configuration: ApplicationConfiguration(address: .hostname(listener.host, port: listener.port), serverName: nil),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? listener.port) },
            logger: logger)
    }
}
