import CofferSDK
@preconcurrency import Crypto
import Foundation
import Synchronization

/// A token as stored: the id itself is never stored, only its salted hash (the key).
public struct TokenEntry: StoredJSONRecord, Sendable {
    public var idHash: String
    public var accessor: String
    public var parentHash: String
    public var policies: [String]
    public var meta: [String: String]
    public var displayName: String
    public var numUses: Int
    public var creationTime: Int64
    public var creationTTL: Int
    public var expireTime: Int64  // unix seconds; 0 = never
    public var explicitMaxTTL: Int
    public var period: Int
    public var renewable: Bool
    public var orphan: Bool
    public var path: String
    public var role: String
    public var type: String
    public var entityID: String
    public var namespacePath: String
    public var lastRenewalTime: Int64
    /// Set when the parent token (`parentHash`) lives in another namespace (an ancestor):
    /// that namespace's path. Its store indexes this child under `xchild/` (`TokenStore`).
    public var parentNamespace: String? = nil
    /// Set when its revocation starts (before its children are walked): from then on the
    /// token is refused and no child can be made of it.
    public var revoking: Bool? = nil
    /// CIDR blocks the token may be used from (nil or empty: anywhere).
    public var boundCIDRs: [String]? = nil
    /// A login token's TTL limit for renewals, from its creation (nil: the store's).
    public var maxTTL: Int? = nil

    /// The synthesized `Codable` form, by hand: tokens are written at every login and read
    /// at every cold lookup (JSONEncoder/JSONDecoder were a fifth of an AppRole login's CPU).
    public var storedJSON: JSONValue {
        var o: [String: JSONValue] = [
            "idHash": .string(idHash), "accessor": .string(accessor), "parentHash": .string(parentHash),
            "policies": .storedList(policies), "meta": .storedStrings(meta), "displayName": .string(displayName),
            "numUses": .int(Int64(numUses)), "creationTime": .int(creationTime), "creationTTL": .int(Int64(creationTTL)),
            "expireTime": .int(expireTime), "explicitMaxTTL": .int(Int64(explicitMaxTTL)), "period": .int(Int64(period)),
            "renewable": .bool(renewable), "orphan": .bool(orphan), "path": .string(path), "role": .string(role),
            "type": .string(type), "entityID": .string(entityID), "namespacePath": .string(namespacePath),
            "lastRenewalTime": .int(lastRenewalTime),
        ]
        if let parentNamespace { o["parentNamespace"] = .string(parentNamespace) }
        if let revoking { o["revoking"] = .bool(revoking) }
        if let boundCIDRs { o["boundCIDRs"] = .storedList(boundCIDRs) }
        if let maxTTL { o["maxTTL"] = .int(Int64(maxTTL)) }
        return .object(o)
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        idHash = try f.string("idHash")
        accessor = try f.string("accessor")
        parentHash = try f.string("parentHash")
        policies = try f.stringList("policies")
        meta = try f.strings("meta")
        displayName = try f.string("displayName")
        numUses = try f.int("numUses")
        creationTime = Int64(try f.int("creationTime"))
        creationTTL = try f.int("creationTTL")
        expireTime = Int64(try f.int("expireTime"))
        explicitMaxTTL = try f.int("explicitMaxTTL")
        period = try f.int("period")
        renewable = try f.bool("renewable")
        orphan = try f.bool("orphan")
        path = try f.string("path")
        role = try f.string("role")
        type = try f.string("type")
        entityID = try f.string("entityID")
        namespacePath = try f.string("namespacePath")
        lastRenewalTime = Int64(try f.int("lastRenewalTime"))
        parentNamespace = f.has("parentNamespace") ? try f.string("parentNamespace") : nil
        revoking = f.has("revoking") ? try f.bool("revoking") : nil
        boundCIDRs = f.has("boundCIDRs") ? try f.stringList("boundCIDRs") : nil
        maxTTL = f.has("maxTTL") ? try f.int("maxTTL") : nil
    }

    public init(
        idHash: String, accessor: String, parentHash: String, policies: [String], meta: [String: String], displayName: String,
        numUses: Int, creationTime: Int64, creationTTL: Int, expireTime: Int64, explicitMaxTTL: Int, period: Int,
        renewable: Bool, orphan: Bool, path: String, role: String, type: String, entityID: String, namespacePath: String,
        lastRenewalTime: Int64, parentNamespace: String? = nil, revoking: Bool? = nil, boundCIDRs: [String]? = nil, maxTTL: Int? = nil
    ) {
        self.idHash = idHash
        self.accessor = accessor
        self.parentHash = parentHash
        self.policies = policies
        self.meta = meta
        self.displayName = displayName
        self.numUses = numUses
        self.creationTime = creationTime
        self.creationTTL = creationTTL
        self.expireTime = expireTime
        self.explicitMaxTTL = explicitMaxTTL
        self.period = period
        self.renewable = renewable
        self.orphan = orphan
        self.path = path
        self.role = role
        self.type = type
        self.entityID = entityID
        self.namespacePath = namespacePath
        self.lastRenewalTime = lastRenewalTime
        self.parentNamespace = parentNamespace
        self.revoking = revoking
        self.boundCIDRs = boundCIDRs
        self.maxTTL = maxTTL
    }

    public func isExpired(now: Int64) -> Bool { expireTime != 0 && now >= expireTime }
    public func ttl(now: Int64) -> Int { expireTime == 0 ? 0 : Int(max(0, expireTime - now)) }
}

/// Token ids and accessors as Vault shapes them: `hvs.` + 24 base62 characters.
public enum TokenID {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

    public static func random(_ n: Int) -> String {
        var s = ""
        s.reserveCapacity(n)
        var pool: [UInt8] = []
        while s.count < n {
            if pool.isEmpty { pool = SecureRandom.bytes(2 * n) }
            // Rejection sampling: no modulo bias.
            let b = pool.removeLast()
            if b < 248 { s.append(alphabet[Int(b) % 62]) }
        }
        return s
    }

    public static func newToken() -> String { "hvs." + random(24) }
    public static func newAccessor() -> String { random(24) }

    /// The namespace id a token or accessor names with its `.<id>` suffix (nil: root).
    public static func namespaceID(of token: String) -> String? {
        // Byte scan: this runs on every request.
        let u = token.utf8
        guard let dot = u.lastIndex(of: UInt8(ascii: ".")) else { return nil }
        let start = u.index(after: dot)
        if u.distance(from: u.startIndex, to: dot) == 3, token.hasPrefix("hvs.") || token.hasPrefix("hvb.") { return nil }
        guard start < u.endIndex else { return nil }
        return String(Substring(u[start...]))
    }
}

/// One namespace's token store: create, look up, renew and revoke, with parent/child trees.
///
/// Layout below its view: `id/<hash>` entry, `accessor/<hash>` → id hash,
/// `parent/<parentHash>/<childHash>` index, and `xchild/<parentHash>/<childHash>` → the
/// namespace path of a child made in a descendant namespace by a token of this one (revoking
/// the parent revokes it there too). Hashes are HMAC-SHA256 with a salt kept behind the
/// barrier, so storage and its backups never hold a usable token.
public final class TokenStore: Sendable {
    let view: StorageView
    let salt: SymmetricKey
    let cache = Mutex<[String: TokenEntry]>([:])
    /// Bumped (under `cache`'s lock) by every revocation and cache drop: a lookup that read
    /// storage before it does not put what it read into the cache.
    let cacheGeneration = Atomic<UInt64>(0)
    public let defaultTTL: Int
    public let maxTTL: Int

    /// `.<namespace id>` for tokens of a child namespace (as Vault suffixes them), "" in root.
    public let idSuffix: String
    /// What "now" is for expiry checks and new entries.
    public let clock: WallClock

    /// Called after a token is revoked, with its hash (the lease manager revokes its leases).
    let onRevoke: (@Sendable (String) async -> Void)?
    /// The token store of another namespace (an ancestor or a descendant of this one), for
    /// parent/child links across namespaces; nil when it does not exist (any more).
    let storeAt: @Sendable (String) async throws -> TokenStore?
    /// Called when a token gets an expiry (creation, renewal), with its hash and the unix
    /// time: the lease manager schedules its revocation (`Leases+TokenExpiry.swift`).
    let onExpiry: (@Sendable (String, Int64) async throws -> Void)?

    /// The key batch tokens are sealed with (derived from the salt).
    let batchKey: SymmetricKey
    /// The path of the namespace this store serves (what a batch token's entry names).
    let namespacePathHint: String

    public init(
        view: StorageView, salt: [UInt8], defaultTTL: Int, maxTTL: Int, idSuffix: String = "", namespacePath: String = "", clock: WallClock = .system,
        onRevoke: (@Sendable (String) async -> Void)? = nil,
        onExpiry: (@Sendable (String, Int64) async throws -> Void)? = nil,
        storeAt: @escaping @Sendable (String) async throws -> TokenStore? = { _ in nil }
    ) {
        self.onRevoke = onRevoke
        self.onExpiry = onExpiry
        self.storeAt = storeAt
        self.idSuffix = idSuffix
        self.clock = clock
        self.view = view
        self.salt = SymmetricKey(data: salt)
        self.batchKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: salt), info: Array("coffer batch tokens".utf8), outputByteCount: 32)
        self.namespacePathHint = namespacePath
        self.defaultTTL = defaultTTL
        self.maxTTL = maxTTL
    }

    /// Recently computed token hashes (memory only; bounded).
    let hashes = Mutex<[String: String]>([:])

    public func hash(_ value: String) -> String {
        if let h = hashes.withLock({ $0[value] }) { return h }
        var v = value
        let mac = v.withUTF8 { HMAC<SHA256>.authenticationCode(for: $0, using: salt) }
        let h = Hex.encode(mac)
        hashes.withLock { c in
            if c.count >= 20_000 { c.removeAll(keepingCapacity: true) }
            c[value] = h
        }
        return h
    }

    /// Whole seconds since 1970 on this store's clock.
    func now() -> Int64 { clock.seconds() }

    /// Stores a new entry and returns the raw token id (the only time it exists in clear).
    public func create(_ template: TokenEntry, id: String? = nil) async throws -> (String, TokenEntry) {
        if let id, id.contains(".") {
            throw CofferError.invalid("custom token ID cannot have the '.' in the value")
        }
        let token = id.map { $0 + idSuffix } ?? (TokenID.newToken() + idSuffix)
        var entry = template
        entry.idHash = hash(token)
        if entry.accessor.isEmpty { entry.accessor = TokenID.newAccessor() + idSuffix }
        // The entry, its accessor and its parent link are one write (one commit).
        var rows = [
            StorageEntry(key: "id/" + entry.idHash, value: entry.storedJSON.serialized()),
            StorageEntry(key: "accessor/" + hash(entry.accessor), value: Array(entry.idHash.utf8)),
        ]
        let foreignParent = entry.parentHash.isEmpty ? nil : entry.parentNamespace
        if foreignParent == nil && !entry.parentHash.isEmpty {
            rows.append(StorageEntry(key: "parent/\(entry.parentHash)/\(entry.idHash)", value: []))
        }
        let made = entry
        let write = { [rows] in
            // A custom id: the check and the write under that id's lock (two callers with
            // one id cannot both succeed).
            try await self.view.withLock("id/" + made.idHash) {
                if id != nil, try await self.view.get("id/" + made.idHash) != nil {
                    throw CofferError.invalid("token with that id already exists")
                }
                try await self.view.putAll(rows)
                self.cache.withLock { $0[made.idHash] = made }
            }
        }
        if let foreignParent {
            guard let parentStore = try await storeAt(foreignParent) else {
                throw CofferError.invalid("the parent token's namespace does not exist")
            }
            try await parentStore.whileAlive(made.parentHash) {
                try await parentStore.view.put("xchild/\(made.parentHash)/\(made.idHash)", Array(made.namespacePath.utf8))
                try await write()
            }
        } else if !made.parentHash.isEmpty {
            try await whileAlive(made.parentHash) { try await write() }
        } else {
            try await write()
        }
        if entry.expireTime != 0 { try await onExpiry?(entry.idHash, entry.expireTime) }
        return (token, entry)
    }

    /// Runs `body` (which links something to the token `h`: a child token, a lease) under
    /// the token's lock, once it is known to be alive and not being revoked: a revocation
    /// marks the token under the same lock before it lists what is linked to it, so every
    /// link is either found by it or refused here.
    func whileAlive(_ h: String, _ body: () async throws -> Void) async throws {
        try await view.withLock("id/" + h) {
            guard let entry = try await view.getCodable(TokenEntry.self, "id/" + h), entry.revoking != true else {
                throw CofferError.invalid("token has been revoked")
            }
            try await body()
        }
    }

    /// The children of `h` in other namespaces: (namespace path, child hash).
    func foreignChildren(of h: String) async throws -> [(String, String)] {
        var out: [(String, String)] = []
        for child in try await view.list(prefix: "xchild/\(h)/") {
            guard let ns = try await view.get("xchild/\(h)/\(child)") else { continue }
            out.append((String(decoding: ns, as: UTF8.self), child))
        }
        return out
    }

    /// Looks up a raw token id; expired tokens are revoked and reported as absent.
    public func lookup(token: String) async throws -> TokenEntry? {
        if Self.isBatch(token) { return try await openBatch(token) }
        guard token.utf8.count <= 256, !token.isEmpty else { return nil }
        return try await lookup(hash: hash(token))
    }

    public func lookup(hash h: String) async throws -> TokenEntry? {
        let cached = cache.withLock { $0[h] }
        let entry: TokenEntry
        if let cached {
            entry = cached
        } else {
            let generation = cacheGeneration.load(ordering: .acquiring)
            guard let e = try await view.getCodable(TokenEntry.self, "id/" + h) else { return nil }
            entry = e
            cache.withLock { c in
                // A revocation since the read: what was read may be gone.
                guard cacheGeneration.load(ordering: .acquiring) == generation else { return }
                if c.count > 50_000 { c.removeAll() }
                c[h] = e
            }
        }
        if entry.revoking == true { return nil }
        if entry.isExpired(now: now()) {
            try? await revokeTree(hash: h)
            return nil
        }
        return entry
    }

    public func lookup(accessor: String) async throws -> TokenEntry? {
        guard let idh = try await view.get("accessor/" + hash(accessor)) else { return nil }
        return try await lookup(hash: String(decoding: idh, as: UTF8.self))
    }

    /// Changes a stored token: under its lock, on the entry re-read from storage, so
    /// renewals, spent uses, orphaning and revocation never undo one another. Answers nil
    /// (and changes nothing) when the token is gone or being revoked.
    public func modify<T: Sendable>(hash h: String, _ change: (inout TokenEntry) throws -> T) async throws -> (entry: TokenEntry, result: T)? {
        let changed: (TokenEntry, T, Int64)? = try await view.withLock("id/" + h) {
            guard var e = try await view.getCodable(TokenEntry.self, "id/" + h), e.revoking != true else { return nil }
            let before = e.expireTime
            let result = try change(&e)
            try await view.putCodable("id/" + h, e)
            let stored = e
            cache.withLock { $0[h] = stored }
            return (e, result, before)
        }
        guard let (entry, result, before) = changed else { return nil }
        if entry.expireTime != 0 && entry.expireTime != before { try await onExpiry?(h, entry.expireTime) }
        return (entry, result)
    }

    /// Requests running on a limited-use token's spent uses, and whether its last use is spent.
    let usesInFlight = Mutex<[String: (requests: Int, usedUp: Bool)]>([:])

    /// Counts one use of a limited-use token. Returns false when the token has no uses left.
    /// The check and the spend are one step (per-token lock, the entry re-read from storage
    /// inside it), so N concurrent requests with a k-use token get exactly k answers. Every
    /// true answer must be followed by `endUse` once the request is done.
    public func useToken(_ entry: TokenEntry) async throws -> Bool {
        guard entry.numUses != 0 else { return true }
        let spent = try await modify(hash: entry.idHash) { e -> Bool? in
            guard e.numUses > 0 else { return nil }
            e.numUses -= 1
            // Used up: -1, so concurrent requests can't reuse it before it is revoked.
            let last = e.numUses == 0
            if last { e.numUses = -1 }
            // Counted inside the lock: `endUse` of an earlier request cannot revoke the
            // token between this spend and its count.
            usesInFlight.withLock { m in
                var v = m[entry.idHash] ?? (0, false)
                v.requests += 1
                v.usedUp = v.usedUp || last
                m[entry.idHash] = v
            }
            return last
        }
        return spent?.result != nil
    }

    /// A request that spent a use is done: a used-up token is revoked once the last request
    /// that spent one of its uses is done (they all see the token they were granted).
    public func endUse(_ hash: String) async {
        let revoke = usesInFlight.withLock { m -> Bool in
            guard var v = m[hash] else { return false }
            v.requests -= 1
            if v.requests > 0 { m[hash] = v; return false }
            m[hash] = nil
            return v.usedUp
        }
        if revoke { try? await revokeTree(hash: hash) }
    }

    /// Revokes a token and, recursively, every child token. The token is marked first
    /// (refused from then on, and no new child can be linked to it), then its children
    /// go, then it.
    public func revokeTree(hash h: String) async throws {
        try await markRevoking(h)
        for child in try await view.list(prefix: "parent/\(h)/") {
            try await revokeTree(hash: child)
        }
        for (ns, child) in try await foreignChildren(of: h) {
            // A namespace deleted since took its tokens with it.
            try await storeAt(ns)?.revokeTree(hash: child)
            try await view.delete("xchild/\(h)/\(child)")
        }
        try await revokeOne(hash: h)
    }

    /// Revokes one token; its children become orphans.
    public func revokeOrphan(hash h: String) async throws {
        try await markRevoking(h)
        for child in try await view.list(prefix: "parent/\(h)/") {
            try await orphan(hash: child)
            try await view.delete("parent/\(h)/\(child)")
        }
        for (ns, child) in try await foreignChildren(of: h) {
            try await storeAt(ns)?.orphan(hash: child)
            try await view.delete("xchild/\(h)/\(child)")
        }
        try await revokeOne(hash: h)
    }

    /// Makes a token of this store an orphan (its parent is being revoked alone).
    func orphan(hash h: String) async throws {
        _ = try await modify(hash: h) { e in
            e.parentHash = ""
            e.parentNamespace = nil
            e.orphan = true
        }
    }

    /// Marks a token as being revoked (under its lock): every later lookup refuses it.
    func markRevoking(_ h: String) async throws {
        _ = try await modify(hash: h) { $0.revoking = true }
    }

    func revokeOne(hash h: String) async throws {
        let entry: TokenEntry? = try await view.withLock("id/" + h) {
            let entry = try await view.getCodable(TokenEntry.self, "id/" + h)
            if let entry {
                try await view.delete("accessor/" + hash(entry.accessor))
                if let parentNamespace = entry.parentNamespace, !entry.parentHash.isEmpty {
                    try await storeAt(parentNamespace)?.view.delete("xchild/\(entry.parentHash)/\(h)")
                } else if !entry.parentHash.isEmpty {
                    try await view.delete("parent/\(entry.parentHash)/\(h)")
                }
            }
            try await view.delete("id/" + h)
            cache.withLock {
                _ = $0.removeValue(forKey: h)
                cacheGeneration.add(1, ordering: .releasing)
            }
            return entry
        }
        if entry != nil, let onRevoke { await onRevoke(h) }
    }

    /// Every accessor (for `auth/token/accessors`).
    public func accessors() async throws -> [String] {
        var out: [String] = []
        for h in try await view.list(prefix: "id/") {
            if let e = try await view.getCodable(TokenEntry.self, "id/" + h) { out.append(e.accessor) }
        }
        return out.sorted()
    }

    /// Number of stored tokens.
    public func count() async throws -> Int { try await view.list(prefix: "id/").count }

    public func dropCache() {
        cache.withLock {
            $0.removeAll()
            cacheGeneration.add(1, ordering: .releasing)
        }
    }
}

extension TokenEntry {
    static func rfc3339(_ t: Int64) -> String { RFC3339.format(Date(timeIntervalSince1970: TimeInterval(t))) }

    /// The `data` of a token lookup, Vault's shape.
    public func lookupData(id: String, now: Int64) -> [String: JSONValue] {
        var data = lookupFields(id: id, now: now)
        if let cidrs = boundCIDRs, !cidrs.isEmpty { data["bound_cidrs"] = .array(cidrs.map { .string($0) }) }
        return data
    }

    func lookupFields(id: String, now: Int64) -> [String: JSONValue] {
        [
            "accessor": .string(accessor),
            "creation_time": .int(creationTime),
            "creation_ttl": .int(Int64(creationTTL)),
            "display_name": .string(displayName),
            "entity_id": .string(entityID),
            "expire_time": expireTime == 0 ? .null : .string(Self.rfc3339(expireTime)),
            "explicit_max_ttl": .int(Int64(explicitMaxTTL)),
            "id": .string(id),
            "issue_time": .string(Self.rfc3339(creationTime)),
            "meta": meta.isEmpty ? .null : .object(meta.mapValues { .string($0) }),
            "num_uses": .int(Int64(max(0, numUses))),
            "orphan": .bool(orphan),
            "path": .string(path),
            "policies": .array(policies.map { .string($0) }),
            "renewable": .bool(renewable),
            "ttl": .int(Int64(ttl(now: now))),
            "type": .string(type),
            "period": period > 0 ? .int(Int64(period)) : .null,
            "role": role.isEmpty ? .null : .string(role),
            "namespace_path": .string(namespacePath),
            "last_renewal_time": lastRenewalTime > 0 ? .int(lastRenewalTime) : .null,
        ].filter { !($0.key == "period" && $0.value.isNull) && !($0.key == "role" && $0.value.isNull) && !($0.key == "last_renewal_time" && $0.value.isNull) }
    }

    public func authInfo(token: String) -> AuthInfo {
        AuthInfo(
            clientToken: token, accessor: accessor, policies: policies,
            tokenPolicies: policies, metadata: meta, leaseDuration: creationTTL, renewable: renewable,
            entityID: entityID, tokenType: type, orphan: orphan, numUses: max(0, numUses))
    }
}
