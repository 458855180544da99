import Synchronization

/// Wakes a waiting loop early (new work arrived) or after a timeout. A signal sent while
/// nobody waits is kept for the next wait.
public final class WakeSignal: Sendable {
    public init() {}

    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    public func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns after a signal or after `timeout` (at most a day), whichever comes first.
    public func wait(for timeout: Duration) async {
        let timer = Task { [self] in
            try? await Task.sleep(for: min(max(.zero, timeout), .seconds(86_400)))
            if !Task.isCancelled { signal() }
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pending {
                        s.pending = false
                        return true
                    }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            signal()
        }
        timer.cancel()
    }
}
