import CofferSDK
import Crypto
import Foundation
import Synchronization
import SwiftASN1
import X509

/// Revocation: `revoke`, `revoke-with-key`, CRLs (full and delta) per issuer, OCSP (RFC 6960),
/// `config/crl`, `config/urls`, `tidy`, `tidy-status`, `config/auto-tidy`.
extension PKIBackend {
    static let tidyFields: [Field] = [
        Field("tidy_cert_store", .bool), Field("tidy_revoked_certs", .bool), Field("tidy_revocation_list", .bool), Field("tidy_invalid_certs", .bool),
        Field("tidy_revoked_cert_issuer_associations", .bool), Field("tidy_expired_issuers", .bool), Field("tidy_move_legacy_ca_bundle", .bool),
        Field("tidy_acme", .bool), Field("safety_buffer", .duration, default: 259_200), Field("revoked_safety_buffer", .duration),
        Field("issuer_safety_buffer", .duration, default: 31_536_000), Field("acme_account_safety_buffer", .duration, default: 2_592_000),
        Field("pause_duration", .string, default: "0s"), Field("page_size", .int, default: 1000),
    ]

    static let revocationRoutes: [Route<PKIBackend>] = [
        Route("revoke", fields: [Field("serial_number", .string), Field("certificate", .string)], operations: [.update: { try await $0.revokeRequest($1, withKey: false) }],
              summary: "Revoke a certificate by serial number or with the certificate."),
        Route("revoke-with-key", fields: [Field("serial_number", .string), Field("certificate", .string), Field("private_key", .string)],
              operations: [.update: { try await $0.revokeRequest($1, withKey: true) }], summary: "Revoke a certificate, proving possession of its key."),
        Route("crl/rotate", operations: [.read: { b, _ in try await b.rotateCRL(delta: false) }, .update: { b, _ in try await b.rotateCRL(delta: false) }], summary: "Force a rebuild of the CRL."),
        Route("crl/rotate-delta", operations: [.read: { b, _ in try await b.rotateCRL(delta: true) }, .update: { b, _ in try await b.rotateCRL(delta: true) }], summary: "Force a rebuild of the delta CRL."),
        Route("crl/delta/pem", operations: [.read: { b, _ in try await b.fetchCRL(ref: nil, delta: true, form: "pem") }], summary: "Fetch the default issuer's delta CRL (PEM)."),
        Route("crl/delta", operations: [.read: { b, _ in try await b.fetchCRL(ref: nil, delta: true, form: "der") }], summary: "Fetch the default issuer's delta CRL (DER)."),
        Route("crl/pem", operations: [.read: { b, _ in try await b.fetchCRL(ref: nil, delta: false, form: "pem") }], summary: "Fetch the default issuer's CRL (PEM)."),
        Route("crl", operations: [.read: { b, _ in try await b.fetchCRL(ref: nil, delta: false, form: "der") }], summary: "Fetch the default issuer's CRL (DER)."),
        Route("issuer/:issuer_ref/crl/delta/pem", fields: [issuerRefField], operations: [.read: { try await $0.fetchCRL(ref: $1.fields.string("issuer_ref"), delta: true, form: "pem") }], summary: "Fetch an issuer's delta CRL."),
        Route("issuer/:issuer_ref/crl/delta/der", fields: [issuerRefField], operations: [.read: { try await $0.fetchCRL(ref: $1.fields.string("issuer_ref"), delta: true, form: "der") }], summary: "Fetch an issuer's delta CRL."),
        Route("issuer/:issuer_ref/crl/delta", fields: [issuerRefField], operations: [.read: { try await $0.fetchCRL(ref: $1.fields.string("issuer_ref"), delta: true, form: "json") }], summary: "Fetch an issuer's delta CRL."),
        Route("issuer/:issuer_ref/crl/pem", fields: [issuerRefField], operations: [.read: { try await $0.fetchCRL(ref: $1.fields.string("issuer_ref"), delta: false, form: "pem") }], summary: "Fetch an issuer's CRL."),
        Route("issuer/:issuer_ref/crl/der", fields: [issuerRefField], operations: [.read: { try await $0.fetchCRL(ref: $1.fields.string("issuer_ref"), delta: false, form: "der") }], summary: "Fetch an issuer's CRL."),
        Route("issuer/:issuer_ref/crl", fields: [issuerRefField], operations: [.read: { try await $0.fetchCRL(ref: $1.fields.string("issuer_ref"), delta: false, form: "json") }], summary: "Fetch an issuer's CRL."),
        Route("config/crl", fields: [
            Field("expiry", .string), Field("disable", .bool), Field("ocsp_disable", .bool), Field("ocsp_expiry", .string), Field("auto_rebuild", .bool),
            Field("auto_rebuild_grace_period", .string), Field("enable_delta", .bool), Field("delta_rebuild_interval", .string),
            Field("cross_cluster_revocation", .bool), Field("unified_crl", .bool), Field("unified_crl_on_existing_paths", .bool),
            Field("allow_expired_cert_revocation", .bool),
        ], operations: [.read: { b, _ in try await b.readCRLConfig() }, .update: { try await $0.writeCRLConfig($1) }], summary: "Configure the CRL expiration."),
        Route("config/urls", fields: [
            Field("issuing_certificates", .commaStringSlice), Field("crl_distribution_points", .commaStringSlice),
            Field("delta_crl_distribution_points", .commaStringSlice), Field("ocsp_servers", .commaStringSlice), Field("enable_templating", .bool),
        ], operations: [.read: { b, _ in try await b.readURLs() }, .update: { try await $0.writeURLs($1) }], summary: "Set the URLs for the issuing CA, CRL distribution points, and OCSP servers."),
        Route("config/cluster", fields: [Field("path", .string), Field("aia_path", .string)], operations: [
            .read: { b, _ in try await b.readCluster() }, .update: { try await $0.writeCluster($1) },
        ], summary: "Set the cluster's path to this mount (the {{cluster_path}} and {{cluster_aia_path}} of AIA templates)."),
        Route("ocsp", fields: [Field("request", .string)], operations: [.update: { try await $0.ocsp(base64: $1.fields.string("request"), post: true) }],
              summary: "Query a certificate's revocation status through OCSP (POST, application/ocsp-request)."),
        Route("ocsp/*req", fields: [Field("req", .string)], operations: [.read: { try await $0.ocsp(base64: $1.captures["req"] ?? "", post: false) }],
              summary: "Query a certificate's revocation status through OCSP (GET)."),
        Route("tidy", fields: tidyFields, operations: [.update: { try await $0.startTidy($1) }], summary: "Tidy up the backend by removing expired certificates, revocation information, or both."),
        Route("tidy-status", operations: [.read: { b, _ in b.tidyStatus() }], summary: "Returns the status of the tidy operation."),
        Route("tidy-cancel", operations: [.update: { b, _ in b.cancelTidy() }], summary: "Cancels a running tidy operation."),
        Route("config/auto-tidy", fields: tidyFields + [
            Field("enabled", .bool), Field("interval_duration", .duration, default: 43_200), Field("maintain_stored_certificate_counts", .bool),
            Field("publish_stored_certificate_count_metrics", .bool),
        ], operations: [.read: { b, _ in try await b.readAutoTidy() }, .update: { try await $0.writeAutoTidy($1) }], summary: "Configure automatic tidying."),
    ]

    // MARK: revoke

    func revokeRequest(_ req: LogicalRequest, withKey: Bool) async throws -> LogicalResponse? {
        let f = req.fields
        let serialText = f.string("serial_number"), certText = f.string("certificate")
        if serialText.isEmpty && certText.isEmpty { throw CofferError.invalid("The serial number or certificate to revoke must be provided.") }
        if !serialText.isEmpty && !certText.isEmpty { throw CofferError.invalid("Must provide either the certificate or the serial to revoke; not both.") }
        var serial: String
        var presented: Certificate?
        if !certText.isEmpty {
            if certText.utf8.count < 64 { throw CofferError.invalid("provided certificate data was too short; perhaps a path was passed to the API rather than the contents of a PEM file") }
            guard let block = try Self.pemBlocks(certText).first(where: { $0.label == "CERTIFICATE" }) else { throw CofferError.invalid("certificate contains no PEM data") }
            let c = try Self.parseCertificate(block.pem)
            // Only certificates an issuer of this mount signed.
            let signers = try await allIssuers().filter { i in (try? certificate(of: i)).map { $0.subject == c.issuer && $0.publicKey.isValidSignature(c.signature, for: c) } ?? false }
            guard !signers.isEmpty else {
                throw CofferError.invalid("unable to verify signature on presented cert from any present issuer in this mount; certificates from previous CAs will need to have their issuing CA and key re-imported if revoked")
            }
            serial = Self.serialString(c.serialNumber.bytes)
            presented = c
        } else {
            serial = try Self.normalizeSerial(serialText)
        }
        if withKey {
            let keyText = f.string("private_key")
            if keyText.isEmpty { throw CofferError.invalid("Must have private key to revoke via the /revoke-with-key path.") }
            if keyText.utf8.count < 64 { throw CofferError.invalid("Provided data for private_key was too short; perhaps a path was passed to the API rather than the contents of a PEM file?") }
            let k = try PKIKeyMaterial(pem: keyText)
            var cert = presented
            if cert == nil, let rec = try await storage.getCodable(PKICertificate.self, "certs/" + Self.serialKey(serial)) { cert = try parsed.certificate(rec.certificate) }
            guard let c = cert else { throw CofferError.invalid("certificate with serial \(serial) not found.") }
            guard k.publicKey == c.publicKey else { throw CofferError.invalid("provided private key does not match certificate's public key") }
        }
        return try await revoke(serial: serial, allowExpired: false, presented: presented)
    }

    /// Revokes a stored certificate (or a presented one this mount signed): the revoked
    /// list, the certificate record, and the issuer's CRL rebuilt.
    func revoke(serial: String, allowExpired: Bool, presented: Certificate? = nil) async throws -> LogicalResponse? {
        let key = Self.serialKey(serial)
        if try await allIssuers().contains(where: { $0.serial == serial }) {
            let id = try await allIssuers().first { $0.serial == serial }?.id ?? ""
            throw CofferError.invalid("adding issuer (id: \(id)) to its own CRL is not allowed")
        }
        let now = nowDate
        let result: (PKIRevocation, Bool)? = try await storage.withLock("certs/" + key) {
            if let have = try await storage.getCodable(PKIRevocation.self, "revoked/" + key) { return (have, false) }
            var rec = try await storage.getCodable(PKICertificate.self, "certs/" + key)
            if rec == nil, let c = presented {
                let issuers = try await allIssuers()
                let id = issuers.first { i in (try? certificate(of: i)).map { $0.subject == c.issuer && $0.publicKey.isValidSignature(c.signature, for: c) } ?? false }?.id ?? ""
                rec = PKICertificate(serial: serial, certificate: try Self.pem(c), issuerID: id, notAfter: Int64(c.notValidAfter.timeIntervalSince1970))
            }
            guard var r = rec else { throw CofferError.invalid("certificate with serial \(serial) not found.") }
            if !allowExpired, Double(r.notAfter) < now.timeIntervalSince1970 + 2, try await crlConfig().allowExpiredCertRevocation == false {
                return nil
            }
            r.revocationTime = Int64(now.timeIntervalSince1970)
            let entry = PKIRevocation(serial: serial, issuerID: r.issuerID, revocationTime: r.revocationTime, notAfter: r.notAfter, certificate: r.certificate)
            try await storage.putCodable("revoked/" + key, entry)
            if try await storage.get("certs/" + key) != nil { try await storage.putCodable("certs/" + key, r) }
            return (entry, true)
        }
        guard let (entry, changed) = result else {
            return LogicalResponse(warnings: ["certificate with serial \(serial) already expired; refusing to add to CRL. Enable 'AllowExpiredCertRevocation' to allow revoking expired certificates."])
        }
        if changed {
            let cfg = try await crlConfig()
            if !cfg.autoRebuild {
                try? await rebuildCRL(issuerID: entry.issuerID.isEmpty ? (try await issuersConfig().defaultIssuer) : entry.issuerID)
            } else if cfg.enableDelta {
                try? await rebuildCRL(issuerID: entry.issuerID, deltaOnly: true)
            }
        }
        let t = Date(timeIntervalSince1970: Double(entry.revocationTime))
        return LogicalResponse(data: ["revocation_time": .int(entry.revocationTime), "revocation_time_rfc3339": .string(RFC3339.format(t)), "state": "revoked"])
    }

    // MARK: CRLs

    func crlState(issuerID: String, rebuildIfMissing: Bool) async throws -> PKICRLState {
        if let s = try await storage.getCodable(PKICRLState.self, "crl/" + issuerID), !s.der.isEmpty {
            if s.nextUpdate > Int64(nowDate.timeIntervalSince1970) || !rebuildIfMissing { return s }
        }
        guard rebuildIfMissing else { return PKICRLState() }
        try await rebuildCRL(issuerID: issuerID)
        return try await storage.getCodable(PKICRLState.self, "crl/" + issuerID) ?? PKICRLState()
    }

    /// Rebuilds the issuer's CRL (the default issuer's also lists revoked certificates of no
    /// known issuer), and its delta when deltas are on.
    func rebuildCRL(issuerID: String, deltaOnly: Bool = false) async throws {
        guard !issuerID.isEmpty, let issuer = try await issuer(id: issuerID) else { return }
        guard issuer.allows("crl-signing"), !issuer.keyID.isEmpty else { return }
        let cert = try certificate(of: issuer)
        let key = try await signingKey(of: issuer)
        let cfg = try await crlConfig()
        let isDefault = try await issuersConfig().defaultIssuer == issuerID
        let ids = Set(try await allIssuers().map(\.id))
        var entries: [PKIDER.RevokedEntry] = []
        var serials: [String] = []
        if !cfg.disable {
            for k in try await storage.list(prefix: "revoked/") {
                guard let r = try await storage.getCodable(PKIRevocation.self, "revoked/" + k) else { continue }
                guard r.issuerID == issuerID || (isDefault && !ids.contains(r.issuerID)) else { continue }
                let bytes = r.serial.split(separator: ":").compactMap { UInt8($0, radix: 16) }
                entries.append(.init(serial: bytes, revoked: Date(timeIntervalSince1970: Double(r.revocationTime))))
                serials.append(r.serial)
            }
        }
        let expiry = Int(GoDuration.parseSeconds(cfg.expiry) ?? 259_200)
        let now = nowDate
        let algorithm = try Self.revocationAlgorithm(issuer, key: key)
        try await storage.withLock("crl/" + issuerID) {
            var state = try await storage.getCodable(PKICRLState.self, "crl/" + issuerID) ?? PKICRLState()
            if !deltaOnly || state.der.isEmpty {
                state.number += 1
                state.der = try PKIDER.crl(issuer: cert, key: key.certificateKey, algorithm: algorithm, number: state.number, thisUpdate: now,
                                           nextUpdate: now.addingTimeInterval(Double(expiry)), entries: entries)
                state.thisUpdate = Int64(now.timeIntervalSince1970)
                state.nextUpdate = state.thisUpdate + Int64(expiry)
                state.baseSerials = serials
            }
            let base = Set(state.baseSerials)
            let delta = zip(serials, entries).filter { !base.contains($0.0) }.map(\.1)
            state.deltaNumber = state.number + 1
            state.deltaBuilt = Int64(now.timeIntervalSince1970)
            state.deltaDER = try PKIDER.crl(issuer: cert, key: key.certificateKey, algorithm: algorithm, number: state.deltaNumber, thisUpdate: now,
                                            nextUpdate: now.addingTimeInterval(Double(expiry)), entries: delta, deltaOf: state.number)
            try await storage.putCodable("crl/" + issuerID, state)
        }
    }

    /// With `auto_rebuild`, CRLs are rebuilt when they come within the grace period of their
    /// next update (revocations in between show on the delta, when enabled, rebuilt every
    /// `delta_rebuild_interval`). Without it every revocation rebuilds at once, and an expired
    /// CRL is rebuilt when it is fetched.
    func autoRebuildCRLs() async {
        guard let cfg = try? await crlConfig(), cfg.autoRebuild, !cfg.disable, let issuers = try? await allIssuers() else { return }
        let now = Int64(nowDate.timeIntervalSince1970)
        let grace = GoDuration.parseSeconds(cfg.autoRebuildGracePeriod) ?? 43_200
        let deltaEvery = GoDuration.parseSeconds(cfg.deltaRebuildInterval) ?? 900
        for i in issuers where i.allows("crl-signing") && !i.keyID.isEmpty {
            guard let s = try? await storage.getCodable(PKICRLState.self, "crl/" + i.id) else { continue }
            if s.der.isEmpty || s.nextUpdate - grace <= now {
                try? await rebuildCRL(issuerID: i.id)
            } else if cfg.enableDelta && s.deltaBuilt + deltaEvery <= now {
                try? await rebuildCRL(issuerID: i.id, deltaOnly: true)
            }
        }
    }

    static func revocationAlgorithm(_ i: PKIIssuer, key: PKIKeyMaterial) throws -> Certificate.SignatureAlgorithm {
        switch (i.revocationSignatureAlgorithm, key) {
        case ("SHA384WithRSA", .rsa): return .sha384WithRSAEncryption
        case ("SHA512WithRSA", .rsa): return .sha512WithRSAEncryption
        default: return try key.signatureAlgorithm()
        }
    }

    func rotateCRL(delta: Bool) async throws -> LogicalResponse? {
        var warnings: [String] = []
        let deltaOn = try await crlConfig().enableDelta
        if delta && !deltaOn {
            warnings.append("requested rebuild of delta CRL when delta CRL is not enabled; this is a no-op")
            return LogicalResponse(data: ["success": true], warnings: warnings)
        }
        for i in try await allIssuers() {
            do { try await rebuildCRL(issuerID: i.id, deltaOnly: delta) } catch let e as CofferError { throw CofferError.invalid("Error during CRL building: \(e.message)") }
        }
        return LogicalResponse(data: ["success": true], warnings: warnings)
    }

    func fetchCRL(ref: String?, delta: Bool, form: String) async throws -> LogicalResponse? {
        let issuer: PKIIssuer?
        if let ref { issuer = try await resolveIssuer(ref) } else { issuer = try await defaultIssuerOrNil() }
        guard let issuer else { return LogicalResponse(form: .bytes(contentType: "application/pkix-crl", body: [], status: 204)) }
        let state = try await crlState(issuerID: issuer.id, rebuildIfMissing: true)
        let der = delta ? state.deltaDER : state.der
        guard !der.isEmpty else { return LogicalResponse(form: .bytes(contentType: "application/pkix-crl", body: [], status: 204)) }
        switch form {
        case "pem":
            let pem = PKIDER.pem("X509 CRL", der)
            return LogicalResponse(form: .bytes(contentType: "application/x-pem-file", body: Array((ref == nil ? Self.trimmedPEM(pem) : pem).utf8), status: 200))
        case "json":
            return LogicalResponse(data: ["crl": .string(PKIDER.pem("X509 CRL", der))])
        default:
            return LogicalResponse(form: .bytes(contentType: "application/pkix-crl", body: der, status: 200))
        }
    }

    func readCRLConfig() async throws -> LogicalResponse? {
        let c = try await crlConfig()
        return LogicalResponse(data: [
            "expiry": .string(c.expiry), "disable": .bool(c.disable), "ocsp_disable": .bool(c.ocspDisable), "ocsp_expiry": .string(c.ocspExpiry),
            "auto_rebuild": .bool(c.autoRebuild), "auto_rebuild_grace_period": .string(c.autoRebuildGracePeriod), "enable_delta": .bool(c.enableDelta),
            "delta_rebuild_interval": .string(c.deltaRebuildInterval), "cross_cluster_revocation": .bool(c.crossClusterRevocation),
            "unified_crl": .bool(c.unifiedCRL), "unified_crl_on_existing_paths": .bool(c.unifiedCRLOnExistingPaths),
            "allow_expired_cert_revocation": .bool(c.allowExpiredCertRevocation),
        ])
    }

    func writeCRLConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        var c = try await crlConfig()
        func duration(_ name: String, into path: WritableKeyPath<PKICRLConfig, String>) throws {
            guard f.has(name) else { return }
            let v = f.string(name)
            guard let secs = GoDuration.parseSeconds(v), secs >= 0 else { throw CofferError.invalid("given \(name) could not be decoded: \(v.prefix(64))") }
            _ = secs
            c[keyPath: path] = v
        }
        try duration("expiry", into: \.expiry)
        try duration("ocsp_expiry", into: \.ocspExpiry)
        try duration("auto_rebuild_grace_period", into: \.autoRebuildGracePeriod)
        try duration("delta_rebuild_interval", into: \.deltaRebuildInterval)
        if f.has("disable") { c.disable = f.bool("disable") }
        if f.has("ocsp_disable") { c.ocspDisable = f.bool("ocsp_disable") }
        if f.has("auto_rebuild") { c.autoRebuild = f.bool("auto_rebuild") }
        if f.has("enable_delta") { c.enableDelta = f.bool("enable_delta") }
        if f.has("allow_expired_cert_revocation") { c.allowExpiredCertRevocation = f.bool("allow_expired_cert_revocation") }
        if f.has("cross_cluster_revocation") && f.bool("cross_cluster_revocation") { throw CofferError.invalid("cross-cluster revocation is not supported by this server") }
        if f.has("unified_crl") && f.bool("unified_crl") { throw CofferError.invalid("unified CRLs are not supported by this server") }
        let expiry = GoDuration.parseSeconds(c.expiry) ?? 0
        if c.autoRebuild, (GoDuration.parseSeconds(c.autoRebuildGracePeriod) ?? 0) >= expiry {
            throw CofferError.invalid("CRL auto-rebuilding grace period (\(c.autoRebuildGracePeriod)) must be strictly shorter than CRL expiry (\(c.expiry)) value when auto-rebuilding of CRLs is enabled")
        }
        if c.enableDelta {
            guard c.autoRebuild else { throw CofferError.invalid("Delta CRLs cannot be enabled when auto rebuilding is disabled as the complete CRL is always regenerated!") }
            if (GoDuration.parseSeconds(c.deltaRebuildInterval) ?? 0) >= expiry {
                throw CofferError.invalid("CRL delta rebuild window (\(c.deltaRebuildInterval)) must be strictly shorter than CRL expiry (\(c.expiry)) value when delta CRLs are enabled")
            }
        }
        try await storage.putCodable("config/crl", c)
        for i in try await allIssuers() { try? await rebuildCRL(issuerID: i.id) }
        return try await readCRLConfig()
    }

    func readURLs() async throws -> LogicalResponse? {
        let u = try await urls()
        func list(_ a: [String]) -> JSONValue { .array(a.map { .string($0) }) }
        return LogicalResponse(data: [
            "issuing_certificates": list(u.issuingCertificates), "crl_distribution_points": list(u.crlDistributionPoints),
            "delta_crl_distribution_points": .array([]), "ocsp_servers": list(u.ocspServers), "enable_templating": .bool(u.enableTemplating),
        ])
    }

    func writeURLs(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        var u = try await urls()
        if f.has("enable_templating") { u.enableTemplating = f.bool("enable_templating") }
        for (name, path) in [("issuing_certificates", \PKIURLs.issuingCertificates), ("crl_distribution_points", \PKIURLs.crlDistributionPoints),
                             ("ocsp_servers", \PKIURLs.ocspServers)] where f.has(name) {
            let list = f.strings(name)
            if !u.enableTemplating {
                try Self.checkURLs(list, field: name)
                if list.contains(where: { $0.contains("{{") }) { throw CofferError.invalid("invalid URL found in Authority Information Access (AIA) parameter \(name): templates need enable_templating") }
            }
            u[keyPath: path] = list
        }
        try await storage.putCodable("config/urls", u)
        return try await readURLs()
    }

    func readCluster() async throws -> LogicalResponse? {
        let c = try await storage.getCodable(PKIClusterConfig.self, "config/cluster") ?? PKIClusterConfig()
        return LogicalResponse(data: ["path": .string(c.path), "aia_path": .string(c.aiaPath)])
    }

    func writeCluster(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var c = try await storage.getCodable(PKIClusterConfig.self, "config/cluster") ?? PKIClusterConfig()
        for (name, path) in [("path", \PKIClusterConfig.path), ("aia_path", \PKIClusterConfig.aiaPath)] where req.fields.has(name) {
            let v = req.fields.string(name)
            if !v.isEmpty {
                guard let u = URL(string: v), u.scheme != nil, let h = u.host, !h.isEmpty else { throw CofferError.invalid("invalid, non-URL path given to cluster: \(v.prefix(128))") }
            }
            c[keyPath: path] = v
        }
        try await storage.putCodable("config/cluster", c)
        return try await readCluster()
    }

    // MARK: OCSP

    static func ocspAnswer(_ status: UInt8, http: Int) -> LogicalResponse {
        LogicalResponse(form: .bytes(contentType: "application/ocsp-response", body: PKIDER.ocspStatusOnly(status), status: http))
    }

    /// An OCSP answer for a DER request (base64 in the GET path, or the POST body the
    /// gateway hands over as `request`): each CertID of an issuer of this mount, good unless
    /// revoked; an issuer the mount does not know gets `unknown`, signed by the default issuer.
    func ocsp(base64: String, post: Bool) async throws -> LogicalResponse? {
        if try await crlConfig().ocspDisable { return Self.ocspAnswer(6, http: 401) }
        let text = base64.removingPercentEncoding ?? base64
        guard !text.isEmpty, text.utf8.count < 4096, let der = Data(base64Encoded: text) else { return Self.ocspAnswer(1, http: 400) }
        let request: PKIDER.OCSPRequest
        do { request = try PKIDER.parseOCSPRequest(Array(der)) } catch { return Self.ocspAnswer(1, http: 400) }
        let issuers = try await allIssuers()
        var responder: (PKIIssuer, Certificate)?
        var responses: [PKIDER.SingleResponse] = []
        let now = nowDate
        let expiry = GoDuration.parseSeconds(try await crlConfig().ocspExpiry) ?? 43_200
        for id in request.certIDs.prefix(16) {
            var match: (PKIIssuer, Certificate)?
            for i in issuers where !i.keyID.isEmpty {
                let c = try certificate(of: i)
                if try id.matches(c) { match = (i, c); break }
            }
            var status = PKIDER.CertStatus.unknown
            if let (i, c) = match {
                guard i.allows("ocsp-signing") else { return Self.ocspAnswer(6, http: 401) }
                if responder == nil { responder = (i, c) }
                let serial = Self.serialString(id.serial)
                if let r = try await storage.getCodable(PKIRevocation.self, "revoked/" + Self.serialKey(serial)) {
                    status = .revoked(Date(timeIntervalSince1970: Double(r.revocationTime)))
                } else {
                    status = .good
                }
            }
            responses.append(.init(id: id, status: status, thisUpdate: now, nextUpdate: expiry > 0 ? now.addingTimeInterval(Double(expiry)) : nil))
        }
        if responder == nil {
            guard let d = try await defaultIssuerOrNil(), !d.keyID.isEmpty, d.allows("ocsp-signing") else { return Self.ocspAnswer(6, http: 401) }
            responder = (d, try certificate(of: d))
        }
        guard let (issuer, cert) = responder else { return Self.ocspAnswer(6, http: 401) }
        let key = try await signingKey(of: issuer)
        let produced = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 60).rounded(.down) * 60)
        let body = try PKIDER.ocspResponse(responder: cert, key: key.certificateKey, algorithm: try Self.revocationAlgorithm(issuer, key: key),
                                           producedAt: produced, responses: responses, nonce: request.nonce)
        return LogicalResponse(form: .bytes(contentType: "application/ocsp-response", body: body, status: 200))
    }

    // MARK: tidy

    func tidyConfig(_ f: FieldValues, base: PKITidyConfig = PKITidyConfig()) throws -> PKITidyConfig {
        var c = base
        if f.has("tidy_cert_store") { c.tidyCertStore = f.bool("tidy_cert_store") }
        if f.has("tidy_revoked_certs") { c.tidyRevokedCerts = f.bool("tidy_revoked_certs") }
        if f.has("tidy_revocation_list") { c.tidyRevokedCerts = c.tidyRevokedCerts || f.bool("tidy_revocation_list") }
        if f.has("tidy_revoked_cert_issuer_associations") { c.tidyRevokedCertIssuerAssociations = f.bool("tidy_revoked_cert_issuer_associations") }
        if f.has("tidy_expired_issuers") { c.tidyExpiredIssuers = f.bool("tidy_expired_issuers") }
        if f.has("tidy_move_legacy_ca_bundle") { c.tidyMoveLegacyCABundle = f.bool("tidy_move_legacy_ca_bundle") }
        if f.has("safety_buffer") || base.safetyBuffer == 0 { c.safetyBuffer = f.int("safety_buffer") }
        if f.has("issuer_safety_buffer") { c.issuerSafetyBuffer = f.int("issuer_safety_buffer") }
        if f.has("pause_duration") {
            guard let p = GoDuration.parseSeconds(f.string("pause_duration")), p >= 0 else { throw CofferError.invalid("received invalid, negative pause_duration") }
            c.pauseDuration = f.string("pause_duration")
        }
        if c.safetyBuffer <= 0 { throw CofferError.invalid("safety_buffer must be greater than zero") }
        if c.issuerSafetyBuffer <= 0 { throw CofferError.invalid("issuer_safety_buffer must be greater than zero") }
        return c
    }

    func startTidy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        if f.has("page_size"), f.int("page_size") > 0 && f.int("page_size") <= 5 { throw CofferError.invalid("page_size must be greater than five") }
        let c = try tidyConfig(f)
        let any = c.tidyCertStore || c.tidyRevokedCerts || c.tidyRevokedCertIssuerAssociations || c.tidyExpiredIssuers || c.tidyMoveLegacyCABundle
        guard any else {
            return LogicalResponse(warnings: ["Manual tidy requested but no tidy operations were set. Enable at least one tidy operation to be run (tidy_cert_store / tidy_revoked_certs / tidy_invalid_certs / tidy_revoked_cert_issuer_associations / tidy_expired_issuers / tidy_move_legacy_ca_bundle / tidy_acme)."])
        }
        guard tidy.begin(c, now: nowDate) else { return LogicalResponse(warnings: ["Tidy operation already in progress."]) }
        let backend = self
        Task { await backend.runTidy(c) }
        var r = LogicalResponse(data: nil, warnings: ["Tidy operation successfully started. Any information from the operation will be printed to Coffer's server logs."])
        r.form = .envelope
        return r
    }

    /// Deletes certificates past their expiry plus the safety buffer (and their revocation
    /// entries), expired issuers past theirs, and rebuilds the CRLs that changed.
    func runTidy(_ c: PKITidyConfig) async {
        do {
            let now = Int64(nowDate.timeIntervalSince1970)
            var touched = Set<String>()
            if c.tidyCertStore {
                for k in try await storage.list(prefix: "certs/") {
                    if tidy.cancelled { break }
                    guard let r = try await storage.getCodable(PKICertificate.self, "certs/" + k) else { continue }
                    if now > r.notAfter + Int64(c.safetyBuffer) {
                        try await storage.delete("certs/" + k)
                        tidy.count(\.certsDeleted)
                    }
                }
            }
            if c.tidyRevokedCerts {
                for k in try await storage.list(prefix: "revoked/") {
                    if tidy.cancelled { break }
                    guard let r = try await storage.getCodable(PKIRevocation.self, "revoked/" + k) else { continue }
                    if now > r.notAfter + Int64(c.safetyBuffer) {
                        try await storage.delete("revoked/" + k)
                        try await storage.delete("certs/" + k)
                        touched.insert(r.issuerID)
                        tidy.count(\.revokedDeleted)
                    }
                }
            }
            if c.tidyExpiredIssuers {
                let cfg = try await issuersConfig()
                for i in try await allIssuers() where i.id != cfg.defaultIssuer && now > i.notAfter + Int64(c.issuerSafetyBuffer) {
                    try await storage.delete("issuer/" + i.id)
                    try await storage.delete("crl/" + i.id)
                }
                try await rebuildChains()
            }
            for id in touched { try? await rebuildCRL(issuerID: id) }
            tidy.finish(error: nil, now: nowDate)
        } catch {
            tidy.finish(error: String(describing: error).prefix(200).description, now: nowDate)
        }
    }

    func tidyStatus() -> LogicalResponse {
        LogicalResponse(data: tidy.status())
    }

    func cancelTidy() -> LogicalResponse {
        guard tidy.cancel() else { return LogicalResponse(warnings: ["Tidy operation cannot be cancelled as none is currently running."]) }
        return LogicalResponse(data: tidy.status())
    }

    func readAutoTidy() async throws -> LogicalResponse? {
        let c = try await storage.getCodable(PKITidyConfig.self, "config/auto-tidy") ?? PKITidyConfig()
        return LogicalResponse(data: Self.tidyData(c))
    }

    static func tidyData(_ c: PKITidyConfig) -> [String: JSONValue] {
        [
            "enabled": .bool(c.enabled), "interval_duration": .int(Int64(c.intervalDuration)), "tidy_cert_store": .bool(c.tidyCertStore),
            "tidy_revoked_certs": .bool(c.tidyRevokedCerts), "tidy_revoked_cert_issuer_associations": .bool(c.tidyRevokedCertIssuerAssociations),
            "tidy_expired_issuers": .bool(c.tidyExpiredIssuers), "tidy_move_legacy_ca_bundle": .bool(c.tidyMoveLegacyCABundle),
            "tidy_invalid_certs": false, "tidy_acme": false,
            "safety_buffer": .int(Int64(c.safetyBuffer)), "revoked_safety_buffer": .int(Int64(c.safetyBuffer)),
            "issuer_safety_buffer": .int(Int64(c.issuerSafetyBuffer)), "acme_account_safety_buffer": 2_592_000,
            "pause_duration": .string(c.pauseDuration), "page_size": 1000,
            "maintain_stored_certificate_counts": .bool(c.maintainStoredCertificateCounts),
            "publish_stored_certificate_count_metrics": .bool(c.publishStoredCertificateCountMetrics),
        ]
    }

    func writeAutoTidy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let base = try await storage.getCodable(PKITidyConfig.self, "config/auto-tidy") ?? PKITidyConfig()
        var c = try tidyConfig(f, base: base)
        if f.has("enabled") { c.enabled = f.bool("enabled") }
        if f.has("interval_duration") {
            guard f.int("interval_duration") >= 1 else { throw CofferError.invalid("interval_duration must be at least one second") }
            c.intervalDuration = f.int("interval_duration")
        }
        if f.has("page_size"), f.int("page_size") < 5 { throw CofferError.invalid("page_size must be at least 5") }
        if f.has("maintain_stored_certificate_counts") { c.maintainStoredCertificateCounts = f.bool("maintain_stored_certificate_counts") }
        if f.has("publish_stored_certificate_count_metrics") { c.publishStoredCertificateCountMetrics = f.bool("publish_stored_certificate_count_metrics") }
        if c.publishStoredCertificateCountMetrics && !c.maintainStoredCertificateCounts {
            throw CofferError.invalid("Can not publish a running storage metrics count to metrics without first maintaining that count.  Enable `maintain_stored_certificate_counts` to enable `publish_stored_certificate_count_metrics`.")
        }
        if c.enabled && !(c.tidyCertStore || c.tidyRevokedCerts || c.tidyRevokedCertIssuerAssociations || c.tidyExpiredIssuers || c.tidyMoveLegacyCABundle) {
            throw CofferError.invalid("Auto-tidy enabled but no tidy operations were requested. Enable at least one tidy operation to be run (tidy_cert_store / tidy_revoked_certs / tidy_invalid_certs / tidy_revoked_cert_issuer_associations / tidy_expired_issuers / tidy_move_legacy_ca_bundle / tidy_acme).")
        }
        try await storage.putCodable("config/auto-tidy", c)
        return LogicalResponse(data: Self.tidyData(c))
    }

    /// The periodic pass: an auto-tidy when enabled and its interval has passed; CRLs that
    /// are close to their next update rebuilt when `auto_rebuild` is on.
    func autoTidy() async {
        guard let c = try? await storage.getCodable(PKITidyConfig.self, "config/auto-tidy"), c.enabled else { return }
        let now = nowDate
        guard tidy.dueForAuto(interval: c.intervalDuration, now: now), tidy.begin(c, now: now) else { return }
        await runTidy(c)
    }
}

/// The state of this mount's tidy (in memory, as Vault keeps it).
final class PKITidyState: Sendable {
    struct Status {
        var state = "Inactive"
        var config = PKITidyConfig()
        var started: Date?
        var finished: Date?
        var error: String?
        var certsDeleted = 0
        var revokedDeleted = 0
        var cancel = false
        var lastAuto: Date?
    }

    let s = Mutex(Status())

    func begin(_ c: PKITidyConfig, now: Date) -> Bool {
        s.withLock { st in
            guard st.state != "Running" && st.state != "Cancelling" else { return false }
            st = Status(state: "Running", config: c, started: now, lastAuto: st.lastAuto)
            return true
        }
    }

    var cancelled: Bool { s.withLock { $0.cancel } }

    func count(_ path: WritableKeyPath<Status, Int>) { s.withLock { $0[keyPath: path] += 1 } }

    func finish(error: String?, now: Date) {
        s.withLock { st in
            st.state = st.cancel ? "Cancelled" : error == nil ? "Finished" : "Error"
            st.error = error
            st.finished = now
        }
    }

    func cancel() -> Bool {
        s.withLock { st in
            guard st.state == "Running" else { return false }
            st.cancel = true
            st.state = "Cancelling"
            return true
        }
    }

    func dueForAuto(interval: Int, now: Date) -> Bool {
        s.withLock { st in
            if let last = st.lastAuto, now.timeIntervalSince(last) < Double(interval) { return false }
            st.lastAuto = now
            return true
        }
    }

    func status() -> [String: JSONValue] {
        s.withLock { st in
            let active = st.state != "Inactive"
            func opt(_ v: JSONValue) -> JSONValue { active ? v : .null }
            let c = st.config
            var d: [String: JSONValue] = [
                "state": .string(st.state), "error": st.error.map { .string($0) } ?? .null,
                "time_started": st.started.map { .string(RFC3339.format($0)) } ?? .null, "time_finished": st.finished.map { .string(RFC3339.format($0)) } ?? .null,
                "message": .string(st.state == "Running" ? "Tidying certificate store" : ""),
                "cert_store_deleted_count": .int(Int64(st.certsDeleted)), "revoked_cert_deleted_count": .int(Int64(st.revokedDeleted)),
                "missing_issuer_cert_count": 0, "current_cert_store_count": .null, "current_revoked_cert_count": .null,
                "safety_buffer": opt(.int(Int64(c.safetyBuffer))), "revoked_safety_buffer": opt(.int(Int64(c.safetyBuffer))),
                "issuer_safety_buffer": opt(.int(Int64(c.issuerSafetyBuffer))), "acme_account_safety_buffer": opt(2_592_000),
                "tidy_cert_store": opt(.bool(c.tidyCertStore)), "tidy_revoked_certs": opt(.bool(c.tidyRevokedCerts)), "tidy_invalid_certs": opt(false),
                "tidy_revoked_cert_issuer_associations": opt(.bool(c.tidyRevokedCertIssuerAssociations)), "tidy_expired_issuers": opt(.bool(c.tidyExpiredIssuers)),
                "tidy_move_legacy_ca_bundle": opt(.bool(c.tidyMoveLegacyCABundle)), "tidy_acme": opt(false), "pause_duration": opt(.string(c.pauseDuration)),
                "page_size": opt(1000), "total_acme_account_count": 0, "acme_account_deleted_count": 0, "acme_account_revoked_count": 0, "acme_orders_deleted_count": 0,
            ]
            if active { d["last_auto_tidy_finished"] = st.lastAuto.map { .string(RFC3339.format($0)) } ?? .null }
            return d
        }
    }
}
