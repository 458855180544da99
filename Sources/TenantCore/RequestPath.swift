import CofferSDK

/// The one check of a request path, before quotas, ACL, audit and routing judge it.
///
/// Every stage sees the same string, so it must not have two spellings: a path with an
/// empty segment (`secret//data/x`) or a dot segment (`secret/./data`, `a/../b`) is refused
/// with a 400, as Vault refuses `//`, instead of being normalised by one stage (the router)
/// and not by another (the ACL). A trailing slash stays: it addresses a folder (LIST).
public enum RequestPath {
    /// Throws a 400 when `path` (below `/v1/`, percent-decoded, leading slashes removed)
    /// has an empty, `.` or `..` segment, or a control character.
    public static func check(_ path: String) throws {
        var segmentLength = 0
        var dots = 0
        for b in path.utf8 {
            if b == UInt8(ascii: "/") {
                guard segmentLength > 0, dots != segmentLength || dots > 2 else { throw refused(path) }
                segmentLength = 0
                dots = 0
                continue
            }
            guard b >= 0x20, b != 0x7F else { throw refused(path) }
            segmentLength += 1
            if b == UInt8(ascii: ".") { dots += 1 }
        }
        // The last segment may be empty (a trailing slash, or the empty path), not a dot one.
        if segmentLength > 0, dots == segmentLength, dots <= 2 { throw refused(path) }
    }

    static func refused(_ path: String) -> CofferError {
        CofferError.invalid("invalid request path \"\(String(path.unicodeScalars.prefix(256).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) }))\": empty, \".\" and \"..\" segments are not allowed")
    }
}
