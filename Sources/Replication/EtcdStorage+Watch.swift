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
                response = try await client.execute(request, deadline: .distantFuture)
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
        let decoder = Self.decoder()
        var pending: [UInt8] = []
        for try await chunk in response.body {
            pending.append(contentsOf: chunk.readableBytesView)
            var lineStart = 0
            while let newline = pending[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[lineStart..<newline]
                lineStart = newline + 1
                guard line.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") }) else { continue }
                let message: WatchLine
                do {
                    message = try decoder.decode(WatchLine.self, from: Data(line))
                } catch {
                    throw CofferError(.unavailable, "etcd: unreadable watch response", cause: error)
                }
                if let error = message.error {
                    throw CofferError(.unavailable, "etcd: watch failed: \(Self.clip(error.message ?? "unknown error"))")
                }
                guard let result = message.result else { continue }
                if let compacted = result.compactRevision?.value, compacted > 0 {
                    deliver(.compacted(head: UInt64(compacted)))
                    return
                }
                if result.canceled == true {
                    throw CofferError(.unavailable, "etcd: watch cancelled: \(Self.clip(result.cancelReason ?? ""))")
                }
                for event in result.events ?? [] where event.type == nil || event.type == "PUT" {
                    guard let kv = event.kv, let value = kv.value, let rev = kv.modRevision?.value, rev > 0,
                        let entries = Self.decodeFeedEntry(Array(value), revision: UInt64(rev))
                    else { continue }
                    deliver(.changes(entries, head: UInt64(rev)))
                }
            }
            pending.removeFirst(lineStart)
        }
        throw CofferError(.unavailable, "etcd: the change feed's watch ended")
    }
}
