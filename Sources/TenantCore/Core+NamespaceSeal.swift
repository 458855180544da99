import CofferSDK
import Crypto
import Foundation
import Synchronization
import Logging

/// What a namespace's seal status says (`sys/namespaces/:path/seal-status`).
public struct NamespaceSealStatus: Sendable {
    public var sealable: Bool
    public var sealed: Bool
    public var shares: Int
    public var threshold: Int
    public var progress: Int
    public var nonce: String
}

/// Sealable namespaces: a tenant's keyring wrapped by the tenant's own Shamir shares. The
/// operator's keys open the parent's storage and so the namespace record, but the record
/// holds only the keyring sealed with the namespace root key and that root key sealed with
/// the unseal key the shares recombine to. While sealed, the namespace (and every
/// namespace below it, whose records live in its storage) answers 503; siblings are not
/// touched. The root key is held in memory only while unsealed; a restart seals them all.
extension Core {
    /// A new sealable namespace's seal: shares of a fresh unseal key, the record's `seal`,
    /// and its root key (kept in memory: a new namespace starts unsealed).
    func makeNamespaceSeal(id: String, keyring: Keyring, shares: Int, threshold: Int) throws -> (NamespaceSeal, [[UInt8]], [UInt8]) {
        try Self.checkShares(shares, threshold, "namespace seal")
        let unsealKey = SecureRandom.bytes(32)
        let rootKey = SecureRandom.bytes(32)
        let parts = try Self.splitKey(unsealKey, shares: shares, threshold: threshold)
        let seal = NamespaceSeal(
            shares: shares, threshold: threshold,
            wrappedRootKey: try Sealer.seal(rootKey, key: SymmetricKey(data: unsealKey), term: 0, aad: NamespaceSeal.rootKeyAAD(id)),
            sealedKeyring: try Self.sealKeyring(keyring, rootKey: rootKey, id: id))
        return (seal, parts, rootKey)
    }

    static func sealKeyring(_ keyring: Keyring, rootKey: [UInt8], id: String) throws -> [UInt8] {
        try Sealer.seal(keyring.storedJSON.serialized(), key: SymmetricKey(data: rootKey), term: 0, aad: NamespaceSeal.keyringAAD(id))
    }

    /// The keyring of a namespace record: its own, or (sealable) opened with the root key
    /// held since its unseal. A sealed namespace is a 503 that names it.
    func keyring(of record: NamespaceRecord) throws -> Keyring {
        if let ring = record.keyring { return ring }
        guard let seal = record.seal, let rootKey = namespaceRootKeys.withLock({ $0[record.id] }) else {
            throw CofferError(.sealed, "namespace is sealed")
        }
        let bytes: [UInt8]
        do {
            bytes = try Sealer.open(seal.sealedKeyring, key: SymmetricKey(data: rootKey), aad: NamespaceSeal.keyringAAD(record.id))
        } catch {
            throw CofferError.internalError("namespace \"\(record.path)\": the keyring does not open with its root key")
        }
        return try Keyring(storedJSON: try JSONValue.parse(bytes))
    }

    public func namespaceIsSealed(_ record: NamespaceRecord) -> Bool {
        record.seal != nil && namespaceRootKeys.withLock { $0[record.id] == nil }
    }

    /// The record of `relative` (one or more segments) below the caller's namespace.
    func sealableRecord(callerPath: String, relative: String) async throws -> (parent: NamespaceCore, name: String, record: NamespaceRecord) {
        let (pp, name) = try split(callerPath, relative)
        guard let parent = try await namespace(path: pp), let record = try await parent.child(name) else {
            throw CofferError(.notFound, "namespace not found: \((pp + name + "/").prefix(128))")
        }
        guard record.seal != nil else { throw CofferError.invalid("namespace is not sealable") }
        return (parent, name, record)
    }

    public func namespaceSealStatus(callerPath: String, relative: String) async throws -> NamespaceSealStatus {
        let (_, _, record) = try await sealableRecord(callerPath: callerPath, relative: relative)
        let p = namespaceUnsealProgress.withLock { $0[record.id] } ?? Progress()
        let seal = record.seal
        return NamespaceSealStatus(sealable: true, sealed: namespaceIsSealed(record), shares: seal?.shares ?? 0,
                                   threshold: seal?.threshold ?? 0, progress: p.parts.count, nonce: p.nonce)
    }

    /// Seals the namespace: its root key is forgotten, its loaded state (and its
    /// descendants') dropped and their keyrings cleared from memory.
    public func sealNamespace(callerPath: String, relative: String) async throws {
        try await namespaceLoadLock.withLock {
            let (_, _, record) = try await sealableRecord(callerPath: callerPath, relative: relative)
            namespaceRootKeys.withLock { $0[record.id] = nil }
            namespaceUnsealProgress.withLock { $0[record.id] = nil }
            let dropped = loaded.withLock { l -> [NamespaceCore] in
                let gone = l.byPath.keys.filter { $0.hasPrefix(record.path) }
                return gone.compactMap { l.removeValue(forKey: $0) }
            }
            recordChanged(dropping: record.path)
            for ns in dropped {
                (ns.storage as? Barrier)?.clear()
                await ns.teardownBackends()
            }
            logger.notice("namespace sealed", metadata: ["ns.path": "\(record.path)", "ns.id": "\(record.id)"])
        }
    }

    /// Adds one unseal key share; at the threshold the shares recombine to the unseal key,
    /// which opens the namespace root key. Wrong shares are a 400 and nothing is kept.
    public func unsealNamespace(callerPath: String, relative: String, key: String?, reset: Bool) async throws -> NamespaceSealStatus {
        let (_, _, record) = try await sealableRecord(callerPath: callerPath, relative: relative)
        guard let seal = record.seal else { throw CofferError.invalid("namespace is not sealable") }
        if reset {
            namespaceUnsealProgress.withLock { $0[record.id] = nil }
            return try await namespaceSealStatus(callerPath: callerPath, relative: relative)
        }
        if !namespaceIsSealed(record) { return try await namespaceSealStatus(callerPath: callerPath, relative: relative) }
        guard let key, !key.isEmpty else { throw CofferError.invalid("'key' must be specified in request body as JSON, or 'reset' set to true") }
        let part: [UInt8]
        do {
            part = try Self.decodeShare(key, shares: seal.shares, what: "unseal")
        } catch let e as CofferError {
            throw CofferError.invalid("invalid key: \(e.message)")
        }
        let ready: [[UInt8]]? = namespaceUnsealProgress.withLock { all in
            var p = all[record.id] ?? Progress()
            if p.parts.isEmpty { p.nonce = RandomID.secureUUID() }
            if !p.parts.contains(where: { constantTimeEquals($0, part) }) { p.parts.append(part) }
            all[record.id] = p
            return p.parts.count >= seal.threshold ? p.parts : nil
        }
        guard let ready else { return try await namespaceSealStatus(callerPath: callerPath, relative: relative) }
        namespaceUnsealProgress.withLock { $0[record.id] = nil }
        let rootKey: [UInt8]
        do {
            let unsealKey = seal.shares == 1 ? ready[0] : try Shamir.combine(ready)
            rootKey = try Sealer.open(seal.wrappedRootKey, key: SymmetricKey(data: unsealKey), aad: NamespaceSeal.rootKeyAAD(record.id))
        } catch let e as CofferError {
            throw CofferError.invalid("invalid key: \(e.message)")
        } catch {
            throw CofferError.invalid("invalid key: the unseal keys do not open the namespace (message authentication failed)")
        }
        namespaceRootKeys.withLock { $0[record.id] = rootKey }
        recordChanged(dropping: record.path)
        logger.notice("namespace unsealed", metadata: ["ns.path": "\(record.path)", "ns.id": "\(record.id)"])
        return try await namespaceSealStatus(callerPath: callerPath, relative: relative)
    }
}
