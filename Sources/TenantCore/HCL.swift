import CofferSDK

/// A small HCL1 parser (the dialect Vault uses for ACL policies and the server config file).
///
/// Supported: `#`, `//` and `/* */` comments; attributes `key = value` (key an identifier
/// `[A-Za-z_][A-Za-z0-9_.-]*` or a quoted string); values: quoted strings with escapes,
/// heredocs (`<<EOF` and the indented `<<-EOF`), numbers (int, float, negative, exponent,
/// `0x` hex), `true`/`false`, lists `[a, b,]` and objects `{ k = v }`; blocks
/// `type "label" ... { body }` whose labels are quoted strings or bare identifiers.
/// Newlines and commas both separate items of a body (and both are optional).
///
/// Never traps on input: every error is a `CofferError.invalid` naming line and column,
/// and nesting is limited to `HCL.maxDepth` levels.
public enum HCL {
    /// Deepest nesting of blocks, labels, objects and lists accepted.
    public static let maxDepth = 100

    /// Parses HCL text into a JSON object following HCL1's JSON mapping (see `HCLBody.asJSON()`).
    public static func parse(_ text: String) throws -> JSONValue {
        try parseBody(text).asJSON()
    }

    /// Accepts either HCL or JSON text (JSON when the first non-space char is `{`), like Vault.
    public static func parseHCLOrJSON(_ text: String) throws -> JSONValue {
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        if let first = bytes.first(where: { !HCLLexer.isSpace($0) }), first == UInt8(ascii: "{") {
            return try JSONValue.parse(bytes)
        }
        return try parseBody(bytes).asJSON()
    }

    /// Parses HCL text into its raw, order-preserving form: repeated blocks (several
    /// `listener "tcp"`) stay separate, unlike in the JSON mapping.
    public static func parseBody(_ text: String) throws -> HCLBody {
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        return try parseBody(bytes)
    }

    static func parseBody(_ bytes: [UInt8]) throws -> HCLBody {
        var parser = HCLParser(bytes)
        try parser.advance()
        return try parser.parseBody(depth: 0, opener: nil)
    }

    /// Deep-merges `new` into `target`: objects merge key by key (recursively), anything
    /// else is replaced by `new`.
    static func merge(_ target: inout JSONValue, with new: JSONValue) {
        guard case .object(let incoming) = new, case .object(var existing) = target else {
            target = new
            return
        }
        target = .null  // drop our reference so `existing` is uniquely owned and mutates in place
        for (key, value) in incoming {
            if var old = existing.removeValue(forKey: key) {
                merge(&old, with: value)
                existing[key] = old
            } else {
                existing[key] = value
            }
        }
        target = .object(existing)
    }
}

/// The body of an HCL file or block, in source order.
public struct HCLBody: Sendable {
    public var attributes: [(name: String, value: JSONValue)]
    public var blocks: [HCLBlock]

    public init(attributes: [(name: String, value: JSONValue)] = [], blocks: [HCLBlock] = []) {
        self.attributes = attributes
        self.blocks = blocks
    }

    /// The value of the last attribute called `name`, if any.
    public func attribute(_ name: String) -> JSONValue? {
        attributes.last(where: { $0.name == name })?.value
    }

    /// The blocks of one type, in source order.
    public func blocks(ofType type: String) -> [HCLBlock] {
        blocks.filter { $0.type == type }
    }

    /// HCL1's JSON mapping:
    /// - `k = v` gives key `k`; a repeated key: the later value wins, except that two
    ///   objects merge (recursively).
    /// - `type "l1" "l2" { body }` gives `{"type": {"l1": {"l2": body}}}`, `type { body }`
    ///   gives `{"type": body}`; repeated types merge by label, and the same type and labels
    ///   twice merge their bodies key by key (later wins).
    /// Attributes are applied before blocks, so a block beats an attribute of the same name
    /// unless both are objects.
    public func asJSON() -> JSONValue {
        var out: [String: JSONValue] = [:]
        for attribute in attributes {
            insert(attribute.value, at: attribute.name, into: &out)
        }
        for block in blocks {
            var value = block.body.asJSON()
            for label in block.labels.reversed() { value = .object([label: value]) }
            insert(value, at: block.type, into: &out)
        }
        return .object(out)
    }

    private func insert(_ value: JSONValue, at key: String, into out: inout [String: JSONValue]) {
        if var old = out.removeValue(forKey: key) {
            HCL.merge(&old, with: value)
            out[key] = old
        } else {
            out[key] = value
        }
    }
}

/// One block: `type "label" ... { body }`.
public struct HCLBlock: Sendable {
    public var type: String
    public var labels: [String]
    public var body: HCLBody

    public init(type: String, labels: [String] = [], body: HCLBody = HCLBody()) {
        self.type = type
        self.labels = labels
        self.body = body
    }
}

// MARK: - Lexer

struct HCLToken {
    enum Kind: Equatable {
        case ident(String)
        case string(String)
        case heredoc(String)
        case number(JSONValue)
        case lbrace, rbrace, lbracket, rbracket, equals, comma
        case eof
    }

    var kind: Kind
    var line: Int
    var column: Int

    var describe: String {
        switch kind {
        case .ident(let s): "identifier '\(s.count > 40 ? String(s.prefix(40)) + "…" : s)'"
        case .string: "string"
        case .heredoc: "heredoc"
        case .number: "number"
        case .lbrace: "'{'"
        case .rbrace: "'}'"
        case .lbracket: "'['"
        case .rbracket: "']'"
        case .equals: "'='"
        case .comma: "','"
        case .eof: "end of input"
        }
    }
}

struct HCLLexer {
    let bytes: [UInt8]
    var i = 0
    var line = 1
    var column = 1

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    static func error(_ what: String, line: Int, column: Int) -> CofferError {
        CofferError.invalid("HCL parse error at line \(line), column \(column): \(what)")
    }

    func fail(_ what: String) -> CofferError { Self.error(what, line: line, column: column) }

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    static func isLetter(_ c: UInt8) -> Bool { (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A }
    static func isIdentStart(_ c: UInt8) -> Bool { isLetter(c) || c == UInt8(ascii: "_") }
    static func isIdentPart(_ c: UInt8) -> Bool {
        isIdentStart(c) || isDigit(c) || c == UInt8(ascii: ".") || c == UInt8(ascii: "-")
    }
    static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30...0x39: UInt32(c - 0x30)
        case 0x41...0x46: UInt32(c - 0x37)
        case 0x61...0x66: UInt32(c - 0x57)
        default: nil
        }
    }

    func peek(_ offset: Int = 0) -> UInt8? {
        let j = i + offset
        return j >= 0 && j < bytes.count ? bytes[j] : nil
    }

    /// Moves past one byte, keeping line and column (columns count characters, not bytes).
    mutating func bump() {
        guard i < bytes.count else { return }
        let c = bytes[i]
        if c == 0x0A {
            line += 1
            column = 1
        } else if c & 0xC0 != 0x80 {
            column += 1
        }
        i += 1
    }

    mutating func skipSpaceAndComments() throws {
        while let c = peek() {
            if Self.isSpace(c) {
                bump()
            } else if c == UInt8(ascii: "#") || (c == UInt8(ascii: "/") && peek(1) == UInt8(ascii: "/")) {
                while let d = peek(), d != 0x0A { bump() }
            } else if c == UInt8(ascii: "/") && peek(1) == UInt8(ascii: "*") {
                let (l, col) = (line, column)
                bump(); bump()
                while true {
                    guard let d = peek() else {
                        throw Self.error("unterminated /* comment", line: l, column: col)
                    }
                    if d == UInt8(ascii: "*") && peek(1) == UInt8(ascii: "/") { bump(); bump(); break }
                    bump()
                }
            } else {
                return
            }
        }
    }

    mutating func next() throws -> HCLToken {
        try skipSpaceAndComments()
        let (l, col) = (line, column)
        func token(_ kind: HCLToken.Kind) -> HCLToken { HCLToken(kind: kind, line: l, column: col) }
        guard let c = peek() else { return token(.eof) }
        switch c {
        case UInt8(ascii: "{"): bump(); return token(.lbrace)
        case UInt8(ascii: "}"): bump(); return token(.rbrace)
        case UInt8(ascii: "["): bump(); return token(.lbracket)
        case UInt8(ascii: "]"): bump(); return token(.rbracket)
        case UInt8(ascii: "="): bump(); return token(.equals)
        case UInt8(ascii: ","): bump(); return token(.comma)
        case UInt8(ascii: "\""): return token(.string(try lexString()))
        case UInt8(ascii: "<") where peek(1) == UInt8(ascii: "<"): return token(.heredoc(try lexHeredoc()))
        case UInt8(ascii: "-"), 0x30...0x39: return token(.number(try lexNumber()))
        default:
            if Self.isIdentStart(c) {
                let start = i
                while let d = peek(), Self.isIdentPart(d) { bump() }
                return token(.ident(String(decoding: bytes[start..<i], as: UTF8.self)))
            }
            if c >= 0x21 && c < 0x7F {
                throw fail("unexpected character '\(Character(Unicode.Scalar(c)))'")
            }
            throw fail(c >= 0x80 ? "unexpected non-ASCII character" : "unexpected control character")
        }
    }

    mutating func lexString() throws -> String {
        let (l, col) = (line, column)
        bump()  // opening quote
        var out: [UInt8] = []
        while true {
            guard let c = peek(), c != 0x0A else {
                throw Self.error("unterminated string", line: l, column: col)
            }
            if c == UInt8(ascii: "\"") { bump(); break }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                bump()
                continue
            }
            let (el, ecol) = (line, column)
            bump()
            guard let e = peek(), e != 0x0A else {
                throw Self.error("unterminated string", line: l, column: col)
            }
            bump()
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let digits = e == UInt8(ascii: "u") ? 4 : 8
                var value: UInt32 = 0
                for _ in 0..<digits {
                    guard let d = peek(), let h = Self.hexValue(d) else {
                        throw Self.error("invalid unicode escape in string", line: el, column: ecol)
                    }
                    value = value << 4 | h
                    bump()
                }
                guard let scalar = Unicode.Scalar(value) else {
                    throw Self.error("invalid unicode code point in string", line: el, column: ecol)
                }
                out.append(contentsOf: String(Character(scalar)).utf8)
            default:
                throw Self.error("invalid escape sequence in string", line: el, column: ecol)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    mutating func lexHeredoc() throws -> String {
        let (l, col) = (line, column)
        bump(); bump()  // <<
        var indented = false
        if peek() == UInt8(ascii: "-") { indented = true; bump() }
        let anchorStart = i
        guard let first = peek(), Self.isIdentStart(first) else {
            throw fail("expected heredoc anchor after '<<'")
        }
        while let d = peek(), Self.isIdentStart(d) || Self.isDigit(d) || d == UInt8(ascii: "-") { bump() }
        let anchor = Array(bytes[anchorStart..<i])
        if peek() == 0x0D { bump() }
        guard peek() == 0x0A else { throw fail("heredoc anchor must be followed by a newline") }
        bump()

        var lines: [ArraySlice<UInt8>] = []
        while true {
            guard i < bytes.count else { throw Self.error("unterminated heredoc", line: l, column: col) }
            let start = i
            var end = start
            while end < bytes.count, bytes[end] != 0x0A { end += 1 }
            var content = bytes[start..<end]
            if content.last == 0x0D { content = content.dropLast() }
            var trimmed = content
            while let last = trimmed.last, last == 0x20 || last == 0x09 { trimmed = trimmed.dropLast() }
            var lead = trimmed.startIndex
            if indented {
                while lead < trimmed.endIndex, trimmed[lead] == 0x20 || trimmed[lead] == 0x09 { lead += 1 }
            }
            if trimmed[lead...].elementsEqual(anchor) {
                // The terminator line: leave the newline after it to the whitespace skipper.
                while i < end { bump() }
                let prefix = content[content.startIndex..<lead]
                if indented && lines.allSatisfy({ $0.starts(with: prefix) }) {
                    lines = lines.map { $0.dropFirst(prefix.count) }
                }
                if lines.isEmpty { return "" }
                var out: [UInt8] = []
                for line in lines {
                    out.append(contentsOf: line)
                    out.append(0x0A)
                }
                return String(decoding: out, as: UTF8.self)
            }
            lines.append(content)
            while i < end { bump() }
            guard i < bytes.count else { throw Self.error("unterminated heredoc", line: l, column: col) }
            bump()  // newline
        }
    }

    mutating func lexNumber() throws -> JSONValue {
        let start = i
        var negative = false
        if peek() == UInt8(ascii: "-") { negative = true; bump() }
        guard let first = peek(), Self.isDigit(first) else { throw fail("invalid number") }
        if first == UInt8(ascii: "0"), let x = peek(1), x == UInt8(ascii: "x") || x == UInt8(ascii: "X") {
            bump(); bump()
            let digitsStart = i
            while let d = peek(), Self.hexValue(d) != nil { bump() }
            if let d = peek(), Self.isIdentPart(d) { throw fail("invalid number") }
            let digits = String(decoding: bytes[digitsStart..<i], as: UTF8.self)
            guard let magnitude = Int64(digits, radix: 16) else { throw fail("invalid hexadecimal number") }
            return .int(negative ? -magnitude : magnitude)
        }
        var isInt = true
        while let d = peek(), Self.isDigit(d) { bump() }
        if peek() == UInt8(ascii: "."), let d = peek(1), Self.isDigit(d) {
            isInt = false
            bump()
            while let d = peek(), Self.isDigit(d) { bump() }
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            isInt = false
            bump()
            if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { bump() }
            guard let d = peek(), Self.isDigit(d) else { throw fail("invalid number exponent") }
            while let d = peek(), Self.isDigit(d) { bump() }
        }
        if let d = peek(), Self.isIdentPart(d) { throw fail("invalid number") }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        if isInt, let v = Int64(text) { return .int(v) }
        guard let d = Double(text), d.isFinite else { throw fail("number out of range") }
        return .double(d)
    }
}

// MARK: - Parser

struct HCLParser {
    var lexer: HCLLexer
    var token = HCLToken(kind: .eof, line: 1, column: 1)

    init(_ bytes: [UInt8]) { lexer = HCLLexer(bytes) }

    mutating func advance() throws { token = try lexer.next() }

    func fail(_ what: String, at t: HCLToken? = nil) -> CofferError {
        let t = t ?? token
        return HCLLexer.error(what, line: t.line, column: t.column)
    }

    /// Parses items until `}` (when `opener` is the block's `{`) or end of input (top level).
    mutating func parseBody(depth: Int, opener: HCLToken?) throws -> HCLBody {
        var body = HCLBody()
        while true {
            let key: String
            switch token.kind {
            case .comma:
                try advance()
                continue
            case .eof:
                if let opener {
                    throw fail("unexpected end of input: expected '}' to close the '{' at line \(opener.line), column \(opener.column)")
                }
                return body
            case .rbrace:
                guard opener != nil else { throw fail("unexpected '}' without a matching '{'") }
                try advance()
                return body
            case .ident(let s), .string(let s):
                key = s
                try advance()
            default:
                throw fail("expected an attribute name or block type, found \(token.describe)")
            }

            if token.kind == .equals {
                try advance()
                body.attributes.append((name: key, value: try parseValue(depth: depth + 1)))
                continue
            }
            var labels: [String] = []
            while true {
                if case .ident(let s) = token.kind {
                    labels.append(s)
                } else if case .string(let s) = token.kind {
                    labels.append(s)
                } else {
                    break
                }
                guard depth + labels.count < HCL.maxDepth else { throw fail("nesting too deep") }
                try advance()
            }
            guard token.kind == .lbrace else {
                throw fail(labels.isEmpty
                    ? "expected '=' or '{' after key, found \(token.describe)"
                    : "expected '{' after block labels, found \(token.describe)")
            }
            let innerDepth = depth + labels.count + 1
            guard innerDepth <= HCL.maxDepth else { throw fail("nesting too deep") }
            let opener = token
            try advance()
            let inner = try parseBody(depth: innerDepth, opener: opener)
            body.blocks.append(HCLBlock(type: key, labels: labels, body: inner))
        }
    }

    mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth <= HCL.maxDepth else { throw fail("nesting too deep") }
        switch token.kind {
        case .string(let s), .heredoc(let s):
            try advance()
            return .string(s)
        case .number(let n):
            try advance()
            return n
        case .ident("true"):
            try advance()
            return .bool(true)
        case .ident("false"):
            try advance()
            return .bool(false)
        case .ident:
            throw fail("expected a value, found \(token.describe) (strings must be quoted)")
        case .lbracket:
            let opener = token
            try advance()
            var items: [JSONValue] = []
            while true {
                switch token.kind {
                case .rbracket:
                    try advance()
                    return .array(items)
                case .eof:
                    throw fail("unexpected end of input: expected ']' to close the '[' at line \(opener.line), column \(opener.column)")
                default:
                    break
                }
                items.append(try parseValue(depth: depth + 1))
                switch token.kind {
                case .comma:
                    try advance()
                case .rbracket:
                    break
                case .eof:
                    throw fail("unexpected end of input: expected ']' to close the '[' at line \(opener.line), column \(opener.column)")
                default:
                    throw fail("expected ',' or ']' in list, found \(token.describe)")
                }
            }
        case .lbrace:
            let opener = token
            try advance()
            return try parseBody(depth: depth + 1, opener: opener).asJSON()
        case .eof:
            throw fail("expected a value, found end of input")
        default:
            throw fail("expected a value, found \(token.describe)")
        }
    }
}
