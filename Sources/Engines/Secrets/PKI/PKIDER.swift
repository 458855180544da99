import CofferSDK
import Crypto
import Foundation
import SwiftASN1
import X509

/// The DER the PKI engine writes and reads itself, where swift-certificates has no public
/// type: certificate revocation lists (RFC 5280 §5), OCSP requests and responses (RFC 6960),
/// SEC1 and PKCS#8 private keys. Signatures come from `Certificate.PrivateKey`; this file only
/// lays out the bytes.
enum PKIDER {
    static func contextTag(_ n: UInt) -> ASN1Identifier { ASN1Identifier(tagWithNumber: n, tagClass: .contextSpecific) }

    // MARK: algorithm identifiers

    /// `AlgorithmIdentifier` of a certificate signature algorithm (RSA ones carry a NULL).
    static func algorithmIdentifier(_ alg: Certificate.SignatureAlgorithm, into s: inout DER.Serializer) throws {
        let (oid, null): (ASN1ObjectIdentifier, Bool) = switch alg {
        case .ecdsaWithSHA256: ([1, 2, 840, 10045, 4, 3, 2], false)
        case .ecdsaWithSHA384: ([1, 2, 840, 10045, 4, 3, 3], false)
        case .ecdsaWithSHA512: ([1, 2, 840, 10045, 4, 3, 4], false)
        case .sha256WithRSAEncryption: ([1, 2, 840, 113549, 1, 1, 11], true)
        case .sha384WithRSAEncryption: ([1, 2, 840, 113549, 1, 1, 12], true)
        case .sha512WithRSAEncryption: ([1, 2, 840, 113549, 1, 1, 13], true)
        case .ed25519: ([1, 3, 101, 112], false)
        default: throw CofferError.invalid("unsupported signature algorithm \(alg)")
        }
        try s.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(oid)
            if null { try s.serialize(ASN1Null()) }
        }
    }

    /// RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
    static func time(_ date: Date, into s: inout DER.Serializer) throws {
        let c = utcComponents(date)
        if c.year < 2050 && c.year >= 1950 {
            try s.serialize(UTCTime(year: c.year, month: c.month, day: c.day, hours: c.hour, minutes: c.minute, seconds: c.second))
        } else {
            try s.serialize(generalizedTime(date))
        }
    }

    static func generalizedTime(_ date: Date) throws -> GeneralizedTime {
        let c = utcComponents(date)
        return try GeneralizedTime(year: c.year, month: c.month, day: c.day, hours: c.hour, minutes: c.minute, seconds: c.second, fractionalSeconds: 0)
    }

    static func utcComponents(_ date: Date) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return (c.year ?? 1970, c.month ?? 1, c.day ?? 1, c.hour ?? 0, c.minute ?? 0, c.second ?? 0)
    }

    /// Wraps signed content: `SEQUENCE { tbs, algorithm, BIT STRING signature }`.
    static func signed(_ tbs: [UInt8], key: Certificate.PrivateKey, algorithm: Certificate.SignatureAlgorithm) throws -> [UInt8] {
        let signature = try key.sign(bytes: tbs, signatureAlgorithm: algorithm)
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            s.serializeRawBytes(tbs)
            try algorithmIdentifier(algorithm, into: &s)
            try s.serialize(ASN1BitString(bytes: ArraySlice(signature.rawRepresentation)))
        }
        return s.serializedBytes
    }

    // MARK: CRL

    struct RevokedEntry: Sendable {
        var serial: [UInt8]
        var revoked: Date
    }

    /// A v2 CRL signed by `key` for `issuer`: the revoked serials, the CRL number, the
    /// authority key identifier, and for a delta CRL the base CRL's number.
    static func crl(issuer: Certificate, key: Certificate.PrivateKey, algorithm: Certificate.SignatureAlgorithm, number: Int,
                    thisUpdate: Date, nextUpdate: Date, entries: [RevokedEntry], deltaOf base: Int? = nil) throws -> [UInt8] {
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(1)  // v2
            try algorithmIdentifier(algorithm, into: &s)
            try s.serialize(issuer.subject)
            try time(thisUpdate, into: &s)
            try time(nextUpdate, into: &s)
            if !entries.isEmpty {
                try s.appendConstructedNode(identifier: .sequence) { s in
                    for e in entries {
                        try s.appendConstructedNode(identifier: .sequence) { s in
                            try s.serialize(ArraySlice(e.serial))
                            try time(e.revoked, into: &s)
                        }
                    }
                }
            }
            try s.appendConstructedNode(identifier: contextTag(0)) { s in
                try s.appendConstructedNode(identifier: .sequence) { s in
                    let ski = SubjectKeyIdentifier(hash: issuer.publicKey).keyIdentifier
                    try s.serialize(Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: ski), critical: false))
                    try s.serialize(Certificate.Extension(oid: [2, 5, 29, 20], critical: false, value: ArraySlice(try derInteger(number))))
                    if let base {
                        try s.serialize(Certificate.Extension(oid: [2, 5, 29, 27], critical: true, value: ArraySlice(try derInteger(base))))
                    }
                }
            }
        }
        return try signed(s.serializedBytes, key: key, algorithm: algorithm)
    }

    /// The revoked serials and the number of a CRL (for tests and for `openssl`-free checks).
    static func crlSerials(_ der: [UInt8]) throws -> [[UInt8]] {
        let root = try DER.parse(der)
        return try DER.sequence(root, identifier: .sequence) { outer in
            guard let tbs = outer.next() else { throw ASN1Error.invalidASN1Object(reason: "empty CRL") }
            _ = outer.next(); _ = outer.next()
            return try DER.sequence(tbs, identifier: .sequence) { n in
                var out: [[UInt8]] = []
                while let node = n.next() {
                    // The revoked list is the only SEQUENCE after the name (which is also a SEQUENCE).
                    guard node.identifier == .sequence, case .constructed(let children) = node.content else { continue }
                    for entry in children {
                        guard case .constructed(let parts) = entry.content, let first = parts.first(where: { _ in true }),
                              first.identifier == .integer, case .primitive(let bytes) = first.content else { continue }
                        out.append(Array(bytes))
                    }
                }
                return out
            }
        }
    }

    // MARK: OCSP

    enum HashAlgorithm: Sendable {
        case sha1, sha256, sha384, sha512

        init?(_ oid: ASN1ObjectIdentifier) {
            switch oid {
            case [1, 3, 14, 3, 2, 26]: self = .sha1
            case [2, 16, 840, 1, 101, 3, 4, 2, 1]: self = .sha256
            case [2, 16, 840, 1, 101, 3, 4, 2, 2]: self = .sha384
            case [2, 16, 840, 1, 101, 3, 4, 2, 3]: self = .sha512
            default: return nil
            }
        }

        var oid: ASN1ObjectIdentifier {
            switch self {
            case .sha1: [1, 3, 14, 3, 2, 26]
            case .sha256: [2, 16, 840, 1, 101, 3, 4, 2, 1]
            case .sha384: [2, 16, 840, 1, 101, 3, 4, 2, 2]
            case .sha512: [2, 16, 840, 1, 101, 3, 4, 2, 3]
            }
        }

        func hash(_ bytes: some DataProtocol) -> [UInt8] {
            switch self {
            case .sha1: Array(Insecure.SHA1.hash(data: bytes))
            case .sha256: Array(SHA256.hash(data: bytes))
            case .sha384: Array(SHA384.hash(data: bytes))
            case .sha512: Array(SHA512.hash(data: bytes))
            }
        }
    }

    /// One `CertID` of a request: which issuer (by hashes of its name and key) and serial.
    struct CertID: Sendable, Equatable {
        var hash: HashAlgorithm
        var nameHash: [UInt8]
        var keyHash: [UInt8]
        var serial: [UInt8]

        func matches(_ issuer: Certificate) throws -> Bool {
            var ns = DER.Serializer()
            try ns.serialize(issuer.subject)
            let name = ns.serializedBytes
            return nameHash == hash.hash(name) && keyHash == hash.hash(issuer.publicKey.subjectPublicKeyInfoBytes)
        }

        func serialize(into s: inout DER.Serializer) throws {
            try s.appendConstructedNode(identifier: .sequence) { s in
                try s.appendConstructedNode(identifier: .sequence) { s in
                    try s.serialize(hash.oid)
                    try s.serialize(ASN1Null())
                }
                try s.serialize(ASN1OctetString(contentBytes: ArraySlice(nameHash)))
                try s.serialize(ASN1OctetString(contentBytes: ArraySlice(keyHash)))
                try s.serialize(ArraySlice(serial))
            }
        }
    }

    struct OCSPRequest: Sendable {
        var certIDs: [CertID]
        var nonce: [UInt8]?
    }

    enum RequestError: Error { case malformed, unsupportedHash }

    /// Parses an `OCSPRequest` (at most a few KiB; a signed request's signature is ignored,
    /// as Vault does).
    static func parseOCSPRequest(_ der: [UInt8]) throws -> OCSPRequest {
        guard !der.isEmpty, der.count <= 16 * 1024 else { throw RequestError.malformed }
        var unsupported = false
        let request: OCSPRequest
        do {
            let root = try DER.parse(der)
            request = try DER.sequence(root, identifier: .sequence) { outer in
                guard let tbs = outer.next() else { throw RequestError.malformed }
                while outer.next() != nil {}
                return try DER.sequence(tbs, identifier: .sequence) { n in
                    _ = try DER.optionalExplicitlyTagged(&n, tagNumber: 0, tagClass: .contextSpecific) { $0 }
                    _ = try DER.optionalExplicitlyTagged(&n, tagNumber: 1, tagClass: .contextSpecific) { $0 }
                    guard let list = n.next() else { throw RequestError.malformed }
                    var ids: [CertID] = []
                    try DER.sequence(list, identifier: .sequence) { items in
                        while let item = items.next() {
                            try DER.sequence(item, identifier: .sequence) { r in
                                guard let certID = r.next() else { throw RequestError.malformed }
                                while r.next() != nil {}
                                try DER.sequence(certID, identifier: .sequence) { c in
                                    guard let alg = c.next(), let name = c.next(), let key = c.next(), let serial = c.next() else { throw RequestError.malformed }
                                    let oid: ASN1ObjectIdentifier = try DER.sequence(alg, identifier: .sequence) { a in
                                        guard let o = a.next() else { throw RequestError.malformed }
                                        while a.next() != nil {}
                                        return try ASN1ObjectIdentifier(derEncoded: o)
                                    }
                                    guard let h = HashAlgorithm(oid) else { unsupported = true; return }
                                    let nameHash = try ASN1OctetString(derEncoded: name).bytes
                                    let keyHash = try ASN1OctetString(derEncoded: key).bytes
                                    guard serial.identifier == .integer, case .primitive(let sbytes) = serial.content, !sbytes.isEmpty else { throw RequestError.malformed }
                                    ids.append(CertID(hash: h, nameHash: Array(nameHash), keyHash: Array(keyHash), serial: Array(sbytes)))
                                }
                            }
                        }
                    }
                    var nonce: [UInt8]?
                    _ = try DER.optionalExplicitlyTagged(&n, tagNumber: 2, tagClass: .contextSpecific) { exts in
                        guard case .constructed(let list) = exts.content else { return }
                        for node in list {
                            let e = try Certificate.Extension(derEncoded: node)
                            if e.oid == [1, 3, 6, 1, 5, 5, 7, 48, 1, 2] { nonce = Array(e.value) }
                        }
                    }
                    while n.next() != nil {}
                    return OCSPRequest(certIDs: ids, nonce: nonce)
                }
            }
        } catch let e as RequestError {
            throw e
        } catch {
            throw RequestError.malformed
        }
        if unsupported && request.certIDs.isEmpty { throw RequestError.unsupportedHash }
        guard !request.certIDs.isEmpty else { throw RequestError.malformed }
        return request
    }

    enum CertStatus: Sendable, Equatable {
        case good
        case revoked(Date)
        case unknown
    }

    struct SingleResponse: Sendable {
        var id: CertID
        var status: CertStatus
        var thisUpdate: Date
        var nextUpdate: Date?
    }

    /// `OCSPResponse` with only a status (malformedRequest 1, internalError 2, tryLater 3,
    /// unauthorized 6).
    static func ocspStatusOnly(_ status: UInt8) -> [UInt8] {
        var s = DER.Serializer()
        s.appendConstructedNode(identifier: .sequence) { s in
            s.appendPrimitiveNode(identifier: .enumerated) { $0.append(status) }
        }
        return s.serializedBytes
    }

    /// A successful `OCSPResponse` whose `BasicOCSPResponse` the issuer signs itself
    /// (responder by key hash).
    static func ocspResponse(responder: Certificate, key: Certificate.PrivateKey, algorithm: Certificate.SignatureAlgorithm,
                             producedAt: Date, responses: [SingleResponse], nonce: [UInt8]?) throws -> [UInt8] {
        var t = DER.Serializer()
        try t.appendConstructedNode(identifier: .sequence) { s in
            try s.appendConstructedNode(identifier: contextTag(2)) { s in
                try s.serialize(ASN1OctetString(contentBytes: ArraySlice(Insecure.SHA1.hash(data: responder.publicKey.subjectPublicKeyInfoBytes))))
            }
            try s.serialize(generalizedTime(producedAt))
            try s.appendConstructedNode(identifier: .sequence) { s in
                for r in responses {
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        try r.id.serialize(into: &s)
                        switch r.status {
                        case .good: s.appendPrimitiveNode(identifier: contextTag(0)) { _ in }
                        case .unknown: s.appendPrimitiveNode(identifier: contextTag(2)) { _ in }
                        case .revoked(let at):
                            try s.appendConstructedNode(identifier: contextTag(1)) { s in try s.serialize(generalizedTime(at)) }
                        }
                        try s.serialize(generalizedTime(r.thisUpdate))
                        if let next = r.nextUpdate {
                            try s.appendConstructedNode(identifier: contextTag(0)) { s in try s.serialize(generalizedTime(next)) }
                        }
                    }
                }
            }
            if let nonce {
                try s.appendConstructedNode(identifier: contextTag(1)) { s in
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        try s.serialize(Certificate.Extension(oid: [1, 3, 6, 1, 5, 5, 7, 48, 1, 2], critical: false, value: ArraySlice(nonce)))
                    }
                }
            }
        }
        let basic = try signed(t.serializedBytes, key: key, algorithm: algorithm)
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            s.appendPrimitiveNode(identifier: .enumerated) { $0.append(0) }
            try s.appendConstructedNode(identifier: contextTag(0)) { s in
                try s.appendConstructedNode(identifier: .sequence) { s in
                    try s.serialize(ASN1ObjectIdentifier(elements: [1, 3, 6, 1, 5, 5, 7, 48, 1, 1]))
                    try s.serialize(ASN1OctetString(contentBytes: ArraySlice(basic)))
                }
            }
        }
        return s.serializedBytes
    }

    // MARK: private keys

    /// A SEC1 `ECPrivateKey` ("EC PRIVATE KEY", Vault's default `der` format for EC keys).
    static func sec1(curve: ASN1ObjectIdentifier, privateScalar: [UInt8], publicX963: [UInt8]) throws -> [UInt8] {
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(1)
            try s.serialize(ASN1OctetString(contentBytes: ArraySlice(privateScalar)))
            try s.serialize(curve, explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific)
            try s.serialize(ASN1BitString(bytes: ArraySlice(publicX963)), explicitlyTaggedWithTagNumber: 1, tagClass: .contextSpecific)
        }
        return s.serializedBytes
    }

    /// PKCS#8 `PrivateKeyInfo` around an algorithm and its private key bytes.
    static func pkcs8(algorithm: ASN1ObjectIdentifier, parameters: ASN1ObjectIdentifier?, null: Bool = false, key: [UInt8]) throws -> [UInt8] {
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(0)
            try s.appendConstructedNode(identifier: .sequence) { s in
                try s.serialize(algorithm)
                if let parameters { try s.serialize(parameters) }
                if null { try s.serialize(ASN1Null()) }
            }
            try s.serialize(ASN1OctetString(contentBytes: ArraySlice(key)))
        }
        return s.serializedBytes
    }

    static func derInteger(_ n: Int) throws -> [UInt8] {
        var s = DER.Serializer()
        try s.serialize(n)
        return s.serializedBytes
    }

    /// PEM text (64-character lines, no trailing newline, as swift-asn1 writes it; its own
    /// encoder walks String indices and cost 3 % of an issue).
    static func pem(_ label: String, _ der: [UInt8]) -> String {
        let b64 = Array(Data(der).base64EncodedString().utf8)
        var out = [UInt8]()
        out.reserveCapacity(b64.count + b64.count / 64 + 2 * label.utf8.count + 40)
        out += Array("-----BEGIN \(label)-----\n".utf8)
        var i = 0
        while i < b64.count {
            let end = min(i + 64, b64.count)
            out += b64[i..<end]
            out.append(0x0a)
            i = end
        }
        out += Array("-----END \(label)-----".utf8)
        return String(decoding: out, as: UTF8.self)
    }
}
