import CofferSDK
import Crypto
import Foundation
import Synchronization
import Logging

/// What a namespace's seal status says (`sys/namespaces/:path/seal-status`).
public struct NamespaceSealStatus: Sendable {
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
    /// A new sealable namespace's seal (the record's `seal`) and the shares of its fresh
    /// unseal key; the caller has checked shares and threshold.
    func makeNamespaceSeal(id: String, keyring: Keyring, shares: Int, threshold: Int) throws -> (NamespaceSeal, [[UInt8]]) {
        let unsealKey = SecureRandom.bytes(32)
        let rootKey = SecureRandom.bytes(32)
        let parts = try Self.splitKey(unsealKey, shares: shares, threshold: threshold)
        let seal = NamespaceSeal(
            shares: shares, threshold: threshold,
            wrappedRootKey: try Sealer.seal(rootKey, key: SymmetricKey(data: unsealKey), term: 0, aad: NamespaceSeal.rootKeyAAD(id)),
            sealedKeyring: try Self.sealKeyring(keyring, rootKey: rootKey, id: id))
        return (seal, parts)
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

    /// The record of `relative` (one or more segments) below the caller's namespace, and its seal.
    func sealableRecord(callerPath: String, relative: String) async throws -> (record: NamespaceRecord, seal: NamespaceSeal) {
        let (pp, name) = try split(callerPath, relative)
        guard let parent = try await namespace(path: pp), let record = try await parent.child(name) else {
            throw CofferError(.notFound, "namespace not found: \((pp + name + "/").prefix(128))")
        }
        guard let seal = record.seal else { throw CofferError.invalid("namespace is not sealable") }
        return (record, seal)
    }

    public func namespaceSealStatus(callerPath: String, relative: String) async throws -> NamespaceSealStatus {
        let (record, seal) = try await sealableRecord(callerPath: callerPath, relative: relative)
        let p = namespaceUnsealProgress.withLock { $0[record.id] } ?? Progress()
        return NamespaceSealStatus(sealed: namespaceIsSealed(record), shares: seal.shares, threshold: seal.threshold,
                                   progress: p.parts.count, nonce: p.nonce)
    }

    /// Seals the namespace: its root key is forgotten, its loaded state (and its
    /// descendants') dropped and their keyrings cleared from memory.
    public func sealNamespace(callerPath: String, relative: String) async throws {
        try await namespaceLoadLock.withLock {
            let (record, _) = try await sealableRecord(callerPath: callerPath, relative: relative)
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
        let (record, seal) = try await sealableRecord(callerPath: callerPath, relative: relative)
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
            defer { all[record.id] = p }
            return p.add(part, threshold: seal.threshold)
        }
        guard let ready else { return try await namespaceSealStatus(callerPath: callerPath, relative: relative) }
        namespaceUnsealProgress.withLock { $0[record.id] = nil }
        let rootKey: [UInt8]
        do {
            let unsealKey = try Self.combineKey(ready)
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
