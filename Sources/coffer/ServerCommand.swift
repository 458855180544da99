import ArgumentParser
import CofferSDK
import Foundation
import Gateway
import Logging
import ServiceLifecycle
import TenantCore
import UnixSignals
import Metrics
import Prometheus
import Replication
import Audit
import Seals

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server", abstract: "Run a Coffer server.")

    @Flag(name: .long, help: "Development mode: in-memory, unsealed, KV v2 at secret/, root token printed.")
    var dev = false

    @Option(name: .customLong("dev-root-token-id"), help: "Dev mode: the root token id to use.")
    var devRootTokenID: String?

    @Option(name: .customLong("dev-listen-address"), help: "Dev mode: address to listen on.")
    var devListenAddress = "127.0.0.1:8200"

    @Option(name: .long, help: "Path to a configuration file (HCL or JSON).")
    var config: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, warn, error.")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "standard or json.")
    var logFormat: String?

    func run() async throws {
        var file = ServerConfigFile()
        if let config {
            do {
                file = try ServerConfigFile.load(path: config)
            } catch let e as CofferError {
                FileHandle.standardError.write(Data("Error parsing config: \(e.message)\n".utf8))
                throw ExitCode(1)
            }
        } else if !dev {
            FileHandle.standardError.write(Data("Error: either --dev or --config is required\n".utf8))
            throw ExitCode(2)
        }
        if dev {
            var devListener = try ListenerConfiguration(address: devListenAddress, tlsDisable: true)
            // A config file beside --dev keeps its listener options (not its address or TLS).
            if let configured = file.listeners.first {
                devListener.forwardedForAuthorized = configured.forwardedForAuthorized
                devListener.unauthenticatedMetricsAccess = configured.unauthenticatedMetricsAccess
            }
            file.listeners = [devListener]
            if config == nil { file.storageType = "inmem" }
        }
        guard let listener = file.listeners.first else {
            FileHandle.standardError.write(Data("Error: no listener configured\n".utf8))
            throw ExitCode(1)
        }
        // DESIGN §8: outside dev mode the API is served over TLS, unless the operator says
        // in the config that plain HTTP is meant (a TLS-terminating proxy on the same host).
        if !dev && listener.tlsDisable && !file.allowPlaintextAPI {
            FileHandle.standardError.write(Data("""
                Error: the listener has tls_disable = true outside dev mode. Serve the API over TLS \
                (tls_cert_file, tls_key_file), or add allow_plaintext_api = true to the config to run \
                without TLS knowingly (tokens and secrets then cross the network in clear).

                """.utf8))
            throw ExitCode(1)
        }
        let levelName = (logLevel ?? file.logLevel ?? "info").lowercased()
        guard let level = Logger.Level(rawValue: levelName == "warn" ? "warning" : levelName) else {
            FileHandle.standardError.write(Data("Error: unknown log level \"\(levelName)\"\n".utf8))
            throw ExitCode(2)
        }
        let format = (logFormat ?? file.logFormat ?? "standard").lowercased()
        guard format == "standard" || format == "json" else {
            FileHandle.standardError.write(Data("Error: log format must be \"standard\" or \"json\"\n".utf8))
            throw ExitCode(2)
        }
        LoggingSystem.bootstrap { label in
            if format == "json" { return JSONLogHandler(label: label, level: level) }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "coffer")
        for w in file.warnings { logger.warning("\(w)") }
        if !dev && listener.tlsDisable {
            logger.warning("the API is served without TLS (tls_disable with allow_plaintext_api): tokens and secrets cross the network in clear")
        }

        let physical: any Storage
        var etcdOptions: EtcdOptions?
        switch file.storageType {
        case "inmem":
            physical = MemoryStorage()
        case "sqlite":
            guard let path = file.storageOptions["path"]?.stringValue, !path.isEmpty else {
                FileHandle.standardError.write(Data("Error: storage \"sqlite\" needs a path\n".utf8))
                throw ExitCode(1)
            }
            physical = try await SQLiteStorage.open(path: path)
        case "etcd":
            do {
                let (options, warnings) = try EtcdOptions.parse(file.storageOptions)
                for w in warnings { logger.warning("\(w)") }
                etcdOptions = options
                physical = try EtcdStorage(configuration: options.storage)
            } catch let e as CofferError {
                FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
                throw ExitCode(1)
            }
        default:
            FileHandle.standardError.write(Data("Error: unknown storage type \"\(file.storageType)\"\n".utf8))
            throw ExitCode(1)
        }
        var coreConfig = CoreConfiguration(
            defaultLeaseTTL: file.defaultLeaseTTL, maxLeaseTTL: file.maxLeaseTTL,
            clusterName: file.clusterName.isEmpty ? "coffer-cluster" : file.clusterName, version: Coffer.version)
        coreConfig.tenantOutbound = file.tenantOutbound
        let advertised = (listener.host == "0.0.0.0" || listener.host == "::") ? "127.0.0.1" : listener.host
        coreConfig.apiAddress = file.apiAddr.isEmpty ? "\(listener.tlsDisable ? "http" : "https")://\(advertised):\(listener.port)" : file.apiAddr
        // HA (etcd with ha_enabled): writes pass the gate only while this node is active.
        let gate = WriteGate(physical)
        func makeSeal(_ seal: (type: String, options: [String: JSONValue])) throws -> any AutoSeal {
            do {
                switch seal.type {
                case "awskms": return try AWSKMSSeal(configuration: try AWSKMSSealConfiguration.parse(seal.options))
                default: return try PKCS11Seal(configuration: try PKCS11SealConfiguration.parse(seal.options))
                }
            } catch let e as CofferError {
                FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
                throw ExitCode(1)
            }
        }
        let autoSeal: (any AutoSeal)? = dev ? nil : try file.seal.map(makeSeal)
        // The stored seal differs from the configured one: a migration when the old seal is
        // Shamir or is the `disabled = true` stanza; otherwise a refusal, never a misread.
        var migrateFrom: SealMigrationSource?
        let configuredType = autoSeal?.type ?? "shamir"
        if !dev, let stored = try await Core.storedSealConfiguration(physical), stored.type != configuredType {
            if stored.type == "shamir" {
                migrateFrom = .shamir
            } else if let old = file.disabledSeal, old.type == stored.type {
                migrateFrom = .auto(try makeSeal(old))
            } else {
                FileHandle.standardError.write(Data("""
                    Error: the storage was initialized with the \(stored.type) seal, but the configuration \
                    names \(autoSeal.map { "the \($0.type) seal" } ?? "no seal (shamir)"). Configure the \(stored.type) seal, \
                    or keep its stanza with disabled = true to migrate away from it (coffer operator unseal -migrate).

                    """.utf8))
                throw ExitCode(1)
            }
            logger.warning("seal migration pending: unseal with the \(stored.type) seal's \(stored.isAuto ? "recovery" : "unseal") keys and -migrate",
                           metadata: ["from": "\(stored.type)", "to": "\(configuredType)"])
        }
        let core = Core(physical: CachingStorage(MetricsStorage(gate, backend: file.storageType)), storageType: file.storageType, catalog: Catalog.engines,
                        configuration: coreConfig, logger: logger, autoSeal: autoSeal, migrateFrom: migrateFrom)
        var clusterLink: ClusterLink?
        var haService: HAService?
        if let etcdOptions, etcdOptions.haEnabled, let lock = physical as? EtcdStorage {
            let clusterListen = listener.clusterAddress ?? "\(listener.host):\(listener.port == 0 ? 0 : listener.port + 1)"
            let scheme = listener.tlsDisable ? "http" : "https"
            let advertisedHost = (listener.host == "0.0.0.0" || listener.host == "::") ? "127.0.0.1" : listener.host
            let apiAddr = file.apiAddr.isEmpty ? "\(scheme)://\(advertisedHost):\(listener.port)" : file.apiAddr
            let clusterPort = clusterListen.split(separator: ":").last.map(String.init) ?? "8201"
            let clusterAddr = file.clusterAddr.isEmpty ? "https://\(advertisedHost):\(clusterPort)" : file.clusterAddr
            haService = HAService(
                core: core, config: HAConfiguration(lock: lock, feed: lock, gate: gate, apiAddress: apiAddr, clusterAddress: clusterAddr, lockTTL: etcdOptions.lockTTL),
                logger: logger)
            do {
                clusterLink = try ClusterLink(core: core, listenAddress: clusterListen, logger: logger)
            } catch let e as CofferError {
                FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
                throw ExitCode(1)
            }
        }
        let exporter = MetricsExporter(registry: registry, core: core, version: Coffer.version, topNamespaces: file.usageMetricsTopNamespaces)
        let bucketStore: any RateBucketStore
        if let redis = file.quotaStore {
            bucketStore = try RedisBucketStore(configuration: redis)
        } else {
            bucketStore = InProcessBucketStore()
        }
        let rateLimiter = BucketStoreLimiter(store: bucketStore, failureMode: file.quotaFailureMode, logger: logger)

        var banner = """
            ==> Coffer server configuration:

                         Version: \(Coffer.version)
                         Storage: \(file.storageType)\(core.haEnabled ? " (HA available)" : "")
                     Api Address: \(core.haConfiguration?.apiAddress ?? "")
                 Cluster Address: \(core.haConfiguration?.clusterAddress ?? "")
                       Log Level: \(level.rawValue) (\(format))
                        Listener: tcp (addr: "\(listener.host):\(listener.port)", tls: "\(listener.tlsDisable ? "disabled" : "enabled")")
                    Cluster Name: \(coreConfig.clusterName)
                            Seal: \(autoSeal?.type ?? "shamir")
                     Quota Store: \(file.quotaStore.map { "redis (addr: \"\($0.address)\", failure_mode: \"\(file.quotaFailureMode.rawValue)\")" } ?? "in-process")

            """
        if dev {
            let (key, root) = try await core.bootstrapDev(rootTokenID: devRootTokenID)
            try await core.mountDefault(path: "secret/", type: "kv", options: ["version": "2"])
            banner += """
                WARNING! dev mode is enabled! In this mode, Coffer runs entirely in-memory
                and starts unsealed with a single unseal key. Do not run dev mode in production.

                Unseal Key: \(Data(key).base64EncodedString())
                Root Token: \(root)

                """
        }
        FileHandle.standardOutput.write(Data((banner + "\n").utf8))

        var gateway = GatewayConfiguration(metricsExporter: { await exporter.render() })
        gateway.cluster = clusterLink
        gateway.rateLimiter = rateLimiter
        gateway.apiAddress = core.haConfiguration?.apiAddress ?? (file.apiAddr.isEmpty ? "\(listener.tlsDisable ? "http" : "https")://\(listener.host):\(listener.port)" : file.apiAddr)
        let app = try CofferServer.application(core: core, listener: listener, gateway: gateway, logger: logger) { port in
            logger.info("listening", metadata: ["address": "\(listener.host):\(port)"])
        }
        let evictor = NamespaceEvictor(core: core, idle: .seconds(file.namespaceIdleTimeout), logger: logger)
        let flusher = UsageFlusher(core: core, interval: .seconds(file.usageFlushInterval), logger: logger, cluster: clusterLink)
        // A ServiceGroup stops its services in reverse order: the HA lock is given back
        // first, then the cluster link, usage and eviction loops, the HTTP listener (which
        // drains), the audit devices, and the core's background work; storage closes last.
        var services: [any Service] = [CoreWorkService(core: core), AuditService(core: core, logger: logger), app, evictor, flusher]
        if let autoSeal { services.append(AutoUnsealService(core: core, seal: autoSeal, logger: logger)) }
        if let clusterLink {
            var clusterGateway = gateway
            clusterGateway.forwardedForAuthorized = []
            services.append(ClusterService(link: clusterLink, gateway: clusterGateway, logger: logger))
            services.append(ClusterEchoService(link: clusterLink))
        }
        // The HA campaign stops first: the lock is handed over (HAService.run).
        if let haService { services.append(haService) }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await bucketStore.shutdown()
        if let s = physical as? SQLiteStorage { await s.close() }
        if let s = physical as? EtcdStorage { try? await s.shutdown() }
    }
}
