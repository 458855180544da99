import CofferSDK
import Foundation

/// `sys/namespaces/:path` with a seal, and the sealable namespace endpoints' shapes
/// (OpenBao's: `seal` is an HCL or JSON document with one `seal "shamir" { shares threshold }`
/// stanza; `seals` is also taken as a list of `{type, shares, threshold}` objects).
extension SystemBackend {
    static func sealStatusJSON(_ s: NamespaceSealStatus) -> [String: JSONValue] {
        ["type": "shamir", "initialized": true, "sealed": .bool(s.sealed), "t": .int(Int64(s.threshold)),
         "n": .int(Int64(s.shares)), "progress": .int(Int64(s.progress)), "nonce": .string(s.nonce)]
    }

    /// nil: an ordinary namespace.
    static func namespaceSealShape(seal: JSONValue?, seals: JSONValue?) throws -> (shares: Int, threshold: Int)? {
        func bad(_ why: String) -> CofferError { CofferError.invalid("invalid seal config: \(why)") }
        func number(_ names: [String], in o: [String: JSONValue]) throws -> Int {
            guard let name = names.first(where: { o[$0] != nil }), let v = o[name] else { throw bad("\(names[0]) is required") }
            if let i = v.intValue, let n = Int(exactly: i) { return n }
            if let s = v.stringValue, let n = Int(s.trimmingCharacters(in: .whitespaces)) { return n }
            throw bad("\(name) must be a number")
        }
        func single(_ v: JSONValue) throws -> JSONValue {
            if let a = v.arrayValue {
                guard a.count == 1, let only = a.first else { throw bad("seal config must contain exactly one seal stanza") }
                return only
            }
            return v
        }
        func shamir(_ body: JSONValue) throws -> (Int, Int) {
            guard let o = try single(body).objectValue else { throw bad("the shamir stanza must be an object") }
            let shares = try number(["shares", "secret_shares"], in: o)
            let threshold = try number(["threshold", "secret_threshold"], in: o)
            guard shares >= 1 else { throw bad("shares must be at least one") }
            guard threshold >= 1 else { throw bad("threshold must be at least one") }
            guard threshold <= shares else { throw bad("threshold cannot be larger than shares") }
            guard shares <= 255 else { throw bad("shares cannot be more than 255") }
            if shares > 1 && threshold < 2 { throw bad("threshold must be at least 2 when shares > 1") }
            return (shares, threshold)
        }
        if let seals, !seals.isNull, !(seals.arrayValue?.isEmpty ?? false) {
            guard let o = try single(seals).objectValue else { throw bad("seals must be a list of seal objects") }
            let type = o["type"]?.stringValue ?? "shamir"
            guard type == "shamir" else { throw bad("namespaces currently only support shamir seals") }
            return try shamir(.object(o))
        }
        guard let seal, !seal.isNull else { return nil }
        var document: JSONValue
        if let text = seal.stringValue {
            if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return nil }
            guard text.utf8.count <= 16_384 else { throw bad("the seal document is too large") }
            do { document = try HCL.parseHCLOrJSON(text) } catch { throw bad("unable to parse seal config: \(String("\(error)".prefix(200)))") }
        } else if seal.objectValue != nil {
            document = seal
        } else {
            throw bad("seal must be an HCL or JSON document")
        }
        // `{"seal": {"shamir": {...}}}` (the document) or `{"shamir": {...}}` (its inside).
        if let inner = document.objectValue?["seal"] { document = try single(inner) }
        guard let stanzas = document.objectValue, stanzas.count == 1, let first = stanzas.first else {
            throw bad("seal config must contain exactly one seal stanza")
        }
        let (type, body) = (first.key, first.value)
        guard type == "shamir" else { throw bad("namespaces currently only support shamir seals") }
        return try shamir(body)
    }
}
