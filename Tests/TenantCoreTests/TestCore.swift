import CofferSDK
import Engines
import Logging
import TenantCore

/// A dev-mode core on in-memory storage, driven through `NamespaceCore.handle`.
struct TestCore {
    let core: Core
    let rootToken: String

    static func make(clock: WallClock = .system) async throws -> TestCore {
        let catalog = EngineCatalog(secrets: ["kv": KVEngine.factory])
        var config = CoreConfiguration()
        config.clock = clock
        let core = Core(physical: MemoryStorage(), storageType: "inmem", catalog: catalog, configuration: config, logger: Logger(label: "test"))
        let (_, root) = try await core.bootstrapDev(rootTokenID: nil)
        try await core.mountDefault(path: "secret/", type: "kv", options: ["version": "2"])
        return TestCore(core: core, rootToken: root)
    }

    @discardableResult
    func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:], token: String? = nil) async throws -> LogicalResponse {
        try await core.root().handle(CoreRequest(operation: op, path: path, data: data, clientToken: token ?? rootToken))
    }

    func createToken(policies: [String], extra: [String: JSONValue] = [:], as parent: String? = nil) async throws -> String {
        var data = extra
        data["policies"] = .array(policies.map { .string($0) })
        let r = try await call(.update, "auth/token/create", data, token: parent)
        return r.auth!.clientToken
    }
}
