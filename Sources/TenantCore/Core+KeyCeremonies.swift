import CofferSDK
@preconcurrency import Crypto
import Foundation
import Logging
import Synchronization

/// The quorum operations of Vault's key holders, answered without a token (the key shares
/// are the authorization): `sys/rekey/*` (new unseal key shares, Shamir),
/// `sys/rekey-recovery-key/*` (new recovery key shares, auto seals) and
/// `sys/generate-root/*` (a new root token, returned XORed with a one-time password).
/// Each keeps its progress in memory, like `sys/unseal`: a restart cancels it.
public struct RekeyStatus: Sendable {
    public var started: Bool
    public var nonce: String
    public var shares: Int
    public var threshold: Int
    public var progress: Int
    /// The threshold of the current keys (what `progress` counts towards).
    public var required: Int
    public var verificationRequired: Bool
}

/// The end of `sys/rekey/update`: the new shares; with verification, the nonce of the
/// verification step (the new shares take effect only once verified).
public struct RekeyResult: Sendable {
    public var nonce: String
    public var keys: [[UInt8]]
    public var verificationNonce: String?
}

public struct RekeyVerifyStatus: Sendable {
    public var nonce: String
    public var shares: Int
    public var threshold: Int
    public var progress: Int
}

public struct GenerateRootStatus: Sendable {
    public var started: Bool
    public var nonce: String
    public var progress: Int
    public var required: Int
    public var encodedToken: String
    public var complete: Bool
    /// The generated OTP: only in the answer to the request that started the attempt.
    public var otp: String?
}

/// Root tokens are `hvs.` + 24 characters: the OTP is as long, so the XOR covers them.
public let rootTokenOTPLength = 28

struct RekeyAttempt {
    var nonce = RandomID.secureUUID()
    var shares: Int
    var threshold: Int
    var requireVerification: Bool
    var parts: [[UInt8]] = []
    /// After the quorum, with verification: the new key and its shares, not yet in force.
    var pendingKey: [UInt8]?
    var pendingShares: [[UInt8]] = []
    var verifyNonce = ""
    var verifyParts: [[UInt8]] = []
}

struct RootAttempt {
    var nonce = RandomID.secureUUID()
    var otp: String
    var parts: [[UInt8]] = []
}

struct KeyCeremonies {
    /// Keyed by `recovery`: barrier (unseal) key rekey and recovery key rekey are separate.
    var rekeys: [Bool: RekeyAttempt] = [:]
    var root: RootAttempt?
}

extension Core {
    // MARK: shared checks

    func unsealedConfig() async throws -> SealConfiguration {
        guard let config = try await sealConfiguration() else { throw CofferError.invalid("Vault is not initialized") }
        if isSealed { throw CofferError(.sealed, "Vault is sealed") }
        return config
    }

    /// A share as submitted (hex or base64) with the length the configuration expects.
    static func decodeShare(_ key: String?, shares: Int, what: String) throws -> [UInt8] {
        guard let key, !key.isEmpty else { throw CofferError.invalid("'key' must be specified in request body as JSON") }
        let part = try decodeKey(key)
        let expected = shares == 1 ? 32 : 33
        guard part.count == expected else {
            throw CofferError.invalid("\(what) key has the wrong length: expected \(expected) bytes, got \(part.count)")
        }
        return part
    }

    /// Checks that recombined current shares are the key in force: the unseal key (it opens
    /// the stored root key) under Shamir, the recovery key under an auto seal.
    func authorizeQuorum(_ parts: [[UInt8]], config: SealConfiguration, recovery: Bool) async throws {
        let combined: [UInt8]
        do {
            combined = try Self.combineKey(parts)
        } catch {
            throw CofferError.invalid("failed to combine the key shares: \(error)")
        }
        if recovery || config.isAuto {
            try await verifyRecoveryKey(combined)
        } else {
            guard let stored = rootKeyHolder.withLock({ $0 }) else { throw CofferError(.sealed, "Vault is sealed") }
            let opened = try await unwrapRootKey(unsealKey: combined)
            guard constantTimeEquals(opened, stored) else { throw CofferError.invalid("the unseal key shares are invalid") }
        }
    }

    // MARK: rekey

    func rekeyStatus(_ attempt: RekeyAttempt?, config: SealConfiguration, recovery: Bool) -> RekeyStatus {
        let required = recovery ? config.recoveryThreshold ?? 0 : config.quorumThreshold
        guard let attempt else {
            return RekeyStatus(started: false, nonce: "", shares: 0, threshold: 0, progress: 0, required: required, verificationRequired: false)
        }
        return RekeyStatus(started: true, nonce: attempt.nonce, shares: attempt.shares, threshold: attempt.threshold,
                           progress: attempt.parts.count, required: required, verificationRequired: attempt.requireVerification)
    }

    func checkRekeyKind(_ config: SealConfiguration, recovery: Bool) throws {
        if recovery && !config.isAuto {
            throw CofferError.invalid("recovery rekeying is not supported with the shamir seal: it has no recovery keys")
        }
        if !recovery && config.isAuto {
            throw CofferError.invalid("the \(config.type) seal wraps the root key itself: rekey the recovery key shares with sys/rekey-recovery-key")
        }
    }

    public func rekeyStatus(recovery: Bool) async throws -> RekeyStatus {
        let config = try await unsealedConfig()
        try checkRekeyKind(config, recovery: recovery)
        return rekeyStatus(ceremonies.withLock { $0.rekeys[recovery] }, config: config, recovery: recovery)
    }

    /// `PUT sys/rekey/init`: starts an attempt to replace the shares.
    public func rekeyInit(recovery: Bool, shares: Int, threshold: Int, requireVerification: Bool) async throws -> RekeyStatus {
        let config = try await unsealedConfig()
        try checkRekeyKind(config, recovery: recovery)
        try Self.checkShares(shares, threshold, recovery ? "recovery" : "seal")
        let attempt: RekeyAttempt = try ceremonies.withLock { c in
            if c.rekeys[recovery] != nil { throw CofferError.invalid("rekey already in progress") }
            let a = RekeyAttempt(shares: shares, threshold: threshold, requireVerification: requireVerification)
            c.rekeys[recovery] = a
            return a
        }
        return rekeyStatus(attempt, config: config, recovery: recovery)
    }

    public func rekeyCancel(recovery: Bool) {
        ceremonies.withLock { $0.rekeys[recovery] = nil }
    }

    /// `PUT sys/rekey/update`: one current share. At the quorum the new key is made: in
    /// force at once, or (with verification) once a quorum of the new shares comes back.
    public func rekeyUpdate(recovery: Bool, key: String?, nonce: String?) async throws -> (status: RekeyStatus, result: RekeyResult?) {
        try await transition.withLock {
            let config = try await unsealedConfig()
            try checkRekeyKind(config, recovery: recovery)
            let part = try Self.decodeShare(key, shares: config.quorumShares, what: recovery ? "recovery" : "unseal")
            guard let nonce, !nonce.isEmpty else { throw CofferError.invalid("missing nonce") }
            let ready: (RekeyAttempt, [[UInt8]]?) = try ceremonies.withLock { c in
                guard var a = c.rekeys[recovery] else { throw CofferError.invalid("no rekey in progress") }
                guard constantTimeEquals(Array(a.nonce.utf8), Array(nonce.utf8)) else { throw CofferError.invalid("incorrect nonce") }
                if a.pendingKey != nil { throw CofferError.invalid("rekey is waiting for verification of the new keys (sys/rekey/verify)") }
                if a.parts.contains(where: { constantTimeEquals($0, part) }) {
                    throw CofferError.invalid("given key has already been provided during this rekey operation")
                }
                a.parts.append(part)
                c.rekeys[recovery] = a
                return (a, a.parts.count >= config.quorumThreshold ? a.parts : nil)
            }
            guard let parts = ready.1 else { return (rekeyStatus(ready.0, config: config, recovery: recovery), nil) }
            do {
                try await authorizeQuorum(parts, config: config, recovery: recovery)
            } catch {
                ceremonies.withLock { $0.rekeys[recovery]?.parts = [] }
                throw error
            }
            var attempt = ready.0
            let newKey = SecureRandom.bytes(32)
            let newShares = try Self.splitKey(newKey, shares: attempt.shares, threshold: attempt.threshold)
            if attempt.requireVerification {
                attempt.pendingKey = newKey
                attempt.pendingShares = newShares
                attempt.verifyNonce = RandomID.secureUUID()
                attempt.parts = []
                ceremonies.withLock { $0.rekeys[recovery] = attempt }
                return (rekeyStatus(attempt, config: config, recovery: recovery),
                        RekeyResult(nonce: attempt.nonce, keys: newShares, verificationNonce: attempt.verifyNonce))
            }
            try await commitRekey(newKey, shares: attempt.shares, threshold: attempt.threshold, config: config, recovery: recovery)
            ceremonies.withLock { $0.rekeys[recovery] = nil }
            return (rekeyStatus(nil, config: config, recovery: recovery), RekeyResult(nonce: attempt.nonce, keys: newShares, verificationNonce: nil))
        }
    }

    /// Puts a new unseal key (root key re-wrapped) or recovery key (re-wrapped by the seal)
    /// in force, with the new share counts in the seal configuration.
    func commitRekey(_ newKey: [UInt8], shares: Int, threshold: Int, config: SealConfiguration, recovery: Bool) async throws {
        var next = config
        if recovery {
            guard let seal = autoSeal else { throw CofferError.invalid("no auto seal") }
            let blob = try await Self.wrap(newKey, with: seal, context: Self.recoveryKeyKey)
            next.recoveryShares = shares
            next.recoveryThreshold = threshold
            try await physical.putAll([
                StorageEntry(key: Self.recoveryKeyKey, value: blob),
                StorageEntry(key: Self.sealConfigKey, value: Array(try StoredJSON.encoder.encode(next))),
            ])
        } else {
            guard let rootKey = rootKeyHolder.withLock({ $0 }) else { throw CofferError(.sealed, "Vault is sealed") }
            next.secretShares = shares
            next.secretThreshold = threshold
            try await physical.putAll([
                StorageEntry(key: Self.rootKeyKey, value: try Self.sealRootKey(rootKey, unsealKey: newKey)),
                StorageEntry(key: Self.sealConfigKey, value: Array(try StoredJSON.encoder.encode(next))),
            ])
        }
        cachedSealConfig.withLock { $0 = next }
        logger.info(recovery ? "recovery key rekeyed" : "unseal key rekeyed", metadata: ["shares": "\(shares)", "threshold": "\(threshold)"])
    }

    func verifyStatus(_ a: RekeyAttempt) -> RekeyVerifyStatus {
        RekeyVerifyStatus(nonce: a.verifyNonce, shares: a.shares, threshold: a.threshold, progress: a.verifyParts.count)
    }

    func pendingAttempt(recovery: Bool) throws -> RekeyAttempt {
        guard let a = ceremonies.withLock({ $0.rekeys[recovery] }) else { throw CofferError.invalid("no rekey in progress") }
        guard a.pendingKey != nil else { throw CofferError.invalid("no rekey verification in progress") }
        return a
    }

    public func rekeyVerifyStatus(recovery: Bool) async throws -> RekeyVerifyStatus {
        let config = try await unsealedConfig()
        try checkRekeyKind(config, recovery: recovery)
        return verifyStatus(try pendingAttempt(recovery: recovery))
    }

    /// `DELETE sys/rekey/verify`: the verification starts over with a new nonce (the new
    /// shares stay the same).
    public func rekeyVerifyCancel(recovery: Bool) async throws -> RekeyVerifyStatus {
        let config = try await unsealedConfig()
        try checkRekeyKind(config, recovery: recovery)
        return try ceremonies.withLock { c in
            guard var a = c.rekeys[recovery], a.pendingKey != nil else { throw CofferError.invalid("no rekey verification in progress") }
            a.verifyNonce = RandomID.secureUUID()
            a.verifyParts = []
            c.rekeys[recovery] = a
            return verifyStatus(a)
        }
    }

    /// `PUT sys/rekey/verify`: one of the new shares; at their threshold, the new key is in force.
    public func rekeyVerifyUpdate(recovery: Bool, key: String?, nonce: String?) async throws -> (status: RekeyVerifyStatus, complete: Bool) {
        try await transition.withLock {
            let config = try await unsealedConfig()
            try checkRekeyKind(config, recovery: recovery)
            let pending = try pendingAttempt(recovery: recovery)
            let part = try Self.decodeShare(key, shares: pending.shares, what: recovery ? "recovery" : "unseal")
            guard let nonce, !nonce.isEmpty else { throw CofferError.invalid("missing nonce") }
            let step: (RekeyAttempt, Bool) = try ceremonies.withLock { c in
                guard var a = c.rekeys[recovery], a.pendingKey != nil else { throw CofferError.invalid("no rekey verification in progress") }
                guard constantTimeEquals(Array(a.verifyNonce.utf8), Array(nonce.utf8)) else { throw CofferError.invalid("incorrect nonce") }
                if a.verifyParts.contains(where: { constantTimeEquals($0, part) }) {
                    throw CofferError.invalid("given key has already been provided during this verify operation")
                }
                a.verifyParts.append(part)
                c.rekeys[recovery] = a
                return (a, a.verifyParts.count >= a.threshold)
            }
            guard step.1, let newKey = step.0.pendingKey else { return (verifyStatus(step.0), false) }
            let parts = step.0.verifyParts
            let combined = (try? Self.combineKey(parts)) ?? []
            guard constantTimeEquals(combined, newKey) else {
                ceremonies.withLock { $0.rekeys[recovery]?.verifyParts = [] }
                throw CofferError.invalid("the new key shares do not verify: progress reset, submit the new shares again")
            }
            try await commitRekey(newKey, shares: step.0.shares, threshold: step.0.threshold, config: config, recovery: recovery)
            ceremonies.withLock { $0.rekeys[recovery] = nil }
            return (verifyStatus(step.0), true)
        }
    }

    // MARK: generate-root

    func rootStatus(_ a: RootAttempt?, config: SealConfiguration) -> GenerateRootStatus {
        GenerateRootStatus(started: a != nil, nonce: a?.nonce ?? "", progress: a?.parts.count ?? 0, required: config.quorumThreshold,
                           encodedToken: "", complete: false, otp: nil)
    }

    public func generateRootStatus() async throws -> GenerateRootStatus {
        let config = try await unsealedConfig()
        return rootStatus(ceremonies.withLock { $0.root }, config: config)
    }

    /// `PUT sys/generate-root/attempt`: with no OTP, one is generated and returned once.
    public func generateRootInit(otp: String?, pgpKey: String?) async throws -> GenerateRootStatus {
        let config = try await unsealedConfig()
        if let pgpKey, !pgpKey.isEmpty { throw CofferError.invalid("pgp_key is not supported: use an OTP") }
        var generated: String?
        let pad: String
        if let otp, !otp.isEmpty {
            guard otp.utf8.count == rootTokenOTPLength else { throw CofferError.invalid("OTP string is wrong length") }
            pad = otp
        } else {
            pad = TokenID.random(rootTokenOTPLength)
            generated = pad
        }
        let attempt: RootAttempt = try ceremonies.withLock { c in
            if c.root != nil { throw CofferError.invalid("root generation already in progress") }
            let a = RootAttempt(otp: pad)
            c.root = a
            return a
        }
        var status = rootStatus(attempt, config: config)
        status.otp = generated
        return status
    }

    public func generateRootCancel() {
        ceremonies.withLock { $0.root = nil }
    }

    /// `PUT sys/generate-root/update`: one share; at the quorum a root token is created and
    /// returned XORed with the OTP (base64, unpadded), and the attempt ends.
    public func generateRootUpdate(key: String?, nonce: String?) async throws -> GenerateRootStatus {
        try await transition.withLock {
            let config = try await unsealedConfig()
            let part = try Self.decodeShare(key, shares: config.quorumShares, what: config.isAuto ? "recovery" : "unseal")
            guard let nonce, !nonce.isEmpty else { throw CofferError.invalid("missing nonce") }
            let step: (RootAttempt, Bool) = try ceremonies.withLock { c in
                guard var a = c.root else { throw CofferError.invalid("no root generation in progress") }
                guard constantTimeEquals(Array(a.nonce.utf8), Array(nonce.utf8)) else { throw CofferError.invalid("incorrect nonce") }
                if a.parts.contains(where: { constantTimeEquals($0, part) }) {
                    throw CofferError.invalid("given key has already been provided during this generation operation")
                }
                a.parts.append(part)
                c.root = a
                return (a, a.parts.count >= config.quorumThreshold)
            }
            guard step.1 else { return rootStatus(step.0, config: config) }
            do {
                try await authorizeQuorum(step.0.parts, config: config, recovery: false)
            } catch {
                ceremonies.withLock { $0.root?.parts = [] }
                throw error
            }
            let token = try await Self.createRootToken(try root())
            let t = Array(token.utf8), o = Array(step.0.otp.utf8)
            guard t.count == o.count else { throw CofferError.internalError("root token and OTP lengths differ") }
            let encoded = Data(zip(t, o).map { $0 ^ $1 }).base64EncodedString().replacingOccurrences(of: "=", with: "")
            ceremonies.withLock { $0.root = nil }
            logger.info("root token generated by a quorum of key holders")
            var status = rootStatus(step.0, config: config)
            status.encodedToken = encoded
            status.complete = true
            return status
        }
    }

    /// Reverses the encoding of `generateRootUpdate` (the CLI's `-decode`).
    public static func decodeRootToken(_ encoded: String, otp: String) throws -> String {
        var text = encoded.trimmingCharacters(in: .whitespacesAndNewlines)
        while text.count % 4 != 0 { text += "=" }
        guard let bytes = Data(base64Encoded: text) else { throw CofferError.invalid("the encoded token is not base64") }
        let o = Array(otp.utf8)
        guard bytes.count == o.count else { throw CofferError.invalid("the OTP and the encoded token differ in length") }
        guard let token = String(bytes: zip(bytes, o).map { $0 ^ $1 }, encoding: .utf8) else {
            throw CofferError.invalid("the decoded token is not text: wrong OTP?")
        }
        return token
    }
}
