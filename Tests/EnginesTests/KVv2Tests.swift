import CofferSDK
import Engines
import Foundation
import Testing
import TenantCore

/// KV v2 semantics, driven through the backend's own dispatcher on in-memory storage.
@Suite struct KVv2Tests {
    let kv: any LogicalBackend

    init() async throws {
        let barrier = Barrier(physical: MemoryStorage())
        barrier.install(Keyring.generate())
        kv = try await KVEngine.factory(BackendConfiguration(storage: StorageView(barrier, prefix: "kv/"), mountPath: "secret/", mountType: "kv", options: ["version": "2"]))
    }

    @discardableResult
    func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:]) async throws -> LogicalResponse? {
        try await kv.handle(LogicalRequest(operation: op, path: path, data: data))
    }

    @Test func versionsAndCAS() async throws {
        let w1 = try await call(.create, "data/app", ["data": ["a": "1"]])
        #expect(w1?.data?["version"] == 1)
        try await call(.update, "data/app", ["data": ["a": "2"], "options": ["cas": 1]])
        await #expect(throws: CofferError.self) { try await call(.update, "data/app", ["data": ["a": "3"], "options": ["cas": 1]]) }
        await #expect(throws: CofferError.self) { try await call(.update, "data/new", ["data": ["a": "3"], "options": ["cas": 1]]) }
        try await call(.create, "data/new", ["data": ["a": "3"], "options": ["cas": 0]])
        let latest = try await call(.read, "data/app")
        #expect(latest?.data?["data"]?["a"] == "2")
        let v1 = try await call(.read, "data/app", ["version": "1"])
        #expect(v1?.data?["data"]?["a"] == "1")
        #expect(try await call(.read, "data/app", ["version": "9"]) == nil)
    }

    @Test func casRequired() async throws {
        try await call(.update, "metadata/strict", ["cas_required": true])
        await #expect(throws: CofferError.self) { try await call(.create, "data/strict", ["data": ["a": "1"]]) }
        try await call(.create, "data/strict", ["data": ["a": "1"], "options": ["cas": 0]])
    }

    @Test func patchMerges() async throws {
        try await call(.create, "data/p", ["data": ["a": "1", "b": ["c": "2", "d": "3"]]])
        try await call(.patch, "data/p", ["data": ["b": ["c": "9", "d": nil], "e": "5"]])
        let r = try await call(.read, "data/p")
        #expect(r?.data?["data"] == ["a": "1", "b": ["c": "9"], "e": "5"])
        #expect(r?.data?["metadata"]?["version"] == 2)
        #expect(try await call(.patch, "data/absent", ["data": ["a": "1"]]) == nil)
    }

    @Test func softDeleteUndeleteDestroy() async throws {
        try await call(.create, "data/d", ["data": ["v": "1"]])
        try await call(.update, "data/d", ["data": ["v": "2"]])
        try await call(.delete, "data/d")
        let deleted = try await call(.read, "data/d")
        #expect(deleted?.form == .gone)
        #expect(deleted?.data?["data"] == .null)
        #expect(deleted?.data?["metadata"]?["deletion_time"]?.stringValue?.isEmpty == false)
        try await call(.update, "undelete/d", ["versions": [2]])
        #expect(try await call(.read, "data/d")?.data?["data"]?["v"] == "2")
        try await call(.update, "destroy/d", ["versions": [1]])
        let destroyed = try await call(.read, "data/d", ["version": "1"])
        #expect(destroyed?.form == .gone)
        #expect(destroyed?.data?["metadata"]?["destroyed"] == true)
        try await call(.update, "delete/d", ["versions": [2]])
        #expect(try await call(.read, "data/d")?.form == .gone)
        let meta = try await call(.read, "metadata/d")
        #expect(meta?.data?["versions"]?["1"]?["destroyed"] == true)
        #expect(meta?.data?["current_version"] == 2)
    }

    @Test func maxVersionsPrunes() async throws {
        try await call(.update, "metadata/m", ["max_versions": 2])
        for i in 1...4 { try await call(.update, "data/m", ["data": ["v": .string("\(i)")]]) }
        let meta = try await call(.read, "metadata/m")
        #expect(meta?.data?["oldest_version"] == 3)
        #expect(meta?.data?["versions"]?.objectValue?.keys.sorted() == ["3", "4"])
        #expect(try await call(.read, "data/m", ["version": "1"]) == nil)
    }

    @Test func metadataAndList() async throws {
        try await call(.create, "data/dir/a", ["data": ["x": "1"]])
        try await call(.create, "data/dir/sub/b", ["data": ["x": "1"]])
        try await call(.create, "data/top", ["data": ["x": "1"]])
        #expect(try await call(.list, "metadata/")?.data?["keys"] == ["dir/", "top"])
        #expect(try await call(.list, "metadata/dir/")?.data?["keys"] == ["a", "sub/"])
        try await call(.update, "metadata/top", ["custom_metadata": ["owner": "ops"], "delete_version_after": "1h"])
        let m = try await call(.read, "metadata/top")
        #expect(m?.data?["custom_metadata"]?["owner"] == "ops")
        #expect(m?.data?["delete_version_after"] == "1h0m0s")
        try await call(.delete, "metadata/top")
        #expect(try await call(.read, "metadata/top") == nil)
        #expect(try await call(.read, "data/top") == nil)
    }

    @Test func subkeysHideValues() async throws {
        try await call(.create, "data/s", ["data": ["a": "1", "b": ["c": "2", "d": ["e": "3"]]]])
        let r = try await call(.read, "subkeys/s")
        #expect(r?.data?["subkeys"] == ["a": nil, "b": ["c": nil, "d": ["e": nil]]])
        let shallow = try await call(.read, "subkeys/s", ["depth": "1"])
        #expect(shallow?.data?["subkeys"] == ["a": nil, "b": nil])
    }

    @Test func config() async throws {
        try await call(.update, "config", ["max_versions": 5, "cas_required": true])
        let c = try await call(.read, "config")
        #expect(c?.data?["max_versions"] == 5)
        #expect(c?.data?["cas_required"] == true)
    }

    @Test func validation() async throws {
        await #expect(throws: CofferError.self) { try await call(.create, "data/x", [:]) }
        await #expect(throws: CofferError.self) { try await call(.create, "data/x", ["data": "not an object"]) }
        await #expect(throws: CofferError.self) { try await call(.update, "metadata/x", ["max_versions": "abc"]) }
        await #expect(throws: CofferError(.unsupportedOperation, "")) { try await call(.list, "config") }
        await #expect(throws: CofferError(.notFound, "")) { try await call(.read, "nowhere/x") }
    }
}

@Suite struct KVv1Tests {
    @Test func readWriteListDelete() async throws {
        let barrier = Barrier(physical: MemoryStorage())
        barrier.install(Keyring.generate())
        let kv = try await KVEngine.factory(BackendConfiguration(storage: StorageView(barrier, prefix: "kv1/"), mountPath: "kv/", mountType: "kv", options: ["version": "1"]))
        _ = try await kv.handle(LogicalRequest(operation: .create, path: "a/b", data: ["k": "v"]))
        let r = try await kv.handle(LogicalRequest(operation: .read, path: "a/b"))
        #expect(r?.data?["k"] == "v")
        #expect(try await kv.handle(LogicalRequest(operation: .list, path: "a/"))?.data?["keys"] == ["b"])
        _ = try await kv.handle(LogicalRequest(operation: .delete, path: "a/b"))
        #expect(try await kv.handle(LogicalRequest(operation: .read, path: "a/b")) == nil)
    }
}
