import AsyncHTTPClient
import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import Synchronization
import TenantCore

/// Node-to-node traffic of an HA cluster: a standby forwards the requests it cannot serve
/// to the active node's cluster listener, over mutual TLS with the cluster CA.
public final class ClusterLink: Sendable {
    let core: Core
    let logger: Logger
    /// The cluster listener (`listener "tcp" { cluster_address = ... }`).
    public let listenHost: String
    public let listenPort: Int

    struct State {
        var identity: ClusterIdentity?
        var client: HTTPClient?
    }
    let state = Mutex(State())

    /// The original client's address, set by the forwarding node (trusted only on the
    /// cluster listener, whose peers proved they hold a cluster certificate).
    static let forwardedForHeader = HTTPField.Name("X-Coffer-Forwarded-For")!
    static let maxResponseBytes = 64 << 20

    public init(core: Core, listenAddress: String, logger: Logger) throws {
        let listener = try ListenerConfiguration(address: listenAddress, tlsDisable: false)
        self.core = core
        self.logger = logger
        self.listenHost = listener.host
        self.listenPort = listener.port
    }

    deinit {
        if let client = state.withLock({ $0.client }) { client.shutdown(queue: .global()) { _ in } }
    }

    /// This node's certificate (the CA is created by the first active node).
    func identity() async throws -> ClusterIdentity {
        if let id = state.withLock({ $0.identity }) { return id }
        let name = core.configuration.clusterName
        let ca = try await core.clusterRecord(ClusterCA.self, key: ClusterCA.storageKey) { try ClusterCA.generate(clusterName: name) }
        let id = try ca.issueNodeIdentity(nodeID: core.nodeID)
        return state.withLock { s in
            if let existing = s.identity { return existing }
            s.identity = id
            return id
        }
    }

    /// The identity, waiting (bounded) for a freshly elected active node to create the CA.
    func awaitIdentity() async throws -> ClusterIdentity {
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            do {
                return try await identity()
            } catch let e as CofferError where e.code == .unavailable && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    func client() async throws -> HTTPClient {
        if let c = state.withLock({ $0.client }) { return c }
        var config = HTTPClient.Configuration(tlsConfiguration: try await awaitIdentity().clientConfiguration)
        config.timeout = .init(connect: .seconds(2))
        config.redirectConfiguration = .disallow
        config.httpVersion = .http1Only
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        let fresh = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        let (kept, spare) = state.withLock { s -> (HTTPClient, HTTPClient?) in
            if let existing = s.client { return (existing, fresh) }
            s.client = fresh
            return (fresh, nil)
        }
        if let spare { try? await spare.shutdown() }
        return kept
    }

    /// Where a standby ships its usage counts (cluster listener only).
    static let usagePath = "sys/internal/coffer/usage"

    /// HA standby: ships the usage counted here to the active node, which writes the
    /// hourly buckets. On failure the counts stay here for the next attempt.
    public func shipUsage() async {
        guard core.haRole == .standby, let leader = core.haLeader, leader.nodeID != core.nodeID else { return }
        guard let payload = try? core.takeUsageForActive() else { return }
        do {
            try await post(Self.usagePath, payload, to: leader, timeout: .seconds(10))
        } catch {
            try? core.mergeUsage(payload)
            logger.warning("usage could not be shipped to the active node; kept for the next attempt", metadata: ["error": "\(type(of: error))"])
        }
    }

    /// Where a standby tells the active node it is there (cluster listener only).
    static let echoPath = "sys/internal/coffer/echo"

    /// HA standby: tells the active node this node is alive (`sys/ha-status` lists it).
    public func sendEcho(hostname: String) async {
        guard core.haRole == .standby, let leader = core.haLeader, leader.nodeID != core.nodeID,
              let config = core.haConfiguration else { return }
        let echo = HANodeEcho(nodeID: core.nodeID, hostname: hostname, apiAddr: config.apiAddress, clusterAddr: config.clusterAddress, version: core.configuration.version)
        guard let payload = try? JSONEncoder().encode(echo) else { return }
        do {
            try await post(Self.echoPath, Array(payload), to: leader, timeout: .seconds(5))
        } catch {
            logger.debug("echo to the active node failed", metadata: ["error": "\(type(of: error))"])
        }
    }

    /// POSTs a JSON body to one of the active node's cluster-only paths; throws unless it
    /// answers 200 or 204.
    func post(_ path: String, _ payload: [UInt8], to leader: LeaderAdvertisement, timeout: TimeAmount) async throws {
        var request = HTTPClientRequest(url: Self.base(leader.clusterAddr) + "/v1/" + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: payload))
        let response = try await client().execute(request, timeout: timeout)
        _ = try await response.body.collect(upTo: 1 << 16)
        guard response.status == .noContent || response.status == .ok else {
            throw CofferError(.unavailable, "the active node refused \(path) (\(response.status.code))")
        }
    }

    static func base(_ clusterAddr: String) -> String {
        var base = clusterAddr
        if !base.hasPrefix("https://") { base = "https://" + base.replacingOccurrences(of: "http://", with: "") }
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }

    static let hopByHop: Set<String> = ["connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length", "proxy-connection", "x-coffer-forwarded-for"]

    /// Sends the request to the active node and hands its answer back unchanged.
    func forward(_ request: Request, body: ByteBuffer, clientAddress: String?) async throws -> Response {
        guard let leader = core.haLeader, leader.nodeID != core.nodeID, !leader.clusterAddr.isEmpty else {
            throw CofferError(.notActive, "local node not active but active cluster node not found")
        }
        var out = HTTPClientRequest(url: Self.base(leader.clusterAddr) + (request.head.path ?? "/"))
        out.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            out.headers.add(name: field.name.rawName, value: field.value)
        }
        if let clientAddress { out.headers.replaceOrAdd(name: Self.forwardedForHeader.rawName, value: clientAddress) }
        out.body = .bytes(body)
        let http = try await client()
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await http.execute(out, timeout: .seconds(90))
            bytes = try await response.body.collect(upTo: Self.maxResponseBytes)
        } catch {
            logger.warning("forwarding to the active node failed", metadata: ["active": "\(leader.apiAddr)", "error": "\(type(of: error))"])
            throw CofferError(.notActive, "the active node (\(leader.apiAddr)) could not be reached; retry", cause: error)
        }
        var headers = HTTPFields()
        for (name, value) in response.headers where !Self.hopByHop.contains(name.lowercased()) {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        return Response(status: HTTPResponse.Status(code: Int(response.status.code)), headers: headers, body: ResponseBody(byteBuffer: bytes))
    }
}

/// Runs the cluster listener once this node can hold a cluster certificate (after the
/// first unseal, and once an active node created the CA).
public struct ClusterService: Service {
    let link: ClusterLink
    let gateway: GatewayConfiguration
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void

    public init(link: ClusterLink, gateway: GatewayConfiguration, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.link = link
        self.gateway = gateway
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let identity: ClusterIdentity? = try? await cancelWhenGracefulShutdown {
            while true {
                if let id = try? await link.identity() { return id }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        guard let identity else { return }
        var config = gateway
        config.clusterListener = true
        let app = Application(
            responder: VaultPipeline(VaultGateway(core: link.core, configuration: config, logger: logger)),
            server: try .tls(.cofferHTTP1(), tlsConfiguration: identity.serverConfiguration),
            configuration: ApplicationConfiguration(address: .hostname(link.listenHost, port: link.listenPort), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? link.listenPort
                logger.info("cluster listener ready", metadata: ["address": "\(link.listenHost):\(port)"])
                await onListening(port)
            },
            logger: logger)
        // Run as part of this service (its graceful shutdown is the server's group's), not
        // as a group of its own: `runService()` would trap SIGTERM itself and stop the
        // listener out of turn.
        try await app.run()
    }
}

/// HA: while this node is a standby, it echoes to the active node every `interval`, so
/// `sys/ha-status` there lists it (with the time of its last echo).
public struct ClusterEchoService: Service {
    let link: ClusterLink
    let interval: Duration
    let hostname: String

    public init(link: ClusterLink, interval: Duration = .seconds(2), hostname: String = ProcessInfo.processInfo.hostName) {
        self.link = link
        self.interval = interval
        self.hostname = hostname
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await link.sendEcho(hostname: hostname)
                try? await Task.sleep(for: interval)
            }
        }
    }
}
