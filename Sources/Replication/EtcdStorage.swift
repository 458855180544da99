import AsyncHTTPClient
import CofferSDK
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Where and how `EtcdStorage` reaches etcd.
///
/// Plain HTTP only: TLS to etcd (and client certificates) is not supported yet, so an
/// `https://` address is refused. Keep etcd on loopback or a private network until it is.
public struct EtcdStorageConfiguration: Sendable, CustomStringConvertible {
    /// Client endpoints of the cluster's members, `host:port` (or `http://host:port`). A call
    /// starts at the member that answered last and moves to the next on a connection failure.
    public var addresses: [String]
    /// Every etcd key Coffer writes lives under this prefix (data under `prefix + "kv/"`, the
    /// change-feed marker at `prefix + "feed"`), so several stores can share one cluster.
    public var prefix: String
    /// Bound on one storage call, fail-over and re-authentication included.
    public var requestTimeout: Duration
    /// Bound on opening one TCP connection, after which the next address is tried.
    public var connectTimeout: Duration
    /// etcd user for `/v3/auth/authenticate` when the cluster has auth enabled.
    public var username: String?
    public var password: String?
    /// The cluster's `--max-request-bytes` (etcd's default, 1.5 MiB): a write that would not
    /// fit is refused with `.invalidRequest` before it is sent.
    public var maxRequestBytes: Int
    /// Keys fetched per range request while listing.
    public var listPageSize: Int
    /// Pooled HTTP connections per member.
    public var connectionsPerAddress: Int
    /// TLS to etcd (`tls_ca_file`, `tls_cert_file`, `tls_key_file`): with any of them, or an
    /// `https://` address, every member is reached over TLS; the CA file replaces the system
    /// roots, the certificate and key are the client certificate (`--client-cert-auth`).
    public var tlsCAFile: String?
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    var usesTLS: Bool {
        tlsCAFile != nil || tlsCertFile != nil || tlsKeyFile != nil || addresses.contains { $0.hasPrefix("https://") }
    }

    public init(
        addresses: [String], prefix: String = "coffer/", requestTimeout: Duration = .seconds(5),
        connectTimeout: Duration = .seconds(1), username: String? = nil, password: String? = nil,
        maxRequestBytes: Int = 1_572_864, listPageSize: Int = 1000, connectionsPerAddress: Int = 16
    ) {
        self.addresses = addresses
        self.prefix = prefix
        self.requestTimeout = requestTimeout
        self.connectTimeout = connectTimeout
        self.username = username
        self.password = password
        self.maxRequestBytes = maxRequestBytes
        self.listPageSize = listPageSize
        self.connectionsPerAddress = connectionsPerAddress
    }

    /// Never shows the password.
    public var description: String {
        "EtcdStorageConfiguration(addresses: \(addresses), prefix: \(prefix), requestTimeout: \(requestTimeout), "
            + "username: \(username ?? "-"), password: \(password == nil ? "-" : "<redacted>"))"
    }
}

/// The Raft-replicated `Storage` tier: etcd 3.4+ through its v3 JSON gateway (`/v3/kv/*`).
///
/// Layout: a Coffer key `k` is the etcd key `prefix + "kv/" + k`; `list` pages through a
/// `keys_only` range and applies Vault's list semantics, skipping the rest of a sub-folder
/// when a page ends inside one. Compare-and-set is one etcd transaction comparing the value
/// (or `create_revision == 0`: must not exist).
///
/// The change feed is etcd's own MVCC history, read through one marker key: every write is a
/// transaction that changes the data key *and* puts `prefix + "feed"` with the value `p<key>`
/// (put) or `d<key>` (delete; only when the key existed), so both get the same etcd revision.
/// A feed revision is that etcd revision (ordered, with gaps where other keys changed).
/// `changes(since: r)` reads the marker's `mod_revision` (the feed head) and `version` (how
/// many writes so far). A few changes (up to 16) are read backwards through the marker's
/// history, one range at a revision each; more are read by watching the marker from `r + 1`
/// up to the head or `limit` entries (etcd serves a watch on past revisions only on its
/// next catch-up pass, up to 100 ms later). Either way every write after `r` is one entry,
/// deletes included, nothing is coalesced, and no watch waits for an event that will not
/// come. When etcd has compacted past `r + 1`, the watch is cancelled with a
/// `compact_revision` and the feed answers `.compacted(head:)`. Retention is etcd's: run the
/// cluster with `--auto-compaction-mode` / `--auto-compaction-retention` (or compact it).
///
/// Every call is bounded by `requestTimeout`; any etcd or network failure is
/// `CofferError(.unavailable, "etcd: ...")`, whose message carries no value, token or password.
/// A write is retried on the next member only when it cannot have been applied twice
/// harmfully: puts and deletes after any transport failure, compare-and-set only when the
/// connection was never opened.
public final class EtcdStorage: Storage {
    public let configuration: EtcdStorageConfiguration
    /// Unary calls (and the bounded feed catch-up): a read that stalls for `requestTimeout`
    /// fails, so a member that sent a head and hung cannot hold a call.
    let client: HTTPClient
    /// The standbys' long-lived watch, which may stay silent for as long as nothing changes.
    let watchClient: HTTPClient
    /// `http://host:port`, one per member.
    let endpoints: [String]
    let dataPrefix: [UInt8]
    let feedKey: [UInt8]
    /// The HA lock (`EtcdStorage+HA.swift`).
    let lockKey: [UInt8]
    let state = Mutex(State())
    /// Group commit of puts (`EtcdStorage+Batch.swift`).
    let batcher = EtcdPutBatcher()
    /// Negative lookups on the HA lock holder (`EtcdStorage+AbsentKeys.swift`).
    public let knownKeys = KnownKeys()

    struct State {
        /// The endpoint that answered last: calls start there.
        var preferred = 0
        /// The etcd auth token, when `username` is set and one was issued.
        var token: String?
        var shutDown = false
        /// While set, every write is conditional on the HA lock key holding this value.
        var fence: [UInt8]?
        /// How long after a renewal is sent the lease is certainly alive (2/3 of the TTL).
        var lockTrust: Duration = .zero
    }

    public init(configuration: EtcdStorageConfiguration) throws {
        guard !configuration.addresses.isEmpty else { throw CofferError.invalid("etcd: no addresses configured") }
        guard !configuration.prefix.isEmpty else { throw CofferError.invalid("etcd: the key prefix must not be empty") }
        let scheme = configuration.usesTLS ? "https://" : "http://"
        endpoints = try configuration.addresses.map { address in
            if configuration.usesTLS && address.hasPrefix("http://") {
                throw CofferError.invalid("etcd: \(address) is plain HTTP but TLS is configured")
            }
            var hostPort = address
            for prefix in ["http://", "https://"] where hostPort.hasPrefix(prefix) { hostPort.removeFirst(prefix.count) }
            while hostPort.hasSuffix("/") { hostPort.removeLast() }
            guard !hostPort.isEmpty, !hostPort.contains("/") else { throw CofferError.invalid("etcd: bad address \(address)") }
            return scheme + hostPort
        }
        self.configuration = configuration
        dataPrefix = Array((configuration.prefix + "kv/").utf8)
        feedKey = Array((configuration.prefix + "feed").utf8)
        lockKey = Array((configuration.prefix + "ha/lock").utf8)
        var http = HTTPClient.Configuration()
        if configuration.usesTLS { http.tlsConfiguration = try Self.tlsConfiguration(configuration) }
        http.timeout = .init(connect: Self.timeAmount(configuration.connectTimeout))
        http.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, configuration.connectionsPerAddress))
        // A refused connection fails the request at once, so the next member is tried.
        http.connectionPool.retryConnectionEstablishment = false
        http.redirectConfiguration = .disallow
        http.httpVersion = .http1Only
        watchClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        http.timeout.read = Self.timeAmount(configuration.requestTimeout)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
    }

    /// Closes the HTTP connections. The store must not be used afterwards; a store dropped
    /// without it closes them in the background.
    public func shutdown() async throws {
        let first = state.withLock { s in
            let first = !s.shutDown
            s.shutDown = true
            return first
        }
        guard first else { return }
        try await watchClient.shutdown()
        try await client.shutdown()
    }

    deinit {
        if !state.withLock({ $0.shutDown }) {
            // The callback keeps the client alive until its pool has closed.
            client.shutdown(queue: .global()) { _ in }
            watchClient.shutdown(queue: .global()) { _ in }
        }
    }

    // MARK: Storage

    public func get(_ key: String) async throws -> [UInt8]? {
        if knownKeys.certainlyAbsent(key) { return nil }
        let reply = try await call("/v3/kv/range", RangeRequest(key: Data(dataPrefix + key.utf8)), RangeReply.self, retryable: true)
        guard let kv = reply.kvs?.first else { return nil }
        return kv.value.map { Array($0) } ?? []
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        let etcdKey = dataPrefix + key.utf8
        try checkSize(valueBytes: value.count, keyBytes: etcdKey.count)
        knownKeys.insert(key)
        try await submitPut([.init(key: key, etcdKey: etcdKey, value: value)])
    }

    /// One transaction (shared with concurrent puts): all of them are stored, or none.
    public func putAll(_ entries: [StorageEntry]) async throws {
        guard !entries.isEmpty else { return }
        guard Set(entries.map(\.key)).count == entries.count else { throw CofferError.invalid("putAll: a key appears twice") }
        guard entries.count <= EtcdPutBatcher.maxOpsPerBatch else {
            throw CofferError.invalid("putAll: at most \(EtcdPutBatcher.maxOpsPerBatch) entries in one write")
        }
        let items = entries.map { EtcdPutBatcher.Pending.Entry(key: $0.key, etcdKey: dataPrefix + $0.key.utf8, value: $0.value) }
        // Each value and key, plus the marker's copy of each key (what one put is checked for).
        let extra = items.reduce(0) { $0 + 2 * $1.etcdKey.count + $1.key.utf8.count + 4 }
        try checkSize(valueBytes: items.reduce(0) { $0 + $1.value.count } + extra, keyBytes: 0)
        for e in entries { knownKeys.insert(e.key) }
        try await submitPut(items)
    }

    public func delete(_ key: String) async throws {
        let etcdKey = dataPrefix + key.utf8
        // Only an existing key is deleted and logged, so the feed holds real changes only.
        let txn = TxnRequest(
            compare: [Compare(result: "GREATER", target: "VERSION", key: Data(etcdKey), version: 0)],
            success: [.delete(etcdKey), .put(feedKey, Self.feedEntry(deleted: true, key))])
        _ = try await fencedTxn(txn, retryable: true)
    }

    public func list(prefix: String) async throws -> [String] {
        let start = dataPrefix + prefix.utf8
        let end = Self.rangeEnd(of: start)
        var keys: [String] = []
        var from = start
        while true {
            let request = RangeRequest(key: Data(from), rangeEnd: Data(end), limit: Int64(max(1, configuration.listPageSize)), keysOnly: true)
            let reply = try await call("/v3/kv/range", request, RangeReply.self, retryable: true)
            let page = reply.kvs ?? []
            for kv in page {
                guard let full = kv.key, full.count >= dataPrefix.count else { continue }
                keys.append(String(decoding: full.dropFirst(dataPrefix.count), as: UTF8.self))
            }
            guard reply.more == true, let last = page.last?.key else { break }
            let rest = Array(last.dropFirst(start.count))
            if let slash = rest.firstIndex(of: UInt8(ascii: "/")) {
                // The page ended inside a sub-folder: it is listed once, skip the rest of it.
                from = start + rest[..<slash] + [UInt8(ascii: "/") + 1]
            } else {
                from = Array(last) + [0]
            }
        }
        return Self.immediateChildren(of: prefix, in: keys)
    }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        let etcdKey = dataPrefix + key.utf8
        try checkSize(valueBytes: (expected?.count ?? 0) + (new?.count ?? 0), keyBytes: etcdKey.count)
        let compare: Compare
        if let expected {
            compare = Compare(result: "EQUAL", target: "VALUE", key: Data(etcdKey), value: Data(expected))
        } else {
            compare = Compare(result: "EQUAL", target: "CREATE", key: Data(etcdKey), createRevision: 0)
        }
        var success: [RequestOp] = []
        if new != nil { knownKeys.insert(key) }
        if let new {
            success = [.put(etcdKey, new), .put(feedKey, Self.feedEntry(deleted: false, key))]
        } else if expected != nil {
            success = [.delete(etcdKey), .put(feedKey, Self.feedEntry(deleted: true, key))]
        }
        return try await fencedTxn(TxnRequest(compare: [compare], success: success), retryable: false)
    }

    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        try await bounded("changes") {
            let marker = try await self.call("/v3/kv/range", RangeRequest(key: Data(self.feedKey)), RangeReply.self, retryable: true)
            let newest = marker.kvs?.first
            let head = UInt64(max(0, newest?.modRevision?.value ?? 0))
            guard let newest, head > revision, limit > 0 else { return .changes([], head: head) }
            if let recent = try await self.recentChanges(since: revision, newest: newest) {
                return .changes(Self.wholeRevisions(recent, limit: limit), head: head)
            }
            let body = try Self.encode(WatchRequest(createRequest: .init(key: Data(self.feedKey), startRevision: Int64(revision + 1))))
            return try await self.exchange("/v3/watch", body, retryable: true) { response in
                try await self.readFeed(response, head: head, limit: limit)
            }
        }
    }

    // MARK: Change feed

    /// Up to this many changes are read backwards through the marker's history (one range
    /// request each, ~1 ms) instead of through a watch: etcd hands a watch on past revisions
    /// its events only on its next catch-up pass, up to 100 ms later.
    static let historyWalkLimit: Int64 = 16

    /// The changes after `revision` when there are at most `historyWalkLimit`, oldest first:
    /// the marker's version counts the writes, and the marker read at revision `r - 1` is the
    /// write before the one at `r`. `nil` when there are more, or etcd compacted a revision
    /// needed (the watch then tells whether the reader must re-list).
    func recentChanges(since revision: UInt64, newest: KeyValue) async throws -> [StorageChange]? {
        var before: Int64 = 0
        if revision > 0 {
            guard let reply = try await marker(at: Int64(revision)) else { return nil }
            before = reply.kvs?.first?.version?.value ?? 0
        }
        let count = (newest.version?.value ?? 0) - before
        guard count > 0, count <= Self.historyWalkLimit else { return nil }
        var newestFirst: [[StorageChange]] = []
        var kv = newest
        while true {
            guard let rev = kv.modRevision?.value, rev > Int64(revision), let value = kv.value,
                let entries = Self.decodeFeedEntry(Array(value), revision: UInt64(rev))
            else { return nil }
            newestFirst.append(entries)
            if newestFirst.count == count { return newestFirst.reversed().flatMap { $0 } }
            guard let earlier = try await marker(at: rev - 1)?.kvs?.first else { return nil }
            kv = earlier
        }
    }

    /// The feed marker as of `revision`; `nil` when etcd has compacted that revision.
    func marker(at revision: Int64) async throws -> RangeReply? {
        do {
            return try await call("/v3/kv/range", RangeRequest(key: Data(feedKey), revision: revision), RangeReply.self, retryable: true)
        } catch is EtcdCompacted {
            return nil
        }
    }

    static func feedEntry(deleted: Bool, _ key: String) -> [UInt8] {
        [deleted ? UInt8(ascii: "d") : UInt8(ascii: "p")] + Array(key.utf8)
    }

    /// The marker of a group-committed batch of puts: "f", then the keys in sorted order,
    /// each front-coded against the one before: the length of the prefix they share and the
    /// length of the rest (LEB128 varints), then the rest. Keys of one mount share most of
    /// their bytes, and every byte a transaction carries costs etcd CPU three times over.
    static func batchFeedEntry(_ keys: [String]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "f")]
        var previous: [UInt8] = []
        for key in keys.sorted() {
            let bytes = Array(key.utf8)
            var shared = 0
            while shared < min(previous.count, bytes.count), previous[shared] == bytes[shared] { shared += 1 }
            appendVarint(shared, &out)
            appendVarint(bytes.count - shared, &out)
            out += bytes[shared...]
            previous = bytes
        }
        return out
    }

    static func appendVarint(_ value: Int, _ out: inout [UInt8]) {
        var v = UInt64(value)
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func readVarint(_ value: [UInt8], _ i: inout Int) -> Int? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while i < value.count, shift < 35 {
            let b = value[i]
            i += 1
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return Int(result) }
            shift += 7
        }
        return nil
    }

    /// The changes one marker value records (one revision); nil when it is not a marker.
    /// "b" (length-prefixed keys) is the batch marker of earlier versions, still read.
    static func decodeFeedEntry(_ value: [UInt8], revision: UInt64) -> [StorageChange]? {
        guard let tag = value.first else { return nil }
        switch tag {
        case UInt8(ascii: "p"), UInt8(ascii: "d"):
            return [StorageChange(revision: revision, key: String(decoding: value.dropFirst(), as: UTF8.self), deleted: tag == UInt8(ascii: "d"))]
        case UInt8(ascii: "f"):
            var out: [StorageChange] = []
            var previous: [UInt8] = []
            var i = 1
            while i < value.count {
                guard let shared = readVarint(value, &i), let rest = readVarint(value, &i),
                    shared <= previous.count, rest <= value.count - i
                else { return nil }
                let key = Array(previous[..<shared]) + value[i..<(i + rest)]
                i += rest
                out.append(StorageChange(revision: revision, key: String(decoding: key, as: UTF8.self), deleted: false))
                previous = key
            }
            return out
        case UInt8(ascii: "b"):
            var out: [StorageChange] = []
            var i = 1
            while i < value.count {
                guard i + 4 <= value.count else { return nil }
                let n = Int(value[i]) << 24 | Int(value[i + 1]) << 16 | Int(value[i + 2]) << 8 | Int(value[i + 3])
                i += 4
                guard n <= value.count - i else { return nil }
                out.append(StorageChange(revision: revision, key: String(decoding: value[i..<(i + n)], as: UTF8.self), deleted: false))
                i += n
            }
            return out
        default:
            return nil
        }
    }

    /// At most `limit` changes, but never part of a revision (all of the first one at least).
    static func wholeRevisions(_ changes: [StorageChange], limit: Int) -> [StorageChange] {
        guard changes.count > limit, limit > 0 else { return changes }
        var end = limit
        while end < changes.count, changes[end].revision == changes[end - 1].revision { end += 1 }
        return Array(changes[..<end])
    }

    /// Reads watch events until `head` or `limit`; returning drops the stream, which closes
    /// the connection and with it the watch.
    func readFeed(_ response: HTTPClientResponse, head: UInt64, limit: Int) async throws -> StorageChanges {
        guard response.status == .ok else {
            throw Self.failure(status: response.status, body: try await response.body.collect(upTo: 1 << 16))
        }
        var changes: [StorageChange] = []
        var answer: StorageChanges?
        try await readWatchItems(response) { item in
            switch item {
            case .compacted:
                answer = .compacted(head: head)
            case .changes(let entries, let revision):
                // A revision is never split: a reader resumes after the last one it got.
                changes.append(contentsOf: entries)
                if revision >= head || changes.count >= limit { answer = .changes(changes, head: head) }
            }
            return answer == nil
        }
        guard let answer else { throw CofferError(.unavailable, "etcd: watch stream ended early") }
        return answer
    }

    /// What one line of a watch response carries for the feed.
    enum WatchItem {
        /// etcd compacted the revisions asked for (at this revision).
        case compacted(UInt64)
        /// The changes one marker revision records.
        case changes([StorageChange], revision: UInt64)
    }

    /// Reads a watch response (one JSON object per line) and hands each feed item to
    /// `consume` while it answers true. Returns when `consume` answered false or the stream
    /// ended; throws on an error line, an unreadable line or a cancelled watch
    /// (`EtcdAuthExpired` when etcd no longer accepts the auth token).
    func readWatchItems(_ response: HTTPClientResponse, _ consume: (WatchItem) throws -> Bool) async throws {
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
                    _ = try consume(.compacted(UInt64(compacted)))
                    return
                }
                if result.canceled == true {
                    // A watch carries no status code: with credentials, a cancel is taken for an
                    // expired token (re-authenticate, watch again); a second one is an error.
                    if configuration.username != nil { throw EtcdAuthExpired() }
                    throw CofferError(.unavailable, "etcd: watch cancelled: \(Self.clip(result.cancelReason ?? ""))")
                }
                for event in result.events ?? [] where event.type == nil || event.type == "PUT" {
                    guard let kv = event.kv, let value = kv.value, let rev = kv.modRevision?.value, rev > 0,
                        let entries = Self.decodeFeedEntry(Array(value), revision: UInt64(rev))
                    else { continue }
                    guard try consume(.changes(entries, revision: UInt64(rev))) else { return }
                }
            }
            pending.removeFirst(lineStart)
        }
    }

    // MARK: Requests

    /// One unary JSON call: bounded by `requestTimeout`, failing over between members,
    /// re-authenticating once when etcd refuses the token.
    func call<Request: Encodable, Reply: Decodable & Sendable>(
        _ path: String, _ request: Request, _ reply: Reply.Type, retryable: Bool
    ) async throws -> Reply {
        try await call(path, body: try Self.encode(request), reply, retryable: retryable)
    }

    /// `call` with a body encoded by the caller (messages whose proto names are not snake case).
    func call<Reply: Decodable & Sendable>(
        _ path: String, body: [UInt8], _ reply: Reply.Type, retryable: Bool
    ) async throws -> Reply {
        try decode(Reply.self, try await callBytes(path, body: body, retryable: retryable), path)
    }

    func decode<Reply: Decodable>(_ type: Reply.Type, _ bytes: ByteBuffer, _ path: String) throws -> Reply {
        do {
            return try Self.decoder().decode(Reply.self, from: Data(bytes.readableBytesView))
        } catch {
            throw CofferError(.unavailable, "etcd: unreadable response to \(path)", cause: error)
        }
    }

    /// A transaction. A committed one answers without decoding the reply: it is recognised
    /// by its top-level `"succeeded":true` (nothing else in a reply can hold those bytes:
    /// keys and values are base64), so the per-op responses of a large batch are not parsed.
    func txn(_ txn: TxnRequest, retryable: Bool) async throws -> TxnReply {
        let bytes = try await callBytes("/v3/kv/txn", body: try Self.encode(txn), retryable: retryable)
        if bytes.readableBytesView.firstRange(of: Self.succeededTrue) != nil { return TxnReply(succeeded: true) }
        return try decode(TxnReply.self, bytes, "/v3/kv/txn")
    }

    static let succeededTrue = Array(#""succeeded":true"#.utf8)

    func callBytes(_ path: String, body: [UInt8], retryable: Bool) async throws -> ByteBuffer {
        // Bounded without a timer task of its own: every attempt has a deadline for the
        // response head (`attempt`), and the client's read timeout bounds the body.
        let bytes: ByteBuffer
        do {
            bytes = try await exchange(path, body, retryable: retryable) { response in
                let buffer = try await response.body.collect(upTo: self.maxResponseBytes)
                guard response.status == .ok else { throw Self.failure(status: response.status, body: buffer) }
                return buffer
            }
        } catch {
            throw unavailable(path, error)
        }
        return bytes
    }

    var maxResponseBytes: Int { 4 * configuration.maxRequestBytes + (1 << 20) }

    /// Sends `body` to `path` and hands the response to `consume`, trying the members in turn
    /// (a connection that never opened is always retried elsewhere; other transport failures
    /// only when `retryable`), with the auth token when there is a user.
    func exchange<T: Sendable>(
        _ path: String, _ body: [UInt8], retryable: Bool,
        _ consume: @escaping @Sendable (HTTPClientResponse) async throws -> T
    ) async throws -> T {
        var reauthenticated = false
        while true {
            let token = try await authToken()
            do {
                return try await attempt(path, body, token: token, retryable: retryable, consume)
            } catch is EtcdAuthExpired where configuration.username != nil && !reauthenticated {
                state.withLock { if $0.token == token { $0.token = nil } }
                reauthenticated = true
            } catch is EtcdAuthExpired {
                throw CofferError(.unavailable, "etcd: the cluster refused the credentials")
            }
        }
    }

    func attempt<T: Sendable>(
        _ path: String, _ body: [UInt8], token: String?, retryable: Bool,
        _ consume: @escaping @Sendable (HTTPClientResponse) async throws -> T
    ) async throws -> T {
        let first = state.withLock { $0.preferred }
        let deadline = NIODeadline.now() + Self.timeAmount(configuration.requestTimeout)
        // A retryable call gives each member a share of the time: a member whose leader was
        // just killed holds a proposal until etcd's own timeout, while the others elect a new
        // leader within about a second.
        let share = Self.timeAmount(configuration.requestTimeout / 3)
        var lastError: (any Error)?
        for step in 0..<(retryable && endpoints.count > 1 ? endpoints.count + 1 : endpoints.count) {
            let index = (first + step) % endpoints.count
            let attemptDeadline = retryable && endpoints.count > 1 ? min(deadline, NIODeadline.now() + share) : deadline
            var request = HTTPClientRequest(url: endpoints[index] + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            if let token { request.headers.add(name: "Authorization", value: token) }
            request.body = .bytes(ByteBuffer(bytes: body))
            do {
                let response = try await client.execute(request, deadline: attemptDeadline)
                let result = try await consume(response)
                if step > 0 { state.withLock { $0.preferred = index } }
                return result
            } catch let error as CofferError {
                throw error
            } catch let error as EtcdAuthExpired {
                throw error
            } catch let error as EtcdCompacted {
                throw error
            } catch {
                if Task.isCancelled { throw error }
                if Self.isDeadline(error) {
                    // The member's share ran out: the next one gets the rest of the time.
                    guard retryable, NIODeadline.now() < deadline else { throw error }
                    lastError = error
                    continue
                }
                guard Self.neverConnected(error) || retryable else { throw error }
                lastError = error
            }
        }
        throw CofferError(
            .unavailable, "etcd: no member reachable (\(configuration.addresses.joined(separator: ", ")))", cause: lastError)
    }

    /// The auth token, fetched when there is a user and none is held.
    func authToken() async throws -> String? {
        guard let username = configuration.username else { return nil }
        if let token = state.withLock({ $0.token }) { return token }
        let body = try Self.encode(AuthenticateRequest(name: username, password: configuration.password ?? ""))
        let buffer = try await attempt("/v3/auth/authenticate", body, token: nil, retryable: true) { response in
            let buffer = try await response.body.collect(upTo: 1 << 16)
            guard response.status == .ok else {
                // Never echo etcd's text here: it is about the credentials.
                throw CofferError(.unavailable, "etcd: authentication failed for user \(username)")
            }
            return buffer
        }
        guard let token = try? Self.decoder().decode(AuthenticateReply.self, from: Data(buffer.readableBytesView)).token, !token.isEmpty else {
            throw CofferError(.unavailable, "etcd: authentication answered no token")
        }
        state.withLock { $0.token = token }
        return token
    }

    /// Runs `body` within `requestTimeout`; every failure becomes `CofferError(.unavailable)`.
    func bounded<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = configuration.requestTimeout
        do {
            return try await withThrowingTaskGroup(of: Bounded<T>.self) { group in
                group.addTask { .value(try await body()) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                }
                defer { group.cancelAll() }
                guard case .value(let value) = try await group.next() else { throw EtcdTimeout() }
                return value
            }
        } catch {
            throw unavailable(what, error)
        }
    }

    /// What a failed call throws: `CofferError` and `EtcdCompacted` as they are, anything
    /// else as `.unavailable` naming the call.
    func unavailable(_ what: String, _ error: any Error) -> any Error {
        let timeout = configuration.requestTimeout
        switch error {
        case is CofferError, is EtcdCompacted:
            return error
        case is EtcdTimeout:
            return CofferError(.unavailable, "etcd: no answer to \(what) within \(timeout)")
        default:
            if Self.isDeadline(error) || (error as? HTTPClientError) == .readTimeout {
                return CofferError(.unavailable, "etcd: no answer to \(what) within \(timeout)", cause: error)
            }
            return CofferError(.unavailable, "etcd: \(what) failed: \(Self.clip(String(describing: error)))", cause: error)
        }
    }

    enum Bounded<T: Sendable>: Sendable {
        case value(T)
        case timedOut
    }

    // MARK: Helpers

    /// The largest value `put(key, _)` sends: `maxRequestBytes` less what the transaction
    /// carries besides the value (the key twice, the feed marker, framing).
    public func maxValueBytes(forKey key: String) -> Int {
        maxValueBytes(keyBytes: dataPrefix.count + key.utf8.count)
    }

    func maxValueBytes(keyBytes: Int) -> Int {
        max(0, configuration.maxRequestBytes - 2 * keyBytes - 2 * feedKey.count - 512)
    }

    func checkSize(valueBytes: Int, keyBytes: Int) throws {
        let limit = maxValueBytes(keyBytes: keyBytes)
        if valueBytes > limit {
            throw CofferError.invalid("value too large for etcd: \(valueBytes) bytes, limit \(limit) bytes")
        }
    }

    static func tlsConfiguration(_ c: EtcdStorageConfiguration) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        do {
            if let ca = c.tlsCAFile { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
            switch (c.tlsCertFile, c.tlsKeyFile) {
            case (let cert?, let key?):
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            case (nil, nil):
                break
            default:
                throw CofferError.invalid("etcd: tls_cert_file and tls_key_file go together")
            }
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError.invalid("etcd: cannot load the TLS files: \(error)")
        }
        return tls
    }

    /// The first key after every key that starts with `prefix` (etcd's `range_end`).
    static func rangeEnd(of prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }

    static func failure(status: HTTPResponseStatus, body: ByteBuffer) -> any Error {
        let reply = try? decoder().decode(ErrorReply.self, from: Data(body.readableBytesView))
        let message = reply?.message ?? reply?.error ?? "HTTP \(status.code)"
        switch reply?.code.flatMap(EtcdStatus.init(rawValue:)) {
        case .unauthenticated?:
            // The token expired or the cluster restarted.
            return EtcdAuthExpired()
        case .outOfRange?:
            // A read at a revision etcd has compacted (or not reached yet): re-list either way.
            return EtcdCompacted()
        case .invalidArgument?:
            // What Coffer sends is well-formed and sized below etcd's limit (checked before
            // sending): etcd refusing it (auth without a user, a limit set lower on the
            // server) is the storage tier's fault, not the client's.
            return CofferError(.unavailable, "etcd refused the request: \(clip(message))")
        case .notFound?:
            return CofferError(.unavailable, "etcd: \(clip(message))", cause: EtcdStatus.notFound)
        default:
            return CofferError(.unavailable, "etcd: \(clip(message))")
        }
    }

    static func neverConnected(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError { return error == .connectTimeout }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        if let error = error as? IOError { return [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH].contains(error.errnoCode) }
        // A host name: the happy-eyeballs connector reports every failed attempt at once.
        return error is NIOConnectionError
    }

    static func isDeadline(_ error: any Error) -> Bool {
        (error as? HTTPClientError) == .deadlineExceeded || error is CancellationError
    }

    static func clip(_ text: String) -> String { text.count <= 200 ? text : String(text.prefix(200)) + "…" }

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    static func encode(_ value: some Encodable) throws -> [UInt8] {
        if let message = value as? any EtcdJSONMessage {
            var w = JSONWriter(capacity: 512)
            message.writeJSON(&w)
            return w.bytes
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return Array(try encoder.encode(value))
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// etcd refused the auth token (it expired, or the cluster lost it): authenticate again.
struct EtcdAuthExpired: Error {}

/// The gRPC status codes etcd's gateway answers that Coffer acts on (the `code` of its
/// error body).
enum EtcdStatus: Int, Error {
    case invalidArgument = 3
    case notFound = 5
    case outOfRange = 11
    case unauthenticated = 16
}
struct EtcdTimeout: Error {}
/// A read asked for a revision etcd has compacted.
struct EtcdCompacted: Error {}

// MARK: - The JSON gateway's messages (etcdserverpb, proto3 JSON: bytes are base64, int64 are strings)

/// An int64 as the gateway writes it: a decimal string (a plain number is accepted too).
struct EtcdInt: Decodable, Sendable {
    let value: Int64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self), let value = Int64(text) {
            self.value = value
        } else {
            value = try container.decode(Int64.self)
        }
    }
}

struct RangeRequest: Encodable {
    var key: Data
    var rangeEnd: Data?
    var limit: Int64?
    /// Read as of this revision (absent: the newest).
    var revision: Int64?
    var keysOnly: Bool?
}

struct KeyValue: Decodable, Sendable {
    var key: Data?
    var value: Data?
    var modRevision: EtcdInt?
    /// How many times the key was written since it was created.
    var version: EtcdInt?
}

struct RangeReply: Decodable, Sendable {
    var kvs: [KeyValue]?
    var more: Bool?
}

struct Compare: Encodable {
    /// EQUAL, GREATER, LESS, NOT_EQUAL.
    var result: String
    /// VERSION, CREATE, MOD, VALUE.
    var target: String
    var key: Data
    var value: Data?
    var createRevision: Int64?
    var version: Int64?
}

struct PutRequest: Encodable {
    var key: Data
    var value: Data
    /// A lease id (int64 as a decimal string): the key goes when the lease does.
    var lease: String?
}

struct DeleteRangeRequest: Encodable {
    var key: Data
}

struct RequestOp: Encodable {
    var requestPut: PutRequest?
    var requestDeleteRange: DeleteRangeRequest?
    var requestRange: RangeRequest?

    static func put(_ key: [UInt8], _ value: [UInt8]) -> RequestOp {
        RequestOp(requestPut: PutRequest(key: Data(key), value: Data(value)))
    }
    static func delete(_ key: [UInt8]) -> RequestOp {
        RequestOp(requestDeleteRange: DeleteRangeRequest(key: Data(key)))
    }
}

struct TxnRequest: Encodable {
    var compare: [Compare] = []
    var success: [RequestOp] = []
    var failure: [RequestOp] = []
}

struct TxnReply: Decodable, Sendable {
    struct Response: Decodable, Sendable {
        var responseRange: RangeReply?
    }
    /// Absent (proto3 default) when the comparison failed.
    var succeeded: Bool?
    var responses: [Response]?
}

struct WatchRequest: Encodable {
    struct Create: Encodable {
        var key: Data
        var startRevision: Int64
    }
    var createRequest: Create
}

struct WatchLine: Decodable {
    struct StreamError: Decodable {
        var message: String?
    }
    var result: WatchResult?
    var error: StreamError?
}

struct WatchResult: Decodable {
    struct Event: Decodable {
        /// PUT (absent: proto3 default) or DELETE.
        var type: String?
        var kv: KeyValue?
    }
    var canceled: Bool?
    var cancelReason: String?
    var compactRevision: EtcdInt?
    var events: [Event]?
}

struct ErrorReply: Decodable {
    var error: String?
    var message: String?
    var code: Int?
}

struct AuthenticateRequest: Encodable {
    var name: String
    var password: String
}

struct AuthenticateReply: Decodable {
    var token: String?
}

// MARK: - Hand-written JSON for the messages of every read and write

/// A request message that writes its own JSON: the hot path's messages (range, txn) are
/// written straight into bytes instead of through `JSONEncoder`, which cost about a tenth of
/// a node's CPU under a write load. Field names are the proto names (snake case), bytes are
/// base64, as `JSONEncoder` with `.convertToSnakeCase` writes them.
protocol EtcdJSONMessage {
    func writeJSON(_ w: inout JSONWriter)
}

/// The members of etcd's messages, on the one `JSONWriter`: a member is left out when its
/// value is nil (or, for an array, empty), as `JSONEncoder` leaves out a nil optional.
extension JSONWriter {
    static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// `bytes` as a base64 JSON string.
    mutating func base64<C: Collection<UInt8>>(_ bytes: C) where C.Index == Int {
        rawValue { out in Self.base64(bytes, into: &out) }
    }

    static func base64<C: Collection<UInt8>>(_ bytes: C, into out: inout [UInt8]) where C.Index == Int {
        out.append(UInt8(ascii: "\""))
        let alphabet = base64Alphabet
        var i = bytes.startIndex
        let end = bytes.endIndex
        while end - i >= 3 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(alphabet[Int(n & 63)])
            i += 3
        }
        if end - i == 1 {
            let n = UInt32(bytes[i]) << 16
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(contentsOf: "==".utf8)
        } else if end - i == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(UInt8(ascii: "="))
        }
        out.append(UInt8(ascii: "\""))
    }

    mutating func member(_ name: StaticString, bytes value: Data?) {
        guard let value else { return }
        key(name)
        base64(Array(value))
    }

    mutating func member(_ name: StaticString, int value: Int64?) {
        guard let value else { return }
        key(name)
        int(value)
    }

    mutating func member(_ name: StaticString, string value: String?) {
        guard let value else { return }
        key(name)
        string(value)
    }

    mutating func member(_ name: StaticString, bool value: Bool?) {
        guard let value else { return }
        key(name)
        bool(value)
    }

    mutating func member(_ name: StaticString, _ items: [some EtcdJSONMessage]) {
        guard !items.isEmpty else { return }
        key(name)
        beginArray()
        for item in items { item.writeJSON(&self) }
        endArray()
    }
}

extension RangeRequest: EtcdJSONMessage {
    func writeJSON(_ w: inout JSONWriter) {
        w.object { w in
            w.member("key", bytes: key)
            w.member("range_end", bytes: rangeEnd)
            w.member("limit", int: limit)
            w.member("revision", int: revision)
            w.member("keys_only", bool: keysOnly)
        }
    }
}

extension Compare: EtcdJSONMessage {
    func writeJSON(_ w: inout JSONWriter) {
        w.object { w in
            w.member("result", string: result)
            w.member("target", string: target)
            w.member("key", bytes: key)
            w.member("value", bytes: value)
            w.member("create_revision", int: createRevision)
            w.member("version", int: version)
        }
    }
}

extension RequestOp: EtcdJSONMessage {
    func writeJSON(_ w: inout JSONWriter) {
        w.object { w in
            if let put = requestPut {
                w.key("request_put")
                w.object { w in
                    w.member("key", bytes: put.key)
                    w.member("value", bytes: put.value)
                    w.member("lease", string: put.lease)
                }
            }
            if let delete = requestDeleteRange {
                w.key("request_delete_range")
                w.object { w in w.member("key", bytes: delete.key) }
            }
            if let range = requestRange {
                w.key("request_range")
                range.writeJSON(&w)
            }
        }
    }
}

extension TxnRequest: EtcdJSONMessage {
    func writeJSON(_ w: inout JSONWriter) {
        w.object { w in
            w.member("compare", compare)
            w.member("success", success)
            w.member("failure", failure)
        }
    }
}
