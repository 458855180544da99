import CofferSDK
import Foundation
import Testing

@testable import TenantCore

/// The read-check-write primitives engines get through their `StorageView`.
@Suite struct StorageViewLockTests {
    static func view() -> StorageView {
        let barrier = Barrier(physical: MemoryStorage())
        barrier.install(Keyring.generate())
        return StorageView(barrier, prefix: "engine/")
    }

    @Test func concurrentIncrementsUnderTheLockLoseNothing() async throws {
        let view = Self.view()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    try await view.update("counter") { old in
                        let n = old.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
                        return Array(String(n + 1).utf8)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await view.get("counter") == Array("64".utf8))
    }

    @Test func compareAndSetSwapsOnlyFromTheExpectedValue() async throws {
        let view = Self.view()
        let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<32 {
                group.addTask { try await view.compareAndSet("k", expected: nil, new: [UInt8(i)]) }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(wins == 1)
        let current = try #require(try await view.get("k"))
        #expect(try await view.compareAndSet("k", expected: [255], new: [1]) == false)
        #expect(try await view.compareAndSet("k", expected: current, new: nil))
        #expect(try await view.get("k") == nil)
    }

    @Test func subViewsShareTheLocksAndEscapesAreRefused() async throws {
        let view = Self.view()
        let sub = view.sub("a/")
        // The same record through two views: one lock.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                let v = i.isMultiple(of: 2) ? view : sub
                let key = i.isMultiple(of: 2) ? "a/n" : "n"
                group.addTask {
                    try await v.update(key) { old in Array(String((old.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0) + 1).utf8) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await sub.get("n") == Array("40".utf8))
        await #expect(throws: CofferError.self) { try await view.withLock("../x") {} }
        // A failing transform changes nothing.
        await #expect(throws: CofferError.self) { try await sub.update("n") { _ in throw CofferError.invalid("no") } }
        #expect(try await sub.get("n") == Array("40".utf8))
    }
}
