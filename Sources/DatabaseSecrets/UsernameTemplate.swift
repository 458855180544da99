import CofferSDK
@preconcurrency import Crypto
import Foundation

/// Vault's `username_template`: the subset of Go's `text/template` that Vault's database
/// plugins use to build user names, with Vault's template functions.
///
/// Supported: text and `{{ ... }}` actions (with `{{-`/`-}}` trimming and `{{/* */}}`
/// comments); the fields `.DisplayName` and `.RoleName`; string (`"..."`, `` `...` ``),
/// integer and boolean literals; parenthesised pipelines; pipes (`x | f a`, where `x` is
/// passed as the last argument, as Go does); and the functions `random N`, `truncate N`,
/// `truncate_sha256 N`, `uppercase`, `lowercase`, `replace "old" "new"`, `sha256`, `base64`,
/// `decode_base64`, `hex`, `decode_hex`, `unix_time`, `unix_time_millis`, `uuid`,
/// `timestamp "<Go layout>"` and `printf "<format>" args...`. Control structures (`if`,
/// `range`, `with`...) and variables are refused when the template is parsed.
///
/// Times are rendered in UTC.
struct UsernameTemplate: Sendable {
    /// What a template renders from (Vault's `UsernameMetadata`).
    struct Metadata: Sendable {
        var displayName: String
        var roleName: String
        var now: Date

        init(displayName: String = "", roleName: String = "", now: Date = Date()) {
            self.displayName = displayName
            self.roleName = roleName
            self.now = now
        }
    }

    /// Longest template text accepted.
    static let maxTemplateLength = 4096
    /// Longest rendered string (and largest `random N`): a guard against templates that
    /// would allocate without bound.
    static let maxOutputLength = 4096

    let source: String
    private let nodes: [Node]

    /// Parses a template; throws `CofferError.invalid` naming the problem.
    init(_ source: String) throws(CofferError) {
        guard !source.isEmpty else { throw CofferError.invalid("username template is empty") }
        guard source.utf8.count <= Self.maxTemplateLength else {
            throw CofferError.invalid("username template is longer than \(Self.maxTemplateLength) bytes")
        }
        self.source = source
        do {
            var parser = Parser(Array(source.unicodeScalars))
            nodes = try parser.parseTemplate()
        } catch {
            throw CofferError.invalid("invalid username template: \(error.message)")
        }
    }

    /// Renders the template. Throws `CofferError.invalid` on an evaluation error (a bad
    /// argument to a function, a result longer than the limit).
    func render(_ metadata: Metadata) throws(CofferError) -> String {
        var out = ""
        do {
            for node in nodes {
                switch node {
                case .text(let t): out += t
                case .action(let p): out += try Evaluator(metadata: metadata).evaluate(p).text
                }
                if out.utf8.count > Self.maxOutputLength { throw TemplateError("rendered username is too long") }
            }
        } catch let error as TemplateError {
            throw CofferError.invalid("username template: \(error.message)")
        } catch {
            throw CofferError.invalid("username template: \(error)")
        }
        return out
    }

    // MARK: syntax

    struct TemplateError: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    enum Node: Sendable {
        case text(String)
        case action(Pipeline)
    }

    struct Pipeline: Sendable {
        var commands: [Command]
    }

    struct Command: Sendable {
        var operands: [Operand]
    }

    indirect enum Operand: Sendable {
        case field(String)
        case function(String)
        case string(String)
        case int(Int)
        case bool(Bool)
        case pipeline(Pipeline)
    }

    enum Token: Equatable {
        case field(String)
        case identifier(String)
        case string(String)
        case int(Int)
        case pipe, open, close
    }

    /// Splits the source into text and actions, then each action into tokens.
    struct Parser {
        let s: [Unicode.Scalar]
        var i = 0

        init(_ scalars: [Unicode.Scalar]) { s = scalars }

        func starts(with text: String, at index: Int) -> Bool {
            var j = index
            for c in text.unicodeScalars {
                guard j < s.count, s[j] == c else { return false }
                j += 1
            }
            return true
        }

        static func isSpace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" }

        mutating func parseTemplate() throws(TemplateError) -> [Node] {
            var nodes: [Node] = []
            var text = String.UnicodeScalarView()
            var trimNextText = false
            while i < s.count {
                guard starts(with: "{{", at: i) else {
                    text.append(s[i])
                    i += 1
                    continue
                }
                var open = i + 2
                if open + 1 < s.count, s[open] == "-", Self.isSpace(s[open + 1]) {
                    // `{{- ` trims the whitespace before the action.
                    while let last = text.last, Self.isSpace(last) { text.removeLast() }
                    open += 1
                }
                if trimNextText { text = String.UnicodeScalarView(String(text).drop(while: { $0.isWhitespace }).unicodeScalars) }
                if !text.isEmpty { nodes.append(.text(String(text))) }
                text = String.UnicodeScalarView()
                trimNextText = false
                // Find the closing `}}` outside string literals.
                var j = open
                var quote: Unicode.Scalar?
                var close = -1
                while j < s.count {
                    let c = s[j]
                    if let q = quote {
                        if c == "\\" && q == "\"" { j += 2; continue }
                        if c == q { quote = nil }
                    } else if c == "\"" || c == "`" || c == "'" {
                        quote = c
                    } else if starts(with: "}}", at: j) {
                        close = j
                        break
                    }
                    j += 1
                }
                guard close >= 0 else { throw TemplateError("unclosed action") }
                var body = Array(s[open..<close])
                if body.count >= 2, body[body.count - 1] == "-", Self.isSpace(body[body.count - 2]) {
                    body.removeLast()
                    trimNextText = true
                }
                i = close + 2
                let trimmed = String(String.UnicodeScalarView(body)).trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.hasPrefix("/*") {
                    guard trimmed.hasSuffix("*/"), trimmed.count >= 4 else { throw TemplateError("unclosed comment") }
                    continue
                }
                var tokens = try Self.tokenize(body)
                guard !tokens.isEmpty else { throw TemplateError("missing value for command") }
                var k = 0
                let pipeline = try Self.parsePipeline(&tokens, &k, nested: false)
                nodes.append(.action(pipeline))
            }
            if trimNextText { text = String.UnicodeScalarView(String(text).drop(while: { $0.isWhitespace }).unicodeScalars) }
            if !text.isEmpty { nodes.append(.text(String(text))) }
            return nodes
        }

        static func isIdentStart(_ c: Unicode.Scalar) -> Bool {
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_"
        }

        static func isIdentChar(_ c: Unicode.Scalar) -> Bool { isIdentStart(c) || (c >= "0" && c <= "9") }

        static func tokenize(_ b: [Unicode.Scalar]) throws(TemplateError) -> [Token] {
            var tokens: [Token] = []
            var i = 0
            while i < b.count {
                let c = b[i]
                if isSpace(c) { i += 1; continue }
                switch c {
                case "|": tokens.append(.pipe); i += 1
                case "(": tokens.append(.open); i += 1
                case ")": tokens.append(.close); i += 1
                case "\"":
                    var v = String.UnicodeScalarView()
                    i += 1
                    var closed = false
                    while i < b.count {
                        let d = b[i]
                        if d == "\"" { closed = true; i += 1; break }
                        if d == "\n" { break }
                        if d == "\\" {
                            guard i + 1 < b.count else { break }
                            let e = b[i + 1]
                            i += 2
                            switch e {
                            case "n": v.append("\n")
                            case "t": v.append("\t")
                            case "r": v.append("\r")
                            case "\\": v.append("\\")
                            case "\"": v.append("\"")
                            case "'": v.append("'")
                            case "x", "u", "U":
                                let n = e == "x" ? 2 : (e == "u" ? 4 : 8)
                                guard i + n <= b.count,
                                      let code = UInt32(String(String.UnicodeScalarView(b[i..<(i + n)])), radix: 16),
                                      let scalar = Unicode.Scalar(code) else {
                                    throw TemplateError("invalid escape in string literal")
                                }
                                v.append(scalar)
                                i += n
                            default: throw TemplateError("invalid escape \\\(e) in string literal")
                            }
                            continue
                        }
                        v.append(d)
                        i += 1
                    }
                    guard closed else { throw TemplateError("unterminated quoted string") }
                    tokens.append(.string(String(v)))
                case "`":
                    guard let end = b[(i + 1)...].firstIndex(of: "`") else { throw TemplateError("unterminated raw quoted string") }
                    tokens.append(.string(String(String.UnicodeScalarView(b[(i + 1)..<end]))))
                    i = end + 1
                case ".":
                    var j = i + 1
                    while j < b.count, isIdentChar(b[j]) { j += 1 }
                    guard j > i + 1 else { throw TemplateError("the bare \".\" is not supported; use .DisplayName or .RoleName") }
                    if j < b.count, b[j] == "." { throw TemplateError("nested fields are not supported") }
                    tokens.append(.field(String(String.UnicodeScalarView(b[(i + 1)..<j]))))
                    i = j
                case "-", "0"..."9":
                    var j = i + 1
                    while j < b.count, (b[j] >= "0" && b[j] <= "9") { j += 1 }
                    let text = String(String.UnicodeScalarView(b[i..<j]))
                    if j < b.count, isIdentChar(b[j]) || b[j] == "." { throw TemplateError("bad number syntax: \"\(text)\(b[j])\"") }
                    guard let n = Int(text), abs(n) <= 1_000_000_000 else { throw TemplateError("bad number syntax: \"\(text)\"") }
                    tokens.append(.int(n))
                    i = j
                case "$":
                    throw TemplateError("variables are not supported")
                case "'":
                    throw TemplateError("character constants are not supported")
                default:
                    guard isIdentStart(c) else { throw TemplateError("unexpected \"\(c)\" in action") }
                    var j = i + 1
                    while j < b.count, isIdentChar(b[j]) { j += 1 }
                    tokens.append(.identifier(String(String.UnicodeScalarView(b[i..<j]))))
                    i = j
                }
            }
            return tokens
        }

        static let keywords: Set<String> = ["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue", "nil"]

        static func parsePipeline(_ t: inout [Token], _ k: inout Int, nested: Bool) throws(TemplateError) -> Pipeline {
            var commands: [Command] = []
            var operands: [Operand] = []
            func endCommand() throws(TemplateError) {
                guard !operands.isEmpty else { throw TemplateError("missing command in pipeline") }
                commands.append(Command(operands: operands))
                operands = []
            }
            while k < t.count {
                let tok = t[k]
                k += 1
                switch tok {
                case .pipe: try endCommand()
                case .close:
                    guard nested else { throw TemplateError("unexpected \")\" in action") }
                    try endCommand()
                    return Pipeline(commands: commands)
                case .open:
                    operands.append(.pipeline(try parsePipeline(&t, &k, nested: true)))
                case .string(let v): operands.append(.string(v))
                case .int(let v): operands.append(.int(v))
                case .field(let name):
                    guard name == "DisplayName" || name == "RoleName" else {
                        throw TemplateError("unknown field .\(name) (the fields are .DisplayName and .RoleName)")
                    }
                    operands.append(.field(name))
                case .identifier(let name):
                    if name == "true" || name == "false" { operands.append(.bool(name == "true")); continue }
                    if keywords.contains(name) { throw TemplateError("\"\(name)\" is not supported in username templates") }
                    guard Evaluator.functions.contains(name) else { throw TemplateError("function \"\(name)\" not defined") }
                    operands.append(.function(name))
                }
            }
            if nested { throw TemplateError("unclosed left paren") }
            try endCommand()
            return Pipeline(commands: commands)
        }
    }

    // MARK: evaluation

    enum Value {
        case string(String)
        case int(Int)
        case bool(Bool)

        var text: String {
            switch self {
            case .string(let s): s
            case .int(let i): String(i)
            case .bool(let b): b ? "true" : "false"
            }
        }

        var goType: String {
            switch self {
            case .string: "string"
            case .int: "int"
            case .bool: "bool"
            }
        }
    }

    struct Evaluator {
        let metadata: Metadata

        static let functions: Set<String> = [
            "random", "truncate", "truncate_sha256", "uppercase", "lowercase", "replace", "sha256", "base64",
            "decode_base64", "hex", "decode_hex", "unix_time", "unix_time_millis", "timestamp", "uuid", "printf",
        ]

        func evaluate(_ p: Pipeline) throws(TemplateError) -> Value {
            var piped: Value?
            for command in p.commands {
                piped = try evaluate(command, piped: piped)
            }
            guard let piped else { throw TemplateError("empty pipeline") }
            return piped
        }

        func evaluate(_ c: Command, piped: Value?) throws(TemplateError) -> Value {
            guard case .function(let name) = c.operands[0] else {
                guard c.operands.count == 1, piped == nil else {
                    throw TemplateError("can't give argument to non-function")
                }
                return try argument(c.operands[0])
            }
            var args: [Value] = []
            for operand in c.operands.dropFirst() { args.append(try argument(operand)) }
            if let piped { args.append(piped) }
            // Every intermediate value is bounded, not just the rendered result: nested
            // `replace ""`, `hex` and `base64` would otherwise grow it tenfold per call. With
            // the template's own length bound, this bounds the work of an evaluation too.
            let value = try call(name, args)
            if case .string(let s) = value, s.utf8.count > UsernameTemplate.maxOutputLength {
                throw TemplateError("\(name): result is longer than \(UsernameTemplate.maxOutputLength) bytes")
            }
            return value
        }

        func argument(_ o: Operand) throws(TemplateError) -> Value {
            switch o {
            case .field(let name): return .string(name == "DisplayName" ? metadata.displayName : metadata.roleName)
            case .string(let s): return .string(s)
            case .int(let i): return .int(i)
            case .bool(let b): return .bool(b)
            case .pipeline(let p): return try evaluate(p)
            // A function name used as an argument is called with no arguments, as in Go.
            case .function(let name): return try call(name, [])
            }
        }

        func call(_ name: String, _ args: [Value]) throws(TemplateError) -> Value {
            func arity(_ n: Int) throws(TemplateError) {
                guard args.count == n else { throw TemplateError("wrong number of args for \(name): want \(n) got \(args.count)") }
            }
            func int(_ i: Int) throws(TemplateError) -> Int {
                guard case .int(let v) = args[i] else {
                    throw TemplateError("wrong type for value; expected int; got \(args[i].goType) (argument \(i + 1) of \(name))")
                }
                return v
            }
            func string(_ i: Int) throws(TemplateError) -> String {
                guard case .string(let v) = args[i] else {
                    throw TemplateError("wrong type for value; expected string; got \(args[i].goType) (argument \(i + 1) of \(name))")
                }
                return v
            }
            switch name {
            case "random":
                try arity(1)
                let n = try int(0)
                guard n >= 0, n <= UsernameTemplate.maxOutputLength else { throw TemplateError("random: length must be between 0 and \(UsernameTemplate.maxOutputLength)") }
                return .string(SecretGenerator.base62(n))
            case "truncate":
                try arity(2)
                let n = try int(0)
                guard n > 0 else { throw TemplateError("max length must be > 0 but was \(n)") }
                return .string(Self.prefix(try string(1), bytes: n))
            case "truncate_sha256":
                try arity(2)
                let n = try int(0)
                guard n > 8 else { throw TemplateError("max length must be > 8 but was \(n)") }
                let s = try string(1)
                guard s.utf8.count > n else { return .string(s) }
                let head = Self.prefix(s, bytes: n - 8)
                let tail = String(decoding: s.utf8.dropFirst(head.utf8.count), as: UTF8.self)
                return .string(head + String(Self.sha256Hex(tail).prefix(8)))
            case "uppercase":
                try arity(1)
                return .string(try string(0).uppercased())
            case "lowercase":
                try arity(1)
                return .string(try string(0).lowercased())
            case "replace":
                try arity(3)
                let find = try string(0), with = try string(1), s = try string(2)
                // The size of the result, checked before making it (inputs are bounded, so
                // counting is cheap; the result of one call could be ~4,000 times larger).
                let occurrences = find.isEmpty ? s.unicodeScalars.count + 1 : s.components(separatedBy: find).count - 1
                let size = s.utf8.count - occurrences * find.utf8.count + occurrences * with.utf8.count
                guard size <= UsernameTemplate.maxOutputLength else {
                    throw TemplateError("replace: result is longer than \(UsernameTemplate.maxOutputLength) bytes")
                }
                guard !find.isEmpty else {
                    // Go's strings.ReplaceAll with an empty needle inserts between every rune.
                    var out = with
                    for ch in s.unicodeScalars { out.unicodeScalars.append(ch); out += with }
                    return .string(out)
                }
                return .string(s.replacingOccurrences(of: find, with: with))
            case "sha256":
                try arity(1)
                return .string(Self.sha256Hex(try string(0)))
            case "base64":
                try arity(1)
                return .string(Data(try string(0).utf8).base64EncodedString())
            case "decode_base64":
                try arity(1)
                guard let d = Data(base64Encoded: try string(0)) else { throw TemplateError("decode_base64: illegal base64 data") }
                return .string(String(decoding: d, as: UTF8.self))
            case "hex":
                try arity(1)
                return .string(Hex.encode(Array(try string(0).utf8)))
            case "decode_hex":
                try arity(1)
                let h = Array(try string(0).utf8)
                guard h.count % 2 == 0 else { throw TemplateError("decode_hex: odd length hex string") }
                var bytes: [UInt8] = []
                var k = 0
                while k < h.count {
                    guard let b = UInt8(String(decoding: h[k..<(k + 2)], as: UTF8.self), radix: 16) else {
                        throw TemplateError("decode_hex: invalid byte")
                    }
                    bytes.append(b)
                    k += 2
                }
                return .string(String(decoding: bytes, as: UTF8.self))
            case "unix_time":
                try arity(0)
                return .string(String(GoTimeLayout.microseconds(metadata.now).seconds))
            case "unix_time_millis":
                try arity(0)
                let t = GoTimeLayout.microseconds(metadata.now)
                return .string(String(t.seconds * 1000 + t.micros / 1000))
            case "uuid":
                try arity(0)
                return .string(RandomID.secureUUID())
            case "timestamp":
                try arity(1)
                return .string(GoTimeLayout.format(metadata.now, layout: try string(0)))
            case "printf":
                guard !args.isEmpty else { throw TemplateError("wrong number of args for printf: want at least 1 got 0") }
                return .string(GoPrintf.format(try string(0), Array(args.dropFirst())))
            default:
                throw TemplateError("function \"\(name)\" not defined")
            }
        }

        /// The longest prefix of `s` that fits in `bytes` UTF-8 bytes without splitting a character.
        static func prefix(_ s: String, bytes: Int) -> String {
            guard s.utf8.count > bytes else { return s }
            var out = String.UnicodeScalarView()
            var used = 0
            for scalar in s.unicodeScalars {
                let n = String(scalar).utf8.count
                if used + n > bytes { break }
                out.append(scalar)
                used += n
            }
            return String(out)
        }

        static func sha256Hex(_ s: String) -> String { Hex.encode(Array(SHA256.hash(data: Array(s.utf8)))) }
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %q %x %X %%`, with the `-`
/// and `0` flags and a width. Mismatches render as Go does (`%!d(string=x)`, `%!s(MISSING)`).
enum GoPrintf {
    static func format(_ f: String, _ args: [UsernameTemplate.Value]) -> String {
        var out = ""
        var argIndex = 0
        let chars = Array(f)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            guard c == "%" else { out.append(c); i += 1; continue }
            i += 1
            guard i < chars.count else { out += "%!(NOVERB)"; break }
            var leftAlign = false, zeroPad = false
            while i < chars.count, chars[i] == "-" || chars[i] == "0" {
                if chars[i] == "-" { leftAlign = true } else { zeroPad = true }
                i += 1
            }
            var width = 0
            while i < chars.count, let d = chars[i].wholeNumberValue, chars[i].isASCII {
                width = min(width * 10 + d, 1024)
                i += 1
            }
            guard i < chars.count else { out += "%!(NOVERB)"; break }
            let verb = chars[i]
            i += 1
            if verb == "%" { out += "%"; continue }
            guard argIndex < args.count else { out += "%!\(verb)(MISSING)"; continue }
            let arg = args[argIndex]
            argIndex += 1
            var piece: String
            switch (verb, arg) {
            case ("s", .string(let s)), ("v", .string(let s)): piece = s
            case ("v", _), ("d", .int), ("t", .bool): piece = arg.text
            case ("q", .string(let s)): piece = quote(s)
            case ("x", .string(let s)): piece = Hex.encode(Array(s.utf8))
            case ("X", .string(let s)): piece = Hex.encode(Array(s.utf8)).uppercased()
            case ("x", .int(let n)): piece = String(n, radix: 16)
            case ("X", .int(let n)): piece = String(n, radix: 16).uppercased()
            default: piece = "%!\(verb)(\(arg.goType)=\(arg.text))"
            }
            if piece.count < width {
                let pad = width - piece.count
                if leftAlign {
                    piece += String(repeating: " ", count: pad)
                } else if zeroPad, case .int(let n) = arg, "dxX".contains(verb) {
                    let digits = n < 0 ? String(piece.dropFirst()) : piece
                    piece = (n < 0 ? "-" : "") + String(repeating: "0", count: pad) + digits
                } else {
                    piece = String(repeating: " ", count: pad) + piece
                }
            }
            out += piece
        }
        if argIndex < args.count {
            out += "%!(EXTRA " + args[argIndex...].map { "\($0.goType)=\($0.text)" }.joined(separator: ", ") + ")"
        }
        return out
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`), rendered in UTC.
enum GoTimeLayout {
    static let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
    static let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

    /// Layout elements, longest first so that `January` wins over `Jan` and `2006` over `2`.
    static let elements: [String] = [
        "January", "Monday", "Z07:00:00", "-07:00:00", "Z07:00", "-07:00", "Z0700", "-0700", "2006", "Jan", "Mon", "MST",
        "Z07", "-07", "002", "__2", "_2", "01", "02", "03", "04", "05", "06", "15", "PM", "pm", "1", "2", "3", "4", "5",
    ]

    /// Whole seconds and microseconds since 1970. `Date` is a `Double`: rounding to the
    /// microsecond first keeps `.123` from reading as `.122999...`.
    static func microseconds(_ date: Date) -> (seconds: Int64, micros: Int64) {
        let total = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        let seconds = total >= 0 ? total / 1_000_000 : (total - 999_999) / 1_000_000
        return (seconds, total - seconds * 1_000_000)
    }

    static func format(_ exact: Date, layout: String) -> String {
        let (wholeSeconds, micros) = microseconds(exact)
        let date = Date(timeIntervalSince1970: TimeInterval(wholeSeconds))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond, .weekday], from: date)
        let year = c.year ?? 1970, month = c.month ?? 1, day = c.day ?? 1
        let hour = c.hour ?? 0, minute = c.minute ?? 0, second = c.second ?? 0
        let weekday = (c.weekday ?? 1) - 1
        let dayOfYear = calendar.ordinality(of: .day, in: .year, for: date) ?? 1
        let nanos = Int(micros) * 1000
        func pad(_ v: Int, _ w: Int, _ fill: Character = "0") -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: fill, count: w - s.count) + s
        }
        let l = Array(layout.unicodeScalars)
        var out = ""
        var i = 0
        outer: while i < l.count {
            // Fractional seconds: ".000" / ",000" (fixed) and ".999" (trailing zeros trimmed).
            if (l[i] == "." || l[i] == ","), i + 1 < l.count, l[i + 1] == "0" || l[i + 1] == "9" {
                let digit = l[i + 1]
                var j = i + 1
                while j < l.count, l[j] == digit { j += 1 }
                let n = min(j - i - 1, 9)
                let isDigitAfter = j < l.count && l[j] >= "0" && l[j] <= "9"
                if !isDigitAfter {
                    var digits = String(pad(nanos, 9).prefix(n))
                    if digit == "9" { while digits.hasSuffix("0") { digits.removeLast() } }
                    if !digits.isEmpty || digit == "0" { out.unicodeScalars.append(l[i]); out += digits }
                    i = j
                    continue
                }
            }
            for element in elements {
                let e = Array(element.unicodeScalars)
                guard i + e.count <= l.count, Array(l[i..<(i + e.count)]) == e else { continue }
                // Go reads "Jan"/"Mon" only when not followed by a lower-case letter.
                if (element == "Jan" || element == "Mon"), i + 3 < l.count, l[i + 3] >= "a" && l[i + 3] <= "z" { continue }
                switch element {
                case "January": out += months[month - 1]
                case "Jan": out += String(months[month - 1].prefix(3))
                case "Monday": out += days[weekday]
                case "Mon": out += String(days[weekday].prefix(3))
                case "MST": out += "UTC"
                case "2006": out += pad(year, 4)
                case "06": out += pad(year % 100, 2)
                case "01": out += pad(month, 2)
                case "1": out += String(month)
                case "02": out += pad(day, 2)
                case "_2": out += pad(day, 2, " ")
                case "2": out += String(day)
                case "002": out += pad(dayOfYear, 3)
                case "__2": out += pad(dayOfYear, 3, " ")
                case "15": out += pad(hour, 2)
                case "03": out += pad(hour % 12 == 0 ? 12 : hour % 12, 2)
                case "3": out += String(hour % 12 == 0 ? 12 : hour % 12)
                case "04": out += pad(minute, 2)
                case "4": out += String(minute)
                case "05": out += pad(second, 2)
                case "5": out += String(second)
                case "PM": out += hour >= 12 ? "PM" : "AM"
                case "pm": out += hour >= 12 ? "pm" : "am"
                case "Z07:00:00", "Z07:00", "Z0700", "Z07": out += "Z"
                case "-07:00:00": out += "+00:00:00"
                case "-07:00": out += "+00:00"
                case "-0700": out += "+0000"
                case "-07": out += "+00"
                default: out += element
                }
                i += e.count
                continue outer
            }
            out.unicodeScalars.append(l[i])
            i += 1
        }
        return out
    }
}

/// Random strings for generated credentials, from the system CSPRNG.
enum SecretGenerator {
    static let lower = Array("abcdefghijklmnopqrstuvwxyz")
    static let upper = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    static let digits = Array("0123456789")
    static let base62Alphabet = digits + upper + lower

    /// `n` characters of `[0-9A-Za-z]` (Vault's `random N`).
    static func base62(_ n: Int) -> String {
        var g = SystemRandomNumberGenerator()
        return String((0..<n).map { _ in base62Alphabet.randomElement(using: &g)! })
    }

    /// Vault's default password policy: 20 characters of `[A-Za-z0-9-]` with at least one
    /// lower-case letter, one upper-case letter, one digit and one dash.
    static func password() -> String {
        let charset = lower + upper + digits + ["-"]
        var g = SystemRandomNumberGenerator()
        while true {
            let candidate = (0..<20).map { _ in charset.randomElement(using: &g)! }
            if candidate.contains(where: lower.contains), candidate.contains(where: upper.contains),
               candidate.contains(where: digits.contains), candidate.contains("-") {
                return String(candidate)
            }
        }
    }
}
