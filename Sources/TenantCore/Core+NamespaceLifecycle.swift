import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

extension Core {
    // MARK: lifecycle

    func split(_ parentPath: String, _ relative: String) throws -> (parent: String, name: String) {
        guard let rel = NamespacePath.normalize(relative), !rel.isEmpty else {
            throw CofferError.invalid("invalid namespace path \"\(relative.prefix(128))\"")
        }
        var segs = rel.split(separator: "/").map(String.init)
        let name = segs.removeLast()
        // Reserved at every depth: `acme/sys/` would shadow acme's own `sys/` (and the stock
        // default policy's grants on `cubbyhole/`).
        if NamespacePath.reserved.contains(name) {
            throw CofferError.invalid("\"\(name)\" is a reserved path and cannot be a namespace")
        }
        return (parentPath + segs.map { $0 + "/" }.joined(), name)
    }

    func createNamespace(parentPath: String, relative: String, metadata: [String: String]) async throws -> NamespaceRecord {
        try await createNamespace(parentPath: parentPath, relative: relative, metadata: metadata, seal: nil).record
    }

    /// `seal`: shares and threshold of a sealable namespace's unseal key; its shares are
    /// returned (once) with the record.
    func createNamespace(parentPath: String, relative: String, metadata: [String: String],
                         seal sealShape: (shares: Int, threshold: Int)?) async throws -> (record: NamespaceRecord, keys: [[UInt8]]) {
        if let sealShape { try Self.checkShares(sealShape.shares, sealShape.threshold, "namespace seal") }
        let (pp, name) = try split(parentPath, relative)
        guard let parent = try await namespace(path: pp) else {
            throw CofferError.invalid("parent namespace does not exist: \(pp)")
        }
        let path = pp + name + "/"
        guard creating.withLock({ $0.insert(path).inserted }) else {
            throw CofferError.invalid("namespace \"\(path)\" already exists")
        }
        defer { _ = creating.withLock { $0.remove(path) } }
        if try await parent.child(name) != nil {
            throw CofferError.invalid("namespace \"\(path)\" already exists")
        }
        if parent.mounts(kind: .secret).contains(where: { $0.routePath == name + "/" }) {
            throw CofferError.invalid("\"\(name)/\" is already a mount path in \"\(pp)\"")
        }
        // Reserved in-process first, so two concurrent creations never pick the same id
        // between the storage check and the write.
        var id = NamespacePath.newID()
        while try await !reserveID(id) { id = NamespacePath.newID() }
        defer { _ = creatingIDs.withLock { $0.remove(id) } }
        let keyring = Keyring.generate()
        var keys: [[UInt8]] = []
        var seal: NamespaceSeal?
        if let sealShape {
            let made = try makeNamespaceSeal(id: id, keyring: keyring, shares: sealShape.shares, threshold: sealShape.threshold)
            seal = made.0
            keys = made.1
        }
        let record = NamespaceRecord(id: id, path: path, customMetadata: metadata, keyring: seal == nil ? keyring : nil,
                                     createdAt: Date(), seal: seal)
        let nsBarrier = Barrier(physical: PrefixedStorage(physical, prefix: NamespacePath.storagePrefix(id: id)))
        nsBarrier.install(keyring)
        // Every write of a creation at once: with concurrent creations they share group commits.
        let initial = try await withThrowingTaskGroup(of: NamespaceCore.InitialState?.self) { group in
            group.addTask { [id] in try await self.barrier.putJSON("sys/namespace-ids/" + id, .string(record.path)); return nil }
            group.addTask { try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record); return nil }
            group.addTask { try await NamespaceCore.initialize(storage: nsBarrier) }
            var initial: NamespaceCore.InitialState?
            for try await state in group where state != nil { initial = state }
            return initial!
        }
        let generation = recordGeneration.load(ordering: .acquiring)
        parent.setChild(name, record)
        if seal != nil {
            // Sealed from the start, as OpenBao's: the key holders unseal it with their shares.
            nsBarrier.clear()
            logger.info("namespace created", metadata: ["ns.path": "\(record.path)", "ns.id": "\(id)", "ns.sealable": "true"])
            return (record, keys)
        }
        // Loaded now, from what was just written: a new namespace's first request (usually at
        // once: a mount, a policy) does not read it back.
        let ns = try await NamespaceCore.load(
            path: path, namespaceID: id, storage: nsBarrier, catalog: catalog, configuration: configuration,
            node: self, logger: logger, initial: initial)
        // Not installed after a delete or change of a record since: left to a normal load.
        _ = install(ns, at: path, readAt: generation)
        logger.info("namespace created", metadata: ["ns.path": "\(record.path)", "ns.id": "\(id)"])
        return (record, keys)
    }

    /// Claims a new namespace id: false when a creation in flight or a stored namespace has it.
    private func reserveID(_ id: String) async throws -> Bool {
        guard creatingIDs.withLock({ $0.insert(id).inserted }) else { return false }
        if try await barrier.get("sys/namespace-ids/" + id) == nil { return true }
        _ = creatingIDs.withLock { $0.remove(id) }
        return false
    }

    func updateNamespace(parentPath: String, relative: String, patch: [String: JSONValue]) async throws -> NamespaceRecord {
        let (pp, name) = try split(parentPath, relative)
        return try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), var record = try await parent.child(name) else {
                throw CofferError(.notFound, "")
            }
            for (k, v) in patch {
                if v.isNull { record.customMetadata[k] = nil } else if let s = v.stringValue { record.customMetadata[k] = s }
                else { throw CofferError.invalid("custom_metadata values must be strings") }
            }
            try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record)
            let updated = record
            parent.setChild(name, updated)
            recordChanged()
            return record
        }
    }

    /// Crypto-shred: the keyring goes first (the record in the parent), so every row the
    /// namespace leaves behind is undecryptable at once; the rows are removed after.
    func deleteNamespace(parentPath: String, relative: String) async throws {
        let (pp, name) = try split(parentPath, relative)
        // Its leases are revoked first (the credentials must not outlive the keyring); a
        // failure stops the delete, as an unmount does.
        let victim = try await namespace(path: pp + name + "/")
        // It takes no request while its leases go (a lease made now would outlive it).
        victim?.closingFlag.store(true, ordering: .releasing)
        do {
            if let victim, try await victim.childNames().isEmpty {
                _ = try await leases.revokeAll(victim, prefix: "")
            }
        } catch {
            victim?.closingFlag.store(false, ordering: .releasing)
            throw error
        }
        let record: NamespaceRecord?
        do {
            record = try await deleteRecord(pp: pp, name: name)
        } catch {
            victim?.closingFlag.store(false, ordering: .releasing)
            throw error
        }
        if let record {
            await victim?.teardownBackends()
            try await PrefixedStorage(physical, prefix: NamespacePath.storagePrefix(id: record.id)).deleteAll()
        }
    }

    /// The record and id of a namespace without children go (its keyring with them).
    private func deleteRecord(pp: String, name: String) async throws -> NamespaceRecord? {
        try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), let record = try await parent.child(name) else {
                return nil
            }
            if let child = try await namespace(path: record.path), try await !child.childNames().isEmpty {
                throw CofferError.invalid("cannot delete namespace (\"\(record.path)\") containing child namespaces")
            }
            try await parent.rootView.delete(NamespaceCore.childPrefix + name)
            parent.setChild(name, nil)
            try await barrier.delete("sys/namespace-ids/" + record.id)
            namespaceRootKeys.withLock { $0[record.id] = nil }
            namespaceUnsealProgress.withLock { $0[record.id] = nil }
            recordChanged(dropping: record.path)
            logger.info("namespace deleted (keyring shredded)", metadata: ["ns.path": "\(record.path)", "ns.id": "\(record.id)"])
            return record
        }
    }
}
