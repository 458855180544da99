import CofferSDK
import Foundation
import NIOPosix

/// The threads that run blocking database driver calls (connect, statements, close) for
/// every database mount of the process, so that no driver call ever blocks a Swift
/// concurrency executor. Drivers bound each call by their own timeout, so a slow database
/// occupies a thread for at most that long.
enum DatabaseThreads {
    static let count = 8

    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: count)
        pool.start()
        return pool
    }()

    /// Runs `body` on one of the threads and answers its result.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    /// Runs `body` on one of the threads without waiting for it (closing connections).
    static func detach(_ body: @escaping @Sendable () -> Void) {
        pool.submit { state in
            if case .active = state { body() }
        }
    }
}

/// One open connection and its bookkeeping. Only the pool touches `lastReturned`, and a
/// connection is used by one caller (one thread) at a time: the pool hands it out to one
/// borrower until it comes back, which is what makes the unchecked `Sendable` sound.
final class PooledConnection: @unchecked Sendable {
    let connection: any DatabaseConnection
    let opened: Date
    var lastReturned: Date

    init(_ connection: any DatabaseConnection, opened: Date) {
        self.connection = connection
        self.opened = opened
        self.lastReturned = opened
    }
}

/// The connections of one `config/:name`: at most `maxOpen` open at once, up to `maxIdle`
/// kept between uses, each retired after `maxLifetime` seconds (0: never).
///
/// Borrowers beyond the bound wait (suspended, holding no thread) for a connection to come
/// back. A connection whose call failed with `.unavailable` is closed instead of reused.
/// An idle connection unused for `staleAfter` seconds is pinged before it is handed out.
actor DatabaseConnectionPool {
    struct Limits: Sendable, Equatable {
        var maxOpen: Int
        var maxIdle: Int
        /// Seconds; 0 keeps connections until they break.
        var maxLifetime: Int
    }

    let plugin: any DatabasePlugin
    let settings: DatabaseConnectionSettings
    let limits: Limits
    static let staleAfter: TimeInterval = 30

    private var idle: [PooledConnection] = []
    /// Connections counted against `maxOpen`: idle, borrowed or being opened.
    private var open = 0
    private var waiters: [(id: UInt64, continuation: CheckedContinuation<PooledConnection?, any Error>)] = []
    private var nextWaiterID: UInt64 = 0
    private var closed = false

    /// Where connections may go (the namespace's `OutboundPolicy`), checked at every connect.
    let outbound: OutboundPolicy

    init(plugin: any DatabasePlugin, settings: DatabaseConnectionSettings, limits: Limits, outbound: OutboundPolicy = .unrestricted) {
        self.plugin = plugin
        self.settings = settings
        self.outbound = outbound
        self.limits = Limits(maxOpen: max(1, limits.maxOpen), maxIdle: max(0, min(limits.maxIdle, limits.maxOpen)), maxLifetime: max(0, limits.maxLifetime))
    }

    static let closedError = DatabaseError(kind: .unavailable, message: "the connection pool was closed (the connection was reset or reconfigured)")

    /// Borrows a connection, runs `body` with it on a database thread, and gives it back.
    /// Throws `DatabaseError` for database failures and `CancellationError` when the task
    /// was cancelled while waiting.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (any DatabaseConnection) throws -> T) async throws -> T {
        let pooled = try await checkout()
        do {
            let result = try await DatabaseThreads.run { () throws -> T in
                try body(pooled.connection)
            }
            checkin(pooled, broken: false)
            return result
        } catch let error as DatabaseError {
            checkin(pooled, broken: error.kind == .unavailable)
            throw error
        } catch {
            checkin(pooled, broken: false)
            throw error
        }
    }

    /// Closes every idle connection, fails every waiter, and retires borrowed connections
    /// when they come back. Idempotent.
    func close() {
        guard !closed else { return }
        closed = true
        let idleNow = idle
        idle = []
        for c in idleNow { retire(c) }
        let waiting = waiters
        waiters = []
        for w in waiting { w.continuation.resume(throwing: Self.closedError) }
    }

    /// Counts for tests and diagnostics.
    var statistics: (open: Int, idle: Int, waiting: Int) { (open, idle.count, waiters.count) }

    // MARK: internals

    private func expired(_ c: PooledConnection, now: Date) -> Bool {
        limits.maxLifetime > 0 && now.timeIntervalSince(c.opened) >= TimeInterval(limits.maxLifetime)
    }

    private func checkout() async throws -> PooledConnection {
        while true {
            if closed { throw Self.closedError }
            if let c = idle.popLast() {
                let now = Date()
                if expired(c, now: now) {
                    retire(c)
                    continue
                }
                if now.timeIntervalSince(c.lastReturned) > Self.staleAfter {
                    let alive = (try? await DatabaseThreads.run { c.connection.isAlive() }) ?? false
                    if !alive || closed {
                        retire(c)
                        continue
                    }
                }
                return c
            }
            if open < limits.maxOpen {
                open += 1
                let plugin = self.plugin, settings = self.settings, outbound = self.outbound
                let connection: PooledConnection
                do {
                    connection = try await DatabaseThreads.run { () throws -> PooledConnection in
                        try outbound.check(plugin.targets(settings))
                        do {
                            return PooledConnection(try plugin.connect(settings), opened: Date())
                        } catch let e as DatabaseError where outbound.restricted && e.kind == .unavailable {
                            // One text for every way a connection fails (refused, timed out,
                            // no route, bad login), so a tenant cannot map the network.
                            throw DatabaseError(kind: .unavailable, message: "cannot connect to the database (the connection failed, was refused or timed out, or the login was refused)")
                        }
                    }
                } catch {
                    open -= 1
                    wakeWaiterForFreeSlot()
                    throw error
                }
                if closed {
                    retire(connection)
                    throw Self.closedError
                }
                return connection
            }
            if let handed = try await waitForConnection() { return handed }
            // nil: a slot was freed; loop to open a connection in it.
        }
    }

    private func waitForConnection() async throws -> PooledConnection? {
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PooledConnection?, any Error>) in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiters.append((id, continuation))
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func cancelWaiter(_ id: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        let w = waiters.remove(at: index)
        w.continuation.resume(throwing: CancellationError())
    }

    private func checkin(_ c: PooledConnection, broken: Bool) {
        let now = Date()
        if broken || closed || expired(c, now: now) {
            retire(c)
            wakeWaiterForFreeSlot()
            return
        }
        if !waiters.isEmpty {
            let w = waiters.removeFirst()
            w.continuation.resume(returning: c)
            return
        }
        if idle.count >= limits.maxIdle {
            retire(c)
            return
        }
        c.lastReturned = now
        idle.append(c)
    }

    private func wakeWaiterForFreeSlot() {
        guard !closed, !waiters.isEmpty else { return }
        waiters.removeFirst().continuation.resume(returning: nil)
    }

    private func retire(_ c: PooledConnection) {
        open -= 1
        DatabaseThreads.detach { c.connection.close() }
    }
}
