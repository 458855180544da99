import CofferSDK
import TenantCore
import Testing

/// Random bytes from the system CSPRNG.
private func randomBytes(_ count: Int) -> [UInt8] {
    var rng = SystemRandomNumberGenerator()
    return (0..<count).map { _ in rng.next() }
}

/// All k-element subsets of 0..<n, as sorted index lists.
private func subsets(_ n: Int, _ k: Int) -> [[Int]] {
    if k == 0 { return [[]] }
    if n < k { return [] }
    return subsets(n - 1, k) + subsets(n - 1, k - 1).map { $0 + [n - 1] }
}

/// Bit-by-bit ("Russian peasant") multiplication modulo 0x11B, as a reference.
private func referenceMul(_ a: UInt8, _ b: UInt8) -> UInt8 {
    var a = a
    var b = b
    var product: UInt8 = 0
    for _ in 0..<8 {
        if b & 1 != 0 { product ^= a }
        let carry = a & 0x80
        a <<= 1
        if carry != 0 { a ^= 0x1B }
        b >>= 1
    }
    return product
}

@Suite struct GF256Tests {
    @Test func knownVectors() {
        // 0x53 and 0xCA are inverses; 0x57·0x83 = 0xC1 and 0x57·0x13 = 0xFE (FIPS-197 §4.2).
        #expect(GF256.mul(0x53, 0xCA) == 0x01)
        #expect(GF256.mul(0x57, 0x83) == 0xC1)
        #expect(GF256.mul(0x57, 0x13) == 0xFE)
        #expect(GF256.add(0x57, 0x83) == 0xD4)
        #expect(GF256.div(0x01, 0x53) == 0xCA)
        #expect(GF256.div(0xC1, 0x83) == 0x57)
    }

    @Test func zeroOperands() {
        #expect(GF256.mul(0, 0) == 0)
        #expect(GF256.mul(0, 0x53) == 0)
        #expect(GF256.mul(0x53, 0) == 0)
        #expect(GF256.div(0, 0x53) == 0)
        // Division by zero is undefined but must not trap.
        #expect(GF256.div(0x53, 0) == 0)
        #expect(GF256.div(0, 0) == 0)
    }

    @Test func exhaustiveAgainstReference() {
        var mismatches = 0
        for a in 0...255 {
            for b in 0...255 {
                let x = UInt8(a)
                let y = UInt8(b)
                let product = GF256.mul(x, y)
                if product != referenceMul(x, y) { mismatches += 1 }
                if y != 0 && GF256.div(product, y) != x { mismatches += 1 }
            }
        }
        #expect(mismatches == 0)
    }
}

@Suite struct ShamirTests {
    @Test(arguments: [[2, 2], [3, 2], [5, 3], [10, 7], [255, 2], [255, 255]])
    func roundtrip(params: [Int]) throws {
        let (n, t) = (params[0], params[1])
        let secret = randomBytes(32)
        let parts = try Shamir.split(secret: secret, shares: n, threshold: t)
        #expect(parts.count == n)
        #expect(parts.allSatisfy { $0.count == secret.count + 1 })
        let xs = parts.map { $0[secret.count] }
        #expect(Set(xs).count == n)
        #expect(!xs.contains(0))
        #expect(try Shamir.combine(Array(parts.shuffled().prefix(t))) == secret)
        #expect(try Shamir.combine(parts) == secret)
        // One part fewer than the threshold yields a different value (with overwhelming
        // probability for a 32-byte secret).
        #expect(try Shamir.combine(Array(parts.prefix(t - 1))) != secret)
    }

    @Test func singleShareMeansNoSplit() throws {
        let secret = randomBytes(32)
        let parts = try Shamir.split(secret: secret, shares: 1, threshold: 1)
        #expect(parts.count == 1)
        #expect(parts[0].count == 33)
        #expect(Array(parts[0].prefix(32)) == secret)
        #expect(parts[0][32] != 0)
        #expect(try Shamir.combine(parts) == secret)
    }

    @Test func everyThresholdSubsetRecovers() throws {
        for _ in 0..<20 {
            let secret = randomBytes(Int.random(in: 8...64))
            let parts = try Shamir.split(secret: secret, shares: 5, threshold: 3)
            let threes = subsets(5, 3)
            #expect(threes.count == 10)
            for subset in threes {
                #expect(try Shamir.combine(subset.map { parts[$0] }) == secret)
                // Order does not matter.
                #expect(try Shamir.combine(subset.reversed().map { parts[$0] }) == secret)
            }
            for subset in subsets(5, 4) {
                #expect(try Shamir.combine(subset.map { parts[$0] }) == secret)
            }
            for subset in subsets(5, 2) {
                #expect(try Shamir.combine(subset.map { parts[$0] }) != secret)
            }
        }
    }

    @Test func fixedPolynomialDegreeOne() throws {
        // y = 0x42 + 0x07·x
        func y(_ x: UInt8) -> UInt8 { 0x42 ^ GF256.mul(0x07, x) }
        #expect(try Shamir.combine([[y(1), 1], [y(2), 2]]) == [0x42])
        #expect(try Shamir.combine([[y(0xF0), 0xF0], [y(1), 1]]) == [0x42])
        #expect(try Shamir.combine([[y(1), 1], [y(2), 2], [y(0xF0), 0xF0]]) == [0x42])
    }

    @Test func fixedPolynomialDegreeTwo() throws {
        // Two secret bytes, 0x42 and 0x99: y0 = 0x42 + 0x07·x + 0x11·x², y1 = 0x99 + 0xFF·x².
        func y0(_ x: UInt8) -> UInt8 { 0x42 ^ GF256.mul(0x07, x) ^ GF256.mul(0x11, GF256.mul(x, x)) }
        func y1(_ x: UInt8) -> UInt8 { 0x99 ^ GF256.mul(0xFF, GF256.mul(x, x)) }
        let parts: [[UInt8]] = [3, 9, 200].map { x in [y0(x), y1(x), x] }
        #expect(try Shamir.combine(parts) == [0x42, 0x99])
    }

    @Test func duplicatePartRejected() throws {
        let parts = try Shamir.split(secret: [1, 2, 3], shares: 3, threshold: 2)
        #expect(throws: CofferError.self) { try Shamir.combine([parts[0], parts[0]]) }
        #expect(throws: CofferError.self) { try Shamir.combine([parts[0], parts[1], parts[0]]) }
        // Same x-coordinate, different values, is still a duplicate.
        #expect(throws: CofferError.self) { try Shamir.combine([[1, 2, 7], [3, 4, 7]]) }
    }

    @Test func malformedPartsRejected() throws {
        let parts = try Shamir.split(secret: [1, 2, 3], shares: 3, threshold: 2)
        #expect(throws: CofferError.self) { try Shamir.combine([parts[0], Array(parts[1].dropFirst())]) }
        #expect(throws: CofferError.self) { try Shamir.combine([parts[0], parts[1] + [0]]) }
        #expect(throws: CofferError.self) { try Shamir.combine([]) }
        #expect(throws: CofferError.self) { try Shamir.combine([[1], [2]]) }
        #expect(throws: CofferError.self) { try Shamir.combine([[]]) }
        #expect(throws: CofferError.self) { try Shamir.combine([[1, 0], [2, 1]]) }
    }

    @Test func invalidParametersRejected() {
        #expect(throws: CofferError.self) { try Shamir.split(secret: [1], shares: 2, threshold: 3) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [1], shares: 256, threshold: 2) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [1], shares: 3, threshold: 1) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [1], shares: 1, threshold: 0) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [1], shares: 0, threshold: 0) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [1], shares: -1, threshold: -2) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [], shares: 3, threshold: 2) }
        #expect(throws: CofferError.self) { try Shamir.split(secret: [], shares: 1, threshold: 1) }
    }

    @Test func errorsAreInvalidRequest() {
        do {
            _ = try Shamir.split(secret: [1], shares: 2, threshold: 3)
            Issue.record("expected an error")
        } catch let error as CofferError {
            #expect(error.code == .invalidRequest)
            #expect(error.message == "parts cannot be less than threshold")
        } catch {
            Issue.record("unexpected error type: \(error)")
        }
    }
}
