import CofferSDK
import Synchronization
import Testing

@testable import TenantCore

/// A backend whose timed work counts its calls and answers a fixed delay.
final class TickingBackend: LogicalBackend {
    static let routes: [Route<TickingBackend>] = []
    let calls = Mutex(0)
    let concurrent = Mutex((now: 0, max: 0))
    let again: Duration?

    init(again: Duration?) { self.again = again }

    var runsPeriodicWork: Bool { true }

    func periodic() async -> Duration? {
        concurrent.withLock { $0.now += 1; $0.max = max($0.max, $0.now) }
        calls.withLock { $0 += 1 }
        try? await Task.sleep(for: .milliseconds(20))
        concurrent.withLock { $0.now -= 1 }
        return again
    }

    var count: Int { calls.withLock { $0 } }
}

@Suite struct PeriodicWorkTests {
    static func eventually(_ what: String, _ condition: () -> Bool) async throws {
        for _ in 0..<200 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("timed out waiting for \(what)")
    }

    @Test func nothingRunsUntilStartedAndNothingAfterStop() async throws {
        let work = PeriodicWork()
        let b = TickingBackend(again: .milliseconds(30))
        work.register("ns/a", b)
        try await Task.sleep(for: .milliseconds(100))
        #expect(b.count == 0, "a standby (not started) runs no timed work")
        work.start()
        try await Self.eventually("repeated calls") { b.count >= 3 }
        await work.stop()
        let stopped = b.count
        try await Task.sleep(for: .milliseconds(120))
        #expect(b.count == stopped)
        #expect(b.concurrent.withLock { $0.max } == 1, "one call at a time per mount")
    }

    @Test func nilWaitsForAPokeAndRemovedMountsAreNotCalled() async throws {
        let work = PeriodicWork()
        let b = TickingBackend(again: nil)
        work.register("ns/b", b)
        work.start()
        try await Self.eventually("the first call") { b.count == 1 }
        try await Task.sleep(for: .milliseconds(80))
        #expect(b.count == 1, "nil: not called again on its own")
        work.poke("ns/b")
        try await Self.eventually("the poked call") { b.count == 2 }
        work.remove("ns/b")
        work.poke("ns/b")
        try await Task.sleep(for: .milliseconds(80))
        #expect(b.count == 2)
        #expect(work.registered == 0)
        await work.stop()
    }
}
