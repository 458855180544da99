import CofferSDK
import Foundation
import Synchronization
import Logging

/// The seal a migration starts from: the one the storage was initialized with, now named
/// by a `disabled = true` stanza (or Shamir, which needs no stanza).
public enum SealMigrationSource: Sendable {
    case shamir
    case auto(any AutoSeal)

    public var type: String {
        switch self {
        case .shamir: "shamir"
        case .auto(let seal): seal.type
        }
    }
}

/// Seal migration (Vault's `unseal -migrate`): the node starts with the new seal configured
/// and the old one disabled; a quorum of the old seal's shares (unseal keys from Shamir,
/// recovery keys from an auto seal), given with `migrate`, opens the root key the old way
/// and stores it the new way, in one atomic write with the new seal configuration. The
/// shares stay the same: Shamir unseal keys become the recovery keys of the auto seal, and
/// recovery keys become the unseal keys of Shamir. The barrier keyring and every secret
/// are untouched (the root key does not change).
extension Core {
    public var sealMigrationPending: Bool { migrationPending.load(ordering: .relaxed) }

    /// The seal configuration stored in `storage` (nil: not initialized), read before a
    /// `Core` exists: the server compares it with its configuration to find a migration.
    public static func storedSealConfiguration(_ storage: any Storage) async throws -> SealConfiguration? {
        guard let bytes = try await storage.get(sealConfigKey) else { return nil }
        return try StoredJSON.decoder.decode(SealConfiguration.self, from: Data(bytes))
    }

    /// Called by `unseal` (holding `transition`) with the recombined shares of the old seal.
    func completeSealMigration(quorumKey: [UInt8], config: SealConfiguration) async throws {
        guard let source = migrationSource else { throw CofferError.invalid("no seal migration is pending") }
        let rootKey: [UInt8]
        switch source {
        case .shamir:
            rootKey = try await unwrapRootKey(unsealKey: quorumKey)
        case .auto(let old):
            try await verifyRecoveryKey(quorumKey, seal: old)
            rootKey = try await unwrapRootKeyWithSeal(config, seal: old)
        }
        let next: SealConfiguration
        var entries: [StorageEntry]
        if let seal = autoSeal {
            entries = [
                StorageEntry(key: Self.rootKeyKey, value: try await Self.wrap(rootKey, with: seal, context: Self.rootKeyKey)),
                StorageEntry(key: Self.recoveryKeyKey, value: try await Self.wrap(quorumKey, with: seal, context: Self.recoveryKeyKey)),
            ]
            next = SealConfiguration(type: seal.type, secretShares: 1, secretThreshold: 1,
                                     recoveryShares: config.quorumShares, recoveryThreshold: config.quorumThreshold)
        } else {
            entries = [StorageEntry(key: Self.rootKeyKey, value: try Self.sealRootKey(rootKey, unsealKey: quorumKey))]
            next = SealConfiguration(type: "shamir", secretShares: config.quorumShares, secretThreshold: config.quorumThreshold)
        }
        entries.append(StorageEntry(key: Self.sealConfigKey, value: Array(try StoredJSON.encoder.encode(next))))
        try await physical.putAll(entries)
        // Under Shamir nothing uses the wrapped recovery key; a failure here leaves only a
        // blob the old seal wrapped.
        if autoSeal == nil { try? await physical.delete(Self.recoveryKeyKey) }
        cachedSealConfig.withLock { $0 = next }
        migrationPending.store(false, ordering: .relaxed)
        logger.notice("seal migrated", metadata: ["from": "\(source.type)", "to": "\(next.type)",
                                                   "shares": "\(next.quorumShares)", "threshold": "\(next.quorumThreshold)"])
        try await openBarrier(rootKey: rootKey)
    }
}
