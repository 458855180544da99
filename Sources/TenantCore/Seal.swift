import CofferSDK

/// An auto seal: the root key is wrapped by a key that never leaves an HSM (`pkcs11`) or a
/// KMS (`awskms`). Only the wrapped form is stored (outside the barrier, like the seal
/// configuration); a node unseals itself by asking the seal to unwrap it. Recovery key
/// shares (`sys/init` `recovery_shares`) then authorize the quorum operations (rekey,
/// generate-root, unseal after `sys/seal`) instead of unseal key shares.
public protocol AutoSeal: Sendable {
    /// `pkcs11`, `awskms`: stored in the seal configuration, shown by `sys/seal-status`.
    var type: String { get }
    /// Encrypts `plaintext` bound to `context` (the storage key it is kept under). The
    /// result is opaque and self-describing (key id, mechanism, IV).
    func wrap(_ plaintext: [UInt8], context: String) async throws -> [UInt8]
    /// Reverses `wrap`. Throws `SealUnavailable` when the HSM/KMS cannot be reached or
    /// refuses, and when the blob does not open.
    func unwrap(_ blob: [UInt8], context: String) async throws -> [UInt8]
    /// Releases sessions and connections (shutdown).
    func close() async
}

/// The HSM or KMS behind an auto seal failed: unreachable, refused (PIN, permissions),
/// the key is missing, or a blob did not open. The node stays sealed and says why.
/// `retryable` is false when retrying cannot help and may harm (a wrong PIN: an HSM locks
/// the token after a few).
public struct SealUnavailable: Error, CustomStringConvertible, Sendable {
    public let description: String
    public let retryable: Bool

    public init(_ description: String, retryable: Bool = true) {
        self.description = description
        self.retryable = retryable
    }
}
