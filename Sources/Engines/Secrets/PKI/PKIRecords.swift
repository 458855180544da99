import CofferSDK
import Foundation

/// What a PKI mount stores (all behind the barrier), one record per key:
/// `issuer/<id>`, `key/<id>`, `role/<name>`, `certs/<serial>`, `revoked/<serial>`,
/// `crl/<issuer id>`, `config/{issuers,keys,crl,urls,auto-tidy}`.

/// An issuer: a CA certificate the mount can sign with (when it holds the key) and its
/// chain, with Vault's per-issuer settings.
struct PKIIssuer: Codable, Sendable {
    var id: String
    var name = ""
    var keyID = ""
    /// The issuer's certificate, PEM.
    var certificate: String
    /// Its parents, PEM, nearest first (not the issuer itself).
    var parents: [String] = []
    var manualChain: [String] = []
    var leafNotAfterBehavior = "err"
    var usage = "read-only,issuing-certificates,crl-signing,ocsp-signing"
    var revocationSignatureAlgorithm = ""
    var issuingCertificates: [String] = []
    var crlDistributionPoints: [String] = []
    var ocspServers: [String] = []
    var enableAIAURLTemplating = false
    var serial = ""
    var notAfter: Int64 = 0
    var revoked = false
    var revocationTime: Int64 = 0

    func allows(_ use: String) -> Bool { usage.split(separator: ",").contains { $0 == use } }
}

/// A key pair the mount holds (an issuer's, or generated for one to come).
struct PKIKey: Codable, Sendable {
    var id: String
    var name = ""
    var type: String
    var bits: Int
    /// PKCS#8 PEM.
    var pem: String
}

struct PKIIssuersConfig: Codable, Sendable {
    var defaultIssuer = ""
    var defaultFollowsLatestIssuer = false
}

struct PKIKeysConfig: Codable, Sendable {
    var defaultKey = ""
}

/// A stored certificate (`certs/<serial>`), and its revocation once revoked.
struct PKICertificate: Codable, Sendable {
    var serial: String
    var certificate: String
    var issuerID: String
    var notAfter: Int64
    var revocationTime: Int64 = 0
}

/// An entry of the revoked list (`revoked/<serial>`): what CRLs and OCSP answer from.
struct PKIRevocation: Codable, Sendable {
    var serial: String
    var issuerID: String
    var revocationTime: Int64
    var notAfter: Int64
    var certificate: String
}

/// `config/crl`, with Vault's defaults.
struct PKICRLConfig: Codable, Sendable {
    var expiry = "72h"
    var disable = false
    var ocspDisable = false
    var ocspExpiry = "12h"
    var autoRebuild = false
    var autoRebuildGracePeriod = "12h"
    var enableDelta = false
    var deltaRebuildInterval = "15m"
    var crossClusterRevocation = false
    var unifiedCRL = false
    var unifiedCRLOnExistingPaths = false
    var allowExpiredCertRevocation = false
}

/// `config/urls`.
struct PKIURLs: Codable, Sendable {
    var issuingCertificates: [String] = []
    var crlDistributionPoints: [String] = []
    var ocspServers: [String] = []
    var enableTemplating = false
}

/// `config/cluster`: this cluster's path to the mount, for AIA templates.
struct PKIClusterConfig: Codable, Sendable {
    var path = ""
    var aiaPath = ""
}

/// One issuer's built CRLs (`crl/<issuer id>`).
struct PKICRLState: Codable, Sendable {
    var number = 0
    var der: [UInt8] = []
    var thisUpdate: Int64 = 0
    var nextUpdate: Int64 = 0
    var deltaDER: [UInt8] = []
    var deltaNumber = 0
    var deltaBuilt: Int64 = 0
    /// Serials in the full CRL (a delta lists what was revoked since).
    var baseSerials: [String] = []
}

/// `config/auto-tidy` (and the fields a manual `tidy` takes).
struct PKITidyConfig: Codable, Sendable {
    var enabled = false
    var intervalDuration = 43_200
    var tidyCertStore = false
    var tidyRevokedCerts = false
    var tidyRevokedCertIssuerAssociations = false
    var tidyExpiredIssuers = false
    var tidyMoveLegacyCABundle = false
    var safetyBuffer = 259_200
    var issuerSafetyBuffer = 31_536_000
    var pauseDuration = "0s"
    var maintainStoredCertificateCounts = false
    var publishStoredCertificateCountMetrics = false
}

/// A role (`roles/:name`): what `issue` and `sign` may put in a certificate.
struct PKIRole: Codable, Sendable {
    var ttl = 0
    var maxTTL = 0
    var allowLocalhost = true
    var allowedDomains: [String] = []
    var allowedDomainsTemplate = false
    var allowBareDomains = false
    var allowSubdomains = false
    var allowGlobDomains = false
    var allowWildcardCertificates = true
    var allowAnyName = false
    var enforceHostnames = true
    var allowIPSANs = true
    var allowedURISANs: [String] = []
    var allowedURISANsTemplate = false
    var allowedOtherSANs: [String] = []
    var allowedSerialNumbers: [String] = []
    var allowedUserIDs: [String] = []
    var serverFlag = true
    var clientFlag = true
    var codeSigningFlag = false
    var emailProtectionFlag = false
    var keyType = "rsa"
    var keyBits = 2048
    var signatureBits = 0
    var usePSS = false
    var keyUsage = ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]
    var extKeyUsage: [String] = []
    var extKeyUsageOIDs: [String] = []
    var useCSRCommonName = true
    var useCSRSANs = true
    var ou: [String] = []
    var organization: [String] = []
    var country: [String] = []
    var locality: [String] = []
    var province: [String] = []
    var streetAddress: [String] = []
    var postalCode: [String] = []
    var generateLease = false
    var noStore = false
    var noStoreMetadata = false
    var requireCN = true
    var cnValidations = ["email", "hostname"]
    var policyIdentifiers: [String] = []
    var basicConstraintsValidForNonCA = false
    var notBeforeDuration = 30
    var notAfter = ""
    var issuerRef = "default"
}
