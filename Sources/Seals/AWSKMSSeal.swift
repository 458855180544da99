import AWSClient
import NIOCore
import CofferSDK
import Foundation
import TenantCore

/// `seal "awskms" { ... }`: the KMS key and how to reach it.
public struct AWSKMSSealConfiguration: Sendable {
    public var region: String
    public var kmsKeyID: String
    /// nil: `https://kms.<region>.amazonaws.com`.
    public var endpoint: String?
    public var credentials: AWSCredentials

    /// Parses the stanza as Vault does: `VAULT_AWSKMS_SEAL_KEY_ID` wins over `kms_key_id`,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION` over `region` (default us-east-1),
    /// `AWS_KMS_ENDPOINT` over `endpoint`; static `access_key`/`secret_key`/`session_token`
    /// in the stanza win over `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
    /// (the credential chain's order).
    public static func parse(_ o: [String: JSONValue], environment env: [String: String] = ProcessInfo.processInfo.environment) throws -> Self {
        func string(_ name: String) throws -> String? {
            guard let v = o[name], !v.isNull else { return nil }
            guard let s = v.stringValue else { throw CofferError.invalid("seal \"awskms\": \(name) must be a string") }
            return s.isEmpty ? nil : s
        }
        func envValue(_ name: String) -> String? { env[name].flatMap { $0.isEmpty ? nil : $0 } }
        let configuredKeyID = try string("kms_key_id"), configuredRegion = try string("region"), configuredEndpoint = try string("endpoint")
        guard let keyID = envValue("VAULT_AWSKMS_SEAL_KEY_ID") ?? configuredKeyID else {
            throw CofferError.invalid("seal \"awskms\": kms_key_id is required (or VAULT_AWSKMS_SEAL_KEY_ID)")
        }
        guard keyID.utf8.count <= 2048 else { throw CofferError.invalid("seal \"awskms\": kms_key_id is too long") }
        let region = envValue("AWS_REGION") ?? envValue("AWS_DEFAULT_REGION") ?? configuredRegion ?? "us-east-1"
        guard !region.isEmpty, region.utf8.count <= 64, region.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
            throw CofferError.invalid("seal \"awskms\": region must be an AWS region name such as us-east-1")
        }
        let endpoint = envValue("AWS_KMS_ENDPOINT") ?? configuredEndpoint
        let credentials: AWSCredentials
        let accessKey = try string("access_key"), secretKey = try string("secret_key")
        if accessKey != nil || secretKey != nil {
            guard let accessKey, let secretKey else { throw CofferError.invalid("seal \"awskms\": access_key and secret_key go together") }
            credentials = AWSCredentials(accessKeyID: accessKey, secretAccessKey: secretKey, sessionToken: try string("session_token"))
        } else if let fromEnv = AWSCredentials.fromEnvironment(env) {
            credentials = fromEnv
        } else {
            throw CofferError.invalid("seal \"awskms\": no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or access_key and secret_key)")
        }
        return Self(region: region, kmsKeyID: keyID, endpoint: endpoint, credentials: credentials)
    }
}

/// The AWS KMS seal: the root key (32 bytes, well under KMS's 4 KiB limit) is encrypted by
/// KMS itself under `kms_key_id` with an encryption context naming the storage key it is
/// kept under, so a blob moved to another key does not decrypt. Every call is SigV4-signed
/// and bounded in time; KMS errors become `SealUnavailable` with AWS's error code (never
/// a credential).
public final class AWSKMSSeal: AutoSeal {
    public let type = "awskms"
    public let configuration: AWSKMSSealConfiguration
    let kms: AWSService
    static let contextKey = "coffer:storage-key"

    public init(configuration: AWSKMSSealConfiguration) throws {
        self.configuration = configuration
        do {
            var service = try AWSService(service: "kms", region: configuration.region, credentials: configuration.credentials, endpoint: configuration.endpoint)
            // An unreachable KMS shows in sys/seal-status within seconds, not after 10.
            service.timeout = .seconds(5)
            kms = service
        } catch let e as AWSError {
            throw CofferError.invalid("seal \"awskms\": \(e.message)")
        }
    }

    public func wrap(_ plaintext: [UInt8], context: String) async throws -> [UInt8] {
        let answer = try await call("Encrypt", [
            "KeyId": .string(configuration.kmsKeyID),
            "Plaintext": .string(Data(plaintext).base64EncodedString()),
            "EncryptionContext": .object([Self.contextKey: .string(context)]),
        ])
        guard let blob = answer["CiphertextBlob"]?.stringValue, Data(base64Encoded: blob) != nil else {
            throw SealUnavailable("awskms: KMS Encrypt answered without a CiphertextBlob")
        }
        let keyARN = answer["KeyId"]?.stringValue ?? configuration.kmsKeyID
        let stored: JSONValue = ["type": "awskms", "key_id": .string(keyARN), "ciphertext": .string(blob)]
        return stored.serialized()
    }

    public func unwrap(_ blob: [UInt8], context: String) async throws -> [UInt8] {
        guard let stored = try? JSONValue.parse(blob), stored["type"]?.stringValue == "awskms",
              let ciphertext = stored["ciphertext"]?.stringValue, let keyID = stored["key_id"]?.stringValue else {
            throw SealUnavailable("awskms: the stored root key was not wrapped by an awskms seal", retryable: false)
        }
        let answer = try await call("Decrypt", [
            "KeyId": .string(keyID),
            "CiphertextBlob": .string(ciphertext),
            "EncryptionContext": .object([Self.contextKey: .string(context)]),
        ])
        guard let plain = answer["Plaintext"]?.stringValue, let bytes = Data(base64Encoded: plain) else {
            throw SealUnavailable("awskms: KMS Decrypt answered without a Plaintext")
        }
        return Array(bytes)
    }

    public func close() async {}

    func call(_ action: String, _ body: JSONValue) async throws -> JSONValue {
        do {
            return try await kms.json(targetPrefix: "TrentService", action: action, body: body)
        } catch let e as AWSError {
            throw SealUnavailable("awskms: \(e.description)")
        }
    }
}
