import CofferSDK
import Crypto
import Foundation
import SwiftASN1
import X509

/// CA generation and import, issuers, keys, and the fetch endpoints (`ca`, `cert/:serial`…).
extension PKIBackend {
    static let exportedField = Field("exported", .string)
    static let issuerRefField = Field("issuer_ref", .string)
    static let keyRefField = Field("key_ref", .string)

    static let issuerRoutes: [Route<PKIBackend>] = [
        Route("root/generate/:exported", fields: caFields + keyGenFields, operations: [.update: { try await $0.generateRoot($1) }], summary: "Generate a new CA certificate and private key used for signing."),
        Route("issuers/generate/root/:exported", fields: caFields + keyGenFields, operations: [.update: { try await $0.generateRoot($1) }], summary: "Generate a new CA certificate and private key used for signing."),
        Route("root/rotate/:exported", fields: caFields + keyGenFields, operations: [.update: { try await $0.generateRoot($1, rotate: true) }], summary: "Generate a new root certificate and key, the next default."),
        Route("intermediate/generate/:exported", fields: caFields + keyGenFields, operations: [.update: { try await $0.generateIntermediate($1) }], summary: "Generate a new CSR and private key used for signing."),
        Route("issuers/generate/intermediate/:exported", fields: caFields + keyGenFields, operations: [.update: { try await $0.generateIntermediate($1) }], summary: "Generate a new CSR and private key used for signing."),
        Route("intermediate/cross-sign", fields: caFields + keyGenFields, operations: [.update: { b, r in
            var r = r; r.fields.values["exported"] = "existing"; r.fields.provided.insert("exported"); return try await b.generateIntermediate(r)
        }], summary: "Generate a CSR with an existing key (cross-signing)."),
        Route("root/sign-intermediate", fields: caFields + [Field("csr", .string), Field("use_csr_values", .bool), Field("skid", .string), refField],
              operations: [.update: { try await $0.signIntermediate($1) }], summary: "Issue an intermediate CA certificate based on the provided CSR."),
        Route("issuer/:issuer_ref/sign-intermediate", fields: caFields + [Field("csr", .string), Field("use_csr_values", .bool), Field("skid", .string), issuerRefField],
              operations: [.update: { try await $0.signIntermediate($1) }], summary: "Issue an intermediate CA certificate based on the provided CSR."),
        Route("root/sign-self-issued", fields: [Field("certificate", .string), Field("require_matching_certificate_algorithms", .bool), refField],
              operations: [.update: { try await $0.signSelfIssued($1) }], summary: "Re-sign a self-issued CA certificate with the mount's issuer."),
        Route("issuer/:issuer_ref/sign-self-issued", fields: [Field("certificate", .string), Field("require_matching_certificate_algorithms", .bool), issuerRefField],
              operations: [.update: { try await $0.signSelfIssued($1) }], summary: "Re-sign a self-issued CA certificate with the mount's issuer."),
        Route("intermediate/set-signed", fields: [Field("certificate", .string)], operations: [.update: { try await $0.importBundle($1, allowKeys: false) }],
              summary: "Provide the signed intermediate CA cert."),
        Route("issuers/import/cert", fields: [Field("pem_bundle", .string)], operations: [.update: { try await $0.importBundle($1, allowKeys: false) }],
              summary: "Import issuer certificates."),
        Route("issuers/import/bundle", fields: [Field("pem_bundle", .string)], operations: [.update: { try await $0.importBundle($1, allowKeys: true) }],
              summary: "Import issuer certificates and keys."),
        Route("config/ca", fields: [Field("pem_bundle", .string)], operations: [.update: { try await $0.importBundle($1, allowKeys: true) }],
              summary: "Set the CA certificate and private key used for generated credentials."),
        Route("issuers/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listIssuers($1) }], summary: "List the issuers of the mount."),
        Route("issuer/:issuer_ref", fields: [
            issuerRefField, Field("issuer_name", .string), Field("manual_chain", .commaStringSlice), Field("leaf_not_after_behavior", .string, default: "err"),
            Field("usage", .commaStringSlice, default: ["read-only", "issuing-certificates", "crl-signing", "ocsp-signing"]),
            Field("revocation_signature_algorithm", .string), Field("issuing_certificates", .commaStringSlice),
            Field("crl_distribution_points", .commaStringSlice), Field("delta_crl_distribution_points", .commaStringSlice),
            Field("ocsp_servers", .commaStringSlice), Field("enable_aia_url_templating", .bool),
        ], operations: [
            .read: { try await $0.readIssuer($1) }, .update: { try await $0.updateIssuer($1, merge: false) },
            .patch: { try await $0.updateIssuer($1, merge: true) }, .delete: { try await $0.deleteIssuer($1) },
        ], summary: "Manage one issuer."),
        Route("issuer/:issuer_ref/json", fields: [issuerRefField], operations: [.read: { try await $0.fetchIssuer($1, as: "json") }], summary: "Fetch an issuer's certificate and chain."),
        Route("issuer/:issuer_ref/pem", fields: [issuerRefField], operations: [.read: { try await $0.fetchIssuer($1, as: "pem") }], summary: "Fetch an issuer's certificate (PEM)."),
        Route("issuer/:issuer_ref/der", fields: [issuerRefField], operations: [.read: { try await $0.fetchIssuer($1, as: "der") }], summary: "Fetch an issuer's certificate (DER)."),
        Route("issuer/:issuer_ref/revoke", fields: [issuerRefField], operations: [.update: { try await $0.revokeIssuer($1) }], summary: "Revoke an issuer."),
        Route("config/issuers", fields: [Field("default", .string), Field("default_follows_latest_issuer", .bool)], operations: [
            .read: { b, _ in try await b.readIssuersConfig() }, .update: { try await $0.writeIssuersConfig($1) },
        ], summary: "The default issuer."),
        Route("root/replace", fields: [Field("default", .string, default: "next")], operations: [.update: { try await $0.writeIssuersConfig($1) }],
              summary: "Make another issuer the default."),
        Route("root", operations: [.delete: { b, _ in try await b.deleteRoot() }], summary: "Delete every issuer and key of the mount."),
        Route("keys/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listKeys($1) }], summary: "List the keys of the mount."),
        Route("keys/generate/:exported", fields: [Self.exportedField, Field("key_type", .string, default: "rsa"), Field("key_bits", .int), Field("key_name", .string),
                                                 Field("managed_key_name", .string), Field("managed_key_id", .string), Field("external_key_ref", .string)],
              operations: [.update: { try await $0.generateKey($1) }], summary: "Generate a key."),
        Route("keys/import", fields: [Field("pem_bundle", .string), Field("key_name", .string)], operations: [.update: { try await $0.importKey($1) }], summary: "Import a key."),
        Route("key/:key_ref", fields: [keyRefField, Field("key_name", .string)], operations: [
            .read: { try await $0.readKey($1) }, .update: { try await $0.updateKey($1) }, .delete: { try await $0.deleteKey($1) },
        ], summary: "Manage one key."),
        Route("config/keys", fields: [Field("default", .string)], operations: [
            .read: { b, _ in LogicalResponse(data: ["default": .string(try await b.keysConfig().defaultKey)]) },
            .update: { try await $0.writeKeysConfig($1) },
        ], summary: "The default key."),
        Route("ca/pem", operations: [.read: { b, _ in try await b.fetchDefaultCA(pem: true) }], summary: "Fetch the default issuer's certificate (PEM)."),
        Route("ca", operations: [.read: { b, _ in try await b.fetchDefaultCA(pem: false) }], summary: "Fetch the default issuer's certificate (DER)."),
        Route("ca_chain", operations: [.read: { b, _ in try await b.fetchDefaultChain() }], summary: "Fetch the default issuer's chain (PEM)."),
        Route("cert/ca_chain", operations: [.read: { b, _ in try await b.readCertCAChain() }], summary: "Fetch the default issuer's chain."),
        Route("cert/:serial/raw/pem", fields: [Field("serial", .string)], operations: [.read: { try await $0.fetchCert($1, raw: "pem") }], summary: "Fetch a certificate (PEM)."),
        Route("cert/:serial/raw", fields: [Field("serial", .string)], operations: [.read: { try await $0.fetchCert($1, raw: "der") }], summary: "Fetch a certificate (DER)."),
        Route("cert/:serial", fields: [Field("serial", .string)], operations: [.read: { try await $0.fetchCert($1, raw: nil) }], summary: "Fetch a certificate by serial."),
        Route("certs/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listCerts($1, prefix: "certs/") }], summary: "List stored certificates."),
        Route("certs/revoked/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listCerts($1, prefix: "revoked/") }], summary: "List revoked certificates."),
    ]

    // MARK: generation

    /// The key of a generation request: a new one (`internal`, `exported`) or an existing one.
    func keyForGeneration(_ req: LogicalRequest) async throws -> (key: PKIKeyMaterial, record: PKIKey?, exported: Bool) {
        let mode = req.fields.string("exported")
        switch mode {
        case "internal", "exported":
            if !req.fields.string("external_key_ref").isEmpty { throw CofferError.invalid("cannot specify \"external_key_ref\" on \"\(mode)\"-typed generation requests") }
            let (type, bits) = (req.fields.string("key_type"), req.fields.int("key_bits"))
            if type == "rsa" && bits > 0 && bits < 2048 { throw CofferError.invalid("RSA keys < 2048 bits are unsafe and not supported: got \(bits)") }
            let k: PKIKeyMaterial = try await type == "rsa" ? CPUWork.shared.run { try PKIKeyMaterial.generate(type: type, bits: bits) } : PKIKeyMaterial.generate(type: type, bits: bits)
            return (k, nil, mode == "exported")
        case "existing":
            if req.fields.has("key_type") || req.fields.has("key_bits") {
                throw CofferError.invalid("invalid parameter for the kms/existing path parameter, key_type nor key_bits arguments can be set in this mode")
            }
            let rec = try await resolveKey(req.fields.string("key_ref"))
            return (try parsed.key(rec.pem), rec, false)
        case "kms", "managed":
            throw CofferError.invalid("managed (kms) keys are not supported by this server")
        default:
            throw CofferError.invalid("the \"exported\" path parameter must be \"internal\", \"existing\", exported\" or \"kms\"")
        }
    }

    func checkNewName(_ name: String, issuer: Bool, excluding: String = "") async throws {
        let what = issuer ? "issuer" : "key"
        guard !name.isEmpty else { return }
        if name == "default" { throw CofferError.invalid("reserved keyword 'default' can not be used as \(what) name") }
        _ = try Self.checkName(name, what: what)
        if issuer {
            if try await allIssuers().contains(where: { $0.name == name && $0.id != excluding }) { throw CofferError.invalid("issuer name already in use") }
        } else {
            if try await allKeys().contains(where: { $0.name == name && $0.id != excluding }) { throw CofferError.invalid("key name already in use") }
        }
    }

    /// NotAfter from `ttl` / `not_after` (or `fallback` seconds), capped at `max` with Vault's warning.
    func notAfter(_ req: LogicalRequest, ttl fallback: Int, max: Int, warnings: inout [String]) throws -> Date {
        let now = nowDate
        if req.fields.has("ttl") && req.fields.has("not_after") && !req.fields.string("not_after").isEmpty && req.fields.int("ttl") > 0 {
            throw CofferError.invalid("Either ttl or not_after should be provided. Both should not be provided in the same request.")
        }
        let na = req.fields.string("not_after")
        if !na.isEmpty {
            guard let d = RFC3339.parse(na) else { throw CofferError.invalid("failed to parse not_after \"\(na.prefix(64))\" as RFC3339") }
            return d
        }
        var ttl = req.fields.int("ttl")
        if ttl < 0 { throw CofferError.invalid("ttl must not be negative") }
        if ttl == 0 { ttl = fallback }
        if max > 0 && ttl > max {
            warnings.append("TTL \"\(GoDuration.format(ttl))\" is longer than permitted maxTTL \"\(GoDuration.format(max))\", so maxTTL is being used")
            ttl = max
        }
        return now.addingTimeInterval(Double(min(ttl, 100 * 365 * 86_400)))
    }

    func notBefore(_ req: LogicalRequest, duration: Int) throws -> Date {
        let nb = req.fields.string("not_before")
        if !nb.isEmpty {
            guard let d = RFC3339.parse(nb) else { throw CofferError.invalid("failed to parse not_before \"\(nb.prefix(64))\" as RFC3339") }
            return d
        }
        guard duration >= 0, duration <= 10 * 365 * 86_400 else { throw CofferError.invalid("not_before_duration out of range") }
        return nowDate.addingTimeInterval(-Double(duration))
    }

    /// The SANs a CA request asks for (no role: any name, as Vault's CA endpoints allow).
    func caTemplate(_ req: LogicalRequest, cn: String) throws -> PKITemplate {
        var t = PKITemplate()
        let f = req.fields
        t.subject = try PKITemplate.subject(cn: cn, ou: f.strings("ou"), organization: f.strings("organization"), country: f.strings("country"),
                                            locality: f.strings("locality"), province: f.strings("province"), street: f.strings("street_address"),
                                            postalCode: f.strings("postal_code"), serialNumber: f.string("serial_number"))
        var names = f.bool("exclude_cn_from_sans") || cn.isEmpty ? [] : [cn]
        names += f.strings("alt_names")
        for n in names {
            if n.contains("@") { if !t.emails.contains(n) { t.emails.append(n) } }
            else if PKINamePolicy.isHostname(n) { if !t.dnsNames.contains(n) { t.dnsNames.append(n) } }
        }
        for ip in f.strings("ip_sans") {
            guard let b = PKITemplate.ipBytes(ip) else { throw CofferError.invalid("the value \"\(ip.prefix(64))\" is not a valid IP address") }
            t.ips.append(b)
        }
        t.uris = f.strings("uri_sans")
        for o in f.strings("other_sans") {
            let (oid, value) = try PKINamePolicy.parseOtherSAN(o)
            t.otherNames.append((try PKITemplate.oid(oid, what: "an other SAN"), value))
        }
        t.isCA = true
        t.maxPathLength = f.int("max_path_length")
        t.permittedDNSDomains = f.strings("permitted_dns_domains")
        t.keyUsage = f.strings("key_usage").filter { $0.lowercased() == "digitalsignature" }
        t.extKeyUsage = f.strings("ext_key_usage")
        t.extKeyUsageOIDs = f.strings("ext_key_usage_oids")
        return t
    }

    /// AIA URLs for certificates an issuer signs: its own when set, else the mount's.
    func aia(for issuer: PKIIssuer?, id: String) async throws -> (issuing: [String], crl: [String], ocsp: [String]) {
        if let i = issuer, !(i.issuingCertificates.isEmpty && i.crlDistributionPoints.isEmpty && i.ocspServers.isEmpty) {
            return (i.issuingCertificates, i.crlDistributionPoints, i.ocspServers)
        }
        let u = try await urls()
        guard u.enableTemplating else { return (u.issuingCertificates, u.crlDistributionPoints, u.ocspServers) }
        let c = try await storage.getCodable(PKIClusterConfig.self, "config/cluster") ?? PKIClusterConfig()
        func expand(_ list: [String]) -> [String] {
            list.map { $0.replacingOccurrences(of: "{{issuer_id}}", with: id).replacingOccurrences(of: "{{cluster_path}}", with: c.path)
                .replacingOccurrences(of: "{{cluster_aia_path}}", with: c.aiaPath.isEmpty ? c.path : c.aiaPath) }
        }
        return (expand(u.issuingCertificates), expand(u.crlDistributionPoints), expand(u.ocspServers))
    }

    func generateRoot(_ req: LogicalRequest, rotate: Bool = false) async throws -> LogicalResponse? {
        var warnings: [String] = []
        let f = req.fields
        var issuerName = f.string("issuer_name")
        let nextUsed = try await allIssuers().contains { $0.name == "next" }
        if rotate && issuerName.isEmpty && !nextUsed { issuerName = "next" }
        try await checkNewName(issuerName, issuer: true)
        try await checkNewName(f.string("key_name"), issuer: false)
        let (key, existing, exported) = try await keyForGeneration(req)
        let cn = f.string("common_name")
        var t = try caTemplate(req, cn: cn)
        t.notBefore = try notBefore(req, duration: f.has("not_before_duration") ? f.int("not_before_duration") : 30)
        t.notAfter = try notAfter(req, ttl: defaultTTL, max: maxTTL, warnings: &warnings)
        let issuerID = UUID().uuidString.lowercased()
        let u = try await aia(for: nil, id: issuerID)
        (t.issuingCertificates, t.crlDistributionPoints, t.ocspServers) = u
        if u.issuing.isEmpty && u.crl.isEmpty && u.ocsp.isEmpty {
            warnings.append("This mount hasn't configured any authority information access (AIA) fields; this may make it harder for systems to find missing certificates in the chain or to validate revocation status of certificates. Consider updating /config/urls or the newly generated issuer with this information.")
        }
        let serial = Self.newSerial()
        let cert = try t.build(publicKey: key.publicKey, serial: serial, issuerName: t.subject, issuerPublicKey: key.publicKey, signer: key,
                               signatureBits: f.int("signature_bits"))
        let pem = try Self.pem(cert)
        let keyRecord = existing ?? PKIKey(id: UUID().uuidString.lowercased(), name: f.string("key_name"), type: key.type, bits: key.bits, pem: key.storedPEM)
        let issuer = PKIIssuer(id: issuerID, name: issuerName, keyID: keyRecord.id, certificate: pem, revocationSignatureAlgorithm: Self.algorithmName(cert.signatureAlgorithm),
                               serial: Self.serialString(serial), notAfter: Int64(cert.notValidAfter.timeIntervalSince1970))
        try await storeNewIssuer(issuer, key: existing == nil ? keyRecord : nil, cert: cert)
        var d: [String: JSONValue] = [
            "certificate": .string(Self.trimmedPEM(pem)), "issuing_ca": .string(Self.trimmedPEM(pem)), "serial_number": .string(issuer.serial),
            "expiration": .int(issuer.notAfter), "issuer_id": .string(issuerID), "issuer_name": .string(issuerName),
            "key_id": .string(keyRecord.id), "key_name": .string(keyRecord.name),
        ]
        if exported {
            d["private_key"] = .string(Self.trimmedPEM(try key.pem(format: f.string("private_key_format"))))
            d["private_key_type"] = .string(key.type)
        }
        try Self.applyFormat(&d, format: f.string("format"), keys: ["certificate", "issuing_ca"], privateKey: exported)
        let r = LogicalResponse(data: d, warnings: warnings)
        return r
    }

    /// Stores a new issuer (and its key), makes them the defaults when there are none (or
    /// the config follows the latest issuer), records the certificate, and refreshes chains and CRL.
    func storeNewIssuer(_ issuer: PKIIssuer, key: PKIKey?, cert: Certificate) async throws {
        try await storage.withLock("config/issuers") {
            if let key {
                try await storage.putCodable("key/" + key.id, key)
                var kc = try await keysConfig()
                if kc.defaultKey.isEmpty { kc.defaultKey = key.id; try await storage.putCodable("config/keys", kc) }
            }
            try await storage.putCodable("issuer/" + issuer.id, issuer)
            var ic = try await issuersConfig()
            if !issuer.keyID.isEmpty && (ic.defaultIssuer.isEmpty || ic.defaultFollowsLatestIssuer) {
                ic.defaultIssuer = issuer.id
                try await storage.putCodable("config/issuers", ic)
            }
            try await rebuildChains()
        }
        try await storeCertificate(cert, issuerID: issuer.id)
        try? await rebuildCRL(issuerID: issuer.id)
    }

    /// Recomputes every issuer's parents (by subject and signature among the mount's issuers).
    func rebuildChains() async throws {
        let all = try await allIssuers()
        let certs = try all.map { try certificate(of: $0) }
        for (n, var i) in all.enumerated() {
            var parents: [String] = []
            var current = certs[n]
            var seen: Set<Int> = [n]
            while current.issuer != current.subject, parents.count < 16 {
                guard let p = certs.indices.first(where: { !seen.contains($0) && certs[$0].subject == current.issuer && certs[$0].publicKey.isValidSignature(current.signature, for: current) }) else { break }
                seen.insert(p)
                parents.append(all[p].certificate)
                current = certs[p]
            }
            if !i.manualChain.isEmpty {
                var manual: [String] = []
                for ref in i.manualChain.dropFirst(i.manualChain.first == "self" ? 1 : 0) {
                    if let m = all.first(where: { $0.id == ref || $0.name == ref }) { manual.append(m.certificate) }
                }
                parents = manual
            }
            if parents != i.parents {
                i.parents = parents
                try await storage.putCodable("issuer/" + i.id, i)
            }
        }
    }

    func storeCertificate(_ cert: Certificate, issuerID: String) async throws {
        let serial = Self.serialString(cert.serialNumber.bytes)
        let record = PKICertificate(serial: serial, certificate: try Self.pem(cert), issuerID: issuerID, notAfter: Int64(cert.notValidAfter.timeIntervalSince1970))
        try await storage.putCodable("certs/" + Self.serialKey(serial), record)
    }

    static func algorithmName(_ a: Certificate.SignatureAlgorithm) -> String {
        switch a {
        case .sha256WithRSAEncryption: "SHA256WithRSA"
        case .sha384WithRSAEncryption: "SHA384WithRSA"
        case .sha512WithRSAEncryption: "SHA512WithRSA"
        case .ecdsaWithSHA256: "ECDSAWithSHA256"
        case .ecdsaWithSHA384: "ECDSAWithSHA384"
        case .ecdsaWithSHA512: "ECDSAWithSHA512"
        case .ed25519: "Ed25519"
        default: ""
        }
    }

    /// `format=der` (base64 DER) and `pem_bundle` (key, certificate and chain in one PEM).
    static func applyFormat(_ d: inout [String: JSONValue], format: String, keys: [String], privateKey: Bool, chainKey: String? = nil) throws {
        switch format {
        case "", "pem": return
        case "der":
            for k in keys + (chainKey.map { [$0] } ?? []) {
                if let s = d[k]?.stringValue { d[k] = .string(try derBase64(s)) }
                if let a = d[k]?.arrayValue { d[k] = .array(try a.map { .string(try derBase64($0.stringValue ?? "")) }) }
            }
            if privateKey, let s = d["private_key"]?.stringValue { d["private_key"] = .string(try derBase64(s)) }
        case "pem_bundle":
            var parts: [String] = []
            if privateKey, let k = d["private_key"]?.stringValue { parts.append(k) }
            if let c = d["certificate"]?.stringValue { parts.append(c) }
            if let chainKey, let a = d[chainKey]?.arrayValue { parts += a.compactMap(\.stringValue) }
            d["certificate"] = .string(parts.joined(separator: "\n"))
        default:
            throw CofferError.invalid("the \"format\" path parameter must be \"pem\", \"der\", or \"pem_bundle\"")
        }
    }

    static func derBase64(_ pem: String) throws -> String {
        guard let doc = try? PEMDocument(pemString: pem) else { return pem }
        return Data(doc.derBytes).base64EncodedString()
    }

    func generateIntermediate(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        try await checkNewName(f.string("key_name"), issuer: false)
        let (key, existing, exported) = try await keyForGeneration(req)
        let t = try caTemplate(req, cn: f.string("common_name"))
        try t.checkNames()
        var exts: [Certificate.Extension] = []
        var sans: [GeneralName] = t.dnsNames.map { .dnsName($0) } + t.emails.map { .rfc822Name($0) }
        sans += t.ips.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) } + t.uris.map { .uniformResourceIdentifier($0) }
        if !sans.isEmpty { exts.append(try Certificate.Extension(SubjectAlternativeNames(sans), critical: false)) }
        if f.bool("add_basic_constraints") {
            exts.append(try Certificate.Extension(BasicConstraints.isCertificateAuthority(maxPathLength: t.maxPathLength < 0 ? nil : t.maxPathLength), critical: true))
        }
        let attributes = exts.isEmpty ? CertificateSigningRequest.Attributes()
            : CertificateSigningRequest.Attributes([try .init(ExtensionRequest(extensions: try Certificate.Extensions(exts)))])
        let csr = try CertificateSigningRequest(version: .v1, subject: t.subject, privateKey: key.certificateKey, attributes: attributes,
                                                signatureAlgorithm: try key.signatureAlgorithm(bits: f.int("signature_bits")))
        let keyRecord = existing ?? PKIKey(id: UUID().uuidString.lowercased(), name: f.string("key_name"), type: key.type, bits: key.bits, pem: key.storedPEM)
        if existing == nil {
            try await storage.withLock("config/issuers") {
                try await storage.putCodable("key/" + keyRecord.id, keyRecord)
                var kc = try await keysConfig()
                if kc.defaultKey.isEmpty { kc.defaultKey = keyRecord.id; try await storage.putCodable("config/keys", kc) }
            }
        }
        var d: [String: JSONValue] = ["csr": .string(Self.trimmedPEM(try csr.serializeAsPEM().pemString)), "key_id": .string(keyRecord.id)]
        if exported {
            d["private_key"] = .string(Self.trimmedPEM(try key.pem(format: f.string("private_key_format"))))
            d["private_key_type"] = .string(key.type)
        }
        switch f.string("format") {
        case "", "pem": break
        case "der":
            d["csr"] = .string(try Self.derBase64(d["csr"]?.stringValue ?? ""))
            if exported { d["private_key"] = .string(try Self.derBase64(d["private_key"]?.stringValue ?? "")) }
        case "pem_bundle":
            if exported { d["csr"] = .string((d["private_key"]?.stringValue ?? "") + "\n" + (d["csr"]?.stringValue ?? "")) }
        default: throw CofferError.invalid("the \"format\" path parameter must be \"pem\", \"der\", or \"pem_bundle\"")
        }
        return LogicalResponse(data: d)
    }

    static func parseCSR(_ text: String) throws -> CertificateSigningRequest {
        guard !text.isEmpty else { throw CofferError.invalid("\"csr\" is empty") }
        let csr: CertificateSigningRequest
        do {
            if let doc = try? PEMDocument(pemString: text) {
                csr = try CertificateSigningRequest(derEncoded: doc.derBytes)
            } else {
                throw CofferError.invalid("csr contains no data")
            }
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError.invalid("certificate request could not be parsed: \(String(describing: error).prefix(200))")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else { throw CofferError.invalid("request signature invalid") }
        return csr
    }

    /// The issuer a signing request uses (a path's `issuer_ref`, else the field), ready to sign.
    func signingIssuer(_ req: LogicalRequest, ref: String? = nil) async throws -> (issuer: PKIIssuer, cert: Certificate, key: PKIKeyMaterial) {
        let r = ref ?? (req.captures["issuer_ref"] ?? req.fields.string("issuer_ref"))
        let issuer: PKIIssuer
        do {
            issuer = try await resolveIssuer(r)
        } catch let e as CofferError {
            throw CofferError.invalid("could not fetch the CA certificate (was one set?): \(e.message)")
        }
        guard issuer.allows("issuing-certificates") else {
            throw CofferError.invalid("error fetching CA certificate: error while attempting to use issuer \(issuer.id): requested usage issuing-certificates for issuer [id:\(issuer.id)] but only had usage \(issuer.usage)")
        }
        return (issuer, try certificate(of: issuer), try await signingKey(of: issuer))
    }

    func signIntermediate(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let csr = try Self.parseCSR(f.string("csr"))
        let (issuer, issuerCert, key) = try await signingIssuer(req)
        var warnings: [String] = []
        if let bc = try? issuerCert.extensions.basicConstraints, case .isCertificateAuthority(maxPathLength: 0) = bc {
            throw CofferError.invalid("signing certificate has a max path length of zero, and cannot issue further CA certificates")
        }
        var t: PKITemplate
        if f.bool("use_csr_values") {
            t = PKITemplate()
            t.subject = csr.subject
            t.isCA = true
            if let er = try? csr.attributes.extensionRequest {
                t.copiedExtensions = Array(er.extensions).filter { $0.oid != [2, 5, 29, 19] && $0.oid != [2, 5, 29, 15] }
            }
            t.maxPathLength = f.int("max_path_length")
        } else {
            let cn = f.string("common_name").isEmpty ? PKITemplate.commonName(csr.subject) : f.string("common_name")
            t = try caTemplate(req, cn: cn)
        }
        if !f.has("max_path_length") || f.int("max_path_length") < 0 {
            if let bc = try? issuerCert.extensions.basicConstraints, case .isCertificateAuthority(maxPathLength: let n?) = bc { t.maxPathLength = max(0, n - 1) } else { t.maxPathLength = -1 }
        }
        t.notBefore = try notBefore(req, duration: f.has("not_before_duration") ? f.int("not_before_duration") : 30)
        t.notAfter = try notAfter(req, ttl: defaultTTL, max: maxTTL, warnings: &warnings)
        if t.notAfter > issuerCert.notValidAfter {
            warnings.append("The expiration time for the signed certificate is after the CA's expiration time. If the new certificate is not treated as a root, validation paths with the certificate past the issuing CA's expiration time will fail.")
        }
        (t.issuingCertificates, t.crlDistributionPoints, t.ocspServers) = try await aia(for: issuer, id: issuer.id)
        if !f.string("skid").isEmpty {
            let hex = f.string("skid").filter { $0 != ":" && $0 != "-" && $0 != " " }
            guard hex.utf8.count <= 128, let b = Hex.decode(hex) else { throw CofferError.invalid("unable to parse skid as hex") }
            t.skid = b
        }
        let cert = try t.build(publicKey: csr.publicKey, serial: Self.newSerial(), issuerName: issuerCert.subject, issuerPublicKey: issuerCert.publicKey,
                               signer: key, signatureBits: f.int("signature_bits"))
        try await storeCertificate(cert, issuerID: issuer.id)
        let pem = Self.trimmedPEM(try Self.pem(cert))
        var d: [String: JSONValue] = [
            "certificate": .string(pem), "issuing_ca": .string(Self.trimmedPEM(issuer.certificate)),
            "ca_chain": .array(([pem] + chain(of: issuer).map(Self.trimmedPEM)).map { .string($0) }),
            "serial_number": .string(Self.serialString(cert.serialNumber.bytes)), "expiration": .int(Int64(cert.notValidAfter.timeIntervalSince1970)),
        ]
        let format = f.string("format")
        guard ["", "pem", "der", "pem_bundle"].contains(format) else { throw CofferError.invalid("The \"format\" path parameter must be \"pem\" or \"der\"") }
        if format == "pem_bundle" {
            d["certificate"] = .string(([pem] + chain(of: issuer).map(Self.trimmedPEM)).joined(separator: "\n"))
        } else {
            try Self.applyFormat(&d, format: format, keys: ["certificate", "issuing_ca"], privateKey: false, chainKey: "ca_chain")
        }
        return LogicalResponse(data: d, warnings: warnings)
    }

    func signSelfIssued(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let text = req.fields.string("certificate")
        let blocks = try Self.pemBlocks(text).filter { $0.label == "CERTIFICATE" }
        guard !blocks.isEmpty else { throw CofferError.invalid("certificate could not be PEM-decoded") }
        guard blocks.count == 1 else { throw CofferError.invalid("\(blocks.count) certificates found in PEM file, expected 1") }
        let cert = try Self.parseCertificate(blocks[0].pem)
        guard let bc = try? cert.extensions.basicConstraints, case .isCertificateAuthority = bc else { throw CofferError.invalid("given certificate is not a CA certificate") }
        guard cert.issuer == cert.subject else { throw CofferError.invalid("given certificate is not self-issued") }
        let (issuer, issuerCert, key) = try await signingIssuer(req)
        var exts = Array(cert.extensions).filter { $0.oid != [2, 5, 29, 35] && $0.oid != [1, 3, 6, 1, 5, 5, 7, 1, 1] && $0.oid != [2, 5, 29, 31] }
        exts.append(try Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: issuerCert.publicKey).keyIdentifier), critical: false))
        let u = try await aia(for: issuer, id: issuer.id)
        var aia: [AuthorityInformationAccess.AccessDescription] = u.ocsp.map { .init(method: .ocspServer, location: .uniformResourceIdentifier($0)) }
        aia += u.issuing.map { .init(method: .issuingCA, location: .uniformResourceIdentifier($0)) }
        if !aia.isEmpty { exts.append(try Certificate.Extension(AuthorityInformationAccess(aia), critical: false)) }
        if !u.crl.isEmpty { exts.append(try PKITemplate.crlDistributionPoints(u.crl)) }
        let signed = try Certificate(version: .v3, serialNumber: cert.serialNumber, publicKey: cert.publicKey, notValidBefore: cert.notValidBefore,
                                     notValidAfter: cert.notValidAfter, issuer: issuerCert.subject, subject: cert.subject,
                                     signatureAlgorithm: try key.signatureAlgorithm(), extensions: try Certificate.Extensions(exts), issuerPrivateKey: key.certificateKey)
        return LogicalResponse(data: ["certificate": .string(Self.trimmedPEM(try Self.pem(signed))), "issuing_ca": .string(Self.trimmedPEM(issuer.certificate))])
    }

    // MARK: import

    func importBundle(_ req: LogicalRequest, allowKeys: Bool) async throws -> LogicalResponse? {
        let bundle = req.fields.string("pem_bundle"), certText = req.fields.string("certificate")
        if bundle.isEmpty && certText.isEmpty { throw CofferError.invalid("'pem_bundle' and 'certificate' parameters were empty") }
        if !bundle.isEmpty && !certText.isEmpty { throw CofferError.invalid("'pem_bundle' and 'certificate' parameters were both provided") }
        let text = bundle.isEmpty ? certText : bundle
        if text.utf8.count < 75 { throw CofferError.invalid("provided data for import was too short; perhaps a path was passed to the API rather than the contents of a PEM file") }
        var certs: [(Certificate, String)] = []
        var newKeys: [PKIKeyMaterial] = []
        for (n, block) in try Self.pemBlocks(text).enumerated() {
            switch block.label {
            case "CERTIFICATE", "X509 CERTIFICATE":
                let c: Certificate
                do { c = try Certificate(pemEncoded: block.pem.replacingOccurrences(of: "X509 CERTIFICATE", with: "CERTIFICATE")) } catch {
                    throw CofferError.invalid("error when parsing block \(n): invalid PEM data")
                }
                guard let bc = try? c.extensions.basicConstraints, case .isCertificateAuthority = bc else {
                    throw CofferError.invalid("Error parsing issuer \(certs.count): Refusing to import non-CA certificate")
                }
                certs.append((c, try Self.pem(c)))
            case "X509 CRL", "CRL", "EC PARAMETERS", "EC PARAMS":
                continue
            default:
                guard allowKeys else { throw CofferError.invalid("private keys found in the PEM bundle but not allowed by the path; use /issuers/import/bundle") }
                newKeys.append(try PKIKeyMaterial(pem: block.pem))
            }
        }
        if certs.isEmpty && newKeys.isEmpty { throw CofferError.invalid("error when parsing block 0: invalid PEM data") }
        var importedIssuers: [String] = [], importedKeys: [String] = [], existingIssuers: [String] = [], existingKeys: [String] = []
        var mapping: [String: JSONValue] = [:]
        var warnings: [String] = []
        try await storage.withLock("config/issuers") {
            var keysNow = try await allKeys()
            for k in newKeys {
                if let have = try keysNow.first(where: { try parsed.key($0.pem).publicKey == k.publicKey }) {
                    existingKeys.append(have.id)
                    continue
                }
                let rec = PKIKey(id: UUID().uuidString.lowercased(), type: k.type, bits: k.bits, pem: k.storedPEM)
                try await storage.putCodable("key/" + rec.id, rec)
                keysNow.append(rec)
                importedKeys.append(rec.id)
            }
            var kc = try await keysConfig()
            if kc.defaultKey.isEmpty, let first = importedKeys.first { kc.defaultKey = first; try await storage.putCodable("config/keys", kc) }
            let issuersNow = try await allIssuers()
            var ic = try await issuersConfig()
            var importedPEMs = Set<String>()
            for (c, pem) in certs {
                let keyID = try keysNow.first(where: { try parsed.key($0.pem).publicKey == c.publicKey })?.id ?? ""
                if importedPEMs.contains(pem) { continue }
                importedPEMs.insert(pem)
                if var have = issuersNow.first(where: { $0.certificate == pem }) {
                    existingIssuers.append(have.id)
                    if have.keyID.isEmpty && !keyID.isEmpty { have.keyID = keyID; try await storage.putCodable("issuer/" + have.id, have) }
                    mapping[have.id] = .string(have.keyID.isEmpty ? keyID : have.keyID)
                    continue
                }
                var i = PKIIssuer(id: UUID().uuidString.lowercased(), keyID: keyID, certificate: pem, revocationSignatureAlgorithm: Self.algorithmName(c.signatureAlgorithm),
                                  serial: Self.serialString(c.serialNumber.bytes), notAfter: Int64(c.notValidAfter.timeIntervalSince1970))
                if let ku = try? c.extensions.keyUsage, !ku.cRLSign { i.usage = "read-only,issuing-certificates,ocsp-signing" }
                try await storage.putCodable("issuer/" + i.id, i)
                importedIssuers.append(i.id)
                mapping[i.id] = .string(keyID)
                if !keyID.isEmpty && (ic.defaultIssuer.isEmpty || ic.defaultFollowsLatestIssuer) {
                    ic.defaultIssuer = i.id
                    try await storage.putCodable("config/issuers", ic)
                }
            }
            // Keys imported after their certificates: link the issuers that lacked one.
            for var i in try await allIssuers() where i.keyID.isEmpty {
                let c = try certificate(of: i)
                if let k = try keysNow.first(where: { try parsed.key($0.pem).publicKey == c.publicKey }) {
                    i.keyID = k.id
                    try await storage.putCodable("issuer/" + i.id, i)
                    mapping[i.id] = .string(k.id)
                    if ic.defaultIssuer.isEmpty { ic.defaultIssuer = i.id; try await storage.putCodable("config/issuers", ic) }
                }
            }
            try await rebuildChains()
            if ic.defaultIssuer.isEmpty && !importedIssuers.isEmpty {
                warnings.append("This mount hasn't configured a default issuer with a key; the imported issuers cannot sign.")
            }
        }
        for id in importedIssuers { try? await rebuildCRL(issuerID: id) }
        func list(_ a: [String]) -> JSONValue { a.isEmpty ? .null : .array(a.map { .string($0) }) }
        return LogicalResponse(data: [
            "imported_issuers": list(importedIssuers), "imported_keys": list(importedKeys), "existing_issuers": list(existingIssuers),
            "existing_keys": list(existingKeys), "mapping": .object(mapping),
        ], warnings: warnings)
    }

    // MARK: issuers

    func listIssuers(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let cfg = try await issuersConfig()
        var r = LogicalResponse.list(try await storage.list(prefix: "issuer/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
        var info: [String: JSONValue] = [:]
        for case .string(let id) in r.data?["keys"]?.arrayValue ?? [] {
            guard let i = try await issuer(id: id) else { continue }
            info[id] = ["issuer_name": .string(i.name), "is_default": .bool(cfg.defaultIssuer == id), "key_id": .string(i.keyID), "serial_number": .string(i.serial)]
        }
        r.data?["key_info"] = .object(info)
        return r
    }

    func issuerData(_ i: PKIIssuer) -> [String: JSONValue] {
        var d: [String: JSONValue] = [
            "issuer_id": .string(i.id), "issuer_name": .string(i.name), "key_id": .string(i.keyID),
            "certificate": .string(Self.trimmedPEM(i.certificate) + "\n"),
            "ca_chain": .array(chain(of: i).map { .string(Self.trimmedPEM($0) + "\n") }),
            "manual_chain": i.manualChain.isEmpty ? .null : .array(i.manualChain.map { .string($0) }),
            "leaf_not_after_behavior": .string(i.leafNotAfterBehavior), "usage": .string(i.usage.split(separator: ",").sorted().joined(separator: ",")),
            "revocation_signature_algorithm": .string(i.revocationSignatureAlgorithm), "revoked": .bool(i.revoked),
            "issuing_certificates": .array(i.issuingCertificates.map { .string($0) }),
            "crl_distribution_points": .array(i.crlDistributionPoints.map { .string($0) }),
            "delta_crl_distribution_points": .array([]), "ocsp_servers": .array(i.ocspServers.map { .string($0) }),
            "enable_aia_url_templating": .bool(i.enableAIAURLTemplating),
        ]
        if i.revoked {
            d["revocation_time"] = .int(i.revocationTime)
            d["revocation_time_rfc3339"] = .string(RFC3339.format(Date(timeIntervalSince1970: Double(i.revocationTime))))
        }
        return d
    }

    func readIssuer(_ req: LogicalRequest) async throws -> LogicalResponse? {
        LogicalResponse(data: issuerData(try await resolveIssuer(req.fields.string("issuer_ref"))))
    }

    static let usages: Set<String> = ["read-only", "issuing-certificates", "crl-signing", "ocsp-signing"]

    func updateIssuer(_ req: LogicalRequest, merge: Bool) async throws -> LogicalResponse? {
        let f = req.fields
        let found = try await resolveIssuer(f.string("issuer_ref"))
        let updated: PKIIssuer = try await storage.withLock("config/issuers") {
            guard var i = try await issuer(id: found.id) else { throw CofferError.invalid("unable to find PKI issuer for reference: \(found.id)") }
            func take(_ name: String) -> Bool { !merge || f.has(name) }
            if take("issuer_name") {
                let n = f.string("issuer_name")
                if n != i.name { try await checkNewName(n, issuer: true, excluding: i.id) }
                i.name = n
            }
            if take("leaf_not_after_behavior") {
                let b = f.has("leaf_not_after_behavior") ? f.string("leaf_not_after_behavior") : "err"
                guard ["err", "truncate", "permit"].contains(b) else {
                    throw CofferError.invalid("Unknown value for field `leaf_not_after_behavior`. Possible values are `err`, `truncate`, and `permit`.")
                }
                i.leafNotAfterBehavior = b
            }
            if take("usage") {
                let list = f.has("usage") ? f.strings("usage") : ["read-only", "issuing-certificates", "crl-signing", "ocsp-signing"]
                for u in list where !Self.usages.contains(u) { throw CofferError.invalid("Unable to parse specified usages: unknown usage \"\(u.prefix(64))\"") }
                var set = Set(list)
                set.insert("read-only")
                if i.revoked && set.contains("issuing-certificates") {
                    throw CofferError.invalid("This issuer was revoked; unable to modify its usage to include certificate signing again. Reissue this certificate (preferably with a new key) and modify that entry instead.")
                }
                if set.contains("crl-signing"), let ku = try? certificate(of: i).extensions.keyUsage, !ku.cRLSign {
                    throw CofferError.invalid("This issuer's underlying certificate lacks the CRLSign KeyUsage value; unable to set CRLSigning usage.")
                }
                i.usage = set.sorted().joined(separator: ",")
            }
            if take("revocation_signature_algorithm") {
                let a = f.string("revocation_signature_algorithm")
                let known = ["", "SHA256WithRSA", "SHA384WithRSA", "SHA512WithRSA", "ECDSAWithSHA256", "ECDSAWithSHA384", "ECDSAWithSHA512", "Ed25519", "PureEd25519"]
                guard let match = known.first(where: { $0.lowercased() == a.lowercased() }) else { throw CofferError.invalid("Unknown signature algorithm value: \(a.prefix(64))") }
                i.revocationSignatureAlgorithm = match
            }
            for (name, path) in [("issuing_certificates", \PKIIssuer.issuingCertificates), ("crl_distribution_points", \PKIIssuer.crlDistributionPoints), ("ocsp_servers", \PKIIssuer.ocspServers)] where take(name) {
                let list = f.strings(name)
                try Self.checkURLs(list, field: name)
                i[keyPath: path] = list
            }
            if take("enable_aia_url_templating") { i.enableAIAURLTemplating = f.bool("enable_aia_url_templating") }
            if take("manual_chain") {
                let chain = f.strings("manual_chain")
                if let first = chain.first, first != "self" && first != i.id && first != i.name {
                    throw CofferError.invalid("expected first cert in chain to be a self-reference, but was: \(first.prefix(64))")
                }
                i.manualChain = chain
            }
            try await storage.putCodable("issuer/" + i.id, i)
            try await rebuildChains()
            return try await issuer(id: i.id) ?? i
        }
        return LogicalResponse(data: issuerData(updated))
    }

    static func checkURLs(_ list: [String], field: String) throws {
        for u in list {
            guard let url = URL(string: u), let scheme = url.scheme, !scheme.isEmpty, let host = url.host, !host.isEmpty else {
                throw CofferError.invalid("invalid URL found in Authority Information Access (AIA) parameter \(field): \(u.prefix(128))")
            }
        }
    }

    func deleteIssuer(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let i = try? await resolveIssuer(req.fields.string("issuer_ref")) else { return .done }
        var warnings: [String] = []
        try await storage.withLock("config/issuers") {
            try await storage.delete("issuer/" + i.id)
            try await storage.delete("crl/" + i.id)
            var ic = try await issuersConfig()
            if ic.defaultIssuer == i.id {
                ic.defaultIssuer = ""
                try await storage.putCodable("config/issuers", ic)
                warnings.append("Deleted issuer \(i.id) (via issuer_ref \(req.fields.string("issuer_ref").prefix(64))); this was configured as the default issuer. Operations without an explicit issuer will not work until a new default is configured.")
            }
            try await rebuildChains()
        }
        return warnings.isEmpty ? .done : LogicalResponse(warnings: warnings)
    }

    func fetchIssuer(_ req: LogicalRequest, as form: String) async throws -> LogicalResponse? {
        let i = try await resolveIssuer(req.fields.string("issuer_ref"))
        switch form {
        case "pem": return LogicalResponse(form: .bytes(contentType: "application/pem-certificate-chain", body: Array((Self.trimmedPEM(i.certificate) + "\n").utf8), status: 200))
        case "der": return LogicalResponse(form: .bytes(contentType: "application/pkix-cert", body: try Self.der(try certificate(of: i)), status: 200))
        default:
            return LogicalResponse(data: ["certificate": .string(Self.trimmedPEM(i.certificate) + "\n"), "ca_chain": .array(chain(of: i).map { .string(Self.trimmedPEM($0) + "\n") }),
                                          "issuer_id": .string(i.id), "issuer_name": .string(i.name)])
        }
    }

    func revokeIssuer(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let found = try await resolveIssuer(req.fields.string("issuer_ref"))
        let now = Int64(nowDate.timeIntervalSince1970)
        let i: PKIIssuer = try await storage.withLock("config/issuers") {
            guard var i = try await issuer(id: found.id) else { throw CofferError.invalid("unable to find PKI issuer for reference: \(found.id)") }
            if !i.revoked {
                i.revoked = true
                i.revocationTime = now
                i.usage = i.usage.split(separator: ",").filter { $0 != "issuing-certificates" }.joined(separator: ",")
                try await storage.putCodable("issuer/" + i.id, i)
            }
            return i
        }
        var warnings: [String] = []
        let cert = try certificate(of: i)
        // The issuer goes on its parents' CRLs (a self-signed one has none in the mount).
        if cert.issuer == cert.subject {
            warnings.append("This issuer is self-signed; its revocation is recorded but it cannot appear on a CRL of its own.")
        } else {
            let serial = Self.serialString(cert.serialNumber.bytes)
            let parents = try await allIssuers().filter { p in (try? certificate(of: p)).map { $0.subject == cert.issuer && $0.publicKey.isValidSignature(cert.signature, for: cert) } ?? false }
            if let parent = parents.first {
                let entry = PKIRevocation(serial: serial, issuerID: parent.id, revocationTime: now, notAfter: i.notAfter, certificate: i.certificate)
                try await storage.putCodable("revoked/" + Self.serialKey(serial), entry)
                try? await rebuildCRL(issuerID: parent.id)
            } else {
                warnings.append("This issuer lacks another parent issuer within the mount; it will not appear on any CRL of this mount.")
            }
        }
        return LogicalResponse(data: issuerData(i), warnings: warnings)
    }

    func readIssuersConfig() async throws -> LogicalResponse? {
        let c = try await issuersConfig()
        return LogicalResponse(data: ["default": .string(c.defaultIssuer), "default_follows_latest_issuer": .bool(c.defaultFollowsLatestIssuer)])
    }

    func writeIssuersConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var warnings: [String] = []
        try await storage.withLock("config/issuers") {
            var c = try await issuersConfig()
            if req.fields.has("default") || req.path == "root/replace" {
                let ref = req.fields.string("default")
                guard !ref.isEmpty, ref != "default" else { throw CofferError.invalid("Invalid issuer specification; must be non-empty and can't be 'default'.") }
                let i: PKIIssuer
                do { i = try await resolveIssuer(ref) } catch let e as CofferError { throw CofferError.invalid("Error resolving issuer reference: \(e.message)") }
                if i.keyID.isEmpty { warnings.append("Issuer \(i.id) has no key associated with it; it cannot be used to sign certificates.") }
                c.defaultIssuer = i.id
            }
            if req.fields.has("default_follows_latest_issuer") { c.defaultFollowsLatestIssuer = req.fields.bool("default_follows_latest_issuer") }
            try await storage.putCodable("config/issuers", c)
        }
        var r = try await readIssuersConfig()
        r?.warnings = warnings
        return r
    }

    func deleteRoot() async throws -> LogicalResponse? {
        try await storage.withLock("config/issuers") {
            for id in try await storage.list(prefix: "issuer/") { try await storage.delete("issuer/" + id) }
            for id in try await storage.list(prefix: "key/") { try await storage.delete("key/" + id) }
            for id in try await storage.list(prefix: "crl/") { try await storage.delete("crl/" + id) }
            try await storage.delete("config/issuers")
            try await storage.delete("config/keys")
        }
        return LogicalResponse(warnings: ["DELETE /root deletes all keys and issuers; prefer the new DELETE /key/:key_ref and DELETE /issuer/:issuer_ref for finer granularity, unless removal of all keys and issuers is desired."])
    }

    // MARK: keys

    func listKeys(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let cfg = try await keysConfig()
        var r = LogicalResponse.list(try await storage.list(prefix: "key/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
        var info: [String: JSONValue] = [:]
        for case .string(let id) in r.data?["keys"]?.arrayValue ?? [] {
            guard let k = try await key(id: id) else { continue }
            info[id] = ["key_name": .string(k.name), "is_default": .bool(cfg.defaultKey == id)]
        }
        r.data?["key_info"] = .object(info)
        return r
    }

    func keyData(_ k: PKIKey) throws -> [String: JSONValue] {
        let ski = Array(SubjectKeyIdentifier(hash: try parsed.key(k.pem).publicKey).keyIdentifier)
        return ["key_id": .string(k.id), "key_name": .string(k.name), "key_type": .string(k.type),
                "subject_key_id": .string(ski.map { h in let s = String(h, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: ":"))]
    }

    func generateKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let mode = req.fields.string("exported")
        guard mode == "internal" || mode == "exported" else {
            if mode == "kms" || mode == "managed" { throw CofferError.invalid("managed (kms) keys are not supported by this server") }
            throw CofferError.invalid("the \"exported\" path parameter must be \"internal\", \"exported\" or \"kms\"")
        }
        let name = req.fields.string("key_name")
        try await checkNewName(name, issuer: false)
        let (type, bits) = (req.fields.string("key_type"), req.fields.int("key_bits"))
        let k: PKIKeyMaterial
        do {
            k = try await type == "rsa" ? CPUWork.shared.run { try PKIKeyMaterial.generate(type: type, bits: bits) } : PKIKeyMaterial.generate(type: type, bits: bits)
        } catch let e as CofferError {
            throw CofferError.invalid("Validation for key_type, key_bits failed: \(e.message)")
        }
        let rec = PKIKey(id: UUID().uuidString.lowercased(), name: name, type: k.type, bits: k.bits, pem: k.storedPEM)
        try await storage.withLock("config/issuers") {
            try await storage.putCodable("key/" + rec.id, rec)
            var kc = try await keysConfig()
            if kc.defaultKey.isEmpty { kc.defaultKey = rec.id; try await storage.putCodable("config/keys", kc) }
        }
        var d: [String: JSONValue] = ["key_id": .string(rec.id), "key_name": .string(name), "key_type": .string(k.type)]
        if mode == "exported" { d["private_key"] = .string(Self.trimmedPEM(try k.pem(format: "der"))) }
        return LogicalResponse(data: d)
    }

    func importKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let text = req.fields.string("pem_bundle")
        guard text.utf8.count >= 64 else { throw CofferError.invalid("provided data for import was too short; perhaps a path was passed to the API rather than the contents of a PEM file") }
        let blocks = try Self.pemBlocks(text)
        guard blocks.count == 1 else { throw CofferError.invalid("only one key may be imported at a time") }
        let k = try PKIKeyMaterial(pem: blocks[0].pem)
        let name = req.fields.string("key_name")
        try await checkNewName(name, issuer: false)
        var warnings: [String] = []
        let rec: PKIKey = try await storage.withLock("config/issuers") {
            if let have = try await allKeys().first(where: { try parsed.key($0.pem).publicKey == k.publicKey }) {
                warnings.append("Key already imported, use key/ endpoint to update name.")
                return have
            }
            let rec = PKIKey(id: UUID().uuidString.lowercased(), name: name, type: k.type, bits: k.bits, pem: k.storedPEM)
            try await storage.putCodable("key/" + rec.id, rec)
            var kc = try await keysConfig()
            if kc.defaultKey.isEmpty { kc.defaultKey = rec.id; try await storage.putCodable("config/keys", kc) }
            // Issuers imported without their key now have it.
            for var i in try await allIssuers() where i.keyID.isEmpty {
                if try certificate(of: i).publicKey == k.publicKey { i.keyID = rec.id; try await storage.putCodable("issuer/" + i.id, i) }
            }
            return rec
        }
        return LogicalResponse(data: ["key_id": .string(rec.id), "key_name": .string(rec.name), "key_type": .string(rec.type)], warnings: warnings)
    }

    func readKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        LogicalResponse(data: try keyData(try await resolveKey(req.fields.string("key_ref"))))
    }

    func updateKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let found = try await resolveKey(req.fields.string("key_ref"))
        let name = req.fields.string("key_name")
        var warnings: [String] = []
        let k: PKIKey = try await storage.withLock("config/issuers") {
            guard var k = try await key(id: found.id) else { throw CofferError.invalid("unable to find PKI key for reference: \(found.id)") }
            if name != k.name { try await checkNewName(name, issuer: false, excluding: k.id) }
            if name.isEmpty && !k.name.isEmpty { warnings.append("Name successfully deleted, you will now need to reference this key by it's Id: \(k.id)") }
            k.name = name
            try await storage.putCodable("key/" + k.id, k)
            return k
        }
        return LogicalResponse(data: ["key_id": .string(k.id), "key_name": .string(k.name), "key_type": .string(k.type)], warnings: warnings)
    }

    func deleteKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let k = try? await resolveKey(req.fields.string("key_ref")) else { return .done }
        try await storage.withLock("config/issuers") {
            if let user = try await allIssuers().first(where: { $0.keyID == k.id }) {
                throw CofferError.invalid("Failed to Delete Key.  Key in Use by Issuer: \(user.id)")
            }
            try await storage.delete("key/" + k.id)
            var kc = try await keysConfig()
            if kc.defaultKey == k.id { kc.defaultKey = ""; try await storage.putCodable("config/keys", kc) }
        }
        return .done
    }

    func writeKeysConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let ref = req.fields.string("default")
        guard !ref.isEmpty, ref != "default" else { throw CofferError.invalid("Invalid key specification; must be non-empty and can't be 'default'.") }
        let k: PKIKey
        do { k = try await resolveKey(ref) } catch let e as CofferError { throw CofferError.invalid("Error resolving key reference: \(e.message)") }
        try await storage.withLock("config/issuers") {
            var kc = try await keysConfig()
            kc.defaultKey = k.id
            try await storage.putCodable("config/keys", kc)
        }
        return LogicalResponse(data: ["default": .string(k.id)])
    }

    // MARK: fetch

    func defaultIssuerOrNil() async throws -> PKIIssuer? {
        let c = try await issuersConfig()
        return c.defaultIssuer.isEmpty ? nil : try await issuer(id: c.defaultIssuer)
    }

    func fetchDefaultCA(pem: Bool) async throws -> LogicalResponse? {
        guard let i = try await defaultIssuerOrNil() else { return LogicalResponse(form: .bytes(contentType: "application/pkix-cert", body: [], status: 204)) }
        if pem { return LogicalResponse(form: .bytes(contentType: "application/pem-certificate-chain", body: Array(Self.trimmedPEM(i.certificate).utf8), status: 200)) }
        return LogicalResponse(form: .bytes(contentType: "application/pkix-cert", body: try Self.der(try certificate(of: i)), status: 200))
    }

    func fetchDefaultChain() async throws -> LogicalResponse? {
        guard let i = try await defaultIssuerOrNil() else { return LogicalResponse(form: .bytes(contentType: "application/pkix-cert", body: [], status: 204)) }
        let text = chain(of: i).map(Self.trimmedPEM).joined(separator: "\n")
        return LogicalResponse(form: .bytes(contentType: "application/pkix-cert", body: Array(text.utf8), status: 200))
    }

    func readCertCAChain() async throws -> LogicalResponse? {
        guard let i = try await defaultIssuerOrNil() else { throw CofferError.invalid("no default issuer currently configured") }
        let text = chain(of: i).map(Self.trimmedPEM).joined(separator: "\n")
        return LogicalResponse(data: ["certificate": .string(text), "ca_chain": .string(text), "revocation_time": 0, "revocation_time_rfc3339": ""])
    }

    func fetchCert(_ req: LogicalRequest, raw: String?) async throws -> LogicalResponse? {
        let s = req.fields.string("serial")
        var pem: String
        var revoked: Int64 = 0
        var issuerID = ""
        switch s {
        case "ca":
            guard let i = try await defaultIssuerOrNil() else { throw CofferError.invalid("no default issuer currently configured") }
            pem = i.certificate
        case "ca_chain":
            return try await readCertCAChain()
        case "crl", "delta-crl":
            guard let i = try await defaultIssuerOrNil() else { throw CofferError.invalid("no default issuer currently configured") }
            let state = try await crlState(issuerID: i.id, rebuildIfMissing: true)
            let der = s == "crl" ? state.der : state.deltaDER
            return LogicalResponse(data: ["certificate": .string(Self.trimmedPEM(PKIDER.pem("X509 CRL", der))), "revocation_time": 0, "revocation_time_rfc3339": ""])
        default:
            let serial = try Self.normalizeSerial(s)
            guard let rec = try await storage.getCodable(PKICertificate.self, "certs/" + Self.serialKey(serial)) else {
                // A revoked certificate whose record was tidied (or never stored) still answers from the revoked list.
                guard let rev = try await storage.getCodable(PKIRevocation.self, "revoked/" + Self.serialKey(serial)) else { return nil }
                pem = rev.certificate
                revoked = rev.revocationTime
                issuerID = rev.issuerID
                break
            }
            pem = rec.certificate
            revoked = rec.revocationTime
            if revoked > 0 { issuerID = rec.issuerID }
        }
        switch raw {
        case "pem": return LogicalResponse(form: .bytes(contentType: "application/pem-certificate-chain", body: Array(Self.trimmedPEM(pem).utf8), status: 200))
        case "der": return LogicalResponse(form: .bytes(contentType: "application/pkix-cert", body: try Self.der(try parsed.certificate(pem)), status: 200))
        default:
            var d: [String: JSONValue] = [
                "certificate": .string(Self.trimmedPEM(pem)), "revocation_time": .int(revoked),
                "revocation_time_rfc3339": .string(revoked > 0 ? RFC3339.format(Date(timeIntervalSince1970: Double(revoked))) : ""),
            ]
            if !issuerID.isEmpty { d["issuer_id"] = .string(issuerID) }
            return LogicalResponse(data: d)
        }
    }

    func listCerts(_ req: LogicalRequest, prefix: String) async throws -> LogicalResponse? {
        let keys = try await storage.list(prefix: prefix).map { $0.replacingOccurrences(of: "-", with: ":") }
        return .list(keys, after: req.fields.string("after"), limit: req.fields.int("limit"))
    }
}
