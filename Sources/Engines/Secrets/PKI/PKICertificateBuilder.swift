import CofferSDK
import Crypto
import Foundation
import SwiftASN1
import X509

/// What goes into one certificate, once a role (or the CA endpoints) decided it.
struct PKITemplate: Sendable {
    var subject = DistinguishedName()
    var dnsNames: [String] = []
    var emails: [String] = []
    var ips: [[UInt8]] = []
    var uris: [String] = []
    var otherNames: [(oid: ASN1ObjectIdentifier, value: String)] = []
    var notBefore = Date()
    var notAfter = Date()
    var isCA = false
    /// -1: unlimited.
    var maxPathLength = -1
    var keyUsage: [String] = []
    var extKeyUsage: [String] = []
    var extKeyUsageOIDs: [String] = []
    var basicConstraintsForNonCA = false
    var permittedDNSDomains: [String] = []
    var policyIdentifiers: [String] = []
    var issuingCertificates: [String] = []
    var crlDistributionPoints: [String] = []
    var ocspServers: [String] = []
    var skid: [UInt8]? = nil
    /// The issuer's key identifier when the caller has it (else hashed from its key).
    var authorityKeyID: [UInt8]? = nil
    /// A CSR's own extensions copied as they are (`use_csr_values`, sign-verbatim), minus
    /// those the template sets itself.
    var copiedExtensions: [Certificate.Extension] = []

    /// A usage name lowercased and without surrounding blanks (on the UTF-8 bytes; Foundation's
    /// trimming goes through UTF-16 and showed in every issue's profile).
    static func normalized(_ s: String) -> String {
        var u = Substring(s)
        while u.utf8.first == 0x20 || u.utf8.first == 0x09 { u = u.dropFirst() }
        while u.utf8.last == 0x20 || u.utf8.last == 0x09 { u = u.dropLast() }
        return u.lowercased()
    }

    /// Vault's key_usage names (case-insensitive; unknown ones ignored, as Vault does).
    static func keyUsage(_ names: [String], ca: Bool) -> KeyUsage {
        var ku = KeyUsage()
        for n in names {
            switch Self.normalized(n) {
            case "digitalsignature": ku.digitalSignature = true
            case "contentcommitment": ku.nonRepudiation = true
            case "keyencipherment": ku.keyEncipherment = true
            case "dataencipherment": ku.dataEncipherment = true
            case "keyagreement": ku.keyAgreement = true
            case "certsign": ku.keyCertSign = true
            case "crlsign": ku.cRLSign = true
            case "encipheronly": ku.encipherOnly = true
            case "decipheronly": ku.decipherOnly = true
            default: break
            }
        }
        if ca { ku.keyCertSign = true; ku.cRLSign = true }
        return ku
    }

    static func extKeyUsage(_ name: String) throws -> ExtendedKeyUsage.Usage {
        switch Self.normalized(name) {
        case "any": return .any
        case "serverauth": return .serverAuth
        case "clientauth": return .clientAuth
        case "codesigning": return .codeSigning
        case "emailprotection": return .emailProtection
        case "ipsecendsystem": return ExtendedKeyUsage.Usage(oid: [1, 3, 6, 1, 5, 5, 7, 3, 5])
        case "ipsectunnel": return ExtendedKeyUsage.Usage(oid: [1, 3, 6, 1, 5, 5, 7, 3, 6])
        case "ipsecuser": return ExtendedKeyUsage.Usage(oid: [1, 3, 6, 1, 5, 5, 7, 3, 7])
        case "timestamping": return .timeStamping
        case "ocspsigning": return .ocspSigning
        case "microsoftservergatedcrypto": return ExtendedKeyUsage.Usage(oid: [1, 3, 6, 1, 4, 1, 311, 10, 3, 3])
        case "netscapeservergatedcrypto": return ExtendedKeyUsage.Usage(oid: [2, 16, 840, 1, 113730, 4, 1])
        default: throw CofferError.invalid("unknown ext_key_usage \"\(name.prefix(64))\"")
        }
    }

    static func oid(_ text: String, what: String) throws -> ASN1ObjectIdentifier {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.count <= 32, parts.allSatisfy({ !$0.isEmpty && $0.count <= 18 && $0.allSatisfy(\.isNumber) }),
              let oid = try? ASN1ObjectIdentifier(elements: parts.compactMap { UInt($0) }) else {
            throw CofferError.invalid("\"\(text.prefix(64))\" could not be parsed as a valid oid for \(what)")
        }
        return oid
    }

    /// DNS names, e-mail addresses and URIs are IA5 (ASCII) strings in X.509.
    func checkNames() throws {
        for (what, list) in [("DNS name", dnsNames), ("email address", emails), ("URI", uris)] {
            for n in list where !n.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f }) || n.isEmpty || n.utf8.count > 1024 {
                throw CofferError.invalid("the \(what) \"\(n.prefix(64))\" is not valid: it must be 1 to 1024 printable ASCII characters")
            }
        }
        for u in uris where URL(string: u)?.scheme == nil {
            throw CofferError.invalid("the URI \"\(u.prefix(64))\" is not valid: it has no scheme")
        }
    }

    /// The certificate, signed by `signer` (its own key for a self-signed root).
    func build(publicKey: Certificate.PublicKey, serial: [UInt8], issuerName: DistinguishedName, issuerPublicKey: Certificate.PublicKey,
               signer: PKIKeyMaterial, signatureBits: Int) throws -> Certificate {
        try checkNames()
        do {
            return try unchecked(publicKey: publicKey, serial: serial, issuerName: issuerName, issuerPublicKey: issuerPublicKey, signer: signer, signatureBits: signatureBits)
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError.invalid("unable to build the certificate: \(String(describing: error).prefix(200))")
        }
    }

    private func unchecked(publicKey: Certificate.PublicKey, serial: [UInt8], issuerName: DistinguishedName, issuerPublicKey: Certificate.PublicKey,
               signer: PKIKeyMaterial, signatureBits: Int) throws -> Certificate {
        guard notBefore < notAfter else {
            throw CofferError.invalid("The certificate's Not Before (\(RFC3339.format(notBefore))) is later than the certificate's Not After (\(RFC3339.format(notAfter)))")
        }
        var exts: [Certificate.Extension] = []
        if isCA {
            exts.append(try Certificate.Extension(BasicConstraints.isCertificateAuthority(maxPathLength: maxPathLength < 0 ? nil : maxPathLength), critical: true))
        } else if basicConstraintsForNonCA {
            exts.append(try Certificate.Extension(BasicConstraints.notCertificateAuthority, critical: true))
        }
        let ku = Self.keyUsage(keyUsage, ca: isCA)
        if ku != KeyUsage() { exts.append(try Certificate.Extension(ku, critical: true)) }
        var ekus: [ExtendedKeyUsage.Usage] = []
        for e in extKeyUsage { let u = try Self.extKeyUsage(e); if !ekus.contains(u) { ekus.append(u) } }
        for o in extKeyUsageOIDs { let u = ExtendedKeyUsage.Usage(oid: try Self.oid(o, what: "an extended key usage")); if !ekus.contains(u) { ekus.append(u) } }
        if !ekus.isEmpty { exts.append(try Certificate.Extension(ExtendedKeyUsage(ekus), critical: false)) }
        let ski = skid ?? Array(SubjectKeyIdentifier(hash: publicKey).keyIdentifier)
        exts.append(try Certificate.Extension(SubjectKeyIdentifier(keyIdentifier: ArraySlice(ski)), critical: false))
        exts.append(try Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: ArraySlice(authorityKeyID ?? Array(SubjectKeyIdentifier(hash: issuerPublicKey).keyIdentifier))), critical: false))
        var sans: [GeneralName] = dnsNames.map { .dnsName($0) } + emails.map { .rfc822Name($0) }
        sans += ips.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
        sans += uris.map { .uniformResourceIdentifier($0) }
        for o in otherNames {
            var s = DER.Serializer()
            try s.serialize(ASN1UTF8String(o.value))
            sans.append(.otherName(GeneralName.OtherName(typeID: o.oid, value: try ASN1Any(derEncoded: s.serializedBytes))))
        }
        if !sans.isEmpty { exts.append(try Certificate.Extension(SubjectAlternativeNames(sans), critical: false)) }
        var aia: [AuthorityInformationAccess.AccessDescription] = []
        aia += ocspServers.map { .init(method: .ocspServer, location: .uniformResourceIdentifier($0)) }
        aia += issuingCertificates.map { .init(method: .issuingCA, location: .uniformResourceIdentifier($0)) }
        if !aia.isEmpty { exts.append(try Certificate.Extension(AuthorityInformationAccess(aia), critical: false)) }
        if !crlDistributionPoints.isEmpty { exts.append(try Self.crlDistributionPoints(crlDistributionPoints)) }
        if isCA && !permittedDNSDomains.isEmpty {
            exts.append(try Certificate.Extension(NameConstraints(permittedDNSDomains: permittedDNSDomains), critical: true))
        }
        if !policyIdentifiers.isEmpty { exts.append(try Self.certificatePolicies(policyIdentifiers)) }
        let own = Set(exts.map(\.oid))
        for e in copiedExtensions where !own.contains(e.oid) && e.oid != [2, 5, 29, 19] { exts.append(e) }
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(bytes: serial), publicKey: publicKey,
            notValidBefore: notBefore, notValidAfter: notAfter, issuer: issuerName, subject: subject,
            signatureAlgorithm: try signer.signatureAlgorithm(bits: signatureBits),
            extensions: try Certificate.Extensions(exts), issuerPrivateKey: signer.certificateKey)
    }

    /// `cRLDistributionPoints` (RFC 5280 §4.2.1.13) with one full-name point per URL.
    static func crlDistributionPoints(_ urls: [String]) throws -> Certificate.Extension {
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            for u in urls {
                try s.appendConstructedNode(identifier: .sequence) { s in
                    try s.appendConstructedNode(identifier: PKIDER.contextTag(0)) { s in
                        try s.appendConstructedNode(identifier: PKIDER.contextTag(0)) { s in
                            try s.serialize(GeneralName.uniformResourceIdentifier(u))
                        }
                    }
                }
            }
        }
        return Certificate.Extension(oid: [2, 5, 29, 31], critical: false, value: ArraySlice(s.serializedBytes))
    }

    static func certificatePolicies(_ oids: [String]) throws -> Certificate.Extension {
        var s = DER.Serializer()
        let parsed = try oids.map { try oid($0, what: "a policy identifier") }
        try s.appendConstructedNode(identifier: .sequence) { s in
            for o in parsed {
                try s.appendConstructedNode(identifier: .sequence) { s in try s.serialize(o) }
            }
        }
        return Certificate.Extension(oid: [2, 5, 29, 32], critical: false, value: ArraySlice(s.serializedBytes))
    }

    /// A subject from a common name and the role's (or request's) name fields.
    static func subject(cn: String, ou: [String] = [], organization: [String] = [], country: [String] = [], locality: [String] = [],
                        province: [String] = [], street: [String] = [], postalCode: [String] = [], serialNumber: String = "") throws -> DistinguishedName {
        var rdns: [RelativeDistinguishedName] = []
        func add(_ type: ASN1ObjectIdentifier, _ values: [String], printable: Bool = false) throws {
            var seen = Set<String>()
            for v in values where !v.isEmpty && seen.insert(v).inserted {
                let attr = printable ? try RelativeDistinguishedName.Attribute(type: type, printableString: v)
                    : RelativeDistinguishedName.Attribute(type: type, utf8String: v)
                rdns.append(RelativeDistinguishedName(attr))
            }
        }
        do {
            try add(.RDNAttributeType.countryName, country, printable: true)
        } catch {
            throw CofferError.invalid("country must be printable characters")
        }
        try add(.RDNAttributeType.stateOrProvinceName, province)
        try add(.RDNAttributeType.localityName, locality)
        try add(.RDNAttributeType.streetAddress, street)
        try add([2, 5, 4, 17], postalCode)
        try add(.RDNAttributeType.organizationName, organization)
        try add(.RDNAttributeType.organizationalUnitName, ou)
        if !cn.isEmpty { rdns.append(RelativeDistinguishedName(RelativeDistinguishedName.Attribute(type: .RDNAttributeType.commonName, utf8String: cn))) }
        if !serialNumber.isEmpty {
            do {
                try add([2, 5, 4, 5], [serialNumber], printable: true)
            } catch {
                throw CofferError.invalid("serial_number must be printable characters")
            }
        }
        return DistinguishedName(rdns)
    }

    /// The common name of a distinguished name ("" without one).
    static func commonName(_ dn: DistinguishedName) -> String {
        for rdn in dn {
            for a in rdn where a.type == .RDNAttributeType.commonName { return String(describing: a.value) }
        }
        return ""
    }

    /// An IP address from text (v4 or v6) as the bytes a SAN carries.
    static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
