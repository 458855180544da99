import Dispatch
import Foundation
import Synchronization

/// Slow CPU-bound work (password hashing, RSA key generation) off the Swift concurrency
/// pool: one serial queue per core, each with a thread of its own, so a burst of 50 ms jobs
/// never holds the pool's few threads that every request needs.
public final class CPUWork: Sendable {
    public static let shared = CPUWork(count: max(1, ProcessInfo.processInfo.activeProcessorCount))

    let queues: [DispatchQueue]
    let next = Atomic<Int>(0)

    init(count: Int) {
        queues = (0..<count).map { DispatchQueue(label: "coffer.cpu.\($0)") }
    }

    public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        let i = next.wrappingAdd(1, ordering: .relaxed).newValue
        let queue = queues[(i & Int.max) % queues.count]
        return try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work() }) }
        }
    }
}
