import CofferSDK
import Foundation

/// A child namespace as its parent stores it, behind the parent's barrier.
///
/// The record holds the child's keyring: the child's data is encrypted with keys that only
/// exist inside its parent's encrypted storage (DESIGN §3). Deleting the record
/// crypto-shreds the child, whatever rows remain.
public struct NamespaceRecord: Codable, Sendable {
    public var id: String
    /// Full path with a trailing slash (`acme/payments/`).
    public var path: String
    public var customMetadata: [String: String]
    public var keyring: Keyring
    public var createdAt: Date
    /// SHA-256 of the unlock key while the namespace's API is locked.
    public var lockHash: [UInt8]?

    public var json: JSONValue {
        ["id": .string(id), "path": .string(path), "locked": .bool(lockHash != nil),
         "custom_metadata": .object(customMetadata.mapValues { .string($0) })]
    }
}

/// Namespace path rules shared by the API and resolution.
public enum NamespacePath {
    /// Normalises a user-given path (`acme/payments`, `/acme/payments/`) to `acme/payments/`;
    /// nil for anything that could escape or alias: empty or dot segments, control characters,
    /// percent signs, backslashes.
    public static func normalize(_ raw: String) -> String? {
        let trimmed = raw.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if trimmed.isEmpty { return "" }
        var out = ""
        for seg in trimmed.split(separator: "/", omittingEmptySubsequences: false) {
            guard isValidName(seg) else { return nil }
            out += seg + "/"
        }
        return out
    }

    /// One segment: letters, digits, `-`, `_`, `.` (not leading, never two in a row), at most
    /// 64 ASCII characters.
    public static func isValidName(_ seg: Substring) -> Bool {
        guard !seg.isEmpty, seg.count <= 64, !seg.hasPrefix("."), !seg.contains("..") else { return false }
        return seg.unicodeScalars.allSatisfy { c in
            c.isASCII && (CharacterSet.alphanumerics.contains(c) || c == "-" || c == "_" || c == ".")
        }
    }

    /// Reserved first segments that would shadow core paths.
    public static let reserved: Set<String> = ["sys", "auth", "cubbyhole", "identity", "root"]

    /// A short random id like Vault's (`9rqM2`).
    public static func newID() -> String { TokenID.random(5) }
}
