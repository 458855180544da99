import Foundation

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
public struct AddressRange: Sendable, Equatable {
    let bytes: [UInt8]
    let prefixBits: Int

    public init(_ text: String) throws {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let address = Self.parse(String(first)) else {
            throw CofferError.invalid("invalid address or CIDR \"\(text.prefix(64))\"")
        }
        let bits = address.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...bits).contains(p) else {
                throw CofferError.invalid("invalid CIDR prefix in \"\(text.prefix(64))\"")
            }
            prefix = p
        }
        bytes = address
        prefixBits = prefix
    }

    /// 4 bytes for IPv4, 16 for IPv6 (IPv4-mapped IPv6 becomes IPv4); nil if not an address.
    public static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            let b = withUnsafeBytes(of: &v6) { Array($0) }
            if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff { return Array(b[12...]) }
            return b
        }
        return nil
    }

    public func contains(_ address: String) -> Bool {
        guard let a = Self.parse(address) else { return false }
        return contains(bytes: a)
    }

    /// Whether the range is one address (`/32`, `/128`).
    public var isSingleAddress: Bool { prefixBits == bytes.count * 8 }

    /// Whether every address of `other` is in this range.
    public func contains(range other: AddressRange) -> Bool {
        other.prefixBits >= prefixBits && contains(bytes: other.bytes)
    }

    func contains(bytes a: [UInt8]) -> Bool {
        guard a.count == bytes.count else { return false }
        var bits = prefixBits
        for i in 0..<a.count where bits > 0 {
            let take = min(8, bits)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - take))
            if a[i] & mask != bytes[i] & mask { return false }
            bits -= take
        }
        return true
    }
}
