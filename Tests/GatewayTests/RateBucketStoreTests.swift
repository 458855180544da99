import CofferSDK
import Foundation
import Gateway
import Synchronization
import TenantCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The semantics every `RateBucketStore` must have. Each backend suite runs every check on
/// its own store; keys are random so checks may share a Redis and run in parallel. Times
/// are asserted with generous tolerances: 2 shared cores make wall-clock sleeps imprecise.
struct BucketSemantics {
    let store: any RateBucketStore

    static func key() -> String { "test-\(UUID().uuidString)" }

    func startsFullThenRefuses() async throws {
        let spec = RateBucket(key: Self.key(), rate: 5, interval: 60)
        for _ in 0..<5 { #expect(try await store.take(spec, cost: 1).allowed) }
        let refused = try await store.take(spec, cost: 1)
        #expect(!refused.allowed)
        #expect(refused.limit == 5)
        #expect(refused.remaining == 0)
        // One token comes back every 12 s; the bucket is full again after 60 s.
        #expect(refused.retryAfterSeconds > 10 && refused.retryAfterSeconds <= 12)
        #expect(refused.resetSeconds > 55 && refused.resetSeconds <= 60)
    }

    func remainingCountsDown() async throws {
        let spec = RateBucket(key: Self.key(), rate: 10, interval: 3600)
        var seen: [Int] = []
        for _ in 0..<4 {
            let decision = try await store.take(spec, cost: 1)
            #expect(decision.allowed && decision.retryAfterSeconds == 0 && decision.limit == 10)
            seen.append(decision.remaining)
        }
        #expect(seen == [9, 8, 7, 6])
        let three = try await store.take(spec, cost: 3)
        #expect(three.allowed && three.remaining == 3)
        let ask = try await store.take(spec, cost: 0)  // cost 0 asks without taking
        #expect(ask.allowed && ask.remaining == 3)
        let tooMuch = try await store.take(spec, cost: 4)
        #expect(!tooMuch.allowed && tooMuch.remaining == 3)
        #expect(tooMuch.retryAfterSeconds > 300 && tooMuch.retryAfterSeconds <= 360)  // 1 token = 360 s
        #expect(try await store.take(spec, cost: 3).allowed)
    }

    func refillsOverTime() async throws {
        // Windows of seconds, not milliseconds: the suites run in parallel on two busy cores.
        let spec = RateBucket(key: Self.key(), rate: 2, interval: 4)
        #expect(try await store.take(spec, cost: 2).allowed)
        let refused = try await store.take(spec, cost: 1)
        #expect(!refused.allowed)
        #expect(refused.retryAfterSeconds > 1 && refused.retryAfterSeconds <= 2)
        #expect(refused.resetSeconds > 2.5 && refused.resetSeconds <= 4)
        try await Task.sleep(for: .seconds(refused.retryAfterSeconds + 0.2))
        #expect(try await store.take(spec, cost: 1).allowed)
        try await Task.sleep(for: .seconds(4.3))  // > interval: full again, never above capacity
        let full = try await store.take(spec, cost: 0)
        #expect(full.allowed && full.remaining == 2)
        #expect(full.resetSeconds == 0)
    }

    func blockIntervalBlocks() async throws {
        let spec = RateBucket(key: Self.key(), rate: 1, interval: 1, blockInterval: 4)
        #expect(try await store.take(spec, cost: 1).allowed)
        let blocked = try await store.take(spec, cost: 1)
        #expect(!blocked.allowed && blocked.remaining == 0)
        #expect(blocked.retryAfterSeconds > 3 && blocked.retryAfterSeconds <= 4)
        #expect(blocked.resetSeconds >= blocked.retryAfterSeconds)
        // Tokens are back after 1 s, but the block holds: every take is refused, asking too.
        try await Task.sleep(for: .seconds(1.5))
        let still = try await store.take(spec, cost: 0)
        #expect(!still.allowed && still.remaining == 0)
        #expect(still.retryAfterSeconds > 0 && still.retryAfterSeconds < 2.6)
        try await Task.sleep(for: .seconds(still.retryAfterSeconds + 0.3))
        let after = try await store.take(spec, cost: 1)
        #expect(after.allowed && after.retryAfterSeconds == 0)
    }

    func noBlockWithoutBlockInterval() async throws {
        let spec = RateBucket(key: Self.key(), rate: 1, interval: 3)
        #expect(try await store.take(spec, cost: 1).allowed)
        #expect(try await !store.take(spec, cost: 1).allowed)
        try await Task.sleep(for: .seconds(3.4))
        #expect(try await store.take(spec, cost: 1).allowed)
    }

    func keysAreIndependent() async throws {
        let a = RateBucket(key: Self.key(), rate: 3, interval: 3600)
        let b = RateBucket(key: Self.key(), rate: 3, interval: 3600)
        #expect(try await store.take(a, cost: 3).allowed)
        #expect(try await !store.take(a, cost: 1).allowed)
        let other = try await store.take(b, cost: 1)
        #expect(other.allowed && other.remaining == 2)
    }

    func concurrentTakesNeverOverAdmit() async throws {
        let spec = RateBucket(key: Self.key(), rate: 20, interval: 3600)
        let store = self.store
        let allowed = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 { group.addTask { try await store.take(spec, cost: 1).allowed } }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(allowed == 20)
        #expect(try await store.take(spec, cost: 0).remaining == 0)
    }

    func rejectsBadSpecs() async throws {
        let key = Self.key()
        for (spec, cost) in [
            (RateBucket(key: key, rate: 0, interval: 1), 1),
            (RateBucket(key: key, rate: 1, interval: 0), 1),
            (RateBucket(key: key, rate: 1, interval: .nan), 1),
            (RateBucket(key: key, rate: 1, interval: 1, blockInterval: -1), 1),
            (RateBucket(key: key, rate: 2, interval: 1), 3),
            (RateBucket(key: key, rate: 2, interval: 1), -1),
        ] {
            await #expect(throws: CofferError(.invalidRequest, "")) { try await store.take(spec, cost: cost) }
        }
    }
}

@Suite("RateBucketStore: in process")
struct InProcessRateBucketStoreTests {
    let semantics = BucketSemantics(store: InProcessBucketStore())

    @Test func startsFullThenRefuses() async throws { try await semantics.startsFullThenRefuses() }
    @Test func remainingCountsDown() async throws { try await semantics.remainingCountsDown() }
    @Test func refillsOverTime() async throws { try await semantics.refillsOverTime() }
    @Test func blockIntervalBlocks() async throws { try await semantics.blockIntervalBlocks() }
    @Test func noBlockWithoutBlockInterval() async throws { try await semantics.noBlockWithoutBlockInterval() }
    @Test func keysAreIndependent() async throws { try await semantics.keysAreIndependent() }
    @Test func concurrentTakesNeverOverAdmit() async throws { try await semantics.concurrentTakesNeverOverAdmit() }
    @Test func rejectsBadSpecs() async throws { try await semantics.rejectsBadSpecs() }

    /// Exact numbers with an injected clock: a burst up to capacity, refill by elapsed time
    /// (capped at capacity), and block_interval refusing while tokens are back.
    @Test func exactSemanticsWithAnInjectedClock() async throws {
        let clock = ManualClock()
        let store = InProcessBucketStore(clock: clock)
        let spec = RateBucket(key: "k", rate: 4, interval: 2)
        for expected in [3, 2, 1, 0] {
            let d = try await store.take(spec, cost: 1)
            #expect(d.allowed && d.remaining == expected)
        }
        let refused = try await store.take(spec, cost: 1)
        #expect(!refused.allowed && abs(refused.retryAfterSeconds - 0.5) < 1e-6 && abs(refused.resetSeconds - 2) < 1e-6)
        clock.advance(by: .milliseconds(500))
        #expect(try await store.take(spec, cost: 1).allowed)
        #expect(try await !store.take(spec, cost: 1).allowed)
        clock.advance(by: .seconds(10))
        #expect(try await store.take(spec, cost: 0).remaining == 4)
        let b = RateBucket(key: "b", rate: 1, interval: 1, blockInterval: 5)
        #expect(try await store.take(b, cost: 1).allowed)
        let blocked = try await store.take(b, cost: 1)
        #expect(!blocked.allowed && abs(blocked.retryAfterSeconds - 5) < 1e-6)
        clock.advance(by: .seconds(4))
        #expect(try await !store.take(b, cost: 1).allowed)
        clock.advance(by: .milliseconds(1010))
        #expect(try await store.take(b, cost: 1).allowed)
    }

    @Test func sweepDropsOnlyRefilledBuckets() async throws {
        let clock = ManualClock()
        let store = InProcessBucketStore(maximumBuckets: 100, clock: clock)
        // 150 drained buckets: none may be dropped (that would hand out fresh tokens).
        for i in 0..<150 { #expect(try await store.take(RateBucket(key: "busy-\(i)", rate: 1, interval: 10), cost: 1).allowed) }
        #expect(store.count == 150)
        for i in 0..<150 { #expect(try await !store.take(RateBucket(key: "busy-\(i)", rate: 1, interval: 10), cost: 1).allowed) }
        // Once they have refilled they equal absent buckets, and the next sweep drops them.
        clock.advance(by: .seconds(11))
        for i in 0..<200 { _ = try await store.take(RateBucket(key: "new-\(i)", rate: 1, interval: 1000), cost: 1) }
        #expect(store.count <= 200 + 100)
        #expect(store.count >= 200)
        #expect(try await store.take(RateBucket(key: "busy-0", rate: 1, interval: 10), cost: 0).remaining == 1)
        // A full bucket (cost 0 on a fresh key) is never stored.
        _ = try await store.take(RateBucket(key: "ask", rate: 5, interval: 1), cost: 0)
        #expect(store.count <= 300)
    }
}

/// Redis variants: need a Redis at COFFER_TEST_REDIS_ADDR (`Ops/redis start DIR` prints it).
@Suite(
    "RateBucketStore: Redis",
    .enabled(
        if: RedisTestSupport.address != nil,
        "skipped: set COFFER_TEST_REDIS_ADDR=host:port (Ops/redis start /tmp/rbs; . /tmp/rbs/redis.env) to run against a real Redis"))
struct RedisRateBucketStoreTests {
    static func semantics(_ body: (BucketSemantics) async throws -> Void) async throws {
        let store = try RedisBucketStore(configuration: RedisQuotaConfiguration(address: RedisTestSupport.address!))
        do {
            try await body(BucketSemantics(store: store))
        } catch {
            await store.shutdown()
            throw error
        }
        await store.shutdown()
    }

    @Test func startsFullThenRefuses() async throws { try await Self.semantics { try await $0.startsFullThenRefuses() } }
    @Test func remainingCountsDown() async throws { try await Self.semantics { try await $0.remainingCountsDown() } }
    @Test func refillsOverTime() async throws { try await Self.semantics { try await $0.refillsOverTime() } }
    @Test func blockIntervalBlocks() async throws { try await Self.semantics { try await $0.blockIntervalBlocks() } }
    @Test func noBlockWithoutBlockInterval() async throws { try await Self.semantics { try await $0.noBlockWithoutBlockInterval() } }
    @Test func keysAreIndependent() async throws { try await Self.semantics { try await $0.keysAreIndependent() } }
    @Test func concurrentTakesNeverOverAdmit() async throws { try await Self.semantics { try await $0.concurrentTakesNeverOverAdmit() } }
    @Test func rejectsBadSpecs() async throws { try await Self.semantics { try await $0.rejectsBadSpecs() } }

    @Test func recoversFromScriptFlush() async throws {
        try await Self.semantics { (semantics: BucketSemantics) async throws in
            let spec = RateBucket(key: BucketSemantics.key(), rate: 5, interval: 3600)
            #expect(try await semantics.store.take(spec, cost: 1).remaining == 4)
            #expect(try RedisTestSupport.cli(RedisTestSupport.address!, "SCRIPT", "FLUSH") == "OK")
            #expect(try await semantics.store.take(spec, cost: 1).remaining == 3)
            #expect(try await semantics.store.take(spec, cost: 1).remaining == 2)
        }
    }

    @Test func stateIsAPrefixedHashThatExpires() async throws {
        try await Self.semantics { (semantics: BucketSemantics) async throws in
            let key = BucketSemantics.key()
            let spec = RateBucket(key: key, rate: 2, interval: 2)
            #expect(try await semantics.store.take(spec, cost: 1).allowed)
            let name = RedisBucketStore.keyPrefix + key
            #expect(name.hasPrefix("coffer:rl:"))
            #expect(try RedisTestSupport.cli(RedisTestSupport.address!, "TYPE", name) == "hash")
            let ttl = try #require(Int(RedisTestSupport.cli(RedisTestSupport.address!, "PTTL", name)))
            #expect(ttl > 0 && ttl <= 1000)  // half the interval refills one token
            try await Task.sleep(for: .seconds(1.3))
            #expect(try RedisTestSupport.cli(RedisTestSupport.address!, "EXISTS", name) == "0")
            // Asking a full bucket writes nothing.
            _ = try await semantics.store.take(spec, cost: 0)
            #expect(try RedisTestSupport.cli(RedisTestSupport.address!, "EXISTS", name) == "0")
        }
    }

    @Test func selectsTheConfiguredDatabase() async throws {
        let store = try RedisBucketStore(configuration: RedisQuotaConfiguration(address: RedisTestSupport.address!, db: 3))
        let key = BucketSemantics.key()
        let taken: RateVerdict
        do {
            taken = try await store.take(RateBucket(key: key, rate: 2, interval: 60), cost: 1)
        } catch {
            await store.shutdown()
            throw error
        }
        await store.shutdown()
        #expect(taken.remaining == 1)
        #expect(try RedisTestSupport.cli(RedisTestSupport.address!, "-n", "3", "EXISTS", RedisBucketStore.keyPrefix + key) == "1")
        #expect(try RedisTestSupport.cli(RedisTestSupport.address!, "-n", "0", "EXISTS", RedisBucketStore.keyPrefix + key) == "0")
    }

    @Test func refusedAuthIsUnavailableWithoutThePassword() async throws {
        // The test Redis has no password: AUTH is refused, the take fails, the password stays out.
        let store = try RedisBucketStore(configuration: RedisQuotaConfiguration(address: RedisTestSupport.address!, password: "pa55-w0rd-never-shown"))
        let error = await #expect(throws: CofferError.self) { try await store.take(RateBucket(key: BucketSemantics.key(), rate: 1, interval: 1), cost: 1) }
        await store.shutdown()
        #expect(error?.code == .unavailable)
        #expect(error?.message.hasPrefix("quota store unavailable: authentication refused") == true)
        #expect(error.map { "\($0) \(String(describing: $0.cause))" }?.contains("pa55") == false)
    }

    /// Not a benchmark: prints the figure so a regression is visible in the log.
}

/// Outages: no shared Redis needed (a closed port, a socket that never answers, and a
/// private redis-server when one is installed).
@Suite("RateBucketStore: Redis outages")
struct RedisOutageTests {
    @Test func closedPortThrowsUnavailableQuickly() async throws {
        let port = try TestSocket(listening: false).port  // bound, then closed: nothing listens
        let store = try RedisBucketStore(
            configuration: RedisQuotaConfiguration(address: "127.0.0.1:\(port)", password: "pa55-w0rd-never-shown", timeout: 0.5))
        for _ in 0..<3 {
            let start = ContinuousClock.now
            let error = await #expect(throws: CofferError.self) { try await store.take(RateBucket(key: "k", rate: 1, interval: 1), cost: 1) }
            #expect((ContinuousClock.now - start).seconds < 5.0)  // a hang guard, not a timing assertion
            #expect(error?.code == .unavailable)
            #expect(error?.message.hasPrefix("quota store unavailable: ") == true)
            #expect(error.map { "\($0)" }?.contains("pa55") == false)
        }
        await store.shutdown()
        let afterShutdown = await #expect(throws: CofferError.self) { try await store.take(RateBucket(key: "k", rate: 1, interval: 1), cost: 1) }
        #expect(afterShutdown?.code == .unavailable)
    }

    @Test func silentServerTimesOut() async throws {
        let silent = try TestSocket(listening: true)  // accepts into the backlog, never answers
        let store = try RedisBucketStore(configuration: RedisQuotaConfiguration(address: "127.0.0.1:\(silent.port)", poolSize: 2, timeout: 0.3))
        let start = ContinuousClock.now
        // More takes than threads: the queued ones must time out too, not wait their turn.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    let error = await #expect(throws: CofferError.self) { try await store.take(RateBucket(key: "k", rate: 1, interval: 1), cost: 1) }
                    #expect(error?.code == .unavailable)
                }
            }
            try await group.waitForAll()
        }
        #expect((ContinuousClock.now - start).seconds < 5.0)  // a hang guard (timeout 0.6 s), not a timing assertion
        await store.shutdown()
        withExtendedLifetime(silent) {}  // the listener must outlive the takes
    }

    @Test func configurationNeverShowsThePassword() throws {
        let configuration = RedisQuotaConfiguration(address: "127.0.0.1:6379", password: "pa55-w0rd-never-shown")
        #expect(!"\(configuration)".contains("pa55"))
        #expect(!String(reflecting: configuration).contains("pa55"))
        var dumped = ""
        dump(configuration, to: &dumped)
        #expect(!dumped.contains("pa55") && dumped.contains("127.0.0.1:6379"))
        #expect(throws: CofferError(.invalidRequest, "")) { try RedisBucketStore(configuration: RedisQuotaConfiguration(address: "no-port")) }
        #expect(throws: CofferError(.invalidRequest, "")) { try RedisBucketStore(configuration: RedisQuotaConfiguration(address: "h:1", poolSize: 0)) }
    }

    @Test(.enabled(if: RedisTestSupport.redisServerInstalled, "skipped: redis-server not on PATH (Ops/install-deps)"))
    func recoversWhenRedisComesBack() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-rbs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let line = try RedisTestSupport.ops("start", dir)
        let address = try #require(line.split(separator: "=").last.map(String.init))
        let port = try #require(address.split(separator: ":").last.map(String.init))
        let store = try RedisBucketStore(configuration: RedisQuotaConfiguration(address: address, poolSize: 2, timeout: 0.5))
        let spec = RateBucket(key: BucketSemantics.key(), rate: 100, interval: 3600)
        do {
            #expect(try await store.take(spec, cost: 1).allowed)
            _ = try RedisTestSupport.ops("stop", dir)
            for _ in 0..<3 {
                let start = ContinuousClock.now
                let error = await #expect(throws: CofferError.self) { try await store.take(spec, cost: 1) }
                #expect(error?.code == .unavailable)
                #expect((ContinuousClock.now - start).seconds < 5.0)  // a hang guard, not a timing assertion
            }
            _ = try RedisTestSupport.ops("start", dir, port)
            // A fresh server: empty script cache, empty bucket; stale pooled connections are replaced.
            for _ in 0..<4 {
                let decision = try await store.take(spec, cost: 1)
                #expect(decision.allowed && decision.remaining < 100)
            }
        } catch {
            await store.shutdown()
            _ = try? RedisTestSupport.ops("stop", dir)
            throw error
        }
        await store.shutdown()
        _ = try RedisTestSupport.ops("stop", dir)
    }
}

enum RedisTestSupport {
    static let address = ProcessInfo.processInfo.environment["COFFER_TEST_REDIS_ADDR"].flatMap { $0.isEmpty ? nil : $0 }

    static let redisServerInstalled = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/sbin")
        .split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/redis-server") }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `redis-cli -h HOST -p PORT ARGS...`: a raw connection beside the store's own.
    static func cli(_ address: String, _ arguments: String...) throws -> String {
        let colon = try #require(address.lastIndex(of: ":"))
        return try run("redis-cli", ["-h", String(address[..<colon]), "-p", String(address[address.index(after: colon)...])] + arguments)
    }

    /// `Ops/redis ARGS...`; returns its stdout (the `COFFER_TEST_REDIS_ADDR=` line on start).
    static func ops(_ arguments: String...) throws -> String {
        try run(repositoryRoot.appendingPathComponent("Ops/redis").path, arguments)
    }

    /// Runs a command through popen: Foundation's `Process.waitUntilExit` can hang when
    /// called from a test's task on Linux (the child is never reaped).
    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let quoted = ([executable] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let command = quoted.joined(separator: " ") + " 2>/dev/null"
        let pipe = try #require(popen(command, "r"), "popen \(command)")
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, pipe)
            if n <= 0 { break }
            output += buffer[..<n]
        }
        let status = pclose(pipe)
        try #require(status == 0, "\(command) exited with status \(status)")
        return String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A TCP socket on 127.0.0.1 with a kernel-chosen port: listening (accepts into the backlog,
/// never reads) or, when not listening, closed at once so the port refuses connections.
final class TestSocket: Sendable {
    let port: Int
    private let fd: Int32

    init(listening: Bool) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        if listening { try #require(listen(fd, 64) == 0) }
        self.port = Int(UInt16(bigEndian: address.sin_port))
        if listening {
            self.fd = fd
        } else {
            close(fd)
            self.fd = -1
        }
    }

    deinit { if fd >= 0 { close(fd) } }
}

/// A clock that moves only when told to.
struct ManualClock: Clock {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private final class Box: Sendable { let now = Mutex(Duration.zero) }
    private let box = Box()

    var now: Instant { Instant(offset: box.now.withLock { $0 }) }
    var minimumResolution: Duration { .nanoseconds(1) }
    func advance(by duration: Duration) { box.now.withLock { $0 += duration } }
    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        while now < deadline { try await Task.sleep(for: .milliseconds(1)) }
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
