import CofferSDK
import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import X509

/// The cluster's own PKI for node-to-node traffic (request forwarding).
///
/// The first active node creates a CA (P-256, ten years) and stores it behind the root
/// barrier, so only unsealed nodes of this cluster can read it. Each node issues itself a
/// short-lived leaf from it in memory at unseal. Both ends of a forwarded request present
/// their leaf and accept only a peer whose chain ends at that CA: mutual TLS without
/// operator-managed certificates.
public struct ClusterCA: Codable, Sendable {
    public var certificatePEM: String
    public var privateKeyPEM: String

    enum CodingKeys: String, CodingKey {
        case certificatePEM = "certificate", privateKeyPEM = "private_key"
    }

    /// Where the CA is kept (root namespace, behind the barrier).
    public static let storageKey = "core/cluster-ca"

    public static func generate(clusterName: String) throws -> ClusterCA {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("Coffer")
            CommonName("coffer-cluster-ca \(clusterName.prefix(40))")
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 10 * 365 * 86_400,
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        return ClusterCA(certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
    }

    /// A leaf for one node, valid for client and server use.
    public func issueNodeIdentity(nodeID: String) throws -> ClusterIdentity {
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
        let caCert = try Certificate(pemEncoded: certificatePEM)
        let key = P256.Signing.PrivateKey()
        let now = Date()
        let leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 365 * 86_400,
            issuer: caCert.subject, subject: try DistinguishedName { CommonName("coffer-node \(nodeID)") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
            },
            issuerPrivateKey: .init(caKey))
        return try ClusterIdentity(
            ca: NIOSSLCertificate(bytes: Array(certificatePEM.utf8), format: .pem),
            certificate: NIOSSLCertificate(bytes: Array(try leaf.serializeAsPEM().pemString.utf8), format: .pem),
            key: NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem))
    }
}

/// One node's TLS identity on the cluster port.
public struct ClusterIdentity: Sendable {
    let ca: NIOSSLCertificate
    let certificate: NIOSSLCertificate
    let key: NIOSSLPrivateKey

    /// The cluster listener: TLS 1.3, a client certificate from the cluster CA required.
    public var serverConfiguration: TLSConfiguration {
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates([ca])
        // Peers are named by the CA, not by host names (nodes move between addresses).
        tls.certificateVerification = .noHostnameVerification
        return tls
    }

    /// Forwarding client: presents this node's leaf, accepts only a cluster-CA server.
    public var clientConfiguration: TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates([ca])
        tls.certificateChain = [.certificate(certificate)]
        tls.privateKey = .privateKey(key)
        tls.certificateVerification = .noHostnameVerification
        return tls
    }
}
