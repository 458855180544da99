import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import TenantCore

/// `sys/rekey/*`, `sys/rekey-recovery-key/*` and `sys/generate-root/*`: the key holders'
/// quorum operations. As in Vault they take no token (the shares are the authorization)
/// and need an unsealed node; the work is in `Core+KeyCeremonies.swift`.
extension VaultGateway {
    static let keyCeremonyPrefixes = ["sys/rekey/", "sys/rekey-recovery-key/", "sys/generate-root/"]

    func keyCeremonyEndpoint(path: String, operation: LogicalOperation, data: [String: JSONValue]) async throws -> Response? {
        guard Self.keyCeremonyPrefixes.contains(where: { path.hasPrefix($0) }) else { return nil }
        let write = operation == .update || operation == .create
        func unsupported() -> CofferError { CofferError(.unsupportedOperation, "unsupported operation") }
        let recovery = path.hasPrefix("sys/rekey-recovery-key/")
        switch path {
        case "sys/rekey/init", "sys/rekey-recovery-key/init":
            switch operation {
            case .read:
                return Self.json(.ok, Self.rekeyJSON(try await core.rekeyStatus(recovery: recovery)))
            case .update, .create:
                if Self.givesPGPKeys(data["pgp_keys"]) {
                    throw CofferError.invalid("pgp_keys are not supported: the new shares are returned in the response")
                }
                if Self.flag(data["backup"]) { throw CofferError.invalid("cannot request a backup of the new keys without providing PGP keys for encryption") }
                guard let shares = try Self.intField(data, "secret_shares"), let threshold = try Self.intField(data, "secret_threshold") else {
                    throw CofferError.invalid("secret_shares and secret_threshold are required")
                }
                let status = try await core.rekeyInit(recovery: recovery, shares: shares, threshold: threshold,
                                                      requireVerification: Self.flag(data["require_verification"]))
                return Self.json(.ok, Self.rekeyJSON(status))
            case .delete:
                core.rekeyCancel(recovery: recovery)
                return Response(status: .noContent)
            default:
                throw unsupported()
            }
        case "sys/rekey/update", "sys/rekey-recovery-key/update":
            guard write else { throw unsupported() }
            let (status, result) = try await core.rekeyUpdate(recovery: recovery, key: try Self.stringField(data, "key"), nonce: try Self.stringField(data, "nonce"))
            guard let result else { return Self.json(.ok, Self.rekeyJSON(status)) }
            var o: [String: JSONValue] = [
                "complete": true, "nonce": .string(result.nonce),
                "keys": Self.hexShares(result.keys), "keys_base64": Self.base64Shares(result.keys),
                "pgp_fingerprints": .null, "backup": false, "verification_required": .bool(result.verificationNonce != nil),
            ]
            if let v = result.verificationNonce { o["verification_nonce"] = .string(v) }
            return Self.json(.ok, .object(o))
        case "sys/rekey/verify", "sys/rekey-recovery-key/verify":
            switch operation {
            case .read:
                return Self.json(.ok, Self.verifyJSON(try await core.rekeyVerifyStatus(recovery: recovery)))
            case .update, .create:
                let (status, complete) = try await core.rekeyVerifyUpdate(recovery: recovery, key: try Self.stringField(data, "key"), nonce: try Self.stringField(data, "nonce"))
                if complete { return Self.json(.ok, ["nonce": .string(status.nonce), "complete": true]) }
                return Self.json(.ok, Self.verifyJSON(status))
            case .delete:
                return Self.json(.ok, Self.verifyJSON(try await core.rekeyVerifyCancel(recovery: recovery)))
            default:
                throw unsupported()
            }
        case "sys/rekey/backup", "sys/rekey/recovery-key-backup", "sys/rekey-recovery-key/backup":
            // Backups hold PGP-encrypted shares; without PGP there is never one.
            if core.isSealed { throw CofferError(.sealed, "Vault is sealed") }
            switch operation {
            case .read: throw CofferError.invalid("no backed-up keys found")
            case .delete: return Response(status: .noContent)
            default: throw unsupported()
            }
        case "sys/generate-root/attempt":
            switch operation {
            case .read:
                return Self.json(.ok, Self.rootJSON(try await core.generateRootStatus()))
            case .update, .create:
                let status = try await core.generateRootInit(otp: try Self.stringField(data, "otp"), pgpKey: try Self.stringField(data, "pgp_key"))
                return Self.json(.ok, Self.rootJSON(status))
            case .delete:
                core.generateRootCancel()
                return Response(status: .noContent)
            default:
                throw unsupported()
            }
        case "sys/generate-root/update":
            guard write else { throw unsupported() }
            let status = try await core.generateRootUpdate(key: try Self.stringField(data, "key"), nonce: try Self.stringField(data, "nonce"))
            return Self.json(.ok, Self.rootJSON(status))
        default:
            if core.isSealed { throw CofferError(.sealed, "Vault is sealed") }
            throw CofferError(.notFound, "unsupported path")
        }
    }

    static func flag(_ v: JSONValue?) -> Bool {
        guard let v else { return false }
        return v.boolValue ?? (v.stringValue.map { $0 == "true" || $0 == "1" } ?? (v.intValue == 1))
    }

    /// A `pgp_keys`-style field that asks for PGP-encrypted shares (null or [] does not).
    static func givesPGPKeys(_ v: JSONValue?) -> Bool {
        guard let v, !v.isNull else { return false }
        return !(v.arrayValue?.isEmpty ?? false)
    }

    /// Key shares as Vault returns them: hex, and standard base64.
    static func hexShares(_ parts: [[UInt8]]) -> JSONValue { .array(parts.map { .string(Hex.encode($0)) }) }
    static func base64Shares(_ parts: [[UInt8]]) -> JSONValue { .array(parts.map { .string(Data($0).base64EncodedString()) }) }

    static func stringField(_ data: [String: JSONValue], _ name: String) throws -> String? {
        guard let v = data[name], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw CofferError.invalid("'\(name)' must be a string") }
        return s
    }

    static func rekeyJSON(_ s: RekeyStatus) -> JSONValue {
        [
            "started": .bool(s.started), "nonce": .string(s.nonce), "t": .int(Int64(s.threshold)), "n": .int(Int64(s.shares)),
            "progress": .int(Int64(s.progress)), "required": .int(Int64(s.required)), "pgp_fingerprints": .null,
            "backup": false, "verification_required": .bool(s.verificationRequired),
        ]
    }

    static func verifyJSON(_ s: RekeyVerifyStatus) -> JSONValue {
        ["nonce": .string(s.nonce), "started": true, "t": .int(Int64(s.threshold)), "n": .int(Int64(s.shares)), "progress": .int(Int64(s.progress))]
    }

    static func rootJSON(_ s: GenerateRootStatus) -> JSONValue {
        var o: [String: JSONValue] = [
            "started": .bool(s.started), "nonce": .string(s.nonce), "progress": .int(Int64(s.progress)), "required": .int(Int64(s.required)),
            "encoded_token": .string(s.encodedToken), "encoded_root_token": .string(s.encodedToken), "pgp_fingerprint": "",
            "otp_length": .int(Int64(rootTokenOTPLength)), "complete": .bool(s.complete),
        ]
        if let otp = s.otp { o["otp"] = .string(otp) }
        return .object(o)
    }
}
