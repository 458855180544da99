import ArgumentParser
import CofferSDK
import Engines
import Foundation
import Gateway
import Logging
import ServiceLifecycle
import TenantCore
import UnixSignals

@main
struct Coffer: AsyncParsableCommand {
    static let version = "0.1.0"
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "Coffer: a multi-tenant, Vault-compatible secrets server.",
        version: version,
        subcommands: [ServerCommand.self])
}

/// The engines this build ships: the catalog the core mounts from.
enum Catalog {
    static let engines = EngineCatalog(secrets: ["kv": KVEngine.factory], auth: [:])
}

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
            file.listeners = [try ListenerConfiguration(address: devListenAddress, tlsDisable: true)]
            if config == nil { file.storageType = "inmem" }
        }
        guard let listener = file.listeners.first else {
            FileHandle.standardError.write(Data("Error: no listener configured\n".utf8))
            throw ExitCode(1)
        }
        let level = Logger.Level(rawValue: (logLevel ?? file.logLevel ?? "info").lowercased().replacingOccurrences(of: "warn", with: "warning").replacingOccurrences(of: "warninging", with: "warning")) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "coffer")
        for w in file.warnings { logger.warning("\(w)") }

        let physical: any Storage
        switch file.storageType {
        case "inmem":
            physical = MemoryStorage()
        case "sqlite":
            guard let path = file.storageOptions["path"]?.stringValue, !path.isEmpty else {
                FileHandle.standardError.write(Data("Error: storage \"sqlite\" needs a path\n".utf8))
                throw ExitCode(1)
            }
            physical = try await SQLiteStorage.open(path: path)
        default:
            FileHandle.standardError.write(Data("Error: unknown storage type \"\(file.storageType)\"\n".utf8))
            throw ExitCode(1)
        }
        let coreConfig = CoreConfiguration(
            defaultLeaseTTL: file.defaultLeaseTTL, maxLeaseTTL: file.maxLeaseTTL,
            clusterName: file.clusterName.isEmpty ? "coffer-cluster" : file.clusterName, version: Coffer.version)
        let core = Core(physical: CachingStorage(physical), storageType: file.storageType, catalog: Catalog.engines, configuration: coreConfig, logger: logger)

        var banner = """
            ==> Coffer server configuration:

                         Version: \(Coffer.version)
                         Storage: \(file.storageType)
                        Listener: tcp (addr: "\(listener.host):\(listener.port)", tls: "\(listener.tlsDisable ? "disabled" : "enabled")")
                    Cluster Name: \(coreConfig.clusterName)
                            Seal: shamir

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

        let app = try CofferServer.application(core: core, listener: listener, logger: logger) { port in
            logger.info("listening", metadata: ["address": "\(listener.host):\(port)"])
        }
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        if let s = physical as? SQLiteStorage { await s.close() }
    }
}
