import CofferSDK
import Metrics
import Synchronization

/// Request counters and latency histograms by operation, mount type and status code.
///
/// Every label comes from a bounded set (operations, engine types in the catalog, HTTP
/// status codes); a path, token or secret never becomes a label.
public final class RequestMetrics: Sendable {
    struct Key: Hashable { var operation: String; var mountType: String; var code: Int }
    let counters = Mutex<[Key: Counter]>([:])
    let timers = Mutex<[Key: Metrics.Timer]>([:])

    public init() {}

    public func record(operation: String, mountType: String, code: Int, start: ContinuousClock.Instant) {
        let key = Key(operation: operation, mountType: mountType.isEmpty ? "none" : mountType, code: code)
        let counter = counters.withLock { c in
            if let existing = c[key] { return existing }
            let made = Counter(label: "coffer_requests_total", dimensions: [("operation", key.operation), ("mount_type", key.mountType), ("code", String(code))])
            c[key] = made
            return made
        }
        counter.increment()
        let timerKey = Key(operation: key.operation, mountType: key.mountType, code: 0)
        let timer = timers.withLock { t in
            if let existing = t[timerKey] { return existing }
            let made = Metrics.Timer(label: "coffer_request_duration_seconds", dimensions: [("operation", key.operation), ("mount_type", key.mountType)], preferredDisplayUnit: .seconds)
            t[timerKey] = made
            return made
        }
        let (s, atto) = (ContinuousClock.now - start).components
        timer.recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}
