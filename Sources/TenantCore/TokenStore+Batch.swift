import CofferSDK
@preconcurrency import Crypto
import Foundation

/// Batch tokens (`hvb.`): the token is its own entry, sealed with AES-256-GCM under a key
/// derived from the namespace's token salt (behind the barrier), never stored. They are not
/// renewable, have no accessor, cannot make child tokens or be revoked one by one; one made
/// by a parent token dies with it (every lookup checks the parent), an orphan one at its
/// expiry. What they buy: a login that writes nothing.
extension TokenStore {
    static let batchPrefix = "hvb."
    /// The longest batch token accepted (policies and metadata make it grow).
    static let maxBatchTokenBytes = 2048

    static func isBatch(_ token: String) -> Bool { token.hasPrefix(batchPrefix) }

    /// Makes a batch token of `entry` (its type becomes `batch`).
    public func makeBatch(_ template: TokenEntry) throws -> (String, TokenEntry) {
        var payload: [String: JSONValue] = [
            "p": .array(template.policies.map { .string($0) }), "c": .int(template.creationTime),
            "t": .int(Int64(template.creationTTL)), "x": .int(template.expireTime), "a": .string(template.path),
        ]
        if !template.meta.isEmpty { payload["m"] = .object(template.meta.mapValues { .string($0) }) }
        if !template.displayName.isEmpty { payload["d"] = .string(template.displayName) }
        if !template.parentHash.isEmpty { payload["r"] = .string(template.parentHash) }
        if !template.entityID.isEmpty { payload["e"] = .string(template.entityID) }
        if !template.role.isEmpty { payload["o"] = .string(template.role) }
        if let cidrs = template.boundCIDRs, !cidrs.isEmpty { payload["b"] = .array(cidrs.map { .string($0) }) }
        let sealed = try AES.GCM.seal(JSONValue.object(payload).serialized(), using: batchKey)
        guard let combined = sealed.combined else { throw CofferError.internalError("batch token sealing failed") }
        let token = Self.batchPrefix + Base64URL.encode(Array(combined)) + idSuffix
        guard token.utf8.count <= Self.maxBatchTokenBytes else {
            throw CofferError.invalid("the batch token would be too long: fewer policies or less metadata")
        }
        var entry = template
        entry.type = "batch"
        entry.idHash = hash(token)
        entry.accessor = ""
        entry.renewable = false
        entry.numUses = 0
        entry.orphan = template.parentHash.isEmpty
        return (token, entry)
    }

    /// The entry of a batch token of this store, if it is genuine, unexpired and its parent
    /// (if any) still alive.
    func openBatch(_ token: String) async throws -> TokenEntry? {
        guard token.utf8.count <= Self.maxBatchTokenBytes else { return nil }
        var body = Substring(token.dropFirst(Self.batchPrefix.count))
        if !idSuffix.isEmpty {
            guard body.hasSuffix(idSuffix) else { return nil }
            body = body.dropLast(idSuffix.count)
        }
        guard let bytes = Base64URL.decode(body), let box = try? AES.GCM.SealedBox(combined: bytes),
              let plain = try? AES.GCM.open(box, using: batchKey), case .object(let p) = try? JSONValue.parse(plain) else {
            return nil
        }
        let expire = p["x"]?.intValue ?? 0
        if expire != 0 && now() >= expire { return nil }
        let parent = p["r"]?.stringValue ?? ""
        if !parent.isEmpty, try await lookup(hash: parent) == nil { return nil }
        return TokenEntry(
            idHash: hash(token), accessor: "", parentHash: parent, policies: p["p"]?.arrayValue?.compactMap(\.stringValue) ?? [],
            meta: p["m"]?.objectValue?.compactMapValues(\.stringValue) ?? [:], displayName: p["d"]?.stringValue ?? "",
            numUses: 0, creationTime: p["c"]?.intValue ?? 0, creationTTL: Int(p["t"]?.intValue ?? 0), expireTime: expire,
            explicitMaxTTL: 0, period: 0, renewable: false, orphan: parent.isEmpty, path: p["a"]?.stringValue ?? "",
            role: p["o"]?.stringValue ?? "", type: "batch", entityID: p["e"]?.stringValue ?? "", namespacePath: namespacePathHint,
            lastRenewalTime: 0, boundCIDRs: p["b"]?.arrayValue?.compactMap(\.stringValue))
    }
}
