import ArgumentParser
import Foundation

/// Vault's CLI spells long flags with one dash (`-format=json`, `-address=...`).
/// swift-argument-parser wants two; this rewrites `-name` / `-name=value` to `--name...`
/// (names of two or more characters, so `-h` and `-` stay as they are) up to a bare `--`.
enum VaultArguments {
    static func rewrite(_ args: [String]) -> [String] {
        var out: [String] = []
        out.reserveCapacity(args.count)
        var passthrough = false
        for a in args {
            if passthrough {
                out.append(a)
            } else if a == "--" {
                passthrough = true
                out.append(a)
            } else if isSingleDashLong(a) {
                out.append("-" + a)
            } else {
                out.append(a)
            }
        }
        return out
    }

    /// `^-[A-Za-z][A-Za-z0-9-]+(=.*)?$`
    static func isSingleDashLong(_ a: String) -> Bool {
        let u = Array(a.utf8)
        guard u.count >= 3, u[0] == UInt8(ascii: "-"), isLetter(u[1]) else { return false }
        var i = 2
        var nameLength = 1
        while i < u.count, u[i] != UInt8(ascii: "=") {
            guard isLetter(u[i]) || isDigit(u[i]) || u[i] == UInt8(ascii: "-") else { return false }
            nameLength += 1
            i += 1
        }
        return nameLength >= 2
    }

    private static func isLetter(_ c: UInt8) -> Bool { (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
    private static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
}
