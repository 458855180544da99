import CofferSDK
import Crypto
@testable import Engines
import Foundation
import SwiftASN1
import Testing
import X509

/// The PKI engine's pure parts: what a role's name policy allows (Vault's rules), serials,
/// keys in Vault's PEM forms, and the CRL and OCSP bytes it lays out itself, read back by
/// swift-certificates' own parsers where it has them.
@Suite struct PKITests {
    func role(_ body: (inout PKIRole) -> Void) -> PKINamePolicy {
        var r = PKIRole()
        body(&r)
        return PKINamePolicy(role: r)
    }

    @Test func subdomainsBareDomainsAndWildcards() {
        let sub = role { $0.allowedDomains = ["example.com"]; $0.allowSubdomains = true }
        #expect(sub.allows("a.example.com"))
        #expect(sub.allows("a.b.example.com"))
        #expect(sub.allows("*.example.com"))
        #expect(!sub.allows("example.com"))          // bare needs allow_bare_domains
        #expect(!sub.allows("aexample.com"))
        #expect(!sub.allows("a.example.com.evil.org"))
        #expect(!sub.allows("a.*.example.com"))       // a star only in the first label
        #expect(!sub.allows("*.*.example.com"))
        let bare = role { $0.allowedDomains = ["example.com"]; $0.allowBareDomains = true }
        #expect(bare.allows("example.com") && bare.allows("EXAMPLE.com") && !bare.allows("a.example.com"))
        #expect(bare.allows("ops@example.com") && !bare.allows("ops@other.com"))
        let noWild = role { $0.allowedDomains = ["example.com"]; $0.allowSubdomains = true; $0.allowWildcardCertificates = false }
        #expect(!noWild.allows("*.example.com") && noWild.allows("x.example.com"))
    }

    @Test func globsLocalhostAnyNameAndHostnameEnforcement() {
        let glob = role { $0.allowedDomains = ["*.svc.cluster.local"]; $0.allowGlobDomains = true; $0.allowLocalhost = false }
        #expect(glob.allows("api.ns.svc.cluster.local"))
        #expect(!glob.allows("svc.cluster.local") && !glob.allows("localhost"))
        let local = role { $0.allowLocalhost = true }
        #expect(local.allows("localhost") && local.allows("localdomain") && !local.allows("a.localhost"))
        let localSub = role { $0.allowLocalhost = true; $0.allowSubdomains = true }
        #expect(localSub.allows("a.localhost"))
        let any = role { $0.allowAnyName = true }
        #expect(any.allows("anything.example.org") && !any.allows("not a hostname") && !any.allows("-bad-.example.com"))
        let anyLoose = role { $0.allowAnyName = true; $0.enforceHostnames = false }
        #expect(anyLoose.allows("not a hostname"))
        #expect(!any.allows("a@b@c"))
        // The common name's own check: hostnames and e-mails by cn_validations.
        let cnHostOnly = role { $0.allowAnyName = true; $0.cnValidations = ["hostname"] }
        #expect(cnHostOnly.allowsCommonName("a.example.com") && !cnHostOnly.allowsCommonName("me@example.com"))
        let disabled = role { $0.cnValidations = ["disabled"] }
        #expect(disabled.allowsCommonName("Any Name At All"))
    }

    @Test func otherSANsAndURIs() throws {
        let p = role { $0.allowedOtherSANs = ["1.3.6.1.4.1.311.20.2.3;UTF8:*@example.com"]; $0.allowedURISANs = ["spiffe://cluster/*"] }
        let (oid, value) = try PKINamePolicy.parseOtherSAN("1.3.6.1.4.1.311.20.2.3;UTF8:me@example.com")
        #expect(oid == "1.3.6.1.4.1.311.20.2.3" && value == "me@example.com")
        try p.checkOtherSAN(oid: oid, value: value)
        #expect(throws: CofferError.self) { try p.checkOtherSAN(oid: oid, value: "me@evil.com") }
        #expect(throws: CofferError.self) { try p.checkOtherSAN(oid: "1.2.3", value: "x") }
        #expect(throws: CofferError.self) { try PKINamePolicy.parseOtherSAN("1.2.3:UTF8:x") }
        #expect(throws: CofferError.self) { try PKINamePolicy.parseOtherSAN("1.2.3;INT:5") }
        #expect(p.allowsURI("spiffe://cluster/ns/a") && !p.allowsURI("https://cluster/ns/a"))
    }

    @Test func serialsAreVaultsColonHex() throws {
        #expect(PKIBackend.serialString([0x00, 0x1f, 0x0a]) == "1f:0a")
        #expect(try PKIBackend.normalizeSerial("1F-0A") == "1f:0a")
        #expect(try PKIBackend.normalizeSerial("00:1f:0a") == "1f:0a")
        for bad in ["", "1f:0", "zz", "1f::0a", String(repeating: "ab:", count: 100) + "ab"] {
            #expect(throws: CofferError.self) { try PKIBackend.normalizeSerial(bad) }
        }
        for _ in 0..<200 {
            let s = PKIBackend.newSerial()
            #expect(s.count <= 20 && !s.isEmpty && (s.count == 1 || s[0] != 0))
        }
    }

    @Test func keysRoundTripInVaultsPEMForms() throws {
        for (type, bits, label) in [("ec", 256, "EC PRIVATE KEY"), ("ec", 384, "EC PRIVATE KEY"), ("ec", 521, "EC PRIVATE KEY"), ("ed25519", 0, "PRIVATE KEY"), ("rsa", 2048, "RSA PRIVATE KEY")] {
            let k = try PKIKeyMaterial.generate(type: type, bits: bits)
            let der = try k.pem(format: "der")
            #expect(der.hasPrefix("-----BEGIN \(label)-----"), "\(type) \(bits)")
            let back = try PKIKeyMaterial(pem: der)
            #expect(back.publicKey == k.publicKey && back.type == type)
            let p8 = try PKIKeyMaterial(pem: try k.pem(format: "pkcs8"))
            #expect(p8.publicKey == k.publicKey)
            // swift-certificates reads the same PEM to the same key.
            #expect(try Certificate.PrivateKey(pemEncoded: der).publicKey == k.publicKey)
        }
        #expect(throws: CofferError.self) { try PKIKeyMaterial.normalize(type: "ec", bits: 224) }
        #expect(throws: CofferError.self) { try PKIKeyMaterial.normalize(type: "dsa", bits: 0) }
        #expect(throws: CofferError.self) { try PKIKeyMaterial(pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----") }
    }

    func selfSigned() throws -> (Certificate, PKIKeyMaterial) {
        let key = try PKIKeyMaterial.generate(type: "ec", bits: 256)
        var t = PKITemplate()
        t.subject = try PKITemplate.subject(cn: "Unit Root")
        t.isCA = true
        t.notBefore = Date(timeIntervalSince1970: 1_700_000_000)
        t.notAfter = Date(timeIntervalSince1970: 2_700_000_000)  // after 2049: GeneralizedTime
        let c = try t.build(publicKey: key.publicKey, serial: [0x01, 0x02], issuerName: t.subject, issuerPublicKey: key.publicKey, signer: key, signatureBits: 0)
        return (c, key)
    }

    @Test func certificatesCarryWhatTheTemplateSays() throws {
        let (root, key) = try selfSigned()
        #expect(root.publicKey.isValidSignature(root.signature, for: root))
        #expect(try root.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: nil))
        var t = PKITemplate()
        t.subject = try PKITemplate.subject(cn: "leaf.example.com", organization: ["Org"], country: ["DE"])
        t.dnsNames = ["leaf.example.com"]
        t.ips = [PKITemplate.ipBytes("::1")!, PKITemplate.ipBytes("10.0.0.1")!]
        t.keyUsage = ["DigitalSignature"]
        t.extKeyUsage = ["ServerAuth"]
        t.notBefore = Date()
        t.notAfter = Date().addingTimeInterval(3600)
        let leafKey = try PKIKeyMaterial.generate(type: "ed25519", bits: 0)
        let leaf = try t.build(publicKey: leafKey.publicKey, serial: [0x7f], issuerName: root.subject, issuerPublicKey: root.publicKey, signer: key, signatureBits: 0)
        #expect(root.publicKey.isValidSignature(leaf.signature, for: leaf))
        #expect(try leaf.extensions.keyUsage?.digitalSignature == true)
        #expect(try leaf.extensions.extendedKeyUsage?.contains(.serverAuth) == true)
        #expect(try leaf.extensions.basicConstraints == nil)
        let sans = try #require(try leaf.extensions.subjectAlternativeNames)
        #expect(sans.count == 3)
        #expect(PKITemplate.commonName(leaf.subject) == "leaf.example.com")
        t.uris = ["not a uri with ü"]
        #expect(throws: CofferError.self) { try t.build(publicKey: leafKey.publicKey, serial: [1], issuerName: root.subject, issuerPublicKey: root.publicKey, signer: key, signatureBits: 0) }
        t.uris = []
        t.notAfter = t.notBefore
        #expect(throws: CofferError.self) { try t.build(publicKey: leafKey.publicKey, serial: [1], issuerName: root.subject, issuerPublicKey: root.publicKey, signer: key, signatureBits: 0) }
    }

    @Test func crlListsItsSerialsAndIsSignedByTheIssuer() throws {
        let (root, key) = try selfSigned()
        let entries = [PKIDER.RevokedEntry(serial: [0x01, 0x02, 0x03], revoked: Date()), PKIDER.RevokedEntry(serial: [0xff], revoked: Date())]
        let der = try PKIDER.crl(issuer: root, key: key.certificateKey, algorithm: .ecdsaWithSHA256, number: 7, thisUpdate: Date(),
                                 nextUpdate: Date().addingTimeInterval(3600), entries: entries)
        let serials = try PKIDER.crlSerials(der)
        #expect(serials == [[0x01, 0x02, 0x03], [0x00, 0xff]])  // DER INTEGERs stay positive
        // The signature covers the TBS exactly: verify it with the issuer's key.
        let node = try DER.parse(der)
        guard case .constructed(let parts) = node.content else { Issue.record("not a sequence"); return }
        let items = Array(parts)
        let sig = try ASN1BitString(derEncoded: items[2])
        let ecdsa = try P256.Signing.ECDSASignature(derRepresentation: sig.bytes)
        #expect(P256.Signing.PublicKey(root.publicKey)!.isValidSignature(ecdsa, for: SHA256.hash(data: items[0].encodedBytes)))
        let empty = try PKIDER.crl(issuer: root, key: key.certificateKey, algorithm: .ecdsaWithSHA256, number: 8, thisUpdate: Date(),
                                   nextUpdate: Date().addingTimeInterval(3600), entries: [], deltaOf: 7)
        #expect(try PKIDER.crlSerials(empty).isEmpty)
    }

    @Test func ocspRequestsParseAndGarbageIsMalformed() throws {
        let (root, _) = try selfSigned()
        var ns = DER.Serializer()
        try ns.serialize(root.subject)
        let id = PKIDER.CertID(hash: .sha1, nameHash: PKIDER.HashAlgorithm.sha1.hash(ns.serializedBytes),
                               keyHash: PKIDER.HashAlgorithm.sha1.hash(root.publicKey.subjectPublicKeyInfoBytes), serial: [0x42])
        #expect(try id.matches(root))
        // OCSPRequest { TBSRequest { requestList { Request { CertID } } } }
        var s = DER.Serializer()
        try s.appendConstructedNode(identifier: .sequence) { s in
            try s.appendConstructedNode(identifier: .sequence) { s in
                try s.appendConstructedNode(identifier: .sequence) { s in
                    try s.appendConstructedNode(identifier: .sequence) { s in try id.serialize(into: &s) }
                }
            }
        }
        let req = try PKIDER.parseOCSPRequest(s.serializedBytes)
        #expect(req.certIDs == [id] && req.nonce == nil)
        for bad in [[], [0x30, 0x00], [0x30, 0x03, 0x30, 0x01, 0x00], Array("hello".utf8), [UInt8](repeating: 0x30, count: 20_000)] as [[UInt8]] {
            #expect(throws: PKIDER.RequestError.self) { try PKIDER.parseOCSPRequest(bad) }
        }
        #expect(PKIDER.ocspStatusOnly(1) == [0x30, 0x03, 0x0a, 0x01, 0x01])
    }
}

extension PKITests {
    @Test func pemMatchesSwiftASN1sEncoder() {
        for n in [0, 1, 47, 48, 49, 95, 96, 500] {
            let der = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37) }
            #expect(PKIDER.pem("CERTIFICATE", der) == PEMDocument(type: "CERTIFICATE", derBytes: der).pemString, "\(n)")
        }
    }
}
