#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// Fast, allocation-light encodings used on hot paths (token hashing, KV timestamps).
public enum Hex {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Lower-case hex of bytes.
    public static func encode(_ bytes: some ContiguousBytes) -> String {
        bytes.withUnsafeBytes { raw in
            String(unsafeUninitializedCapacity: raw.count * 2) { out in
                var i = 0
                for b in raw {
                    out[i] = digits[Int(b >> 4)]
                    out[i + 1] = digits[Int(b & 0x0F)]
                    i += 2
                }
                return i
            }
        }
    }

    /// Bytes of lower- or upper-case hex; nil if it is not hex of whole bytes.
    public static func decode(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            case 0x41...0x46: c - 0x41 + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

/// Compares two byte strings in time independent of where they differ.
public func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}

/// RFC 3339 timestamps in UTC with Go's trimmed fractional seconds (`RFC3339Nano`), as Vault prints them.
public enum RFC3339 {
    /// Parses `2026-11-29T05:00:00Z`, with optional fractional seconds and any UTC offset;
    /// a bare date (`2026-11-29`) is midnight UTC.
    public static func parse(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        if let d = plain.date(from: text) { return d }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = fractional.date(from: text) { return d }
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        return day.date(from: text)
    }

    public static func format(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var secs = time_t(t.rounded(.down))
        var micros = Int((t - Double(secs)) * 1_000_000 + 0.5)
        if micros >= 1_000_000 { secs += 1; micros -= 1_000_000 }
        var tmv = tm()
        gmtime_r(&secs, &tmv)
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        var out = "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2))"
        if micros > 0 {
            var frac = pad(Int32(micros), 6)
            while frac.hasSuffix("0") { frac.removeLast() }
            out += "." + frac
        }
        return out + "Z"
    }
}

/// Bytes from the kernel CSPRNG: one `getrandom(2)` call for the whole buffer (the standard
/// library's generator makes one per 8 bytes; a namespace creation drew ~20 of them).
public enum SecureRandom {
    public static func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var filled = 0
        if let getrandom = Self.getrandom {
            out.withUnsafeMutableBytes { buf in
                while filled < n {
                    let got = getrandom(buf.baseAddress! + filled, n - filled, 0)
                    if got <= 0 { break }  // EINTR or no syscall: the generator below finishes
                    filled += got
                }
            }
        }
        var g = SystemRandomNumberGenerator()
        while filled < n {
            let word = g.next()
            for shift in 0..<min(8, n - filled) { out[filled + shift] = UInt8(truncatingIfNeeded: word >> (8 * UInt64(shift))) }
            filled += 8
        }
        return out
    }

    typealias GetRandom = @convention(c) (UnsafeMutableRawPointer?, Int, UInt32) -> Int
    /// glibc's `getrandom` (not in Swift's Glibc module).
    static let getrandom: GetRandom? = dlsym(nil, "getrandom").map { unsafeBitCast($0, to: GetRandom.self) }
}

/// Request identifiers shaped like UUIDs: a random per-process prefix and a counter, so
/// minting one costs no system call. They identify requests in logs and audit; they are
/// not secrets (tokens and keys use the system CSPRNG).
public enum RandomID {
    static let seed: (prefix: [UInt8], key: UInt64) = {
        var g = SystemRandomNumberGenerator()
        return (SecureRandom.bytes(8), g.next())
    }()
    static let counter = Atomic<UInt64>(0)

    /// splitmix64's finaliser: a bijection, so distinct counters give distinct ids, and the
    /// ids do not reveal how many requests came before.
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public static func uuid() -> String {
        let n = mix(counter.add(1, ordering: .relaxed).newValue ^ seed.key)
        var b = seed.prefix
        for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: n >> (UInt64(7 - i) * 8))) }
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        return String(unsafeUninitializedCapacity: 36) { out in
            var o = 0
            for (i, byte) in b.enumerated() {
                if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = UInt8(ascii: "-"); o += 1 }
                out[o] = Hex.digits[Int(byte >> 4)]
                out[o + 1] = Hex.digits[Int(byte & 0x0F)]
                o += 2
            }
            return o
        }
    }

    /// A fully random UUID from the system CSPRNG (mount ids, nonces).
    public static func secureUUID() -> String {
        var b = SecureRandom.bytes(16)
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let h = Array(Hex.encode(b).utf8)
        var out: [UInt8] = []
        for (i, c) in h.enumerated() {
            if i == 8 || i == 12 || i == 16 || i == 20 { out.append(UInt8(ascii: "-")) }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Base64 with the URL alphabet and no padding (RFC 4648 §5), as Vault's batch tokens and JWTs use it.
/// Table-driven: JWT logins decode three parts per request.
public enum Base64URL {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    static let values: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)]); out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            if rest == 2 { out.append(alphabet[Int(n >> 6 & 63)]) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes, or nil for a character outside the URL alphabet (padding included) or a
    /// length no encoding has.
    public static func decode(_ text: Substring) -> [UInt8]? {
        let utf8 = text.utf8
        guard utf8.count % 4 != 1 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count * 3 / 4)
        var acc: UInt32 = 0, bits = 0
        for c in utf8 {
            let v = values[Int(c)]
            guard v != 0xFF else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        return out
    }
}
