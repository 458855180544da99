import _CryptoExtras
import CofferSDK
import Crypto
import Foundation

/// The operations: encrypt, decrypt, rewrap, datakey, hmac, sign, verify, random, hash.
/// Each `batch_input` item is done on its own and answers its own `error`; encrypt and
/// decrypt batches with a failed item are Vault's 400 that still carries `batch_results`.
extension TransitBackend {
    static let cryptoRoutes: [Route<TransitBackend>] = [
        Route("encrypt/:name", fields: [
            nameField, Field("plaintext", .string), Field("context", .string), Field("key_version", .int), Field("associated_data", .string),
            Field("type", .string), Field("convergent_encryption", .bool), Field("batch_input", .any), Field("partial_failure_response_code", .int),
        ], operations: [.update: { try await $0.encrypt($1) }, .create: { try await $0.encrypt($1) }], usage: [.update: .crypto, .create: .crypto],
              summary: "Encrypt a plaintext value or a batch of plaintext blocks using a named key."),
        Route("decrypt/:name", fields: [
            nameField, Field("ciphertext", .string), Field("context", .string), Field("associated_data", .string), Field("batch_input", .any),
            Field("partial_failure_response_code", .int),
        ], operations: [.update: { try await $0.decrypt($1) }], usage: [.update: .crypto], summary: "Decrypt a ciphertext value using a named key."),
        Route("rewrap/:name", fields: [nameField, Field("ciphertext", .string), Field("context", .string), Field("key_version", .int), Field("batch_input", .any)],
              operations: [.update: { try await $0.rewrap($1) }], usage: [.update: .crypto], summary: "Rewrap ciphertext with the latest version of a key."),
        Route("datakey/:plaintext/:name", fields: [
            Field("plaintext", .string), nameField, Field("context", .string), Field("bits", .int, default: 256), Field("key_version", .int),
            Field("associated_data", .string),
        ], operations: [.update: { try await $0.datakey($1) }], usage: [.update: .crypto], summary: "Generate a data key."),
        Route("random", fields: randomFields, operations: [.update: { try await $0.random($1, url: []) }], summary: "Generate random bytes."),
        Route("random/:a", fields: randomFields + [Field("a", .string)], operations: [.update: { try await $0.random($1, url: [$1.fields.string("a")]) }],
              summary: "Generate random bytes."),
        Route("random/:a/:b", fields: randomFields + [Field("a", .string), Field("b", .string)],
              operations: [.update: { try await $0.random($1, url: [$1.fields.string("a"), $1.fields.string("b")]) }], summary: "Generate random bytes."),
        Route("hash", fields: hashFields, operations: [.update: { try await $0.hash($1, algorithm: nil) }], summary: "Generate a hash sum for input data."),
        Route("hash/:urlalgorithm", fields: hashFields + [Field("urlalgorithm", .string)],
              operations: [.update: { try await $0.hash($1, algorithm: $1.fields.string("urlalgorithm")) }], summary: "Generate a hash sum for input data."),
        Route("hmac/:name", fields: hmacFields, operations: [.update: { try await $0.hmac($1, algorithm: nil) }], usage: [.update: .crypto],
              summary: "Generate an HMAC for input data using the named key."),
        Route("hmac/:name/:urlalgorithm", fields: hmacFields + [Field("urlalgorithm", .string)],
              operations: [.update: { try await $0.hmac($1, algorithm: $1.fields.string("urlalgorithm")) }], usage: [.update: .crypto],
              summary: "Generate an HMAC for input data using the named key."),
        Route("sign/:name", fields: signFields, operations: [.update: { try await $0.sign($1, algorithm: nil) }], usage: [.update: .crypto],
              summary: "Generate a signature for input data using the named key."),
        Route("sign/:name/:urlalgorithm", fields: signFields + [Field("urlalgorithm", .string)],
              operations: [.update: { try await $0.sign($1, algorithm: $1.fields.string("urlalgorithm")) }], usage: [.update: .crypto],
              summary: "Generate a signature for input data using the named key."),
        Route("verify/:name", fields: verifyFields, operations: [.update: { try await $0.verify($1, algorithm: nil) }], usage: [.update: .crypto],
              summary: "Verify a signature or HMAC for input data created using the named key."),
        Route("verify/:name/:urlalgorithm", fields: verifyFields + [Field("urlalgorithm", .string)],
              operations: [.update: { try await $0.verify($1, algorithm: $1.fields.string("urlalgorithm")) }], usage: [.update: .crypto],
              summary: "Verify a signature or HMAC for input data created using the named key."),
    ]

    static let randomFields = [Field("bytes", .int, default: 32), Field("format", .string, default: "base64"), Field("source", .string, default: "platform")]
    static let hashFields = [Field("input", .string), Field("algorithm", .string, default: "sha2-256"), Field("format", .string, default: "hex")]
    static let hmacFields = [nameField, Field("input", .string), Field("key_version", .int), Field("algorithm", .string, default: "sha2-256"), Field("batch_input", .any)]
    static let signFields = [
        nameField, Field("input", .string), Field("context", .string), Field("key_version", .int), Field("hash_algorithm", .string, default: "sha2-256"),
        Field("algorithm", .string), Field("prehashed", .bool), Field("signature_algorithm", .string), Field("marshaling_algorithm", .string, default: "asn1"),
        Field("salt_length", .string, default: "auto"), Field("batch_input", .any),
    ]
    static let verifyFields = signFields + [Field("signature", .string), Field("hmac", .string)]

    // MARK: batches

    /// The items of a request: `batch_input` (a list of objects), or the request itself.
    static func items(_ req: LogicalRequest) throws -> (items: [[String: JSONValue]], batch: Bool) {
        guard req.fields.has("batch_input"), let raw = req.fields.values["batch_input"], !raw.isNull else { return ([req.fields.values], false) }
        var list = raw
        if case .string(let s) = raw, let parsed = try? JSONValue.parse(s) { list = parsed }
        guard let arr = list.arrayValue else { throw CofferError.invalid("failed to parse batch input: expected a list of objects") }
        guard !arr.isEmpty else { throw CofferError.invalid("missing batch input to process") }
        guard arr.count <= 10_000 else { throw CofferError.invalid("failed to parse batch input: more than 10000 items") }
        return (try arr.enumerated().map { i, v in
            guard let o = v.objectValue else { throw CofferError.invalid("failed to parse batch input: '[\(i)]' is not an object") }
            return o
        }, true)
    }

    /// Runs `one` for every item; a single request answers its result or its error; a
    /// batch answers `batch_results` (and, with `failing`, a 400 carrying them when an item failed).
    func run(_ req: LogicalRequest, failing: Bool, _ one: ([String: JSONValue]) async throws -> [String: JSONValue]) async throws -> LogicalResponse {
        let (items, batch) = try Self.items(req)
        if !batch { return LogicalResponse(data: try await one(items[0])) }
        var results: [JSONValue] = []
        var firstError: String?
        for item in items {
            var out: [String: JSONValue]
            do {
                out = try await one(item)
            } catch let e as CofferError where e.code == .invalidRequest {
                out = ["error": .string(e.message)]
                firstError = firstError ?? e.message
            }
            out["reference"] = item["reference"] ?? ""
            results.append(.object(out))
        }
        if failing, let firstError {
            var e = CofferError.invalid(firstError)
            e.data = ["batch_results": .array(results)]
            throw e
        }
        var r = LogicalResponse(data: ["batch_results": .array(results)])
        r.units = items.count  // each item is a billable operation
        return r
    }

    static func string(_ item: [String: JSONValue], _ name: String) -> String? {
        switch item[name] {
        case .string(let s)?: s
        case .int(let i)?: String(i)
        default: nil
        }
    }

    static func decoded(_ item: [String: JSONValue], _ name: String) throws -> [UInt8]? {
        guard let s = string(item, name), !s.isEmpty else { return nil }
        guard let d = Data(base64Encoded: s) else { throw CofferError.invalid(name == "context" ? "failed to base64-decode context" : "illegal base64 data in \(name)") }
        return Array(d)
    }

    static func int(_ item: [String: JSONValue], _ name: String) throws -> Int {
        guard let v = item[name], !v.isNull else { return 0 }
        if let i = v.intValue, let n = Int(exactly: i) { return n }
        if let s = v.stringValue, let n = Int(s) { return n }
        throw CofferError.invalid("Field validation failed: error converting input for field \"\(name)\"")
    }

    // MARK: encrypt, decrypt, rewrap, datakey

    func encryptOne(_ k: TransitKey, plaintext: [UInt8], context: [UInt8]?, version asked: Int, aad: [UInt8]?) throws -> [String: JSONValue] {
        guard k.type.supportsEncryption else { throw CofferError.invalid("message encryption not supported for key type \(k.type.rawValue)") }
        guard asked >= 0 else { throw CofferError.invalid("requested version for encryption is negative") }
        guard asked <= k.latestVersion else { throw CofferError.invalid("requested version for encryption is higher than the latest key version") }
        let v = try k.encryptionVersion(asked)
        guard let kv = k.version(v) else { throw CofferError.invalid("no such key version") }
        let blob: [UInt8]
        if k.type.rsa {
            if aad != nil { throw CofferError.invalid("'associated_data' provided for non-AEAD cipher suite \(k.type.rawValue)") }
            blob = try TransitCrypto.rsaEncrypt(kv, plaintext)
        } else if k.convergent {
            let (enc, mac) = try convergentKeys(k, kv, context: context)
            blob = try TransitCrypto.seal(k.type, key: enc, plaintext: plaintext, nonce: TransitCrypto.convergentNonce(hmacKey: mac, plaintext: plaintext), aad: aad)
        } else {
            blob = try TransitCrypto.seal(k.type, key: try k.symmetricKey(kv, context: context), plaintext: plaintext, nonce: nil, aad: aad)
        }
        return ["ciphertext": .string(TransitCrypto.wire(v, blob)), "key_version": .int(Int64(v))]
    }

    /// Convergent keys: HKDF over the version key with the context, the encryption key and
    /// then 32 bytes of HMAC key (Vault's convergent version 3).
    func convergentKeys(_ k: TransitKey, _ kv: TransitKeyVersion, context: [UInt8]?) throws -> (SymmetricKey, SymmetricKey) {
        guard let context, !context.isEmpty else {
            throw CofferError.invalid("missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key")
        }
        let both = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: kv.key), info: context, outputByteCount: kv.key.count + 32).withUnsafeBytes { Array($0) }
        return (SymmetricKey(data: both[..<kv.key.count]), SymmetricKey(data: both[kv.key.count...]))
    }

    func decryptOne(_ k: TransitKey, ciphertext: String, context: [UInt8]?, aad: [UInt8]?) throws -> [UInt8] {
        guard k.type.supportsEncryption else { throw CofferError.invalid("message decryption not supported for key type \(k.type.rawValue)") }
        guard !ciphertext.isEmpty else { throw CofferError.invalid("missing ciphertext to decrypt") }
        let (v, blob) = try TransitCrypto.unwire(ciphertext, what: "ciphertext")
        guard v <= k.latestVersion else { throw CofferError.invalid("invalid ciphertext: version is too new") }
        let kv = try k.decryptionVersion(v)
        if k.type.rsa { return try TransitCrypto.rsaDecrypt(kv, blob) }
        let key = k.convergent ? try convergentKeys(k, kv, context: context).0 : try k.symmetricKey(kv, context: context)
        return try TransitCrypto.open(k.type, key: key, blob: blob, aad: aad)
    }

    /// The key of an encrypt: created on first use (Vault's upsert) unless `config/keys`
    /// says `disable_upsert`.
    func encryptionKey(_ req: LogicalRequest, name: String) async throws -> TransitKey {
        if let k = try await key(name) { return k }
        if try await storage.getJSON("config/keys")?["disable_upsert"]?.boolValue == true { throw CofferError.invalid("encryption key not found") }
        let (items, _) = try Self.items(req)
        let withContext = items.contains { (Self.string($0, "context") ?? "").isEmpty == false }
        if items.count > 1 && items.contains(where: { (Self.string($0, "context") ?? "").isEmpty }) && withContext {
            throw CofferError.invalid("context should be set either in all the request blocks or in none")
        }
        let type = req.fields.string("type").isEmpty ? "aes256-gcm96" : req.fields.string("type")
        guard let t = TransitKeyType(rawValue: type) else { throw CofferError.invalid("unknown key type \(type.prefix(32))") }
        guard t.symmetric else { throw CofferError.invalid("key type \(type) not supported for this operation") }
        let convergent = req.fields.bool("convergent_encryption")
        if convergent && !withContext { throw CofferError.invalid("convergent encryption requires derivation to be enabled, so context is required") }
        return try await storage.withLock("policy/" + name) {
            if let k = try await key(name) { return k }
            let k = try await makeKey(name: name, type: type, derived: withContext, convergent: convergent)
            try await storage.putCodable("policy/" + name, k)
            return k
        }
    }

    func encrypt(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        if !req.fields.has("batch_input") && !req.fields.has("plaintext") { throw CofferError.invalid("missing plaintext to encrypt") }
        let k = try await encryptionKey(req, name: name)
        return try await run(req, failing: true) { item in
            guard let p = Self.string(item, "plaintext") else { throw CofferError.invalid("missing plaintext to encrypt") }
            let plaintext = try TransitCrypto.base64(p, field: "plaintext")
            return try encryptOne(k, plaintext: plaintext, context: try Self.decoded(item, "context"), version: try Self.int(item, "key_version"),
                                  aad: try Self.decoded(item, "associated_data"))
        }
    }

    func decrypt(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        if !req.fields.has("batch_input") && req.fields.string("ciphertext").isEmpty { throw CofferError.invalid("missing ciphertext to decrypt") }
        guard let k = try await key(name) else { throw CofferError.invalid("encryption key not found") }
        return try await run(req, failing: true) { item in
            let plain = try decryptOne(k, ciphertext: Self.string(item, "ciphertext") ?? "", context: try Self.decoded(item, "context"), aad: try Self.decoded(item, "associated_data"))
            return ["plaintext": .string(Data(plain).base64EncodedString())]
        }
    }

    func rewrap(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        if !req.fields.has("batch_input") && req.fields.string("ciphertext").isEmpty { throw CofferError.invalid("missing ciphertext to decrypt") }
        guard let k = try await key(name) else { throw CofferError.invalid("encryption key not found") }
        return try await run(req, failing: false) { item in
            let context = try Self.decoded(item, "context")
            let plain = try decryptOne(k, ciphertext: Self.string(item, "ciphertext") ?? "", context: context, aad: nil)
            return try encryptOne(k, plaintext: plain, context: context, version: try Self.int(item, "key_version"), aad: nil)
        }
    }

    func datakey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let kind = f.string("plaintext")
        guard kind == "plaintext" || kind == "wrapped" else { throw CofferError.invalid("Invalid path, must be 'plaintext' or 'wrapped'") }
        let name = try Self.keyName(req)
        guard let k = try await key(name) else { throw CofferError.invalid("encryption key not found") }
        let bits = f.int("bits")
        guard [128, 256, 512].contains(bits) else { throw CofferError.invalid("invalid bit length") }
        let dataKey = SecureRandom.bytes(bits / 8)
        // The data key is encrypted as an encrypt of its base64 form, as Vault does.
        var out = try encryptOne(k, plaintext: Array(Data(dataKey).base64EncodedString().utf8), context: try Self.decoded(f.values, "context"),
                                 version: f.int("key_version"), aad: try Self.decoded(f.values, "associated_data"))
        if kind == "plaintext" { out["plaintext"] = .string(Data(dataKey).base64EncodedString()) }
        return LogicalResponse(data: out)
    }

    // MARK: random, hash, hmac

    func random(_ req: LogicalRequest, url: [String]) async throws -> LogicalResponse? {
        let f = req.fields
        var bytes = f.int("bytes"), source = "platform"
        let sources = ["platform", "seal", "all"]
        switch url.count {
        case 1:
            if sources.contains(url[0]) { source = url[0] } else {
                guard let n = Int(url[0]) else { throw CofferError.invalid("error parsing url-set byte count: strconv.Atoi: parsing \"\(url[0].prefix(32))\": invalid syntax") }
                bytes = n
            }
        case 2:
            source = url[0]
            guard let n = Int(url[1]) else { throw CofferError.invalid("error parsing url-set byte count: strconv.Atoi: parsing \"\(url[1].prefix(32))\": invalid syntax") }
            bytes = n
        default: break
        }
        guard sources.contains(source) else { throw CofferError.invalid("unsupported entropy source \"\(source.prefix(32))\"; must be \"platform\" or \"seal\", or \"all\"") }
        guard bytes >= 1 else { throw CofferError.invalid("'bytes' cannot be less than 1") }
        guard bytes <= 131_072 else { throw CofferError.invalid("'bytes' should be less than 131072") }
        let format = f.string("format").isEmpty ? "base64" : f.string("format")
        let r = SecureRandom.bytes(bytes)
        let text: String
        switch format {
        case "base64": text = Data(r).base64EncodedString()
        case "hex": text = Hex.encode(r)
        default: throw CofferError.invalid("unsupported encoding format \"\(format.prefix(16))\"; must be \"hex\" or \"base64\"")
        }
        var resp = LogicalResponse(data: ["random_bytes": .string(text)])
        if source == "seal" { resp.warnings = ["no seal/entropy augmentation available, using platform entropy source"] }
        return resp
    }

    func hash(_ req: LogicalRequest, algorithm: String?) async throws -> LogicalResponse? {
        let f = req.fields
        guard f.has("input") else { throw CofferError.invalid("input missing") }
        guard let input = Data(base64Encoded: f.string("input")) else { throw CofferError.invalid("unable to decode input as base64: illegal base64 data") }
        let format = f.string("format").isEmpty ? "hex" : f.string("format")
        guard format == "hex" || format == "base64" else { throw CofferError.invalid("unsupported encoding format \(format.prefix(16)); must be \"hex\" or \"base64\"") }
        let name = algorithm ?? f.string("algorithm")
        guard let h = TransitCrypto.Hash.parse(name), h != .none, h != .sha1 else { throw CofferError.invalid("unsupported algorithm \(name.prefix(32))") }
        let sum = h.digest(Array(input))
        return LogicalResponse(data: ["sum": .string(format == "hex" ? Hex.encode(sum) : Data(sum).base64EncodedString())])
    }

    func hmacKey(_ k: TransitKey, _ kv: TransitKeyVersion) -> SymmetricKey { SymmetricKey(data: k.type == .hmac ? kv.key : kv.hmacKey) }

    func hmac(_ req: LogicalRequest, algorithm: String?) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        guard let k = try await key(name) else { throw CofferError.invalid("encryption key not found") }
        var v = req.fields.int("key_version")
        if v == 0 { v = k.latestVersion }
        if k.minEncryptionVersion > 0 && v < k.minEncryptionVersion && v != k.latestVersion {
            throw CofferError.invalid("cannot generate HMAC: version is too old (disallowed by policy)")
        }
        guard v >= 0 else { throw CofferError.invalid("key version does not exist (cannot be negative)") }
        guard v <= k.latestVersion else { throw CofferError.invalid("key version does not exist; latest key version is \(k.latestVersion)") }
        guard let kv = k.version(v) else { throw CofferError.invalid("no such key version") }
        let alg = algorithm ?? req.fields.string("algorithm")
        guard let h = TransitCrypto.Hash.parse(alg), h != .none else { throw CofferError.invalid("unsupported algorithm '\(alg.prefix(32))'") }
        let key = hmacKey(k, kv)
        return try await run(req, failing: false) { item in
            guard let s = Self.string(item, "input") else { throw CofferError.invalid("missing input for HMAC") }
            guard let input = Data(base64Encoded: s) else { throw CofferError.invalid("unable to decode input as base64: illegal base64 data") }
            return ["hmac": .string(TransitCrypto.wire(v, h.hmac(key, Array(input)) ?? []))]
        }
    }

    // MARK: sign, verify

    func signOptions(_ req: LogicalRequest, algorithm: String?, type: TransitKeyType) throws -> TransitCrypto.SignOptions {
        let f = req.fields
        let name = algorithm ?? (f.string("hash_algorithm").isEmpty ? f.string("algorithm") : f.string("hash_algorithm"))
        guard let h = TransitCrypto.Hash.parse(name) else { throw CofferError.invalid("invalid hash algorithm \"\(name.prefix(32))\"") }
        var o = TransitCrypto.SignOptions()
        o.hash = h
        o.prehashed = f.bool("prehashed")
        let marshal = f.string("marshaling_algorithm").isEmpty ? "asn1" : f.string("marshaling_algorithm")
        guard marshal == "asn1" || marshal == "jws" else { throw CofferError.invalid("invalid marshaling type \"\(marshal.prefix(16))\"") }
        o.jws = marshal == "jws"
        switch f.string("signature_algorithm") {
        case "", "pss": o.pss = true
        case "pkcs1v15": o.pss = false
        case let other: throw CofferError.invalid("unsupported signature algorithm \"\(other.prefix(16))\"")
        }
        let salt = f.string("salt_length")
        guard salt.isEmpty || salt == "auto" || salt == "hash" || Int(salt) != nil else {
            throw CofferError.invalid("salt length neither 'auto', 'hash', nor an int: \(salt.prefix(16))")
        }
        if h == .none && !(o.prehashed && !o.pss && type.rsa) {
            throw CofferError.invalid("hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15")
        }
        return o
    }

    func sign(_ req: LogicalRequest, algorithm: String?) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        guard let k = try await key(name) else { throw CofferError.invalid("signing key not found") }
        guard k.type.supportsSigning else { throw CofferError.invalid("key type \(k.type.rawValue) does not support signing") }
        let o = try signOptions(req, algorithm: algorithm, type: k.type)
        var v = req.fields.int("key_version")
        guard v >= 0 else { throw CofferError.invalid("requested version for signing is negative") }
        guard v <= k.latestVersion else { throw CofferError.invalid("requested version for signing is higher than the latest key version") }
        if v == 0 { v = k.latestVersion }
        guard v >= max(1, k.minEncryptionVersion), let kv = k.version(v) else {
            throw CofferError.invalid("requested version for signing is less than the minimum encryption key version")
        }
        let version = v
        return try await run(req, failing: false) { item in
            let input = try Self.decoded(item, "input") ?? []
            let context = k.derived ? try Self.decoded(item, "context") : nil
            if k.derived && context == nil {
                throw CofferError.invalid("error deriving key: missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key")
            }
            let sig = try TransitCrypto.sign(k.type, kv, input: input, options: o, context: context)
            var out: [String: JSONValue] = ["signature": .string(TransitCrypto.wire(version, sig, urlSafe: o.jws)), "key_version": .int(Int64(version))]
            if let context {
                out["public_key"] = .string(Data(try TransitCrypto.ed25519Key(kv, derivedWith: context).publicKey.rawRepresentation).base64EncodedString())
            }
            return out
        }
    }

    func verify(_ req: LogicalRequest, algorithm: String?) async throws -> LogicalResponse? {
        let f = req.fields
        let name = try Self.keyName(req)
        let (items, batch) = try Self.items(req)
        let withSig = items.filter { Self.string($0, "signature") != nil }.count
        let withHMAC = items.filter { Self.string($0, "hmac") != nil }.count
        if !batch {
            if withSig > 0 && withHMAC > 0 { throw CofferError.invalid("provide one of 'signature' or 'hmac'") }
            if withSig == 0 && withHMAC == 0 { throw CofferError.invalid("neither a 'signature' nor an 'hmac' were given to verify") }
        } else {
            if withSig > 0 && withHMAC > 0 { throw CofferError.invalid("elements of batch_input must all provide 'signature' or all provide 'hmac'") }
            if withSig > 0 && withSig < items.count { throw CofferError.invalid("some elements of batch_input are missing 'signature'") }
            if withHMAC > 0 && withHMAC < items.count { throw CofferError.invalid("some elements of batch_input are missing 'hmac'") }
            if withSig == 0 && withHMAC == 0 { throw CofferError.invalid("no batch_input elements have 'signature' or 'hmac'") }
        }
        guard let k = try await key(name) else {
            throw CofferError.invalid(withHMAC > 0 ? "encryption key not found" : "signature verification key not found")
        }
        if withHMAC > 0 {
            let alg = algorithm ?? (f.string("hash_algorithm").isEmpty ? "sha2-256" : f.string("hash_algorithm"))
            guard let h = TransitCrypto.Hash.parse(alg), h != .none else { throw CofferError.invalid("invalid hash algorithm \"\(alg.prefix(32))\"") }
            return try await run(req, failing: false) { item in
                guard let s = Self.string(item, "input") else { throw CofferError.invalid("missing input") }
                guard let input = Data(base64Encoded: s) else { throw CofferError.invalid("unable to decode input as base64: illegal base64 data") }
                guard let mac = Self.string(item, "hmac"), !mac.isEmpty else { throw CofferError.invalid("missing hmac") }
                guard mac.hasPrefix(TransitCrypto.prefix) else { throw CofferError.invalid("invalid HMAC to verify: no prefix") }
                let (v, given) = try TransitCrypto.unwire(mac, what: "HMAC")
                guard v <= k.latestVersion else { throw CofferError.invalid("invalid HMAC: version is too new") }
                guard v >= k.minDecryptionVersion, let kv = k.version(v) else { throw CofferError.invalid("cannot verify HMAC: version is too old (disallowed by policy)") }
                let want = h.hmac(hmacKey(k, kv), Array(input)) ?? []
                return ["valid": .bool(Self.constantTimeEqual(want, given))]
            }
        }
        guard k.type.supportsSigning else { throw CofferError.invalid("key type \(k.type.rawValue) does not support verification") }
        let o = try signOptions(req, algorithm: algorithm, type: k.type)
        return try await run(req, failing: false) { item in
            guard let s = Self.string(item, "input") else { throw CofferError.invalid("missing input") }
            guard let input = Data(base64Encoded: s) else { throw CofferError.invalid("unable to decode input as base64: illegal base64 data") }
            let (v, sig) = try TransitCrypto.unwire(Self.string(item, "signature") ?? "", what: "signature", urlSafe: o.jws)
            guard v <= k.latestVersion else { throw CofferError.invalid("invalid signature: version is too new") }
            let kv = try k.decryptionVersion(v)
            let context = k.derived ? try Self.decoded(item, "context") : nil
            if k.derived && context == nil { throw CofferError.invalid("error deriving key: missing 'context' for key derivation") }
            return ["valid": .bool(try TransitCrypto.verify(k.type, kv, input: Array(input), signature: sig, options: o, context: context))]
        }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }
}
