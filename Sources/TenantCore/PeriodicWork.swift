import CofferSDK
import Synchronization

/// Runs the engines' timed work (`LogicalBackend.periodic`: static-role rotation, tidy)
/// while this node is active: one loop for every mount of the node instead of a task per
/// mount, never two calls at once for one mount, nothing on an HA standby.
///
/// Mounts register when they are set up and leave before their teardown; the loop runs
/// between `start` (unseal, or becoming the active node) and `stop` (seal, step-down,
/// shutdown), which waits for calls in progress.
public final class PeriodicWork: Sendable {
    struct Entry: Sendable {
        let backend: any LogicalBackend
        /// Distinguishes a mount registered again under the same key while a call ran.
        let generation: UInt64
        var due: ContinuousClock.Instant?
        var running = false
        /// Poked while a call ran: due again as soon as it ends.
        var poked = false
    }

    struct State {
        var entries: [String: Entry] = [:]
        var generation: UInt64 = 0
        var task: Task<Void, Never>?
    }

    let state = Mutex(State())
    let wake = WakeSignal()

    public init() {}

    /// A mount with timed work, due at once.
    func register(_ key: String, _ backend: any LogicalBackend) {
        state.withLock { s in
            s.generation &+= 1
            s.entries[key] = Entry(backend: backend, generation: s.generation, due: .now)
        }
        wake.signal()
    }

    /// The mount goes away: it is not called again (a call in progress finishes).
    func remove(_ key: String) {
        _ = state.withLock { $0.entries.removeValue(forKey: key) }
    }

    /// The mount asks to be called soon.
    func poke(_ key: String) {
        let known = state.withLock { s -> Bool in
            guard let e = s.entries[key] else { return false }
            if e.running { s.entries[key]?.poked = true } else { s.entries[key]?.due = .now }
            return true
        }
        if known { wake.signal() }
    }

    var registered: Int { state.withLock { $0.entries.count } }

    func start() {
        state.withLock { s in
            guard s.task == nil else { return }
            // Every mount is due once the node becomes active: a standby kept no schedule.
            for key in s.entries.keys { s.entries[key]?.due = .now }
            s.task = Task { [self] in await run() }
        }
    }

    func stop() async {
        let task = state.withLock { s -> Task<Void, Never>? in
            defer { s.task = nil }
            return s.task
        }
        task?.cancel()
        wake.signal()
        await task?.value
    }

    func run() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let now = ContinuousClock.now
                var next: ContinuousClock.Instant?
                let due = state.withLock { s -> [(String, Entry)] in
                    var out: [(String, Entry)] = []
                    for (key, e) in s.entries where !e.running {
                        guard let at = e.due else { continue }
                        if at <= now {
                            s.entries[key]?.running = true
                            out.append((key, e))
                        } else {
                            next = min(next ?? at, at)
                        }
                    }
                    return out
                }
                for (key, entry) in due {
                    group.addTask { [self] in
                        let again = await entry.backend.periodic()
                        finished(key, generation: entry.generation, again: again)
                    }
                }
                await wake.wait(for: next.map { now.duration(to: $0) } ?? .seconds(60))
            }
            group.cancelAll()
        }
    }

    func finished(_ key: String, generation: UInt64, again: Duration?) {
        state.withLock { s in
            guard let e = s.entries[key], e.generation == generation else { return }
            s.entries[key]?.running = false
            s.entries[key]?.poked = false
            s.entries[key]?.due = e.poked ? .now : again.map { .now + $0 }
        }
        wake.signal()
    }
}
