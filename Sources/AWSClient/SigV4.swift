import Crypto
import Foundation

/// An AWS access key pair, with the session token that comes with temporary (STS) credentials.
///
/// The secret access key and the session token never appear in `description`, `debugDescription`
/// or a reflected `dump`.
public struct AWSCredentials: Sendable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

extension AWSCredentials: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        let token = sessionToken == nil ? "none" : "<redacted>"
        return "AWSCredentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>, sessionToken: \(token))"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "accessKeyID": accessKeyID,
                "secretAccessKey": "<redacted>",
                "sessionToken": sessionToken == nil ? "none" : "<redacted>",
            ],
            displayStyle: .struct
        )
    }
}

/// AWS Signature Version 4, header-based ("Authorization: AWS4-HMAC-SHA256 ...").
///
/// Canonicalisation follows the AWS documentation and the published SigV4 test suite:
/// - canonical URI: for every service but S3 the path as sent is normalised (empty and `.` segments
///   dropped, `..` resolved, a trailing slash kept) and each segment is URI-encoded again, so a path
///   sent as `/a%20b` is signed as `/a%2520b` (AWS's "encode twice"). For S3 the path is not
///   normalised and each segment is percent-decoded and encoded once.
/// - canonical query: each name and value percent-decoded, then RFC 3986-encoded (only
///   `A-Z a-z 0-9 - _ . ~` kept; a space is `%20`, a literal `+` is `%2B`), sorted by name then value
///   (byte order), a name without a value gives `name=`.
/// - canonical headers: names lower-cased, values trimmed with inner runs of spaces/tabs collapsed to
///   one space, repeated names joined with `,` in the order given, sorted by name.
public struct SigV4Signer: Sendable {
    public static let algorithm = "AWS4-HMAC-SHA256"
    /// Hex SHA-256 of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public var credentials: AWSCredentials
    public var region: String
    public var service: String
    /// S3 rules for the canonical URI: no path normalisation, each segment encoded once.
    /// Set from `service == "s3"` by the initialiser.
    public var s3PathRules: Bool

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.s3PathRules = service == "s3"
    }

    /// Everything a signature was computed from, for tests and debugging. It holds no secret key, but
    /// `headers` and `canonicalRequest` carry the session token when there is one.
    public struct SigningResult: Sendable {
        /// The headers to send: the input (less any `Authorization`, `X-Amz-Date` and, when the
        /// credentials carry a session token, `X-Amz-Security-Token`) plus the ones the signer added.
        public var headers: [(String, String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var signedHeaders: String
        public var signature: String
        public var authorization: String
    }

    // MARK: Signing

    /// Adds x-amz-date (and x-amz-security-token when a session token is set, signed), and Authorization.
    /// `headers` are (name, value) pairs as sent (a name may repeat); must include host. `query` is the
    /// raw query string without '?' (may be empty). `path` is the raw (already percent-encoded as sent) path.
    /// Returns the headers to send (input + added).
    public func sign(
        method: String, path: String, query: String, headers: [(String, String)], body: [UInt8], date: Date
    ) -> [(String, String)] {
        signDetailed(method: method, path: path, query: query, headers: headers, payloadHash: Self.hexSHA256(body), date: date)
            .headers
    }

    /// As `sign`, with a precomputed hex SHA-256 of the payload, returning every intermediate value.
    public func signDetailed(
        method: String, path: String, query: String, headers: [(String, String)], payloadHash: String, date: Date
    ) -> SigningResult {
        let amzDate = Self.amzDate(date)
        let token = sessionToken
        var out: [(String, String)] = headers.filter { header in
            Self.keepsInputHeader(named: header.0, replacingToken: token != nil)
        }
        out.append(("X-Amz-Date", amzDate))
        if let token { out.append(("X-Amz-Security-Token", token)) }

        let (canonical, signedHeaders) = canonicalRequestAndSignedHeaders(
            method: method, path: path, query: query, headers: out, payloadHash: payloadHash
        )
        let sts = stringToSign(canonicalRequest: canonical, date: date)
        let sig = signature(stringToSign: sts, date: date)
        let authz = authorization(signedHeaders: signedHeaders, signature: sig, date: date)
        out.append(("Authorization", authz))
        return SigningResult(
            headers: out, canonicalRequest: canonical, stringToSign: sts,
            signedHeaders: signedHeaders, signature: sig, authorization: authz
        )
    }

    /// Whether `sign` passes an input header through: it always replaces `Authorization` and
    /// `X-Amz-Date`, and `X-Amz-Security-Token` when it adds its own.
    static func keepsInputHeader(named name: String, replacingToken: Bool) -> Bool {
        switch canonicalHeaderName(name) {
        case "authorization", "x-amz-date":
            return false
        case "x-amz-security-token":
            return !replacingToken
        default:
            return true
        }
    }

    /// The session token to send and sign; an empty one counts as none.
    var sessionToken: String? {
        guard let token = credentials.sessionToken, !token.isEmpty else { return nil }
        return token
    }

    // MARK: The pieces

    /// The canonical request for exactly these headers (nothing is added or removed).
    public func canonicalRequest(
        method: String, path: String, query: String, headers: [(String, String)], payloadHash: String
    ) -> String {
        canonicalRequestAndSignedHeaders(method: method, path: path, query: query, headers: headers, payloadHash: payloadHash).0
    }

    func canonicalRequestAndSignedHeaders(
        method: String, path: String, query: String, headers: [(String, String)], payloadHash: String
    ) -> (String, String) {
        let (headerBlock, signedHeaders) = Self.canonicalHeaders(headers)
        let request = [
            method,
            canonicalURI(path),
            Self.canonicalQuery(query),
            headerBlock,
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        return (request, signedHeaders)
    }

    /// `<yyyymmdd>/<region>/<service>/aws4_request`
    public func credentialScope(date: Date) -> String {
        "\(Self.dateStamp(date))/\(region)/\(service)/aws4_request"
    }

    public func stringToSign(canonicalRequest: String, date: Date) -> String {
        [
            Self.algorithm,
            Self.amzDate(date),
            credentialScope(date: date),
            Self.hexSHA256(Array(canonicalRequest.utf8)),
        ].joined(separator: "\n")
    }

    /// Lower-case hex HMAC-SHA256 of the string to sign under the derived signing key.
    public func signature(stringToSign: String, date: Date) -> String {
        let key = SymmetricKey(data: signingKeyBytes(dateStamp: Self.dateStamp(date)))
        return Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
    }

    /// The `Authorization` header value.
    public func authorization(signedHeaders: String, signature: String, date: Date) -> String {
        "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(credentialScope(date: date)), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
    }

    /// HMAC chain: "AWS4"+secret → date → region → service → "aws4_request".
    func signingKeyBytes(dateStamp: String) -> [UInt8] {
        var key = Array(("AWS4" + credentials.secretAccessKey).utf8)
        for part in [dateStamp, region, service, "aws4_request"] {
            key = Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: SymmetricKey(data: key)))
        }
        return key
    }

    // MARK: Canonical URI

    public func canonicalURI(_ path: String) -> String {
        let bytes = Array(path.utf8)
        if bytes.isEmpty { return "/" }
        let segments = bytes.split(separator: Self.slash, omittingEmptySubsequences: false)
        if s3PathRules {
            return segments.map { Self.uriEncode(Self.percentDecoded($0)) }.joined(separator: "/")
        }
        var kept: [ArraySlice<UInt8>] = []
        for segment in segments {
            if segment.isEmpty || segment.elementsEqual(Self.dot) { continue }
            if segment.elementsEqual(Self.dotDot) {
                if !kept.isEmpty { kept.removeLast() }
                continue
            }
            kept.append(segment)
        }
        if kept.isEmpty { return "/" }
        let last = segments.last ?? []
        let trailingSlash = bytes.last == Self.slash || last.elementsEqual(Self.dot) || last.elementsEqual(Self.dotDot)
        return "/" + kept.map { Self.uriEncode($0) }.joined(separator: "/") + (trailingSlash ? "/" : "")
    }

    // MARK: Canonical query

    public static func canonicalQuery(_ query: String) -> String {
        var pairs: [(name: String, value: String)] = []
        for component in Array(query.utf8).split(separator: ampersand, omittingEmptySubsequences: true) {
            let name: ArraySlice<UInt8>
            let value: ArraySlice<UInt8>
            if let eq = component.firstIndex(of: equals) {
                name = component[component.startIndex..<eq]
                value = component[component.index(after: eq)...]
            } else {
                name = component
                value = []
            }
            pairs.append((uriEncode(percentDecoded(name)), uriEncode(percentDecoded(value))))
        }
        pairs.sort { a, b in
            if a.name != b.name { return a.name.utf8.lexicographicallyPrecedes(b.name.utf8) }
            return a.value.utf8.lexicographicallyPrecedes(b.value.utf8)
        }
        return pairs.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
    }

    // MARK: Canonical headers

    /// The canonical header block (each line `name:value\n`) and the `;`-joined signed header names.
    public static func canonicalHeaders(_ headers: [(String, String)]) -> (canonical: String, signed: String) {
        var values: [String: [String]] = [:]
        var names: [String] = []
        for (name, value) in headers {
            let key = canonicalHeaderName(name)
            if values[key] == nil { names.append(key) }
            values[key, default: []].append(canonicalHeaderValue(value))
        }
        names.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var block = ""
        for name in names {
            block += name + ":" + (values[name] ?? []).joined(separator: ",") + "\n"
        }
        return (block, names.joined(separator: ";"))
    }

    /// Trimmed and ASCII-lower-cased.
    static func canonicalHeaderName(_ name: String) -> String {
        let bytes = trimmed(Array(name.utf8)).map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Trimmed, with each inner run of spaces and tabs collapsed to one space.
    static func canonicalHeaderValue(_ value: String) -> String {
        var out: [UInt8] = []
        var inSpace = false
        for byte in trimmed(Array(value.utf8)) {
            if byte == space || byte == tab {
                if !inSpace { out.append(space) }
                inSpace = true
            } else {
                out.append(byte)
                inSpace = false
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func trimmed(_ bytes: [UInt8]) -> ArraySlice<UInt8> {
        var slice = bytes[...]
        while let first = slice.first, first == space || first == tab { slice = slice.dropFirst() }
        while let last = slice.last, last == space || last == tab { slice = slice.dropLast() }
        return slice
    }

    // MARK: Encoding

    /// RFC 3986 percent-encoding: `A-Z a-z 0-9 - _ . ~` kept, every other byte `%XX` (upper-case hex).
    static func uriEncode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            if isUnreserved(byte) {
                out.append(byte)
            } else {
                out.append(percent)
                out.append(upperHex[Int(byte >> 4)])
                out.append(upperHex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E: true
        default: false
        }
    }

    /// `%XX` (either hex case) decoded to its byte; a `%` not followed by two hex digits is kept as is.
    /// `+` is not a space here: it stays a literal `+`.
    static func percentDecoded(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        let input = Array(bytes)
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        var i = 0
        while i < input.count {
            if input[i] == percent, i + 2 < input.count,
               let high = hexValue(input[i + 1]), let low = hexValue(input[i + 2]) {
                out.append(high << 4 | low)
                i += 3
            } else {
                out.append(input[i])
                i += 1
            }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }

    public static func hexSHA256(_ bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            out.append(lowerHex[Int(byte >> 4)])
            out.append(lowerHex[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static let lowerHex: [UInt8] = Array("0123456789abcdef".utf8)
    static let upperHex: [UInt8] = Array("0123456789ABCDEF".utf8)
    static let slash: UInt8 = 0x2F
    static let percent: UInt8 = 0x25
    static let ampersand: UInt8 = 0x26
    static let equals: UInt8 = 0x3D
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let dot: [UInt8] = [0x2E]
    static let dotDot: [UInt8] = [0x2E, 0x2E]

    // MARK: Dates (UTC, computed from the epoch: no calendar, locale or time zone involved)

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC.
    public static func amzDate(_ date: Date) -> String {
        let t = UTCTime(date)
        return pad(t.year, 4) + pad(t.month, 2) + pad(t.day, 2) + "T" + pad(t.hour, 2) + pad(t.minute, 2) + pad(t.second, 2) + "Z"
    }

    /// `yyyyMMdd` in UTC.
    public static func dateStamp(_ date: Date) -> String {
        let t = UTCTime(date)
        return pad(t.year, 4) + pad(t.month, 2) + pad(t.day, 2)
    }

    static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// Civil UTC date and time of a `Date`, whole seconds (fractions dropped towards the past).
    struct UTCTime {
        var year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64

        init(_ date: Date) {
            let interval = date.timeIntervalSince1970
            // Far outside any signable range (or not a number): pin to the epoch rather than trap.
            let seconds: Int64 = interval.isFinite && abs(interval) < 1e14 ? Int64(interval.rounded(.down)) : 0
            var days = seconds / 86_400
            var rest = seconds % 86_400
            if rest < 0 {
                rest += 86_400
                days -= 1
            }
            // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
            let z = days + 719_468
            let era = (z >= 0 ? z : z - 146_096) / 146_097
            let dayOfEra = z - era * 146_097
            let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
            let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
            let mp = (5 * dayOfYear + 2) / 153
            let month = mp < 10 ? mp + 3 : mp - 9
            self.year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
            self.month = month
            self.day = dayOfYear - (153 * mp + 2) / 5 + 1
            self.hour = rest / 3_600
            self.minute = rest % 3_600 / 60
            self.second = rest % 60
        }
    }
}

extension SigV4Signer: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "SigV4Signer(credentials: \(credentials), region: \(region), service: \(service))"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(
            self,
            children: ["credentials": credentials, "region": region, "service": service, "s3PathRules": s3PathRules],
            displayStyle: .struct
        )
    }
}
