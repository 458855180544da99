import Foundation
import Synchronization

/// Records an engine reads on every request (its config, a role), decoded once per stored
/// form: each read still asks storage for the bytes — so a write on any node, seen through
/// the change feed, is seen here at once — and decodes only when they changed.
/// JSONDecoder costs tens of microseconds per record; comparing a few hundred bytes does not.
public final class DecodedRecords<T: Decodable & Sendable>: Sendable {
    let cache = Mutex<[String: ([UInt8], T)]>([:])
    let limit: Int

    public init(limit: Int = 1024) { self.limit = limit }

    public func get(_ storage: StorageView, _ key: String) async throws -> T? {
        guard let bytes = try await storage.get(key) else { return nil }
        if let (seen, value) = cache.withLock({ $0[key] }), seen == bytes { return value }
        let value: T
        do {
            value = try StoredJSON.decoder.decode(T.self, from: Data(bytes))
        } catch {
            throw CofferError.internalError("stored record is corrupt", cause: error)
        }
        cache.withLock { c in
            if c.count >= limit { c.removeAll(keepingCapacity: true) }
            c[key] = (bytes, value)
        }
        return value
    }
}
