#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferSDK
@preconcurrency import Crypto

/// The last entry a device wrote: its sequence number and hash. Persisted behind the
/// barrier with the device, so a restart continues the chain.
public struct AuditChainHead: Sendable, Hashable, Codable, CustomStringConvertible {
    public var seq: UInt64
    public var hash: String

    public init(seq: UInt64, hash: String) {
        self.seq = seq
        self.hash = hash
    }

    /// Before the first entry: seq 0, 64 zeros.
    public static let genesis = AuditChainHead(seq: 0, hash: AuditChain.genesisHash)

    /// `seq:hash`, the form `coffer audit verify --head` takes.
    public var description: String { "\(seq):\(hash)" }

    public init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let seq = UInt64(parts[0]), AuditChain.isHash(Substring(parts[1])) else { return nil }
        self.init(seq: seq, hash: String(parts[1]))
    }
}

/// Coffer's hash chain over audit entries (not in Vault).
///
/// Each line a device writes is `prefix + JSON + "\n"`, where the JSON object carries a
/// `chain` member `{"hash": H, "prev": P, "seq": N}`:
///
/// - `N` counts the entries of the device, from 1; `P` is the previous entry's `H`
///   (64 zeros before the first);
/// - `H` = lower-case hex of SHA-256( C ‖ P ), where P is the 64 ASCII hex characters
///   and C is the **canonical form** of the entry without its `chain` member:
///   compact JSON (no whitespace), object members sorted by key (Swift `String` order,
///   which is code-point order for the ASCII keys of Vault's shape), strings escaped as
///   `\"`, `\\`, `\n`, `\r`, `\t`, other bytes below 0x20 and `<`, `>`, `&` as `\u00xx`
///   (lower-case hex), everything else raw UTF-8; integers in decimal; other numbers as
///   the shortest decimal that reads back to the same double. This is exactly
///   `JSONValue.serialized()`, and the line itself is written in that form, so the
///   canonical bytes are the line with the `"chain":{…},` member cut out.
///
/// Every (re)open of a device — enable, load after unseal, SIGHUP reopen, reconnect after
/// a failure — first writes a **link record**, itself a chained entry:
/// `{"chain":{…},"link":{"device":"file/","reason":"enable|load|reopen|reconnect"},"time":…,"type":"link"}`,
/// so a rotated file starts with a record that names the previous file's last hash.
/// The hash carries no key: the chain shows edits, deletions, reordering and (against the
/// head kept behind the barrier, `expectedHead`) a cut tail; it cannot stop someone
/// able to rewrite the whole file and the stored head.
public enum AuditChain {
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The canonical bytes of an entry (its `chain` member, if any, left out).
    public static func canonical(_ entry: [String: JSONValue]) -> [UInt8] {
        AuditBody(entry).bytes
    }

    /// Hex SHA-256 of canonical bytes followed by the previous hash.
    public static func hash(canonical: [UInt8], prev: String) -> String {
        var h = SHA256()
        h.update(data: canonical)
        h.update(data: Array(prev.utf8))
        return Hex.encode(Array(h.finalize()))
    }

    /// The line for `entry` after `head`: `prefix`, the JSON with its `chain` member, "\n".
    public static func render(_ entry: [String: JSONValue], after head: AuditChainHead, prefix: [UInt8]) -> (line: [UInt8], head: AuditChainHead) {
        render(AuditBody(entry), after: head, prefix: prefix)
    }

    /// The line for a canonical body after `head`: the body's bytes are hashed as they are
    /// and the `chain` member is spliced in at `chainAt`.
    public static func render(_ body: AuditBody, after head: AuditChainHead, prefix: [UInt8]) -> (line: [UInt8], head: AuditChainHead) {
        let bytes = body.bytes
        let seq = head.seq + 1
        let hash = hash(canonical: bytes, prev: head.hash)
        let at = body.chainAt
        let memberBefore = at > 0 && bytes[at - 1] != UInt8(ascii: "{")
        let memberAfter = at < bytes.count && bytes[at] != UInt8(ascii: "}")
        var line = prefix
        line.reserveCapacity(prefix.count + bytes.count + 180)
        line.append(contentsOf: bytes[..<at])
        if memberBefore { line.append(UInt8(ascii: ",")) }
        line.append(contentsOf: #""chain":{"hash":""#.utf8)
        line.append(contentsOf: hash.utf8)
        line.append(contentsOf: #"","prev":""#.utf8)
        line.append(contentsOf: head.hash.utf8)
        line.append(contentsOf: #"","seq":"#.utf8)
        line.append(contentsOf: String(seq).utf8)
        line.append(UInt8(ascii: "}"))
        if memberAfter && !memberBefore { line.append(UInt8(ascii: ",")) }
        line.append(contentsOf: bytes[at...])
        line.append(0x0A)
        return (line, AuditChainHead(seq: seq, hash: hash))
    }

    /// The record a device writes first whenever it (re)opens.
    public static func linkRecord(device: String, reason: String, time: String = AuditEntry.timestamp()) -> [String: JSONValue] {
        ["type": "link", "time": .string(time), "link": ["device": .string(device), "reason": .string(reason)]]
    }

    /// The chain position recorded in a line (prefix already removed), if it has one.
    static func head(ofLine json: ArraySlice<UInt8>) -> AuditChainHead? {
        guard let entry = try? JSONValue.parse(json), let chain = entry["chain"],
            let seq = chain["seq"]?.intValue, seq > 0, let hash = chain["hash"]?.stringValue, isHash(Substring(hash))
        else { return nil }
        return AuditChainHead(seq: UInt64(seq), hash: hash)
    }

    static func isHash(_ s: Substring) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}

/// The first problem `AuditChainVerifier` found.
public struct AuditChainProblem: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// Entries are missing before this line (deleted, or a file of the rotation left out).
        case missing
        /// This entry's content (or its chain fields) no longer matches its hash.
        case altered
        /// This entry is out of order (swapped or duplicated lines).
        case reordered
        /// The log ends early: a cut last line, or fewer entries than the device's head.
        case truncated
        /// The line is not an audit entry (not JSON, no chain, wrong prefix).
        case garbage
    }

    public var kind: Kind
    public var file: String
    /// 1-based line number within `file`.
    public var line: Int
    public var detail: String

    public init(kind: Kind, file: String, line: Int, detail: String) {
        self.kind = kind
        self.file = file
        self.line = line
        self.detail = detail
    }

    public var description: String { "\(file):\(line): \(kind.rawValue): \(detail)" }
}

/// What `AuditChainVerifier.verify` found.
public enum AuditChainVerification: Sendable, Hashable {
    /// Every line checked out: `entries` records (link records included, counted also in
    /// `links`), ending at `head`.
    case ok(entries: Int, links: Int, head: AuditChainHead?)
    case failed(AuditChainProblem)

    public var isOK: Bool { if case .ok = self { true } else { false } }
}

/// Checks the hash chain of audit files: the engine of `coffer audit verify FILE...`.
///
/// Files are given oldest first (rotation order: `audit.log.2 audit.log.1 audit.log`). The
/// first record must start a chain (seq 1) or be a link record; each next record must
/// name the previous one's hash and sequence number. A link record may instead restart a
/// chain (seq 1: the device was re-enabled) or continue from a recent earlier entry (a
/// stream device whose stored head lagged when the server crashed). A complete log ends
/// with a newline; with `expectedHead` (the device's head from the server) a log that
/// stops before it is reported as truncated.
public enum AuditChainVerifier {
    /// How far ahead an out-of-sequence entry is looked for, to tell swapped lines from
    /// deleted ones.
    static let lookahead = 64
    /// How many recent hashes a link record may continue from.
    static let recentLimit = 100_000

    /// - Parameters:
    ///   - prefix: the device's `prefix` option; nil finds the JSON at the first `{` of each
    ///     line (which also reads syslog captures).
    /// - Throws: `CofferError.invalidRequest` when a file cannot be read.
    public static func verify(files: [String], prefix: String? = nil, expectedHead: AuditChainHead? = nil) throws -> AuditChainVerification {
        guard !files.isEmpty else { throw CofferError.invalid("no audit files to verify") }
        var state = State()
        for file in files {
            let reader = try LineReader(path: file)
            defer { reader.finish() }
            if let problem = check(reader, file: file, prefix: prefix.map { Array($0.utf8) }, state: &state) {
                return .failed(problem)
            }
        }
        if let expected = expectedHead {
            let last = state.head ?? .genesis
            if last.seq < expected.seq {
                return .failed(AuditChainProblem(
                    kind: .truncated, file: state.lastFile ?? files[files.count - 1], line: state.lastLine + 1,
                    detail: "the log ends at seq \(last.seq) but the device's head is seq \(expected.seq)"))
            }
            if last.seq == expected.seq && last.hash != expected.hash {
                return .failed(AuditChainProblem(
                    kind: .altered, file: state.lastFile ?? files[files.count - 1], line: state.lastLine,
                    detail: "the last entry (seq \(last.seq)) is not the one the device recorded"))
            }
        }
        return .ok(entries: state.entries, links: state.links, head: state.head)
    }

    struct State {
        var head: AuditChainHead?
        var headTime: String?
        var headFile: String?
        var headLine = 0
        var entries = 0
        var links = 0
        var lastFile: String?
        var lastLine = 0
        /// Recent hashes by seq, for link records that continue from an earlier entry.
        var recent: [UInt64: String] = [:]
        var recentOrder: [UInt64] = []
        var recentStart = 0

        mutating func remember(_ head: AuditChainHead) {
            recent[head.seq] = head.hash
            recentOrder.append(head.seq)
            if recentOrder.count - recentStart > AuditChainVerifier.recentLimit {
                recent[recentOrder[recentStart]] = nil
                recentStart += 1
                if recentStart > 4096 {
                    recentOrder.removeFirst(recentStart)
                    recentStart = 0
                }
            }
        }
    }

    /// A parsed line.
    struct Record {
        var seq: UInt64
        var prev: String
        var hash: String
        var computed: String
        var isLink: Bool
        var time: String?
    }

    enum Parsed {
        case record(Record)
        case bad(AuditChainProblem.Kind, String)
    }

    static func parse(_ raw: ArraySlice<UInt8>, prefix: [UInt8]?) -> Parsed {
        var json = raw
        if let prefix {
            guard json.starts(with: prefix) else { return .bad(.garbage, "the line does not start with the device prefix") }
            json = json.dropFirst(prefix.count)
        } else {
            guard let brace = json.firstIndex(of: UInt8(ascii: "{")) else { return .bad(.garbage, "the line holds no JSON object") }
            json = json[brace...]
        }
        guard let value = try? JSONValue.parse(json), var object = value.objectValue else {
            return .bad(.garbage, "the line is not a JSON object")
        }
        guard let chain = object["chain"]?.objectValue, let seq = chain["seq"]?.intValue, seq > 0,
            let prev = chain["prev"]?.stringValue, AuditChain.isHash(Substring(prev)),
            let hash = chain["hash"]?.stringValue, AuditChain.isHash(Substring(hash))
        else {
            return .bad(.garbage, "the entry has no valid chain member")
        }
        object["chain"] = nil
        let isLink = object["type"]?.stringValue == "link"
        let computed = AuditChain.hash(canonical: JSONValue.object(object).serialized(), prev: prev)
        let time = object["time"]?.stringValue
        return .record(Record(seq: UInt64(seq), prev: prev, hash: hash, computed: computed, isLink: isLink, time: time))
    }

    static func check(_ reader: LineReader, file: String, prefix: [UInt8]?, state: inout State) -> AuditChainProblem? {
        var lineNumber = 0
        func problem(_ kind: AuditChainProblem.Kind, _ line: Int, _ detail: String) -> AuditChainProblem {
            AuditChainProblem(kind: kind, file: file, line: line, detail: detail)
        }
        while let line = reader.line(at: 0) {
            lineNumber += 1
            reader.advance()
            if !line.terminated {
                return problem(.truncated, lineNumber, "the last line is incomplete (no newline): the file was cut")
            }
            let record: Record
            switch parse(line.bytes, prefix: prefix) {
            case .bad(let kind, let detail): return problem(kind, lineNumber, detail)
            case .record(let r): record = r
            }
            if record.computed != record.hash {
                return problem(.altered, lineNumber, "entry seq \(record.seq) does not match its hash")
            }
            if let head = state.head {
                let follows = record.prev == head.hash
                if follows && record.seq == head.seq + 1 {
                    // The normal case.
                } else if record.isLink && record.seq == 1 && record.prev == AuditChain.genesisHash {
                    // A new chain: the device was enabled again, which happens later.
                    if let before = state.headTime, let now = record.time, !timeIsOrdered(before, now) {
                        return problem(.reordered, lineNumber, "a chain starting at \(now) comes after an entry of \(before)")
                    }
                } else if record.isLink && record.seq >= 1 && state.recent[record.seq - 1] == record.prev {
                    // Continues from an earlier entry (the stored head lagged at a crash).
                } else if follows {
                    return problem(.altered, lineNumber, "entry follows seq \(head.seq) but is numbered \(record.seq)")
                } else if record.seq == head.seq + 1 {
                    let at = state.headFile == file ? state.headLine : lineNumber
                    return problem(.altered, at, "entry seq \(head.seq) is not the one entry seq \(record.seq) was chained to")
                } else if record.seq <= head.seq {
                    return problem(.reordered, lineNumber, "entry seq \(record.seq) comes after seq \(head.seq)")
                } else if expectedFollows(head, in: reader, prefix: prefix) {
                    return problem(.reordered, lineNumber, "entry seq \(record.seq) comes before seq \(head.seq + 1)")
                } else {
                    let gap = record.seq - head.seq - 1
                    return problem(.missing, lineNumber, "\(gap) entr\(gap == 1 ? "y" : "ies") missing between seq \(head.seq) and seq \(record.seq)")
                }
            } else if !(record.isLink || (record.seq == 1 && record.prev == AuditChain.genesisHash)) {
                return problem(.missing, lineNumber, "the log starts at seq \(record.seq) without a link record: its beginning is missing")
            }
            let head = AuditChainHead(seq: record.seq, hash: record.hash)
            state.head = head
            state.headTime = record.time
            state.headFile = file
            state.headLine = lineNumber
            state.remember(head)
            state.entries += 1
            if record.isLink { state.links += 1 }
        }
        state.lastFile = file
        state.lastLine = lineNumber
        return nil
    }

    /// Whether RFC 3339 UTC time `a` is not after `b` (fractions of any length).
    static func timeIsOrdered(_ a: String, _ b: String) -> Bool {
        func key(_ t: String) -> String {
            var base = Substring(t)
            if base.hasSuffix("Z") { base = base.dropLast() }
            var fraction = ""
            if let dot = base.firstIndex(of: ".") {
                fraction = String(base[base.index(after: dot)...])
                base = base[..<dot]
            }
            return base + "." + fraction + String(repeating: "0", count: max(0, 9 - fraction.count))
        }
        return key(a) <= key(b)
    }

    /// Whether the entry that should come next sits a little further down (swapped lines).
    static func expectedFollows(_ head: AuditChainHead, in reader: LineReader, prefix: [UInt8]?) -> Bool {
        for offset in 0..<lookahead {
            guard let line = reader.line(at: offset) else { return false }
            if case .record(let r) = parse(line.bytes, prefix: prefix), r.seq == head.seq + 1, r.prev == head.hash {
                return true
            }
        }
        return false
    }

    /// Reads a file line by line, with a small look-ahead.
    final class LineReader {
        struct Line {
            var bytes: ArraySlice<UInt8>
            var terminated: Bool
        }

        let fd: Int32
        var buffer: [UInt8] = []
        var start = 0
        var eof = false
        var pending: [Line] = []

        init(path: String) throws {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw CofferError.invalid("cannot read \(path): \(String(cString: strerror(errno)))")
            }
        }

        func finish() { _ = close(fd) }

        /// The line `offset` lines after the current one, or nil past the end.
        func line(at offset: Int) -> Line? {
            while pending.count <= offset {
                guard let l = readLine() else { return nil }
                pending.append(l)
            }
            return pending[offset]
        }

        func advance() { if !pending.isEmpty { pending.removeFirst() } }

        func readLine() -> Line? {
            while true {
                if let nl = buffer[start...].firstIndex(of: 0x0A) {
                    let l = Line(bytes: ArraySlice(buffer[start..<nl]), terminated: true)
                    start = nl + 1
                    return l
                }
                if eof {
                    guard start < buffer.count else { return nil }
                    let l = Line(bytes: ArraySlice(buffer[start...]), terminated: false)
                    start = buffer.count
                    return l
                }
                if start > 0 {
                    buffer.removeFirst(start)
                    start = 0
                }
                var chunk = [UInt8](repeating: 0, count: 1 << 16)
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    eof = true
                } else {
                    buffer.append(contentsOf: chunk[0..<n])
                }
            }
        }
    }
}
