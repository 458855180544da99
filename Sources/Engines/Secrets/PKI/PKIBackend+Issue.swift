import CofferSDK
import Crypto
import Foundation
import SwiftASN1
import X509

/// Roles and issuance: `roles/:name`, `issue/:role`, `sign/:role`, `sign-verbatim`, and their
/// `issuer/:ref/...` forms.
extension PKIBackend {
    static let roleFields: [Field] = [
        Field("name", .string), Field("ttl", .duration), Field("max_ttl", .duration), Field("allow_localhost", .bool, default: true),
        Field("allowed_domains", .commaStringSlice), Field("allowed_domains_template", .bool), Field("allow_bare_domains", .bool),
        Field("allow_subdomains", .bool), Field("allow_glob_domains", .bool), Field("allow_wildcard_certificates", .bool, default: true),
        Field("allow_any_name", .bool), Field("enforce_hostnames", .bool, default: true), Field("allow_ip_sans", .bool, default: true),
        Field("allowed_uri_sans", .commaStringSlice), Field("allowed_uri_sans_template", .bool), Field("allowed_other_sans", .commaStringSlice),
        Field("allowed_serial_numbers", .commaStringSlice), Field("allowed_user_ids", .commaStringSlice), Field("server_flag", .bool, default: true),
        Field("client_flag", .bool, default: true), Field("code_signing_flag", .bool), Field("email_protection_flag", .bool),
        Field("key_type", .string, default: "rsa"), Field("key_bits", .int), Field("signature_bits", .int), Field("use_pss", .bool),
        Field("key_usage", .commaStringSlice, default: ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]),
        Field("ext_key_usage", .commaStringSlice), Field("ext_key_usage_oids", .commaStringSlice), Field("use_csr_common_name", .bool, default: true),
        Field("use_csr_sans", .bool, default: true), Field("ou", .commaStringSlice), Field("organization", .commaStringSlice),
        Field("country", .commaStringSlice), Field("locality", .commaStringSlice), Field("province", .commaStringSlice),
        Field("street_address", .commaStringSlice), Field("postal_code", .commaStringSlice), Field("generate_lease", .bool),
        Field("no_store", .bool), Field("no_store_metadata", .bool), Field("require_cn", .bool, default: true),
        Field("cn_validations", .commaStringSlice, default: ["email", "hostname"]), Field("policy_identifiers", .commaStringSlice),
        Field("basic_constraints_valid_for_non_ca", .bool), Field("not_before_duration", .duration, default: 30), Field("not_after", .string),
        Field("issuer_ref", .string, default: "default"), Field("allow_token_displayname", .bool),
    ]

    static let issueFields: [Field] = subjectFields + [Field("remove_roots_from_chain", .bool), Field("key_type", .string), Field("key_bits", .int), Field("issuer_ref", .string)]
    static let signFields: [Field] = issueFields + [Field("csr", .string)]
    static let verbatimFields: [Field] = signFields + [
        Field("key_usage", .commaStringSlice, default: ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]), Field("ext_key_usage", .commaStringSlice),
        Field("ext_key_usage_oids", .commaStringSlice), Field("signature_bits", .int), Field("use_pss", .bool), Field("basic_constraints_valid_for_non_ca", .bool),
    ]

    static let issueRoutes: [Route<PKIBackend>] = [
        Route("roles/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listRoles($1) }], summary: "List the existing roles in this backend."),
        Route("roles/:name", fields: roleFields, operations: [
            .read: { try await $0.readRole($1) }, .update: { try await $0.writeRole($1, merge: false) }, .create: { try await $0.writeRole($1, merge: false) },
            .patch: { try await $0.writeRole($1, merge: true) }, .delete: { b, r in try await b.storage.delete("role/" + (try Self.checkName(r.fields.string("name"), what: "role"))); return .done },
        ], summary: "Manage the roles that can be created with this backend."),
        Route("issue/:role", fields: [roleField] + issueFields, operations: [.update: { try await $0.issue($1, csr: false, ref: nil) }],
              usage: [.update: .certificate], summary: "Request a certificate using a certain role with the provided details."),
        Route("issuer/:issuer_ref/issue/:role", fields: [roleField] + issueFields, operations: [.update: { try await $0.issue($1, csr: false, ref: $1.captures["issuer_ref"]) }],
              usage: [.update: .certificate], summary: "Request a certificate from an issuer using a certain role."),
        Route("sign/:role", fields: [roleField] + signFields, operations: [.update: { try await $0.issue($1, csr: true, ref: nil) }],
              usage: [.update: .certificate], summary: "Request certificates using a certain role with the provided details."),
        Route("issuer/:issuer_ref/sign/:role", fields: [roleField] + signFields, operations: [.update: { try await $0.issue($1, csr: true, ref: $1.captures["issuer_ref"]) }],
              usage: [.update: .certificate], summary: "Request certificates from an issuer using a certain role."),
        Route("sign-verbatim", fields: verbatimFields, operations: [.update: { try await $0.signVerbatim($1, ref: nil) }],
              usage: [.update: .certificate], summary: "Sign a CSR as it is."),
        Route("sign-verbatim/:role", fields: [roleField] + verbatimFields, operations: [.update: { try await $0.signVerbatim($1, ref: nil) }],
              usage: [.update: .certificate], summary: "Sign a CSR as it is."),
        Route("issuer/:issuer_ref/sign-verbatim", fields: verbatimFields, operations: [.update: { try await $0.signVerbatim($1, ref: $1.captures["issuer_ref"]) }],
              usage: [.update: .certificate], summary: "Sign a CSR as it is."),
        Route("issuer/:issuer_ref/sign-verbatim/:role", fields: [roleField] + verbatimFields, operations: [.update: { try await $0.signVerbatim($1, ref: $1.captures["issuer_ref"]) }],
              usage: [.update: .certificate], summary: "Sign a CSR as it is."),
    ]

    // MARK: roles

    func listRoles(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: "role/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func role(_ name: String) async throws -> PKIRole? { try await roles.get(storage, "role/" + name) }

    func roleData(_ r: PKIRole) -> [String: JSONValue] {
        func list(_ a: [String]) -> JSONValue { .array(a.map { .string($0) }) }
        var d: [String: JSONValue] = [
            "ttl": .int(Int64(r.ttl)), "max_ttl": .int(Int64(r.maxTTL)), "allow_localhost": .bool(r.allowLocalhost),
            "allowed_domains": list(r.allowedDomains), "allowed_domains_template": .bool(r.allowedDomainsTemplate),
            "allow_bare_domains": .bool(r.allowBareDomains), "allow_subdomains": .bool(r.allowSubdomains), "allow_glob_domains": .bool(r.allowGlobDomains),
            "allow_wildcard_certificates": .bool(r.allowWildcardCertificates), "allow_any_name": .bool(r.allowAnyName),
            "allow_token_displayname": false, "enforce_hostnames": .bool(r.enforceHostnames), "allow_ip_sans": .bool(r.allowIPSANs),
            "allowed_uri_sans": list(r.allowedURISANs), "allowed_uri_sans_template": .bool(r.allowedURISANsTemplate),
            "allowed_other_sans": list(r.allowedOtherSANs), "allowed_serial_numbers": list(r.allowedSerialNumbers),
            "allowed_user_ids": list(r.allowedUserIDs), "server_flag": .bool(r.serverFlag), "client_flag": .bool(r.clientFlag),
            "code_signing_flag": .bool(r.codeSigningFlag), "email_protection_flag": .bool(r.emailProtectionFlag), "key_type": .string(r.keyType),
            "key_bits": .int(Int64(r.keyBits)), "signature_bits": .int(Int64(r.signatureBits)), "use_pss": .bool(r.usePSS),
            "key_usage": list(r.keyUsage), "ext_key_usage": list(r.extKeyUsage), "ext_key_usage_oids": list(r.extKeyUsageOIDs),
            "use_csr_common_name": .bool(r.useCSRCommonName), "use_csr_sans": .bool(r.useCSRSANs), "ou": list(r.ou),
            "organization": list(r.organization), "country": list(r.country), "locality": list(r.locality), "province": list(r.province),
            "street_address": list(r.streetAddress), "postal_code": list(r.postalCode), "generate_lease": .bool(r.generateLease),
            "no_store": .bool(r.noStore), "no_store_metadata": .bool(r.noStoreMetadata), "require_cn": .bool(r.requireCN),
            "cn_validations": list(r.cnValidations), "policy_identifiers": list(r.policyIdentifiers),
            "basic_constraints_valid_for_non_ca": .bool(r.basicConstraintsValidForNonCA), "not_before_duration": .int(Int64(r.notBeforeDuration)),
            "not_after": .string(r.notAfter), "issuer_ref": .string(r.issuerRef),
        ]
        d["allowed_ip_sans_cidr"] = .array([])
        return d
    }

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await role(try Self.checkName(req.fields.string("name"), what: "role")) else { return nil }
        return LogicalResponse(data: roleData(r))
    }

    func writeRole(_ req: LogicalRequest, merge: Bool) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"), what: "role")
        let f = req.fields
        var warnings: [String] = []
        let stored: PKIRole = try await storage.withLock("role/" + name) {
            var r: PKIRole
            if merge {
                guard let have = try await role(name) else { throw CofferError.invalid("Unable to fetch role entry to patch") }
                r = have
            } else {
                r = PKIRole()
            }
            func take(_ n: String) -> Bool { !merge || f.has(n) }
            if take("ttl") { r.ttl = f.int("ttl") }
            if take("max_ttl") { r.maxTTL = f.int("max_ttl") }
            if take("allow_localhost") { r.allowLocalhost = f.bool("allow_localhost") }
            if take("allowed_domains") { r.allowedDomains = f.strings("allowed_domains") }
            if take("allowed_domains_template") { r.allowedDomainsTemplate = f.bool("allowed_domains_template") }
            if take("allow_bare_domains") { r.allowBareDomains = f.bool("allow_bare_domains") }
            if take("allow_subdomains") { r.allowSubdomains = f.bool("allow_subdomains") }
            if take("allow_glob_domains") { r.allowGlobDomains = f.bool("allow_glob_domains") }
            if take("allow_wildcard_certificates") { r.allowWildcardCertificates = f.bool("allow_wildcard_certificates") }
            if take("allow_any_name") { r.allowAnyName = f.bool("allow_any_name") }
            if take("enforce_hostnames") { r.enforceHostnames = f.bool("enforce_hostnames") }
            if take("allow_ip_sans") { r.allowIPSANs = f.bool("allow_ip_sans") }
            if take("allowed_uri_sans") { r.allowedURISANs = f.strings("allowed_uri_sans") }
            if take("allowed_uri_sans_template") { r.allowedURISANsTemplate = f.bool("allowed_uri_sans_template") }
            if take("allowed_other_sans") {
                r.allowedOtherSANs = f.strings("allowed_other_sans")
                for o in r.allowedOtherSANs where o != "*" {
                    do { _ = try PKINamePolicy.parseOtherSAN(o) } catch let e as CofferError { throw CofferError.invalid("error parsing allowed_other_sans: \(e.message)") }
                }
            }
            if take("allowed_serial_numbers") { r.allowedSerialNumbers = f.strings("allowed_serial_numbers") }
            if take("allowed_user_ids") { r.allowedUserIDs = f.strings("allowed_user_ids") }
            if take("server_flag") { r.serverFlag = f.bool("server_flag") }
            if take("client_flag") { r.clientFlag = f.bool("client_flag") }
            if take("code_signing_flag") { r.codeSigningFlag = f.bool("code_signing_flag") }
            if take("email_protection_flag") { r.emailProtectionFlag = f.bool("email_protection_flag") }
            if take("key_type") || take("key_bits") {
                let type = f.has("key_type") || !merge ? f.string("key_type") : r.keyType
                let bits = f.has("key_bits") || !merge ? f.int("key_bits") : r.keyBits
                if type == "rsa" && bits > 0 && bits < 2048 { throw CofferError.invalid("RSA keys < 2048 bits are unsafe and not supported: got \(bits)") }
                let (t, b) = try PKIKeyMaterial.normalize(type: type, bits: bits)
                (r.keyType, r.keyBits) = (t, b)
            }
            if take("signature_bits") { r.signatureBits = f.int("signature_bits") }
            if r.keyType == "rsa" && r.signatureBits == 0 { r.signatureBits = 256 }
            if r.keyType == "rsa" && ![256, 384, 512].contains(r.signatureBits) { throw CofferError.invalid("unsupported hash signature algorithm: \(r.signatureBits)") }
            if take("use_pss") { r.usePSS = f.bool("use_pss") }
            if r.usePSS { throw CofferError.invalid("use_pss is not supported by this server: RSA-PSS certificate signatures are not available") }
            if take("key_usage") { r.keyUsage = f.strings("key_usage") }
            if take("ext_key_usage") {
                r.extKeyUsage = f.strings("ext_key_usage")
                for e in r.extKeyUsage { _ = try PKITemplate.extKeyUsage(e) }
            }
            if take("ext_key_usage_oids") {
                r.extKeyUsageOIDs = f.strings("ext_key_usage_oids")
                for o in r.extKeyUsageOIDs { _ = try PKITemplate.oid(o, what: "an extended key usage") }
            }
            if take("use_csr_common_name") { r.useCSRCommonName = f.bool("use_csr_common_name") }
            if take("use_csr_sans") { r.useCSRSANs = f.bool("use_csr_sans") }
            if take("ou") { r.ou = f.strings("ou") }
            if take("organization") { r.organization = f.strings("organization") }
            if take("country") { r.country = f.strings("country") }
            if take("locality") { r.locality = f.strings("locality") }
            if take("province") { r.province = f.strings("province") }
            if take("street_address") { r.streetAddress = f.strings("street_address") }
            if take("postal_code") { r.postalCode = f.strings("postal_code") }
            if take("generate_lease") { r.generateLease = f.bool("generate_lease") }
            if take("no_store") { r.noStore = f.bool("no_store") }
            if take("no_store_metadata") { r.noStoreMetadata = f.bool("no_store_metadata") }
            if r.noStore && r.generateLease {
                r.generateLease = false
                warnings.append("mutually exclusive values no_store=true and generate_lease=true were both specified; no_store=true takes priority")
            }
            if take("require_cn") { r.requireCN = f.bool("require_cn") }
            if take("cn_validations") {
                let v = f.strings("cn_validations")
                let ok = v.allSatisfy { ["email", "hostname", "disabled"].contains($0) } && (!v.contains("disabled") || v.count == 1)
                guard ok else { throw CofferError.invalid("cn_validations value incorrect: \(v.joined(separator: ",").prefix(128))") }
                r.cnValidations = v.isEmpty ? ["email", "hostname"] : Array(Set(v)).sorted()
            }
            if take("policy_identifiers") {
                r.policyIdentifiers = f.strings("policy_identifiers")
                for o in r.policyIdentifiers { _ = try PKITemplate.oid(o, what: "a policy identifier") }
            }
            if take("basic_constraints_valid_for_non_ca") { r.basicConstraintsValidForNonCA = f.bool("basic_constraints_valid_for_non_ca") }
            if take("not_before_duration") { r.notBeforeDuration = f.int("not_before_duration") }
            if take("not_after") {
                r.notAfter = f.string("not_after")
                if !r.notAfter.isEmpty && RFC3339.parse(r.notAfter) == nil { throw CofferError.invalid("failed to parse not_after \"\(r.notAfter.prefix(64))\" as RFC3339") }
            }
            if take("issuer_ref") { r.issuerRef = f.has("issuer_ref") ? f.string("issuer_ref") : "default" }
            if r.issuerRef.isEmpty { r.issuerRef = "default" }
            if r.ttl < 0 || r.maxTTL < 0 || r.notBeforeDuration < 0 { throw CofferError.invalid("durations must not be negative") }
            if r.maxTTL > 0 && r.ttl > r.maxTTL { throw CofferError.invalid("\"ttl\" value must be less than \"max_ttl\" value") }
            try await storage.putCodable("role/" + name, r)
            return r
        }
        if stored.issuerRef == "default", try await defaultIssuerOrNil() == nil {
            warnings.append("Issuing Certificate was set to default, but no default issuing certificate (configurable at /config/issuers) is currently set")
        }
        return LogicalResponse(data: roleData(stored), warnings: warnings)
    }

    // MARK: issue and sign

    func issue(_ req: LogicalRequest, csr withCSR: Bool, ref: String?) async throws -> LogicalResponse? {
        let f = req.fields
        let roleName = f.string("role")
        guard let role = try await role(roleName) else { throw CofferError.invalid("unknown role: \(roleName.prefix(128))") }
        var warnings: [String] = []
        let csr = withCSR ? try Self.parseCSR(f.string("csr")) : nil

        // The key: generated here for issue, the CSR's for sign (checked against the role).
        var key: PKIKeyMaterial?
        let publicKey: Certificate.PublicKey
        if let csr {
            try Self.checkCSRKey(csr.publicKey, role: role)
            publicKey = csr.publicKey
        } else {
            var type = role.keyType, bits = role.keyBits
            if type == "any" {
                guard !f.string("key_type").isEmpty else {
                    throw CofferError.invalid("role key type \"any\" not allowed for issuing certificates without providing key_type and/or key_bits request parameters")
                }
                (type, bits) = try PKIKeyMaterial.normalize(type: f.string("key_type"), bits: f.int("key_bits"))
            } else if f.has("key_type") || f.has("key_bits") {
                warnings.append("parameters key_type and key_bits ignored as role had specific values")
            }
            let (t, b) = (type, bits)
            let k = try await t == "rsa" ? CPUWork.shared.run { try PKIKeyMaterial.generate(type: t, bits: b) } : PKIKeyMaterial.generate(type: t, bits: b)
            key = k
            publicKey = k.publicKey
        }

        let policy = PKINamePolicy(role: role)
        var t = PKITemplate()
        // The common name.
        var cn = f.string("common_name")
        if let csr, role.useCSRCommonName {
            if !cn.isEmpty { warnings.append("the common_name field was provided but the role is set with \"use_csr_common_name\" set to true") }
            cn = PKITemplate.commonName(csr.subject)
        }
        if cn.isEmpty && role.requireCN {
            throw CofferError.invalid("the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false")
        }
        // DNS and e-mail names.
        var names: [String] = []
        if !cn.isEmpty && !f.bool("exclude_cn_from_sans") { names.append(cn) }
        var ipTexts = f.strings("ip_sans"), uris = f.strings("uri_sans")
        var csrIPs: [[UInt8]] = []
        if let csr, role.useCSRSANs {
            if f.has("alt_names") && !f.strings("alt_names").isEmpty { warnings.append("the alt_names field was provided but the role is set with \"use_csr_sans\" set to true") }
            if let er = try? csr.attributes.extensionRequest, let sans = try? er.extensions.subjectAlternativeNames {
                for n in sans {
                    switch n {
                    case .dnsName(let d): names.append(d)
                    case .rfc822Name(let e): names.append(e)
                    case .ipAddress(let ip): csrIPs.append(Array(ip.bytes))
                    case .uniformResourceIdentifier(let u): uris.append(u)
                    default: break
                    }
                }
            }
            ipTexts = []
        } else {
            names += f.strings("alt_names")
        }
        var seen = Set<String>()
        names = names.filter { seen.insert($0).inserted }
        for n in names.prefix(1024) {
            if n.contains("@") { t.emails.append(n) } else if PKINamePolicy.isHostname(n) { t.dnsNames.append(n) }
        }
        if !cn.isEmpty && !policy.allowsCommonName(cn) { throw CofferError.invalid("common name \(cn.prefix(256)) not allowed by this role") }
        for d in t.dnsNames where !policy.allows(d) { throw CofferError.invalid("subject alternate name \(d.prefix(256)) not allowed by this role") }
        for e in t.emails where !policy.allows(e) { throw CofferError.invalid("email address \(e.prefix(256)) not allowed by this role") }
        let serialNumberAttr = f.string("serial_number")
        if !serialNumberAttr.isEmpty && !role.allowedSerialNumbers.contains(where: { Glob.match($0, serialNumberAttr) }) {
            throw CofferError.invalid("serial_number \(serialNumberAttr.prefix(64)) not allowed by this role")
        }
        for o in f.strings("other_sans").prefix(256) {
            let (oid, value) = try PKINamePolicy.parseOtherSAN(o)
            try policy.checkOtherSAN(oid: oid, value: value)
            t.otherNames.append((try PKITemplate.oid(oid, what: "an other SAN"), value))
        }
        for ip in ipTexts {
            guard let b = PKITemplate.ipBytes(ip) else { throw CofferError.invalid("the value \"\(ip.prefix(64))\" is not a valid IP address") }
            t.ips.append(b)
        }
        t.ips += csrIPs
        if !t.ips.isEmpty && !role.allowIPSANs {
            throw CofferError.invalid("IP Subject Alternative Names are not allowed in this role, but was provided via \(csrIPs.isEmpty ? "the API" : "CSR")")
        }
        if !uris.isEmpty {
            if role.allowedURISANs.isEmpty { throw CofferError.invalid("URI Subject Alternative Names are not allowed in this role, but were provided via the API") }
            for u in uris where !policy.allowsURI(u) { throw CofferError.invalid("URI Subject Alternative Names were provided via the API which are not valid for this role") }
        }
        t.uris = uris
        t.subject = try PKITemplate.subject(cn: cn, ou: role.ou, organization: role.organization, country: role.country, locality: role.locality,
                                            province: role.province, street: role.streetAddress, postalCode: role.postalCode, serialNumber: serialNumberAttr)
        t.keyUsage = role.keyUsage
        t.extKeyUsage = role.extKeyUsage
        if role.serverFlag { t.extKeyUsage.append("ServerAuth") }
        if role.clientFlag { t.extKeyUsage.append("ClientAuth") }
        if role.codeSigningFlag { t.extKeyUsage.append("CodeSigning") }
        if role.emailProtectionFlag { t.extKeyUsage.append("EmailProtection") }
        t.extKeyUsageOIDs = role.extKeyUsageOIDs
        t.policyIdentifiers = role.policyIdentifiers
        t.basicConstraintsForNonCA = role.basicConstraintsValidForNonCA

        return try await sign(req, template: t, publicKey: publicKey, key: key, role: role, ref: ref ?? role.issuerRef, warnings: warnings)
    }

    /// A CSR's key against the role's `key_type` and `key_bits`.
    static func checkCSRKey(_ key: Certificate.PublicKey, role: PKIRole) throws {
        let (type, bits) = PKIKeyMaterial.describe(key)
        guard type != "unknown" else { throw CofferError.invalid("Refusing to sign CSR with an unsupported public key type") }
        if type == "rsa" && bits < 2048 { throw CofferError.invalid("RSA keys < 2048 bits are unsafe and not supported") }
        guard role.keyType == "any" else {
            guard type == role.keyType else { throw CofferError.invalid("role requires keys of type \(role.keyType)") }
            if type != "ed25519" && bits < role.keyBits {
                throw CofferError.invalid("role requires a minimum of a \(role.keyBits)-bit key, but CSR's key is \(bits) bits")
            }
            return
        }
    }

    /// Validity, issuer, AIA; builds, signs, stores (unless `no_store`), answers.
    func sign(_ req: LogicalRequest, template: PKITemplate, publicKey: Certificate.PublicKey, key: PKIKeyMaterial?, role: PKIRole,
              ref: String, warnings: [String]) async throws -> LogicalResponse? {
        var warnings = warnings
        var t = template
        let f = req.fields
        let (issuer, issuerCert, signer) = try await signingIssuer(req, ref: ref)
        if f.has("not_after") && !f.string("not_after").isEmpty {
            t.notAfter = try notAfter(req, ttl: 0, max: 0, warnings: &warnings)
        } else if !role.notAfter.isEmpty, f.int("ttl") == 0, let d = RFC3339.parse(role.notAfter) {
            t.notAfter = d
        } else {
            t.notAfter = try notAfter(req, ttl: role.ttl > 0 ? role.ttl : defaultTTL, max: role.maxTTL > 0 ? role.maxTTL : maxTTL, warnings: &warnings)
        }
        t.notBefore = try notBefore(req, duration: role.notBeforeDuration)
        if t.notAfter > issuerCert.notValidAfter {
            switch issuer.leafNotAfterBehavior {
            case "truncate":
                t.notAfter = issuerCert.notValidAfter
            case "permit":
                break
            default:
                throw CofferError.invalid("cannot satisfy request, as TTL would result in notAfter of \(RFC3339.format(t.notAfter)) that is beyond the expiration of the CA certificate at \(RFC3339.format(issuerCert.notValidAfter))")
            }
        }
        (t.issuingCertificates, t.crlDistributionPoints, t.ocspServers) = try await aia(for: issuer, id: issuer.id)
        t.authorityKeyID = parsed.keyIdentifier(issuer.certificate, issuerCert)
        let serial = Self.newSerial()
        let build = { @Sendable [t] in
            try t.build(publicKey: publicKey, serial: serial, issuerName: issuerCert.subject, issuerPublicKey: issuerCert.publicKey, signer: signer,
                        signatureBits: role.signatureBits)
        }
        // An RSA signature takes milliseconds: off the request's thread. EC and Ed25519 ones
        // take tens of microseconds, less than the hop.
        let cert: Certificate
        if case .rsa = signer { cert = try await CPUWork.shared.run(build) } else { cert = try build() }
        if !role.noStore { try await storeCertificate(cert, issuerID: issuer.id) }
        let pem = Self.trimmedPEM(try Self.pem(cert))
        var chain = chain(of: issuer).map(Self.trimmedPEM)
        if f.bool("remove_roots_from_chain") {
            chain = chain.filter { c in (try? parsed.certificate(c)).map { $0.issuer != $0.subject } ?? true }
        }
        let serialText = Self.serialString(serial)
        var d: [String: JSONValue] = [
            "certificate": .string(pem), "issuing_ca": .string(Self.trimmedPEM(issuer.certificate)), "serial_number": .string(serialText),
            "expiration": .int(Int64(cert.notValidAfter.timeIntervalSince1970)), "not_before": .int(Int64(cert.notValidBefore.timeIntervalSince1970)),
        ]
        if !chain.isEmpty { d["ca_chain"] = .array(chain.map { .string($0) }) }
        if let key {
            let format = f.string("private_key_format")
            guard ["", "der", "pem", "pkcs8"].contains(format) else { throw CofferError.invalid("the \"private_key_format\" parameter must be \"der\", \"pem\" or \"pkcs8\"") }
            d["private_key"] = .string(Self.trimmedPEM(try key.pem(format: format)))
            d["private_key_type"] = .string(key.type)
        }
        if f.string("format") == "pem_bundle" {
            // The bundle carries the whole chain, roots included.
            d["ca_chain"] = .array(self.chain(of: issuer).map { .string(Self.trimmedPEM($0)) })
        }
        try Self.applyFormat(&d, format: f.string("format"), keys: ["certificate", "issuing_ca"], privateKey: key != nil, chainKey: "ca_chain")
        if f.string("format") == "pem_bundle" && !chain.isEmpty { d["ca_chain"] = .array(chain.map { .string($0) }) }
        var r = LogicalResponse(data: d, warnings: warnings)
        if role.generateLease {
            let ttl = max(1, Int(cert.notValidAfter.timeIntervalSince(nowDate)))
            r.secret = SecretLease(ttl: ttl, maxTTL: ttl, renewable: false, internalData: ["serial_number": .string(serialText)])
        }
        return r
    }

    func signVerbatim(_ req: LogicalRequest, ref: String?) async throws -> LogicalResponse? {
        let f = req.fields
        var role = PKIRole()
        let roleName = f.string("role")
        if !roleName.isEmpty {
            guard let r = try await self.role(roleName) else { throw CofferError.invalid("unknown role: \(roleName.prefix(128))") }
            role.ttl = r.ttl
            role.maxTTL = r.maxTTL
            role.generateLease = r.generateLease
            role.notBeforeDuration = r.notBeforeDuration
            role.noStore = r.noStore
            role.issuerRef = r.issuerRef
            role.basicConstraintsValidForNonCA = f.has("basic_constraints_valid_for_non_ca") ? f.bool("basic_constraints_valid_for_non_ca") : r.basicConstraintsValidForNonCA
        } else {
            role.basicConstraintsValidForNonCA = f.bool("basic_constraints_valid_for_non_ca")
        }
        role.signatureBits = f.int("signature_bits")
        if f.bool("use_pss") { throw CofferError.invalid("use_pss is not supported by this server: RSA-PSS certificate signatures are not available") }
        let csr = try Self.parseCSR(f.string("csr"))
        let (type, bits) = PKIKeyMaterial.describe(csr.publicKey)
        if type == "unknown" { throw CofferError.invalid("Refusing to sign CSR with an unsupported public key type") }
        if type == "rsa" && bits < 2048 { throw CofferError.invalid("RSA keys < 2048 bits are unsafe and not supported") }
        var t = PKITemplate()
        t.subject = csr.subject
        if let er = try? csr.attributes.extensionRequest {
            t.copiedExtensions = Array(er.extensions).filter { ![[2, 5, 29, 19], [2, 5, 29, 15], [2, 5, 29, 37], [2, 5, 29, 14], [2, 5, 29, 35]].contains($0.oid) }
            if let eku = try? er.extensions.extendedKeyUsage {
                t.extKeyUsageOIDs = eku.map { ASN1ObjectIdentifier($0).description }
            }
        }
        t.keyUsage = f.strings("key_usage")
        t.extKeyUsage = f.strings("ext_key_usage")
        t.extKeyUsageOIDs += f.strings("ext_key_usage_oids")
        t.basicConstraintsForNonCA = role.basicConstraintsValidForNonCA
        return try await sign(req, template: t, publicKey: csr.publicKey, key: nil, role: role, ref: ref ?? role.issuerRef, warnings: [])
    }
}
