import CofferSDK

/// Arithmetic in GF(2^8) with the AES reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11B).
///
/// Multiplication and division use log/exp tables built once from the generator 3.
/// Apart from the table lookups themselves, no operation branches on its operands'
/// values: zero operands are handled with arithmetic masks. The one exception is the
/// divisor of `div`, which in Shamir interpolation is always a public x-coordinate.
public enum GF256 {
    /// `exp[i] = 3^i`, for i in 0..<510 (the 255-periodic sequence stored twice, so a
    /// sum of two logarithms indexes it without a modulo).
    static let exp: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 510)
        var value: UInt8 = 1
        for i in 0..<255 {
            table[i] = value
            table[i + 255] = value
            // value *= 3, i.e. value ^ xtime(value); the reduction mask is 0x1B when the
            // high bit is set and 0 otherwise.
            let xtime = (value << 1) ^ (0x1B & (0 &- (value >> 7)))
            value ^= xtime
        }
        return table
    }()

    /// `log[a]` is the i with 3^i == a, for a != 0; `log[0]` is 0 and never used unmasked.
    static let log: [Int] = {
        var table = [Int](repeating: 0, count: 256)
        var value: UInt8 = 1
        for i in 0..<255 {
            table[Int(value)] = i
            let xtime = (value << 1) ^ (0x1B & (0 &- (value >> 7)))
            value ^= xtime
        }
        return table
    }()

    /// 0xFF when `a` is nonzero, 0x00 when it is zero, without branching.
    @inline(__always)
    static func nonZeroMask(_ a: UInt8) -> UInt8 {
        // (a - 1) >> 8 is -1 exactly when a == 0 (a is in 0...255).
        ~UInt8(truncatingIfNeeded: (Int(a) &- 1) >> 8)
    }

    /// Addition (and subtraction) in GF(2^8): bitwise exclusive or.
    @inline(__always)
    public static func add(_ a: UInt8, _ b: UInt8) -> UInt8 {
        a ^ b
    }

    /// Multiplication in GF(2^8) modulo 0x11B. `mul(a, 0) == mul(0, b) == 0`.
    public static func mul(_ a: UInt8, _ b: UInt8) -> UInt8 {
        let product = exp[log[Int(a)] + log[Int(b)]]
        return product & nonZeroMask(a) & nonZeroMask(b)
    }

    /// Division in GF(2^8): the `q` with `mul(q, b) == a`. `div(0, b) == 0`.
    ///
    /// Division by zero is undefined; rather than trap, it returns 0. Callers that can
    /// meet a zero divisor must rule it out themselves.
    public static func div(_ a: UInt8, _ b: UInt8) -> UInt8 {
        guard b != 0 else { return 0 }
        let quotient = exp[log[Int(a)] - log[Int(b)] + 255]
        return quotient & nonZeroMask(a)
    }
}

/// Shamir's secret sharing over GF(2^8), byte by byte.
///
/// The share format is the one Vault uses for unseal keys: a share of an n-byte secret is
/// n + 1 bytes, the n polynomial values followed by one trailing byte holding the share's
/// x-coordinate (unique, nonzero, drawn at random from 1...255 without repetition).
public enum Shamir {
    /// Splits `secret` into `shares` parts, any `threshold` of which recover it.
    ///
    /// Each byte of the secret is the constant term of its own random polynomial of degree
    /// `threshold - 1`; coefficients and x-coordinates come from the system CSPRNG.
    /// `shares` must be in 2...255 and `threshold` in 2...`shares`, except that
    /// `shares == 1, threshold == 1` is allowed and means "no split": the single part is
    /// the secret followed by an x-coordinate byte.
    ///
    /// - Throws: `CofferError.invalid` for out-of-range parameters or an empty secret.
    public static func split(secret: [UInt8], shares: Int, threshold: Int) throws -> [[UInt8]] {
        if shares < threshold {
            throw CofferError.invalid("parts cannot be less than threshold")
        }
        if shares > 255 {
            throw CofferError.invalid("parts cannot exceed 255")
        }
        let single = shares == 1 && threshold == 1
        if threshold < 2 && !single {
            throw CofferError.invalid("threshold must be at least 2")
        }
        if threshold > 255 {
            throw CofferError.invalid("threshold cannot exceed 255")
        }
        if secret.isEmpty {
            throw CofferError.invalid("cannot split an empty secret")
        }

        var rng = SystemRandomNumberGenerator()
        // Distinct nonzero x-coordinates: a random permutation of 1...255, first `shares`.
        let xs = Array((1...255).map { UInt8($0) }.shuffled(using: &rng).prefix(shares))

        if single {
            return [secret + [xs[0]]]
        }

        var out = xs.map { x -> [UInt8] in
            var part = [UInt8](repeating: 0, count: secret.count + 1)
            part[secret.count] = x
            return part
        }
        // Coefficients 1...threshold-1 of the current byte's polynomial (coefficient 0 is
        // the secret byte). Uniform, including zero, as perfect secrecy requires.
        var coefficients = [UInt8](repeating: 0, count: threshold - 1)
        for byteIndex in 0..<secret.count {
            for k in coefficients.indices {
                coefficients[k] = rng.next()
            }
            for p in 0..<shares {
                out[p][byteIndex] = evaluate(
                    intercept: secret[byteIndex], coefficients: coefficients, at: xs[p])
            }
        }
        // Best-effort scrub of the coefficients (the compiler may keep copies elsewhere).
        for k in coefficients.indices { coefficients[k] = 0 }
        return out
    }

    /// Recombines parts produced by `split`.
    ///
    /// A single part (the `shares == 1, threshold == 1` case) yields its bytes without the
    /// trailing x-coordinate. Given fewer parts than the split's threshold, the result is
    /// a wrong value, not an error: the format does not record the threshold.
    ///
    /// - Throws: `CofferError.invalid` when there are no parts, a part is shorter than two
    ///   bytes, the parts differ in length, an x-coordinate is zero, or two parts share
    ///   an x-coordinate.
    public static func combine(_ parts: [[UInt8]]) throws -> [UInt8] {
        if parts.isEmpty {
            throw CofferError.invalid("less than two parts cannot be used to reconstruct the secret")
        }
        let length = parts[0].count
        if length < 2 {
            throw CofferError.invalid("parts must be at least two bytes")
        }
        if parts.count == 1 {
            return Array(parts[0].dropLast())
        }

        var seen = [Bool](repeating: false, count: 256)
        var xs = [UInt8]()
        xs.reserveCapacity(parts.count)
        for part in parts {
            if part.count != length {
                throw CofferError.invalid("all parts must be the same length")
            }
            let x = part[length - 1]
            if x == 0 {
                throw CofferError.invalid("invalid part: x-coordinate must be nonzero")
            }
            if seen[Int(x)] {
                throw CofferError.invalid("duplicate part detected")
            }
            seen[Int(x)] = true
            xs.append(x)
        }

        // Lagrange basis polynomials evaluated at 0; they depend only on the (public)
        // x-coordinates: l_i(0) = prod_{j != i} x_j / (x_j - x_i), and - is + in GF(2^8).
        var basis = [UInt8](repeating: 0, count: xs.count)
        for i in xs.indices {
            var numerator: UInt8 = 1
            var denominator: UInt8 = 1
            for j in xs.indices where j != i {
                numerator = GF256.mul(numerator, xs[j])
                denominator = GF256.mul(denominator, GF256.add(xs[j], xs[i]))
            }
            // Distinct nonzero x's make the denominator nonzero.
            basis[i] = GF256.div(numerator, denominator)
        }

        var secret = [UInt8](repeating: 0, count: length - 1)
        for byteIndex in 0..<(length - 1) {
            var value: UInt8 = 0
            for i in parts.indices {
                value ^= GF256.mul(parts[i][byteIndex], basis[i])
            }
            secret[byteIndex] = value
        }
        return secret
    }

    /// The polynomial `intercept + c[0]·x + c[1]·x² + …` at `x`, by Horner's rule.
    private static func evaluate(intercept: UInt8, coefficients: [UInt8], at x: UInt8) -> UInt8 {
        var acc: UInt8 = 0
        for c in coefficients.reversed() {
            acc = GF256.add(GF256.mul(acc, x), c)
        }
        return GF256.add(GF256.mul(acc, x), intercept)
    }
}
