import CPKCS11
import CofferSDK
@preconcurrency import Crypto
import Foundation
import NIOPosix
import TenantCore

/// `seal "pkcs11" { ... }`: which module, token, key and mechanism.
public struct PKCS11SealConfiguration: Sendable {
    public enum Mechanism: String, Sendable {
        case aesGCM = "CKM_AES_GCM"
        case rsaOAEP = "CKM_RSA_PKCS_OAEP"
    }

    public var library: String
    public var slot: UInt?
    public var tokenLabel: String?
    public var pin: String
    public var keyLabel: String
    /// Accepted for Vault's configuration shape; Coffer's seal wraps with one key only
    /// (AES-GCM authenticates the root key, so no separate HMAC key is needed).
    public var hmacKeyLabel: String?
    public var mechanism: Mechanism
    /// RSA-OAEP's hash (and MGF1's): sha1, sha224, sha256 (default), sha384, sha512, as
    /// Vault's `rsa_oaep_hash`. SoftHSM2 2.6 implements OAEP with SHA-1 only.
    public var rsaOAEPHash: String
    public var generateKey: Bool

    /// (CKM_SHA*, CKG_MGF1_*) for `rsaOAEPHash`.
    var oaepParameters: (hash: UInt, mgf: UInt) {
        switch rsaOAEPHash {
        case "sha1": (UInt(CKM_SHA_1), UInt(CKG_MGF1_SHA1))
        case "sha224": (UInt(CKM_SHA224), UInt(CKG_MGF1_SHA224))
        case "sha384": (UInt(CKM_SHA384), UInt(CKG_MGF1_SHA384))
        case "sha512": (UInt(CKM_SHA512), UInt(CKG_MGF1_SHA512))
        default: (UInt(CKM_SHA256), UInt(CKG_MGF1_SHA256))
        }
    }

    /// Parses the stanza. The PIN may come from `COFFER_HSM_PIN` or `VAULT_HSM_PIN`
    /// instead (the environment wins, as Vault's `VAULT_HSM_*` variables do).
    public static func parse(_ o: [String: JSONValue], environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Self {
        func string(_ name: String) throws -> String? {
            guard let v = o[name], !v.isNull else { return nil }
            if let s = v.stringValue { return s }
            if let i = v.intValue { return String(i) }
            if let b = v.boolValue { return String(b) }
            throw CofferError.invalid("seal \"pkcs11\": \(name) must be a string")
        }
        guard let lib = try string("lib"), !lib.isEmpty else { throw CofferError.invalid("seal \"pkcs11\": lib (the PKCS#11 module's path) is required") }
        var slot: UInt?
        if let s = try string("slot"), !s.isEmpty {
            let parsed = s.hasPrefix("0x") ? UInt(s.dropFirst(2), radix: 16) : UInt(s)
            guard let parsed else { throw CofferError.invalid("seal \"pkcs11\": slot must be a number") }
            slot = parsed
        }
        let label = try string("token_label")
        guard slot != nil || !(label ?? "").isEmpty else { throw CofferError.invalid("seal \"pkcs11\": slot or token_label is required") }
        if let label, label.utf8.count > 32 { throw CofferError.invalid("seal \"pkcs11\": token_label is at most 32 bytes") }
        let configuredPIN = try string("pin")
        let pin = environment["COFFER_HSM_PIN"] ?? environment["VAULT_HSM_PIN"] ?? configuredPIN ?? ""
        guard !pin.isEmpty else { throw CofferError.invalid("seal \"pkcs11\": pin is required (or COFFER_HSM_PIN / VAULT_HSM_PIN)") }
        guard let keyLabel = try string("key_label"), !keyLabel.isEmpty else { throw CofferError.invalid("seal \"pkcs11\": key_label is required") }
        let mechanismText = (try string("mechanism") ?? "CKM_AES_GCM").uppercased()
        let mechanism: Mechanism
        switch mechanismText {
        case "CKM_AES_GCM", "AES-GCM", "AES_GCM", "0X1087", "4231": mechanism = .aesGCM
        case "CKM_RSA_PKCS_OAEP", "RSA-OAEP", "RSA_OAEP", "0X0009", "0X9", "9": mechanism = .rsaOAEP
        default: throw CofferError.invalid("seal \"pkcs11\": mechanism must be CKM_AES_GCM (0x1087) or CKM_RSA_PKCS_OAEP (0x0009)")
        }
        let oaepHash = (try string("rsa_oaep_hash") ?? "sha256").lowercased()
        guard ["sha1", "sha224", "sha256", "sha384", "sha512"].contains(oaepHash) else {
            throw CofferError.invalid("seal \"pkcs11\": rsa_oaep_hash must be sha1, sha224, sha256, sha384 or sha512")
        }
        var generate = false
        if let g = try string("generate_key") {
            guard let b = Bool(g.lowercased()) else { throw CofferError.invalid("seal \"pkcs11\": generate_key must be true or false") }
            generate = b
        }
        return Self(library: lib, slot: slot, tokenLabel: label, pin: pin, keyLabel: keyLabel,
                    hmacKeyLabel: try string("hmac_key_label"), mechanism: mechanism, rsaOAEPHash: oaepHash, generateKey: generate)
    }
}

/// The HSM seal: the root key wrapped by a key on a PKCS#11 token (AES-GCM with the
/// storage key as additional data, or RSA-OAEP-SHA256 with a digest of it inside). The
/// module is `dlopen`ed from `lib` (any vendor's; SoftHSM2 in the tests). The token and
/// session are opened on first use, so an unreachable HSM leaves the node sealed and
/// retrying instead of failing the start; a failed call closes the session and the next
/// one opens a new one. PKCS#11 calls block: they run on the seal's own thread.
public final class PKCS11Seal: AutoSeal, @unchecked Sendable {
    public let type = "pkcs11"
    public let configuration: PKCS11SealConfiguration
    private let handle: UnsafeMutableRawPointer
    private let functions: CK_FUNCTION_LIST_PTR
    private let pool: NIOThreadPool
    // Guarded by `lock` (and only touched on `pool`'s one thread).
    private let lock = NSLock()
    private var initialized = false
    private var session = CK_SESSION_HANDLE(CK_INVALID_HANDLE)
    private var keys: (encrypt: CK_OBJECT_HANDLE, decrypt: CK_OBJECT_HANDLE)?

    /// Loads the module. A missing or unloadable library is a configuration error (the
    /// server refuses to start); everything that talks to the token happens later.
    public init(configuration: PKCS11SealConfiguration) throws {
        self.configuration = configuration
        guard FileManager.default.fileExists(atPath: configuration.library) else {
            throw CofferError.invalid("seal \"pkcs11\": the PKCS#11 library \(configuration.library) does not exist")
        }
        guard let h = coffer_p11_dlopen(configuration.library) else {
            let reason = coffer_p11_dlerror().map { String(cString: $0) } ?? "unknown error"
            throw CofferError.invalid("seal \"pkcs11\": cannot load the PKCS#11 library \(configuration.library): \(reason)")
        }
        var rv = CK_RV(CKR_OK)
        guard let f = coffer_p11_functions(h, &rv) else {
            coffer_p11_dlclose(h)
            throw CofferError.invalid("seal \"pkcs11\": \(configuration.library) is not a PKCS#11 module (C_GetFunctionList: \(Self.name(rv)))")
        }
        handle = h
        functions = f
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
    }

    deinit {
        try? pool.syncShutdownGracefully()
    }

    public func close() async {
        _ = try? await pool.runIfActive { [self] in
            lock.withLock {
                resetSession()
                if initialized { _ = coffer_p11_finalize(functions) }
                initialized = false
            }
        }
    }

    public func wrap(_ plaintext: [UInt8], context: String) async throws -> [UInt8] {
        let blob = try await run { [self] session, keys in
            switch configuration.mechanism {
            case .aesGCM:
                var iv = SecureRandom.bytes(12)
                let aad = Array(context.utf8)
                var out = [UInt8](repeating: 0, count: plaintext.count + 16)
                var n = UInt(out.count)
                try check(coffer_p11_aes_gcm(functions, session, keys.encrypt, 1, &iv, UInt(iv.count), aad, UInt(aad.count),
                                             plaintext, UInt(plaintext.count), &out, &n), "C_Encrypt (AES-GCM)")
                return PKCS11Blob(mechanism: PKCS11SealConfiguration.Mechanism.aesGCM.rawValue, keyLabel: configuration.keyLabel,
                                  iv: Data(iv).base64EncodedString(), ciphertext: Data(out.prefix(Int(n))).base64EncodedString())
            case .rsaOAEP:
                let input = Array(SHA256.hash(data: Array(context.utf8))) + plaintext
                var out = [UInt8](repeating: 0, count: 1024)
                var n = UInt(out.count)
                let p = configuration.oaepParameters
                try check(coffer_p11_rsa_oaep(functions, session, keys.encrypt, 1, p.hash, p.mgf, input, UInt(input.count), &out, &n), "C_Encrypt (RSA-OAEP)")
                return PKCS11Blob(mechanism: PKCS11SealConfiguration.Mechanism.rsaOAEP.rawValue, keyLabel: configuration.keyLabel,
                                  iv: nil, ciphertext: Data(out.prefix(Int(n))).base64EncodedString())
            }
        }
        return Array(try JSONEncoder().encode(blob))
    }

    public func unwrap(_ bytes: [UInt8], context: String) async throws -> [UInt8] {
        guard let blob = try? JSONDecoder().decode(PKCS11Blob.self, from: Data(bytes)),
              let ciphertext = Data(base64Encoded: blob.ciphertext) else {
            throw SealUnavailable("the stored wrapped key is not a pkcs11 seal blob", retryable: false)
        }
        guard blob.mechanism == configuration.mechanism.rawValue, blob.keyLabel == configuration.keyLabel else {
            throw SealUnavailable("the stored key was wrapped with \(blob.mechanism) by key \"\(blob.keyLabel)\"; the configuration names \(configuration.mechanism.rawValue) and \"\(configuration.keyLabel)\"", retryable: false)
        }
        return try await run { [self] session, keys in
            let input = Array(ciphertext)
            var out = [UInt8](repeating: 0, count: max(input.count, 1024))
            var n = UInt(out.count)
            switch configuration.mechanism {
            case .aesGCM:
                guard let ivData = blob.iv.flatMap({ Data(base64Encoded: $0) }), ivData.count == 12 else {
                    throw P11Failure("the stored blob has no valid IV", retryable: false)
                }
                var iv = Array(ivData)
                let aad = Array(context.utf8)
                try check(coffer_p11_aes_gcm(functions, session, keys.decrypt, 0, &iv, UInt(iv.count), aad, UInt(aad.count),
                                             input, UInt(input.count), &out, &n), "C_Decrypt (AES-GCM)")
                return Array(out.prefix(Int(n)))
            case .rsaOAEP:
                let p = configuration.oaepParameters
                try check(coffer_p11_rsa_oaep(functions, session, keys.decrypt, 0, p.hash, p.mgf, input, UInt(input.count), &out, &n), "C_Decrypt (RSA-OAEP)")
                let plain = Array(out.prefix(Int(n)))
                let digest = Array(SHA256.hash(data: Array(context.utf8)))
                guard plain.count > 32, constantTimeEquals(plain.prefix(32), digest) else {
                    throw P11Failure("the unwrapped key belongs to another storage entry", retryable: false)
                }
                return Array(plain.dropFirst(32))
            }
        }
    }

    // MARK: session

    /// Runs `body` with an open, logged-in session and the key handles, on the seal's
    /// thread. A PKCS#11 failure closes the session and is tried once more on a new one
    /// (an HSM restarted under us); what still fails becomes `SealUnavailable`.
    private func run<T: Sendable>(_ body: @escaping @Sendable (CK_SESSION_HANDLE, (encrypt: CK_OBJECT_HANDLE, decrypt: CK_OBJECT_HANDLE)) throws -> T) async throws -> T {
        do {
            return try await pool.runIfActive { [self] in
                try lock.withLock {
                    var attempt = 0
                    while true {
                        do {
                            let (s, k) = try openIfNeeded()
                            return try body(s, k)
                        } catch let e as P11Failure {
                            resetSession()
                            attempt += 1
                            if !e.retryable || attempt >= 2 { throw SealUnavailable(e.message, retryable: e.retryable) }
                        }
                    }
                }
            }
        } catch let e as SealUnavailable {
            throw e
        } catch {
            throw SealUnavailable("the HSM call did not run: \(error)")
        }
    }

    private func resetSession() {
        if session != CK_SESSION_HANDLE(CK_INVALID_HANDLE) { coffer_p11_close(functions, session) }
        session = CK_SESSION_HANDLE(CK_INVALID_HANDLE)
        keys = nil
    }

    private func openIfNeeded() throws -> (CK_SESSION_HANDLE, (encrypt: CK_OBJECT_HANDLE, decrypt: CK_OBJECT_HANDLE)) {
        if let keys, session != CK_SESSION_HANDLE(CK_INVALID_HANDLE) { return (session, keys) }
        if !initialized {
            try check(coffer_p11_initialize(functions), "C_Initialize")
            initialized = true
        }
        var slot = CK_SLOT_ID(0)
        let rv: CK_RV
        if let label = configuration.tokenLabel, !label.isEmpty {
            rv = coffer_p11_find_slot(functions, label, 0, 1, &slot)
        } else {
            rv = coffer_p11_find_slot(functions, "", configuration.slot ?? 0, 0, &slot)
        }
        if rv == CK_RV(CKR_TOKEN_NOT_PRESENT) {
            let which = configuration.tokenLabel.map { "labelled \"\($0)\"" } ?? "in slot \(configuration.slot ?? 0)"
            throw P11Failure("no token \(which)")
        }
        if rv == CK_RV(CKR_CRYPTOKI_NOT_INITIALIZED) { initialized = false }
        try check(rv, "C_GetSlotList")
        var s = CK_SESSION_HANDLE(CK_INVALID_HANDLE)
        let pin = Array(configuration.pin.utf8).map { CChar(bitPattern: $0) } + [0]
        try check(coffer_p11_open(functions, slot, pin, UInt(pin.count - 1), &s), "C_OpenSession/C_Login")
        session = s
        keys = try findKeys(s)
        return (s, keys!)
    }

    private func findKeys(_ s: CK_SESSION_HANDLE) throws -> (encrypt: CK_OBJECT_HANDLE, decrypt: CK_OBJECT_HANDLE) {
        let label = configuration.keyLabel
        var found: Int32 = 0
        switch configuration.mechanism {
        case .aesGCM:
            var key = CK_OBJECT_HANDLE(0)
            try check(coffer_p11_find(functions, s, CK_OBJECT_CLASS(CKO_SECRET_KEY), label, &key, &found), "C_FindObjects")
            if found == 1 { return (key, key) }
            guard configuration.generateKey else { throw P11Failure("no AES key labelled \"\(label)\" on the token (set generate_key = true to create it)") }
            try check(coffer_p11_generate_aes(functions, s, label, &key), "C_GenerateKey (AES-256)")
            return (key, key)
        case .rsaOAEP:
            var pub = CK_OBJECT_HANDLE(0), priv = CK_OBJECT_HANDLE(0)
            var foundPriv: Int32 = 0
            try check(coffer_p11_find(functions, s, CK_OBJECT_CLASS(CKO_PUBLIC_KEY), label, &pub, &found), "C_FindObjects")
            try check(coffer_p11_find(functions, s, CK_OBJECT_CLASS(CKO_PRIVATE_KEY), label, &priv, &foundPriv), "C_FindObjects")
            if found == 1 && foundPriv == 1 { return (pub, priv) }
            guard configuration.generateKey else { throw P11Failure("no RSA key pair labelled \"\(label)\" on the token (set generate_key = true to create it)") }
            try check(coffer_p11_generate_rsa(functions, s, label, &pub, &priv), "C_GenerateKeyPair (RSA-2048)")
            return (pub, priv)
        }
    }

    private func check(_ rv: CK_RV, _ call: String) throws {
        guard rv != CK_RV(CKR_OK) else { return }
        // A wrong or locked PIN is not retried: an HSM locks the token after a few tries.
        let pinProblem = rv == CK_RV(CKR_PIN_INCORRECT) || rv == CK_RV(CKR_PIN_LOCKED) || rv == CK_RV(CKR_PIN_INVALID) || rv == CK_RV(CKR_PIN_LEN_RANGE)
        throw P11Failure("\(call): \(Self.name(rv))\(pinProblem ? " (not retried: fix the PIN and restart)" : "")", retryable: !pinProblem)
    }

    static func name(_ rv: CK_RV) -> String {
        let names: [UInt: String] = [
            0x0: "CKR_OK", 0x1: "CKR_CANCEL", 0x2: "CKR_HOST_MEMORY", 0x3: "CKR_SLOT_ID_INVALID", 0x5: "CKR_GENERAL_ERROR",
            0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD", 0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY",
            0x32: "CKR_DEVICE_REMOVED", 0x40: "CKR_ENCRYPTED_DATA_INVALID", 0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE",
            0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0x60: "CKR_KEY_HANDLE_INVALID", 0x70: "CKR_MECHANISM_INVALID",
            0x71: "CKR_MECHANISM_PARAM_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID", 0xA0: "CKR_PIN_INCORRECT",
            0xA1: "CKR_PIN_INVALID", 0xA2: "CKR_PIN_LEN_RANGE", 0xA4: "CKR_PIN_LOCKED", 0xB3: "CKR_SESSION_HANDLE_INVALID",
            0xB0: "CKR_SESSION_CLOSED", 0xE0: "CKR_TOKEN_NOT_PRESENT", 0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
            0x100: "CKR_USER_ALREADY_LOGGED_IN", 0x101: "CKR_USER_NOT_LOGGED_IN", 0x150: "CKR_BUFFER_TOO_SMALL",
            0x190: "CKR_CRYPTOKI_NOT_INITIALIZED", 0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        ]
        return names[UInt(rv)] ?? String(format: "CKR 0x%lx", UInt(rv))
    }
}

/// A failed PKCS#11 call (inside the seal; callers see `SealUnavailable`).
struct P11Failure: Error {
    let message: String
    let retryable: Bool
    init(_ message: String, retryable: Bool = true) {
        self.message = message
        self.retryable = retryable
    }
}

/// What the seal stores for a wrapped key (outside the barrier): no secret in clear.
struct PKCS11Blob: Codable, Sendable {
    var mechanism: String
    var keyLabel: String
    var iv: String?
    var ciphertext: String

    enum CodingKeys: String, CodingKey {
        case mechanism, iv, ciphertext
        case keyLabel = "key_label"
    }
}
