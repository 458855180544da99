import CofferSDK
import Crypto
import Foundation
import Synchronization
import SwiftASN1
import X509

/// The `pki` secret engine (Vault's API): per-mount certificate authorities (several issuers
/// and keys), roles, issuance and signing, revocation with CRLs and OCSP, tidy. Everything is
/// stored behind the barrier of the mount's namespace, so each tenant has its own CAs.
///
/// Files: this one (routes, storage, references), `+Issuers` (CA generation, import, issuers,
/// keys, fetch endpoints), `+Issue` (roles, issue, sign), `+Revocation` (revoke, CRL, OCSP,
/// tidy), `PKICertificateBuilder` (the X.509 template), `PKINamePolicy` (what a role allows),
/// `PKIDER` (CRL and OCSP bytes), `PKIKeyMaterial` (keys).
public struct PKIBackend: LeasingBackend {
    let storage: StorageView
    let clock: WallClock
    let defaultTTL: Int
    let maxTTL: Int
    let issuers = DecodedRecords<PKIIssuer>()
    let keys = DecodedRecords<PKIKey>()
    let roles = DecodedRecords<PKIRole>()
    let issuerConfigs = DecodedRecords<PKIIssuersConfig>()
    let keyConfigs = DecodedRecords<PKIKeysConfig>()
    let crlConfigs = DecodedRecords<PKICRLConfig>()
    let urlConfigs = DecodedRecords<PKIURLs>()
    let parsed = PKIParsedCache()
    let tidy = PKITidyState()

    public static let factory: BackendFactory = { c in
        PKIBackend(storage: c.storage, clock: c.clock, defaultTTL: c.defaultLeaseTTL, maxTTL: c.maxLeaseTTL)
    }

    public var backendHelp: String { "The PKI backend dynamically generates X509 server and client certificates." }
    public var runsPeriodicWork: Bool { true }

    public var unauthenticatedPaths: [String] {
        ["cert/*", "ca/pem", "ca_chain", "ca", "crl/delta", "crl/delta/pem", "crl/pem", "crl", "issuer/+/crl/der", "issuer/+/crl/pem",
         "issuer/+/crl", "issuer/+/crl/delta/der", "issuer/+/crl/delta/pem", "issuer/+/crl/delta", "issuer/+/pem", "issuer/+/der",
         "issuer/+/json", "issuers/", "ocsp", "ocsp/*"]
    }

    public var rootPaths: [String] { ["root", "root/sign-self-issued", "issuer/+/sign-self-issued"] }

    // MARK: fields shared by several routes

    static let subjectFields: [Field] = [
        Field("common_name", .string), Field("alt_names", .commaStringSlice), Field("ip_sans", .commaStringSlice),
        Field("uri_sans", .commaStringSlice), Field("other_sans", .commaStringSlice), Field("ttl", .duration),
        Field("not_after", .string), Field("not_before", .string), Field("format", .string, default: "pem"),
        Field("private_key_format", .string, default: "der"), Field("exclude_cn_from_sans", .bool),
        Field("serial_number", .string), Field("user_ids", .commaStringSlice),
    ]
    static let caFields: [Field] = subjectFields + [
        Field("ou", .commaStringSlice), Field("organization", .commaStringSlice), Field("country", .commaStringSlice),
        Field("locality", .commaStringSlice), Field("province", .commaStringSlice), Field("street_address", .commaStringSlice),
        Field("postal_code", .commaStringSlice), Field("max_path_length", .int, default: -1), Field("permitted_dns_domains", .commaStringSlice),
        Field("signature_bits", .int), Field("use_pss", .bool), Field("key_usage", .commaStringSlice), Field("ext_key_usage", .commaStringSlice),
        Field("ext_key_usage_oids", .commaStringSlice), Field("not_before_duration", .duration, default: 30), Field("issuer_name", .string),
    ]
    static let keyGenFields: [Field] = [
        Field("exported", .string), Field("key_type", .string, default: "rsa"), Field("key_bits", .int), Field("key_name", .string),
        Field("key_ref", .string, default: "default"), Field("managed_key_name", .string), Field("managed_key_id", .string),
        Field("external_key_ref", .string), Field("add_basic_constraints", .bool),
    ]
    static let refField = Field("issuer_ref", .string, default: "default")
    static let roleField = Field("role", .string)

    public static let routes: [Route<PKIBackend>] = (issueRoutes + issuerRoutes + revocationRoutes).map(guarded)

    /// Errors of the ASN.1, X.509 and crypto libraries come from what a request carried (a
    /// certificate, a CSR, a key, a name): a 400 with their text, never a 500.
    static func guarded(_ route: Route<PKIBackend>) -> Route<PKIBackend> {
        var r = route
        r.operations = r.operations.mapValues { handler in
            { backend, request in
                do {
                    return try await handler(backend, request)
                } catch let e as CofferError {
                    throw e
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    throw CofferError.invalid("invalid certificate data: \(String(describing: error).prefix(300))")
                }
            }
        }
        return r
    }

    // MARK: storage

    func issuer(id: String) async throws -> PKIIssuer? { try await issuers.get(storage, "issuer/" + id) }
    func key(id: String) async throws -> PKIKey? { try await keys.get(storage, "key/" + id) }

    func issuersConfig() async throws -> PKIIssuersConfig { try await issuerConfigs.get(storage, "config/issuers") ?? PKIIssuersConfig() }
    func keysConfig() async throws -> PKIKeysConfig { try await keyConfigs.get(storage, "config/keys") ?? PKIKeysConfig() }
    func crlConfig() async throws -> PKICRLConfig { try await crlConfigs.get(storage, "config/crl") ?? PKICRLConfig() }
    func urls() async throws -> PKIURLs { try await urlConfigs.get(storage, "config/urls") ?? PKIURLs() }

    func allIssuers() async throws -> [PKIIssuer] {
        var out: [PKIIssuer] = []
        for id in try await storage.list(prefix: "issuer/") {
            if let i = try await issuer(id: id) { out.append(i) }
        }
        return out
    }

    func allKeys() async throws -> [PKIKey] {
        var out: [PKIKey] = []
        for id in try await storage.list(prefix: "key/") {
            if let k = try await key(id: id) { out.append(k) }
        }
        return out
    }

    /// An issuer by Vault's reference: `default`, its id, or its name.
    func resolveIssuer(_ ref: String) async throws -> PKIIssuer {
        let r = ref.isEmpty ? "default" : ref
        if r == "default" {
            let cfg = try await issuersConfig()
            guard !cfg.defaultIssuer.isEmpty, let i = try await issuer(id: cfg.defaultIssuer) else {
                throw CofferError.invalid("no default issuer currently configured")
            }
            return i
        }
        if Self.isUUID(r), let i = try await issuer(id: r) { return i }
        for i in try await allIssuers() where i.name == r { return i }
        throw CofferError.invalid("unable to find PKI issuer for reference: \(r.prefix(128))")
    }

    func resolveKey(_ ref: String) async throws -> PKIKey {
        let r = ref.isEmpty ? "default" : ref
        if r == "default" {
            let cfg = try await keysConfig()
            guard !cfg.defaultKey.isEmpty, let k = try await key(id: cfg.defaultKey) else { throw CofferError.invalid("no default key currently configured") }
            return k
        }
        if Self.isUUID(r), let k = try await key(id: r) { return k }
        for k in try await allKeys() where k.name == r { return k }
        throw CofferError.invalid("unable to find PKI key for reference: \(r.prefix(128))")
    }

    /// Now, in whole seconds (what X.509 times hold).
    var nowDate: Date { Date(timeIntervalSince1970: clock.now().rounded(.down)) }

    static func isUUID(_ s: String) -> Bool { s.utf8.count == 36 && UUID(uuidString: s) != nil }

    /// Vault's names for issuers, keys and roles (`\w(([\w-.]+)?\w)?`).
    static func checkName(_ name: String, what: String) throws -> String {
        guard !name.isEmpty else { throw CofferError.invalid("missing \(what) name") }
        let ok = name.utf8.count <= 128 && name.unicodeScalars.allSatisfy { ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || $0 == "_" || $0 == "-" || $0 == "." }
            && !name.hasPrefix(".") && !name.hasPrefix("-") && !name.hasSuffix(".") && !name.hasSuffix("-")
        guard ok else { throw CofferError.invalid("\(what) name contained invalid characters") }
        return name
    }

    // MARK: serials

    /// A fresh serial: 159 random bits (Vault's range), minimal big-endian bytes.
    static func newSerial() -> [UInt8] {
        var b = SecureRandom.bytes(20)
        b[0] &= 0x7f
        while b.count > 1 && b[0] == 0 { b.removeFirst() }
        return b
    }

    /// `1f:0a:…`: lowercase hex of the serial's minimal bytes, as Vault prints it.
    static func serialString(_ bytes: some Collection<UInt8>) -> String {
        var b = Array(bytes)
        while b.count > 1 && b[0] == 0 { b.removeFirst() }
        return b.map { h in let s = String(h, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: ":")
    }

    /// A serial from a request (`:` or `-` separated hex, any case) in the stored form.
    static func normalizeSerial(_ text: String) throws -> String {
        let t = text.lowercased().replacingOccurrences(of: "-", with: ":")
        let parts = t.split(separator: ":", omittingEmptySubsequences: false)
        let bytes = parts.map { $0.utf8.count == 2 ? Hex.decode(String($0))?.first : nil }
        guard !t.isEmpty, t.utf8.count <= 200, bytes.allSatisfy({ $0 != nil }) else {
            throw CofferError.invalid("invalid serial number \"\(text.prefix(80))\"")
        }
        return serialString(bytes.compactMap { $0 })
    }

    static func serialKey(_ serial: String) -> String { serial.replacingOccurrences(of: ":", with: "-") }

    // MARK: parsed forms

    func certificate(of i: PKIIssuer) throws -> Certificate { try parsed.certificate(i.certificate) }

    /// An issuer's signing key, or Vault's error when the mount does not hold it.
    func signingKey(of i: PKIIssuer) async throws -> PKIKeyMaterial {
        guard !i.keyID.isEmpty, let k = try await key(id: i.keyID) else {
            throw CofferError.invalid("could not fetch the CA certificate (was one set?): unable to fetch corresponding key for issuer \(i.id); unable to use this issuer for signing")
        }
        return try parsed.key(k.pem)
    }

    /// The issuer's chain: itself first, then its parents in the mount (PEM).
    func chain(of i: PKIIssuer) -> [String] { [i.certificate] + i.parents }

    /// The PEM without surrounding whitespace (Vault trims what it answers). On the UTF-8
    /// bytes: Foundation's trimming bridges through UTF-16 and cost 12 % of an issue.
    static func trimmedPEM(_ s: String) -> String {
        let u = s.utf8
        func space(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 }
        guard let first = u.first, let last = u.last, space(first) || space(last) else { return s }
        var start = u.startIndex, end = u.endIndex
        while start < end, space(u[start]) { start = u.index(after: start) }
        while end > start, space(u[u.index(before: end)]) { end = u.index(before: end) }
        return String(s[start..<end])
    }

    static func pem(_ cert: Certificate) throws -> String { PKIDER.pem("CERTIFICATE", try der(cert)) }

    static func der(_ cert: Certificate) throws -> [UInt8] {
        var s = DER.Serializer()
        try s.serialize(cert)
        return s.serializedBytes
    }

    /// All PEM blocks of a bundle, in order, with their labels (bounded).
    static func pemBlocks(_ text: String) throws -> [(label: String, pem: String)] {
        var out: [(String, String)] = []
        var rest = Substring(text)
        while let begin = rest.range(of: "-----BEGIN ") {
            guard let labelEnd = rest[begin.upperBound...].range(of: "-----") else { break }
            let label = String(rest[begin.upperBound..<labelEnd.lowerBound])
            guard let end = rest[labelEnd.upperBound...].range(of: "-----END " + label + "-----") else {
                throw CofferError.invalid("error when parsing block \(out.count): invalid PEM data")
            }
            out.append((label, String(rest[begin.lowerBound..<end.upperBound])))
            rest = rest[end.upperBound...]
            if out.count > 64 { throw CofferError.invalid("too many PEM blocks in the bundle") }
        }
        return out
    }

    static func parseCertificate(_ pem: String) throws -> Certificate {
        do { return try Certificate(pemEncoded: pem) } catch { throw CofferError.invalid("error parsing certificate: \(error)".prefix(300).description) }
    }

    // MARK: leases (generate_lease)

    public func mayCreateLease(_ request: LogicalRequest) -> Bool {
        request.operation != .read && (request.path.hasPrefix("issue/") || request.path.hasPrefix("sign/") || request.path.contains("/issue/") || request.path.contains("/sign/"))
    }

    /// A certificate's lease ended: the certificate is revoked (Vault's `generate_lease`).
    public func revokeLease(_ lease: LeaseInfo) async throws {
        guard let serial = lease.internalData["serial_number"]?.stringValue else { return }
        _ = try await revoke(serial: try Self.normalizeSerial(serial), allowExpired: true)
    }

    public func renewLease(_ lease: LeaseInfo, increment: Int) async throws -> SecretLease {
        throw CofferError.invalid("certificate leases are not renewable")
    }

    // MARK: periodic work

    public func periodic() async -> Duration? {
        await autoTidy()
        await autoRebuildCRLs()
        return .seconds(30)
    }
}

/// Parsed certificates and keys, by their stored PEM (parsing an RSA key costs far more
/// than comparing its text).
final class PKIParsedCache: Sendable {
    let certs = Mutex<[String: Certificate]>([:])
    let keyIDs = Mutex<[String: [UInt8]]>([:])

    /// The SHA-1 key identifier of an issuer's key (by its certificate), for every
    /// certificate it signs. Keyed by text: hashing a public key serializes its point.
    func keyIdentifier(_ pem: String, _ cert: Certificate) -> [UInt8] {
        if let id = keyIDs.withLock({ $0[pem] }) { return id }
        let id = Array(SubjectKeyIdentifier(hash: cert.publicKey).keyIdentifier)
        keyIDs.withLock { if $0.count > 256 { $0.removeAll() }; $0[pem] = id }
        return id
    }
    let keys = Mutex<[String: PKIKeyMaterial]>([:])

    func certificate(_ pem: String) throws -> Certificate {
        if let c = certs.withLock({ $0[pem] }) { return c }
        let c = try PKIBackend.parseCertificate(pem)
        certs.withLock { if $0.count > 256 { $0.removeAll() }; $0[pem] = c }
        return c
    }

    func key(_ pem: String) throws -> PKIKeyMaterial {
        if let k = keys.withLock({ $0[pem] }) { return k }
        let k = try PKIKeyMaterial(pem: pem)
        keys.withLock { if $0.count > 256 { $0.removeAll() }; $0[pem] = k }
        return k
    }
}
