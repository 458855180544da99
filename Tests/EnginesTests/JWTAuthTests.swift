import _CryptoExtras
import CofferSDK
import Crypto
@testable import Engines
import Foundation
import JOSE
import Testing
import TenantCore

/// JWT verification and claim rules below the HTTP layer: keys from JWKs and PEM, the
/// algorithm a key accepts, time claims with leeway on a clock moved by hand, bound claims
/// and globs, JSON pointers, and what a login answers.
@Suite struct JWTAuthTests {
    func jws(_ claims: JSONValue, sign: ([UInt8]) throws -> [UInt8], alg: JWSAlgorithm, kid: String = "k1") throws -> String {
        try CompactJWS.serialize(payload: claims, algorithm: alg, kid: kid, sign: sign)
    }

    @Test func keysFromJWKAndPEMVerifyOnlyTheirAlgorithm() throws {
        let ec = P256.Signing.PrivateKey()
        let input = Array("a.b".utf8)
        let sig = Array(try ec.signature(for: input).rawRepresentation)
        let fromPEM = try JWSPublicKey(pem: ec.publicKey.pemRepresentation)
        let fromJWK = try JWSPublicKey(jwk: try fromPEM.jwk(kid: "x", algorithm: .ES256).objectValue!)
        for k in [fromPEM, fromJWK] {
            #expect(k.verify(.ES256, signature: sig, input: input))
            #expect(!k.verify(.ES384, signature: sig, input: input))
            #expect(!k.verify(.RS256, signature: sig, input: input))
            #expect(!k.verify(.ES256, signature: sig, input: Array("a.c".utf8)))
        }
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let rs = try JWSPublicKey(pem: rsa.publicKey.pemRepresentation)
        let pss = Array(try rsa.signature(for: SHA256.hash(data: input), padding: .PSS).rawRepresentation)
        #expect(rs.verify(.PS256, signature: pss, input: input) && !rs.verify(.RS256, signature: pss, input: input))
        let ed = Curve25519.Signing.PrivateKey()
        let edKey = try JWSPublicKey(jwk: ["kty": "OKP", "crv": "Ed25519", "x": .string(Base64URL.encode(Array(ed.publicKey.rawRepresentation)))])
        #expect(edKey.verify(.EdDSA, signature: Array(try ed.signature(for: input)), input: input))
        #expect(throws: CofferError.self) { try JWSPublicKey(jwk: ["kty": "oct", "k": "c2VjcmV0"]) }
        #expect(throws: CofferError.self) { try JWSPublicKey(jwk: ["kty": "RSA", "n": "AQAB", "e": "AQAB"]) }  // far too short
        #expect(throws: CofferError.self) { try JWSPublicKey(pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----") }
    }

    @Test func compactTokensAreSplitAndBounded() throws {
        #expect(throws: CofferError.self) { try CompactJWS("a.b") }
        #expect(throws: CofferError.self) { try CompactJWS("a.b.c.d.e") }
        #expect(throws: CofferError.self) { try CompactJWS("!!.e30.") }
        #expect(throws: CofferError.self) { try CompactJWS(String(repeating: "a", count: CompactJWS.maxLength + 1)) }
        let t = try jws(["sub": "x"], sign: { _ in [1, 2, 3] }, alg: .ES256)
        let parsed = try CompactJWS(t)
        #expect(parsed.algorithm == "ES256" && parsed.keyID == "k1" && parsed.payload["sub"] == "x" && parsed.signature == [1, 2, 3])
    }

    @Test func timeClaimsHonourTheLeeways() throws {
        let now = 1_800_000_000.0
        var e = JWTExpectations()
        e.expirationLeeway = -1
        e.clockSkewLeeway = -1
        #expect(throws: Never.self) { try JWTClaims.validate(["exp": .int(Int64(now) + 1)], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["exp": .int(Int64(now) - 1)], e, now: now) }
        e.expirationLeeway = 0  // the default: 150 s, plus 60 s of skew
        e.clockSkewLeeway = 0
        #expect(throws: Never.self) { try JWTClaims.validate(["exp": .int(Int64(now) - 200)], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["exp": .int(Int64(now) - 211)], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["iat": .int(Int64(now) + 61)], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["nbf": .int(Int64(now) + 300)], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["sub": "no time claims"], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["exp": "soon"], e, now: now) }
        e.audiences = ["a", "b"]
        #expect(throws: Never.self) { try JWTClaims.validate(["exp": .int(Int64(now)), "aud": ["x", "b"]], e, now: now) }
        #expect(throws: CofferError.self) { try JWTClaims.validate(["exp": .int(Int64(now)), "aud": "x"], e, now: now) }
    }

    @Test func boundClaimsGlobsAndPointers() throws {
        let claims: [String: JSONValue] = ["groups": ["dev", "ops"], "env": "prod-eu", "n": 7, "ok": true, "a": ["b/c": ["d": "deep"]]]
        #expect(JWTClaims.claim(claims, "/a/b~1c/d") == "deep")
        #expect(JWTClaims.claim(claims, "/groups/1") == "ops")
        #expect(JWTClaims.claim(claims, "/groups/9") == nil)
        try JWTClaims.checkBound(["groups": ["ops"], "n": 7, "ok": true], glob: false, claims)
        #expect(throws: CofferError.self) { try JWTClaims.checkBound(["n": "7x"], glob: false, claims) }
        #expect(throws: CofferError.self) { try JWTClaims.checkBound(["missing": "x"], glob: false, claims) }
        try JWTClaims.checkBound(["env": "prod-*"], glob: true, claims)
        #expect(throws: CofferError.self) { try JWTClaims.checkBound(["env": "prod-*"], glob: false, claims) }
        #expect(Glob.match("*-eu", "prod-eu") && Glob.match("p*d*u", "prod-eu") && !Glob.match("p*x", "prod-eu") && !Glob.match("prod", "prod-eu"))
    }

    @Test func loginAnswersAliasGroupsAndMetadata() async throws {
        let key = P256.Signing.PrivateKey()
        let time = ManualClock(start: 1_800_000_000)
        let barrier = Barrier(physical: MemoryStorage())
        barrier.install(Keyring.generate())
        var cfg = BackendConfiguration(storage: StorageView(barrier, prefix: "auth/"), mountPath: "jwt/", mountType: "jwt")
        cfg.clock = time.clock
        let b = try await JWTBackend.factory(cfg)
        _ = try await b.handle(LogicalRequest(operation: .update, path: "config", data: ["jwt_validation_pubkeys": .string(key.publicKey.pemRepresentation)]))
        _ = try await b.handle(LogicalRequest(operation: .update, path: "role/r", data: [
            "role_type": "jwt", "user_claim": "email", "groups_claim": "groups", "bound_audiences": "svc",
            "claim_mappings": ["team": "team"], "token_policies": "p1",
        ]))
        func login(_ claims: JSONValue) async throws -> LogicalResponse? {
            let t = try jws(claims, sign: { Array(try key.signature(for: $0).rawRepresentation) }, alg: .ES256)
            return try await b.handle(LogicalRequest(operation: .update, path: "login", data: ["role": "r", "jwt": .string(t)]))
        }
        let claims: JSONValue = ["email": "a@x", "aud": "svc", "groups": ["g1", "", "g2"], "team": "blue", "exp": 1_800_000_100]
        let auth = try #require(try await login(claims)?.auth)
        #expect(auth.aliasName == "a@x" && auth.groupAliases == ["g1", "g2"] && auth.metadata == ["team": "blue", "role": "r"] && auth.policies == ["p1"])
        time.advance(by: 100 + 150 + 61)  // past exp, its leeway and the clock skew
        await #expect(throws: CofferError.self) { try await login(claims) }
    }
}
