import CofferSDK

/// A device's `filter` option: which requests the device records.
///
/// Grammar (keywords are case-insensitive, values are double-quoted strings with `\"` and
/// `\\` escapes):
///
/// ```
/// expr       := term ("or" term)*
/// term       := factor ("and" factor)*
/// factor     := "not" factor | "(" expr ")" | field op "value"
/// field      := namespace | mount_type | mount_point | operation | path
/// op         := "==" | "!=" | "matches" | "not" "matches"
/// ```
///
/// `matches` is a glob where `*` stands for any run of characters (`"acme/*"`). For
/// `namespace` and `mount_point`, `==` and `!=` ignore leading and trailing slashes, so
/// `namespace == "acme"` matches entries of `acme/`; the root namespace is `""`.
/// Both the request and the response entry of a request go to the same devices.
public struct AuditFilter: Sendable, Hashable, CustomStringConvertible {
    /// The values an expression is evaluated against.
    public struct Fields: Sendable, Hashable {
        public var namespace: String
        public var mountType: String
        public var mountPoint: String
        public var operation: String
        public var path: String

        public init(namespace: String = "", mountType: String = "", mountPoint: String = "", operation: String = "", path: String = "") {
            self.namespace = namespace
            self.mountType = mountType
            self.mountPoint = mountPoint
            self.operation = operation
            self.path = path
        }
    }

    enum Field: String, Sendable, Hashable, CaseIterable {
        case namespace, mountType = "mount_type", mountPoint = "mount_point", operation, path

        func value(in fields: Fields) -> String {
            switch self {
            case .namespace: fields.namespace
            case .mountType: fields.mountType
            case .mountPoint: fields.mountPoint
            case .operation: fields.operation
            case .path: fields.path
            }
        }

        var ignoresSlashes: Bool { self == .namespace || self == .mountPoint }
    }

    enum Comparison: Sendable, Hashable {
        case equals, notEquals, matches, notMatches
    }

    indirect enum Node: Sendable, Hashable {
        case compare(Field, Comparison, String)
        case and(Node, Node)
        case or(Node, Node)
        case not(Node)
    }

    let root: Node
    /// The expression as given.
    public let description: String

    /// Parses an expression; a syntax error is a `CofferError.invalidRequest` naming the offset.
    public init(parsing text: String) throws {
        var parser = Parser(tokens: try Self.tokenize(text))
        let node = try parser.expression()
        if let extra = parser.peek {
            throw Self.syntax("unexpected \(extra.text) at offset \(extra.offset)")
        }
        root = node
        description = text
    }

    public func matches(_ fields: Fields) -> Bool { Self.evaluate(root, fields) }

    static func evaluate(_ node: Node, _ fields: Fields) -> Bool {
        switch node {
        case .and(let a, let b): return evaluate(a, fields) && evaluate(b, fields)
        case .or(let a, let b): return evaluate(a, fields) || evaluate(b, fields)
        case .not(let a): return !evaluate(a, fields)
        case .compare(let field, let op, let operand):
            let value = field.value(in: fields)
            switch op {
            case .equals, .notEquals:
                let equal = field.ignoresSlashes ? trimSlashes(value) == trimSlashes(operand) : value == operand
                return equal == (op == .equals)
            case .matches: return Glob.match(operand, value)
            case .notMatches: return !Glob.match(operand, value)
            }
        }
    }

    static func trimSlashes(_ s: String) -> Substring {
        var sub = Substring(s)
        while sub.first == "/" { sub.removeFirst() }
        while sub.last == "/" { sub.removeLast() }
        return sub
    }

    // MARK: parsing

    enum TokenKind: Hashable {
        case word(String)
        case string(String)
        case equals, notEquals, open, close
    }

    struct Token {
        var kind: TokenKind
        var offset: Int

        var text: String {
            switch kind {
            case .word(let w): "'\(w)'"
            case .string: "string"
            case .equals: "'=='"
            case .notEquals: "'!='"
            case .open: "'('"
            case .close: "')'"
            }
        }
    }

    static func syntax(_ what: String) -> CofferError {
        CofferError.invalid("invalid audit filter: \(what)")
    }

    static func tokenize(_ text: String) throws -> [Token] {
        let b = Array(text.utf8)
        var tokens: [Token] = []
        var i = 0
        while i < b.count {
            let c = b[i]
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D:
                i += 1
            case UInt8(ascii: "("):
                tokens.append(Token(kind: .open, offset: i)); i += 1
            case UInt8(ascii: ")"):
                tokens.append(Token(kind: .close, offset: i)); i += 1
            case UInt8(ascii: "="), UInt8(ascii: "!"):
                guard i + 1 < b.count, b[i + 1] == UInt8(ascii: "=") else {
                    throw syntax("expected '==' or '!=' at offset \(i)")
                }
                tokens.append(Token(kind: c == UInt8(ascii: "=") ? .equals : .notEquals, offset: i))
                i += 2
            case UInt8(ascii: "\""):
                let start = i
                i += 1
                var out: [UInt8] = []
                var closed = false
                while i < b.count {
                    if b[i] == UInt8(ascii: "\\") {
                        guard i + 1 < b.count, b[i + 1] == UInt8(ascii: "\"") || b[i + 1] == UInt8(ascii: "\\") else {
                            throw syntax("invalid escape at offset \(i) (only \\\" and \\\\ are allowed)")
                        }
                        out.append(b[i + 1])
                        i += 2
                    } else if b[i] == UInt8(ascii: "\"") {
                        closed = true
                        i += 1
                        break
                    } else {
                        out.append(b[i])
                        i += 1
                    }
                }
                guard closed else { throw syntax("unterminated string starting at offset \(start)") }
                tokens.append(Token(kind: .string(String(decoding: out, as: UTF8.self)), offset: start))
            default:
                guard isWordByte(c) else {
                    throw syntax("unexpected character at offset \(i)")
                }
                let start = i
                while i < b.count, isWordByte(b[i]) { i += 1 }
                tokens.append(Token(kind: .word(String(decoding: b[start..<i], as: UTF8.self).lowercased()), offset: start))
            }
        }
        return tokens
    }

    static func isWordByte(_ c: UInt8) -> Bool {
        (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "_")
    }

    struct Parser {
        let tokens: [Token]
        var i = 0
        var depth = 0

        init(tokens: [Token]) { self.tokens = tokens }

        var peek: Token? { i < tokens.count ? tokens[i] : nil }
        var endOffset: Int { tokens.last.map { $0.offset + 1 } ?? 0 }

        mutating func next() -> Token? {
            defer { i += 1 }
            return peek
        }

        func isWord(_ w: String) -> Bool {
            if case .word(w)? = peek?.kind { return true }
            return false
        }

        mutating func expression() throws -> Node {
            depth += 1
            defer { depth -= 1 }
            guard depth < 64 else { throw AuditFilter.syntax("expression nested too deeply") }
            var node = try term()
            while isWord("or") {
                i += 1
                node = .or(node, try term())
            }
            return node
        }

        mutating func term() throws -> Node {
            var node = try factor()
            while isWord("and") {
                i += 1
                node = .and(node, try factor())
            }
            return node
        }

        mutating func factor() throws -> Node {
            guard let token = next() else { throw AuditFilter.syntax("unexpected end of expression") }
            switch token.kind {
            case .open:
                let inner = try expression()
                guard case .close? = next()?.kind else {
                    throw AuditFilter.syntax("missing ')' for '(' at offset \(token.offset)")
                }
                return inner
            case .word("not"):
                depth += 1
                defer { depth -= 1 }
                guard depth < 64 else { throw AuditFilter.syntax("expression nested too deeply") }
                return .not(try factor())
            case .word(let name):
                guard let field = Field(rawValue: name) else {
                    let names = Field.allCases.map(\.rawValue).joined(separator: ", ")
                    throw AuditFilter.syntax("unknown field '\(name)' at offset \(token.offset) (expected one of \(names))")
                }
                let op: Comparison
                guard let opToken = next() else {
                    throw AuditFilter.syntax("expected '==', '!=' or 'matches' after '\(name)'")
                }
                switch opToken.kind {
                case .equals: op = .equals
                case .notEquals: op = .notEquals
                case .word("matches"): op = .matches
                case .word("not"):
                    guard isWord("matches") else {
                        throw AuditFilter.syntax("expected 'matches' after 'not' at offset \(opToken.offset)")
                    }
                    i += 1
                    op = .notMatches
                default:
                    throw AuditFilter.syntax("expected '==', '!=' or 'matches' at offset \(opToken.offset), found \(opToken.text)")
                }
                guard let valueToken = next() else {
                    throw AuditFilter.syntax("expected a quoted value at the end of the expression")
                }
                guard case .string(let value) = valueToken.kind else {
                    throw AuditFilter.syntax("expected a quoted value at offset \(valueToken.offset), found \(valueToken.text)")
                }
                return .compare(field, op, value)
            default:
                throw AuditFilter.syntax("expected a field name, 'not' or '(' at offset \(token.offset), found \(token.text)")
            }
        }
    }
}
