import CofferSDK
@preconcurrency import Crypto
import Foundation
import Logging
import Synchronization

extension Core {
    /// Entries a snapshot scan hands over at once.
    static let snapshotPageSize = 1000

    /// The physical storage as a `SnapshotStorage`, or 400 when the backend cannot take
    /// snapshots.
    func snapshotStorage() throws -> any SnapshotStorage {
        guard let s = physical as? any SnapshotStorage, s.supportsSnapshots else {
            throw CofferError.invalid("storage backend \(storageType) cannot take snapshots")
        }
        return s
    }

    /// `GET sys/storage/snapshot`: every physical key and value as of one point in time,
    /// still encrypted, as a `StorageSnapshot` file.
    public func snapshotSave() async throws -> [UInt8] {
        if isSealed { throw CofferError(.sealed, "Vault is sealed") }
        let source = try snapshotStorage()
        var encoder = StorageSnapshot.Encoder()
        try await source.scan(pageSize: Self.snapshotPageSize) { page in
            for entry in page { encoder.append(entry) }
        }
        let bytes = try encoder.finish(storageType: storageType, cofferVersion: configuration.version)
        logger.info("storage snapshot taken", metadata: ["keys": "\(encoder.count)", "bytes": "\(bytes.count)"])
        return bytes
    }

    /// `POST sys/storage/snapshot[-force]`: replaces all of storage with a snapshot, then
    /// seals the node; it is unsealed again with the unseal keys of the cluster the snapshot
    /// came from (this cluster's own when `force` is false).
    ///
    /// Nothing changes unless the snapshot is intact (`StorageSnapshot.decode`), its seal
    /// configuration is readable, the backend can hold every value, and — without `force` —
    /// its keyring opens with this node's root key (it is this cluster's). `accepted` runs
    /// then, before anything changes; if it throws (an audit device refused the entry) the
    /// restore does not run.
    ///
    /// Order: the node is sealed first, so no request runs against half-replaced storage;
    /// then storage is replaced with the seal configuration, root key and keyring written
    /// last. SQLite and in-memory storage replace everything in one step. On etcd the
    /// replacement is a sequence of writes: should it fail part-way, the stored keys are
    /// still the old ones (restoring this cluster's own snapshot again repairs it; for a
    /// foreign snapshot see the restore runbook).
    public func snapshotRestore(
        _ bytes: [UInt8], force: Bool, accepted: @escaping @Sendable () async throws -> Void = {}
    ) async throws -> StorageSnapshot.Header {
        let snapshot = try StorageSnapshot.decode(bytes)
        let target = try snapshotStorage()
        do {
            _ = try StoredJSON.decoder.decode(SealConfiguration.self, from: Data(snapshot.value(Self.sealConfigKey) ?? []))
        } catch {
            throw CofferError.invalid("snapshot is corrupt: its seal configuration is unreadable")
        }
        try target.checkReplacement(with: snapshot.entries)
        let requiredKeys = Set(StorageSnapshot.requiredKeys)
        let data = snapshot.entries.filter { !requiredKeys.contains($0.key) }
        // The seal configuration last of all: a store without it reads as uninitialized.
        let last = [Self.keyringKey, Self.rootKeyKey, Self.sealConfigKey].map { StorageEntry(key: $0, value: snapshot.value($0) ?? []) }
        return try await transition.withLock {
            guard !self.isSealed, let rootKey = self.rootKeyHolder.withLock({ $0 }) else {
                throw CofferError(.sealed, "Vault is sealed")
            }
            if !force && !Self.keyringOpens(snapshot.value(Self.keyringKey) ?? [], rootKey: rootKey) {
                throw CofferError.invalid(
                    "snapshot is from a different cluster (its keys differ); use sys/storage/snapshot-force to restore it anyway; "
                        + "the node will then need that cluster's unseal keys")
            }
            try await accepted()
            self.logger.warning(
                "restoring storage snapshot; sealing the node",
                metadata: [
                    "keys": "\(snapshot.header.keyCount)", "created_at": "\(snapshot.header.createdAt)",
                    "source_storage": "\(snapshot.header.storageType)", "force": "\(force)",
                ])
            // HA: the node keeps the lock (its writes stay fenced, no standby takes over)
            // until the storage is replaced; requests can no longer write meanwhile.
            let gate = self.haConfiguration?.gate
            gate?.setRestoring(true)
            defer { gate?.setRestoring(false) }
            try await self.seal(keepingHALock: gate != nil)
            self.cachedSealConfig.withLock { $0 = nil }
            defer { self.cachedSealConfig.withLock { $0 = nil } }
            do {
                try await target.replaceAll(with: data, last: last)
                await self.stopHA()
            } catch {
                await self.stopHA()
                self.logger.error("storage snapshot restore failed; the node stays sealed", metadata: ["error": "\(error)"])
                let reason = (error as? CofferError)?.message ?? "storage error"
                throw CofferError(
                    .unavailable, "snapshot restore failed (\(reason)); the node is sealed and its storage may be partly restored",
                    cause: error)
            }
            self.logger.info("storage snapshot restored; unseal with the snapshot cluster's keys")
            return snapshot.header
        }
    }

    static func keyringOpens(_ sealed: [UInt8], rootKey: [UInt8]) -> Bool {
        (try? Sealer.open(sealed, key: SymmetricKey(data: rootKey), aad: keyringKey)) != nil
    }
}
