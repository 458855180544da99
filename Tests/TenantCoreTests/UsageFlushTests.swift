import CofferSDK
import Engines
import Foundation
import Logging
import Testing
@testable import TenantCore

/// The usage flush writes every active namespace's bucket, in chunks of one write each,
/// with gauges measured at the storage prefix the counting requests saw.
@Suite struct UsageFlushTests {
    @Test func flushWritesEveryNamespaceInChunks() async throws {
        let physical = MemoryStorage()
        let core = Core(physical: physical, storageType: "inmem", catalog: EngineCatalog(secrets: ["kv": KVEngine.factory]), configuration: CoreConfiguration(), logger: Logger(label: "t"))
        let (_, root) = try await core.bootstrapDev(rootTokenID: nil)
        // A write in a tenant, metered as the Gateway's metering stage meters it.
        func write(_ path: String, _ data: [String: JSONValue], in ns: String) async throws {
            _ = try await core.handle(CoreRequest(operation: .update, path: path, data: data, clientToken: root), namespace: ns)
            let served = try #require(try await core.namespace(path: ns))
            core.usage.record(namespace: ns, storagePrefix: served.storagePrefix, class: .write, outcome: .ok, bytesIn: 0)
        }
        let count = Core.usageFlushChunk * 2 + 7
        for i in 0..<count {
            _ = try await core.handle(CoreRequest(operation: .update, path: "sys/namespaces/u\(i)", clientToken: root), namespace: "")
            try await write("sys/mounts/kv", ["type": "kv"], in: "u\(i)/")
            for k in 0..<(i % 3 + 1) {
                try await write("kv/s\(k)", ["v": "x"], in: "u\(i)/")
            }
        }
        try await core.flushUsage()
        #expect(core.usage.drain().isEmpty)
        for i in 0..<count {
            let bucket = try await core.barrier.list(prefix: Core.usagePrefix("u\(i)/"))
            #expect(bucket.count == 1)
            let stored = try #require(try await core.barrier.getCodable(UsageCounters.self, Core.usagePrefix("u\(i)/") + bucket[0]))
            #expect(stored.requests["write"] == i % 3 + 2)   // the mount and the secrets
            #expect(stored.storedObjects == i % 3 + 1)       // its KV v1 secrets, found under its own prefix
        }
        // A second flush adds to the same buckets.
        try await write("kv/again", ["v": "y"], in: "u5/")
        try await core.flushUsage()
        let key = Core.usagePrefix("u5/") + (try await core.barrier.list(prefix: Core.usagePrefix("u5/")))[0]
        #expect(try await core.barrier.getCodable(UsageCounters.self, key)?.requests["write"] == 5 % 3 + 3)
    }
}
