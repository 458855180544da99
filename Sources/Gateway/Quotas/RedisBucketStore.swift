import CHiredis
import CofferSDK
import NIOCore
import NIOPosix
import Synchronization
import TenantCore

/// How the gateway reaches the Redis that holds the shared token buckets.
///
/// Neither `description` nor its mirror (`dump`, debug output) shows the password.
public struct RedisQuotaConfiguration: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    /// `host:port` (`[v6]:port` for an IPv6 literal).
    public var address: String
    /// Sent with `AUTH` on every new connection when set.
    public var password: String?
    /// The logical database (`SELECT`).
    public var db: Int
    /// Connections, and the threads that drive them (hiredis calls block).
    public var poolSize: Int
    /// Seconds: connect timeout, per-command socket timeout, and the most a take ever waits.
    public var timeout: Double

    public init(address: String, password: String? = nil, db: Int = 0, poolSize: Int = 4, timeout: Double = 1) {
        self.address = address
        self.password = password
        self.db = db
        self.poolSize = poolSize
        self.timeout = timeout
    }

    public var description: String {
        "RedisQuotaConfiguration(address: \(address), password: \(password == nil ? "none" : "<redacted>"), db: \(db), poolSize: \(poolSize), timeout: \(timeout))"
    }

    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "address": address, "password": password == nil ? "none" : "<redacted>", "db": db, "poolSize": poolSize, "timeout": timeout,
            ])
    }
}

/// Token buckets in Redis, shared by every gateway node: one `EVALSHA` of one atomic Lua
/// script per take, on Redis's clock (`TIME`), so nodes' clocks never matter.
///
/// hiredis is blocking: each take runs on the store's own `NIOThreadPool` (`poolSize`
/// threads, started in `init`), each thread using one pooled connection at a time.
/// Connections open lazily (`AUTH`, `SELECT`), and any I/O error frees the connection; the
/// next take reconnects. A take waits at most `timeout` seconds in all (queueing included)
/// and then throws `.unavailable`, as does every connection failure: a Redis outage costs a
/// take at most the timeout, never a crash or a hang, and the store recovers by itself when
/// Redis is back. Call `shutdown()` once when done: it stops the threads and closes the
/// connections.
///
/// State: hash `coffer:rl:<key>` with `tokens`, `timestamp`, `blocked_until` (µs of Redis
/// time), expiring when the bucket would be full and unblocked again (absent = full).
public final class RedisBucketStore: RateBucketStore {
    /// Prefix of every key this store writes.
    public static let keyPrefix = "coffer:rl:"

    private let configuration: RedisQuotaConfiguration
    private let host: String
    private let port: Int32
    private let threadPool: NIOThreadPool
    private let idle: Mutex<[RedisConnection]>
    private let scriptSHA: Mutex<String?>
    private let isShutDown: Mutex<Bool>
    private let watchdog: DeadlineWatchdog<RateVerdict>

    /// Validates the configuration and starts the thread pool; connects on first use.
    public init(configuration: RedisQuotaConfiguration) throws {
        // Everything that can throw runs before the first stored property is set.
        let (host, port) = try Self.validate(configuration)
        self.configuration = configuration
        self.host = host
        self.port = port
        idle = Mutex([])
        scriptSHA = Mutex(nil)
        isShutDown = Mutex(false)
        threadPool = NIOThreadPool(numberOfThreads: configuration.poolSize)
        threadPool.start()
        watchdog = DeadlineWatchdog(on: MultiThreadedEventLoopGroup.singleton.next()) {
            RedisBucketStore.unavailable("no answer within \(RedisBucketStore.seconds(configuration.timeout))")
        }
    }

    deinit {
        // Normally `shutdown()` ran already; a pool deinitialised while running asserts.
        if !isShutDown.withLock({ $0 }) { threadPool.shutdownGracefully { _ in } }
    }

    /// Checks the configuration; returns the host and port of its address.
    static func validate(_ configuration: RedisQuotaConfiguration) throws -> (String, Int32) {
        guard configuration.poolSize >= 1, configuration.poolSize <= 256 else {
            throw CofferError.invalid("redis quota store: pool size must be between 1 and 256")
        }
        guard configuration.timeout.isFinite, configuration.timeout > 0, configuration.timeout <= 3600 else {
            throw CofferError.invalid("redis quota store: timeout must be a positive number of seconds")
        }
        guard configuration.db >= 0 else { throw CofferError.invalid("redis quota store: db must not be negative") }
        let address = configuration.address
        guard let colon = address.lastIndex(of: ":"), let port = Int32(address[address.index(after: colon)...]), (1...65535).contains(port) else {
            throw CofferError.invalid("redis quota store: address \"\(address)\" must be host:port")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.utf8.contains(0) else {
            throw CofferError.invalid("redis quota store: address \"\(address)\" must be host:port")
        }
        return (host, port)
    }

    public func take(_ spec: RateBucket, cost: Int) async throws -> RateVerdict {
        let units = try spec.units(cost: cost)
        let key = Self.keyPrefix + spec.key
        let arguments = [String(units.rate), String(units.intervalMicros), String(units.blockMicros), String(units.cost)]
        let deadline = NIODeadline.now() + .milliseconds(Int64((configuration.timeout * 1000).rounded(.up)))
        let answer = PendingAnswer<RateVerdict>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                answer.arm(continuation)
                let watch = watchdog.watch(answer, until: deadline)
                threadPool.submit { [self] state in
                    defer { watchdog.forget(watch) }
                    guard state == .active else {
                        answer.finish(.failure(Self.unavailable("the store is shut down")))
                        return
                    }
                    // The caller may have given up while this waited for a thread.
                    guard !answer.isFinished else { return }
                    answer.finish(Result { try self.evaluate(key: key, arguments: arguments, limit: units.rate, deadline: deadline) })
                }
            }
        } onCancel: {
            answer.finish(.failure(CancellationError()))
        }
    }

    public func shutdown() async {
        let first = isShutDown.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        try? await threadPool.shutdownGracefully()
        idle.withLock { $0.removeAll() }
    }

    // MARK: - On a pool thread

    /// Runs the bucket script; a NOSCRIPT answer reloads it and retries once, and an I/O
    /// error on a reused connection (Redis restarted, idle connection closed) retries once
    /// on a fresh one.
    private func evaluate(key: String, arguments: [String], limit: Int, deadline: NIODeadline) throws -> RateVerdict {
        var (connection, reused) = try checkOut()
        while true {
            do {
                let decision = try evaluate(on: connection, key: key, arguments: arguments, limit: limit)
                checkIn(connection)
                return decision
            } catch .io(let reason) {
                guard reused, NIODeadline.now() < deadline else { throw Self.unavailable(reason) }
                (connection, reused) = (try connect(), false)
            } catch .server(let reason) {
                // The connection is healthy; Redis refused (LOADING, OOM, BUSY, READONLY...).
                checkIn(connection)
                throw Self.unavailable(reason)
            }
        }
    }

    private func evaluate(on connection: RedisConnection, key: String, arguments: [String], limit: Int) throws(RedisCallError) -> RateVerdict {
        var sha = scriptSHA.withLock { $0 } ?? ""
        if sha.isEmpty { sha = try load(on: connection) }
        var reply = try connection.call(["EVALSHA", sha, "1", key] + arguments)
        if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
            reply = try connection.call(["EVALSHA", try load(on: connection), "1", key] + arguments)
        }
        if case .error(let message) = reply { throw .server(message) }
        guard case .array(let items) = reply, items.count == 4,
            case .integer(let allowed) = items[0], case .integer(let remaining) = items[1],
            case .integer(let full) = items[2], case .integer(let retry) = items[3]
        else { throw .server("unexpected reply to the bucket script") }
        return RateVerdict(
            allowed: allowed == 1, limit: limit, remaining: Int(remaining),
            resetSeconds: Double(full) / 1e6, retryAfterSeconds: Double(retry) / 1e6)
    }

    private func load(on connection: RedisConnection) throws(RedisCallError) -> String {
        switch try connection.call(["SCRIPT", "LOAD", Self.script]) {
        case .string(let sha):
            scriptSHA.withLock { $0 = sha }
            return sha
        case .error(let message): throw .server(message)
        default: throw .server("unexpected reply to SCRIPT LOAD")
        }
    }

    private func checkOut() throws -> (RedisConnection, reused: Bool) {
        if let connection = idle.withLock({ $0.popLast() }) { return (connection, true) }
        return (try connect(), false)
    }

    private func checkIn(_ connection: RedisConnection) {
        guard !isShutDown.withLock({ $0 }) else { return }
        idle.withLock { $0.append(connection) }
    }

    private func connect() throws -> RedisConnection {
        let timeoutMillis = Int((configuration.timeout * 1000).rounded(.up))
        guard let context = coffer_redis_connect(host, port, timeoutMillis) else { throw Self.unavailable("cannot allocate a connection") }
        if coffer_redis_error(context) != 0 {
            let reason = RedisConnection.reason(context, timeout: configuration.timeout)
            redisFree(context)
            throw Self.unavailable(reason)
        }
        let connection = RedisConnection(context: context, timeout: configuration.timeout)
        do throws(RedisCallError) {
            if let password = configuration.password {
                if case .error(let message) = try connection.call(["AUTH", password]) {
                    // Redis's own text ("WRONGPASS ...", "ERR AUTH ... no password is set") never echoes the password.
                    throw RedisCallError.server("authentication refused: \(message)")
                }
            }
            if configuration.db != 0, case .error(let message) = try connection.call(["SELECT", String(configuration.db)]) {
                throw RedisCallError.server("SELECT \(configuration.db) refused: \(message)")
            }
        } catch {
            switch error {
            case .io(let reason), .server(let reason): throw Self.unavailable(reason)
            }
        }
        return connection
    }

    static func unavailable(_ reason: String) -> CofferError {
        CofferError(.unavailable, "quota store unavailable: \(reason)")
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }

    /// The bucket: `TokenBucket.take` in Lua. KEYS[1] = bucket; ARGV = rate, interval µs,
    /// block µs, cost. Returns {allowed 0/1, remaining, µs until full, µs until retry}.
    static let script = """
        local key = KEYS[1]
        local rate = tonumber(ARGV[1])
        local interval = tonumber(ARGV[2])
        local block = tonumber(ARGV[3])
        local cost = tonumber(ARGV[4])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local state = redis.call('HMGET', key, 'tokens', 'timestamp', 'blocked_until')
        local tokens = tonumber(state[1])
        local ts = tonumber(state[2])
        local blocked = tonumber(state[3]) or 0
        local per = rate / interval
        if tokens == nil or ts == nil then
          tokens = rate
          blocked = 0
        elseif now > ts then
          tokens = math.min(rate, tokens + (now - ts) * per)
        else
          tokens = math.min(rate, tokens)
        end
        local allowed, retry = 0, 0
        if blocked > now then
          retry = blocked - now
        elseif tokens >= cost then
          tokens = tokens - cost
          allowed = 1
        elseif block > 0 then
          blocked = now + block
          retry = block
        else
          retry = math.ceil((cost - tokens) / per)
        end
        local full = math.ceil((rate - tokens) / per)
        local remaining = math.floor(tokens)
        if blocked > now then
          remaining = 0
          if blocked - now > full then full = blocked - now end
        end
        if full <= 0 then
          redis.call('DEL', key)
        else
          redis.call('HSET', key, 'tokens', string.format('%.17g', tokens),
            'timestamp', string.format('%.0f', now), 'blocked_until', string.format('%.0f', blocked))
          redis.call('PEXPIRE', key, math.ceil(full / 1000))
        end
        return {allowed, remaining, full, retry}
        """
}

/// Why one Redis call failed: `.io` leaves the connection unusable, `.server` is an error
/// reply on a healthy connection.
enum RedisCallError: Error {
    case io(String)
    case server(String)
}

/// One Redis reply, copied out of hiredis's reply object.
enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case string(String)
    case null
    case array([RedisReply])
}

/// One hiredis context, freed on deinit. A connection is used by one pool thread at a time
/// (the idle list hands it out under a lock), which is what makes it Sendable.
final class RedisConnection: @unchecked Sendable {
    private let context: UnsafeMutablePointer<redisContext>
    private let timeout: Double

    init(context: UnsafeMutablePointer<redisContext>, timeout: Double) {
        self.context = context
        self.timeout = timeout
    }

    deinit { redisFree(context) }

    /// Sends one command and reads its reply (blocking, bounded by the socket timeouts).
    func call(_ arguments: [String]) throws(RedisCallError) -> RedisReply {
        var bytes: [UInt8] = []
        var lengths: [Int] = []
        for argument in arguments {
            bytes.append(contentsOf: argument.utf8)
            lengths.append(argument.utf8.count)
        }
        bytes.append(0)  // never empty, so the buffer always has a base address
        let raw: UnsafeMutablePointer<redisReply>? = bytes.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!)
            var offset = 0
            var pointers: [UnsafePointer<CChar>?] = lengths.map { length in
                defer { offset += length }
                return base.advanced(by: offset).assumingMemoryBound(to: CChar.self)
            }
            return pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { coffer_redis_command(context, Int32(arguments.count), argv.baseAddress, $0.baseAddress) }
            }
        }
        guard let raw else { throw .io(Self.reason(context, timeout: timeout)) }
        defer { coffer_redis_free_reply(raw) }
        return Self.convert(raw)
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        func text() -> String {
            guard let str = r.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: str, count: r.len), as: UTF8.self)
        }
        switch r.type {
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_ERROR: return .error(text())
        case REDIS_REPLY_INTEGER: return .integer(Int64(r.integer))
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_ARRAY:
            return .array((0..<r.elements).map { i in coffer_redis_reply_element(reply, i).map(convert) ?? .null })
        default: return .null
        }
    }

    /// A client-safe reason for the context's error (a timeout named as such).
    static func reason(_ context: UnsafeMutablePointer<redisContext>, timeout: Double) -> String {
        if coffer_redis_errno_is_timeout() != 0 && coffer_redis_error(context) == REDIS_ERR_IO {
            return "timed out after \(RedisBucketStore.seconds(timeout))"
        }
        let text = String(cString: coffer_redis_error_string(context))
        return text.isEmpty ? "connection error" : text.prefix(1).lowercased() + text.dropFirst()
    }
}

/// The answer to one take: whichever of the worker, the deadline or cancellation finishes
/// first resumes the caller, exactly once; the others are no-ops.
final class PendingAnswer<Value: Sendable>: Sendable {
    private enum State {
        case waiting(Result<Value, any Error>?)
        case armed(CheckedContinuation<Value, any Error>)
        case finished
    }
    private let state = Mutex<State>(.waiting(nil))

    func arm(_ continuation: CheckedContinuation<Value, any Error>) {
        let early: Result<Value, any Error>? = state.withLock { state in
            guard case .waiting(let result) = state else { return nil }
            if let result {
                state = .finished
                return result
            }
            state = .armed(continuation)
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func finish(_ result: Result<Value, any Error>) {
        let continuation: CheckedContinuation<Value, any Error>? = state.withLock { state in
            switch state {
            case .armed(let continuation):
                state = .finished
                return continuation
            case .waiting(nil):
                state = .waiting(result)
                return nil
            case .waiting, .finished:
                return nil
            }
        }
        continuation?.resume(with: result)
    }

    var isFinished: Bool {
        state.withLock {
            switch $0 {
            case .armed, .waiting(nil): false
            case .waiting, .finished: true
            }
        }
    }
}

/// Fails the takes that outlive their deadline (queued behind busy threads, or stuck in a
/// slow multi-step call), with one timer for all of them: it is armed only while takes are
/// pending and then fires about once per timeout, so a take costs no event-loop wake-up.
final class DeadlineWatchdog<Value: Sendable>: Sendable {
    private struct State {
        var nextID: UInt64 = 0
        var pending: [UInt64: (deadline: NIODeadline, answer: PendingAnswer<Value>)] = [:]
        var armedAt: NIODeadline?
    }
    private let state = Mutex(State())
    private let eventLoop: any EventLoop
    private let expired: @Sendable () -> any Error

    init(on eventLoop: any EventLoop, expired: @escaping @Sendable () -> any Error) {
        self.eventLoop = eventLoop
        self.expired = expired
    }

    /// Watches `answer` until `forget` or `deadline`, whichever comes first.
    func watch(_ answer: PendingAnswer<Value>, until deadline: NIODeadline) -> UInt64 {
        let (id, arm) = state.withLock { state in
            defer { state.nextID += 1 }
            state.pending[state.nextID] = (deadline, answer)
            guard state.armedAt.map({ $0 > deadline }) ?? true else { return (state.nextID, false) }
            state.armedAt = deadline
            return (state.nextID, true)
        }
        if arm { schedule(at: deadline) }
        return id
    }

    func forget(_ id: UInt64) {
        _ = state.withLock { $0.pending.removeValue(forKey: id) }
    }

    private func schedule(at deadline: NIODeadline) {
        eventLoop.scheduleTask(deadline: deadline) { [self] in fire(armedAt: deadline) }
    }

    private func fire(armedAt: NIODeadline) {
        let now = NIODeadline.now()
        let (late, next): ([PendingAnswer<Value>], NIODeadline?) = state.withLock { state in
            guard state.armedAt == armedAt else { return ([], nil) }  // superseded by an earlier timer
            var late: [PendingAnswer<Value>] = []
            var earliest: NIODeadline?
            for (id, entry) in state.pending {
                if entry.deadline <= now {
                    late.append(entry.answer)
                    state.pending.removeValue(forKey: id)
                } else if earliest.map({ entry.deadline < $0 }) ?? true {
                    earliest = entry.deadline
                }
            }
            state.armedAt = earliest
            return (late, earliest)
        }
        for answer in late { answer.finish(.failure(expired())) }
        if let next { schedule(at: next) }
    }
}
