import AsyncHTTPClient
import CofferSDK
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// The change feed as one long-lived etcd watch on the marker key: a standby learns of each
/// write within a round trip, and etcd does no work while nothing changes (a poll would make
/// it scan the revisions since the last poll every time).
extension EtcdStorage: ChangeFeedWatching {
    public func watchChanges(after revision: UInt64) -> AsyncThrowingStream<StorageChanges, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await self.streamFeed(after: revision) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Opens the watch on the first member that answers and delivers its events until the
    /// connection ends (an error) or etcd reports compaction (returns).
    func streamFeed(after revision: UInt64, _ deliver: @Sendable (StorageChanges) -> Void) async throws {
        let token = try await authToken()
        let body = try Self.encode(WatchRequest(createRequest: .init(key: Data(feedKey), startRevision: Int64(revision + 1))))
        let first = state.withLock { $0.preferred }
        var lastError: (any Error)?
        for step in 0..<endpoints.count {
            let index = (first + step) % endpoints.count
            var request = HTTPClientRequest(url: endpoints[index] + "/v3/watch")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            if let token { request.headers.add(name: "Authorization", value: token) }
            request.body = .bytes(ByteBuffer(bytes: body))
            let response: HTTPClientResponse
            do {
                // No deadline: the stream lives as long as the reader wants it.
                response = try await watchClient.execute(request, deadline: .distantFuture)
            } catch {
                if Task.isCancelled { throw error }
                lastError = error
                continue
            }
            guard response.status == .ok else {
                throw Self.failure(status: response.status, body: try await response.body.collect(upTo: 1 << 16))
            }
            try await readWatch(response, deliver)
            return
        }
        throw CofferError(.unavailable, "etcd: no member reachable for the change feed", cause: lastError)
    }

    func readWatch(_ response: HTTPClientResponse, _ deliver: @Sendable (StorageChanges) -> Void) async throws {
        var compacted = false
        do {
            try await readWatchItems(response) { item in
                switch item {
                case .compacted(let revision):
                    compacted = true
                    deliver(.compacted(head: revision))
                case .changes(let entries, let revision):
                    deliver(.changes(entries, head: revision))
                }
                return true
            }
        } catch is EtcdAuthExpired {
            // The next watch authenticates again.
            state.withLock { $0.token = nil }
            throw CofferError(.unavailable, "etcd: watch cancelled: the auth token expired")
        }
        if compacted { return }
        throw CofferError(.unavailable, "etcd: the change feed's watch ended")
    }
}
