import Foundation

/// The type of a declared field; the dispatcher converts raw JSON to it once.
public enum FieldType: String, Sendable {
    case string, int, bool
    /// Seconds, given as a number or a Go-style duration string ("90s", "1h30m", "768h").
    case duration
    /// A list of strings, given as an array or a comma-separated string.
    case commaStringSlice = "comma_string_slice"
    /// A JSON object.
    case map
    /// An object whose values are strings (metadata).
    case keyValuePairs = "kv_pairs"
    /// Any JSON value (not validated).
    case any
}

/// A field a route accepts.
public struct Field: Sendable {
    public var name: String
    public var type: FieldType
    public var defaultValue: JSONValue?
    public var required: Bool
    public var description: String

    public init(_ name: String, _ type: FieldType, default defaultValue: JSONValue? = nil, required: Bool = false, description: String = "") {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.required = required
        self.description = description
    }
}

/// Fields of one request, validated and converted: typed accessors with defaults applied.
public struct FieldValues: Sendable {
    public var values: [String: JSONValue]
    /// Names the client actually sent (distinguishes "0" from "absent").
    public var provided: Set<String>

    public init(values: [String: JSONValue], provided: Set<String> = []) {
        self.values = values
        self.provided = provided
    }

    public func has(_ name: String) -> Bool { provided.contains(name) }
    public func string(_ name: String) -> String { values[name]?.stringValue ?? "" }
    public func optionalString(_ name: String) -> String? { has(name) ? values[name]?.stringValue : nil }
    public func int(_ name: String) -> Int { Int(values[name]?.intValue ?? 0) }
    public func bool(_ name: String) -> Bool { values[name]?.boolValue ?? false }
    public func strings(_ name: String) -> [String] { values[name]?.arrayValue?.compactMap(\.stringValue) ?? [] }
    public func map(_ name: String) -> [String: JSONValue] { values[name]?.objectValue ?? [:] }
    public func stringMap(_ name: String) -> [String: String] {
        (values[name]?.objectValue ?? [:]).compactMapValues(\.stringValue)
    }
    public subscript(name: String) -> JSONValue? { values[name] }
}

/// One declared path of a backend, generic over the backend type: its handlers receive the
/// instance serving the call explicitly, so one table per type serves every mount of it
/// (one per tenant that mounts it) without any task-local, and a handler can't run without
/// its instance.
///
/// Pattern syntax: literal segments, `:name` for exactly one non-empty segment, and a final
/// `*name` for the rest of the path (possibly empty, may contain `/`). A trailing `/?`
/// makes a trailing slash optional.
public struct Route<Backend: Sendable>: Sendable {
    /// The handler of one operation.
    public typealias Handler = @Sendable (Backend, LogicalRequest) async throws -> LogicalResponse?
    /// Decides create vs update for POST/PUT (true: the object exists → update).
    public typealias ExistenceCheck = @Sendable (Backend, LogicalRequest) async throws -> Bool

    public var pattern: String { matcher.pattern }
    public var fields: [Field]
    public var operations: [LogicalOperation: Handler]
    public var existenceCheck: ExistenceCheck?
    public var summary: String
    public var help: String
    /// The billing class of operations that are not counted as their operation's plain
    /// class (`creds/:name` read: `.credential`; a login: `.login`).
    public var usage: [LogicalOperation: RequestClass]
    let matcher: RoutePattern

    public init(_ pattern: String, fields: [Field] = [], operations: [LogicalOperation: Handler], existenceCheck: ExistenceCheck? = nil, usage: [LogicalOperation: RequestClass] = [:], summary: String = "", help: String = "") {
        self.fields = fields
        self.usage = usage
        self.operations = operations
        self.existenceCheck = existenceCheck
        self.summary = summary
        self.help = help
        self.matcher = RoutePattern(pattern)
    }

    /// Matches a mount-relative path; returns the captures or nil.
    public func match(_ path: String) -> [String: String]? { matcher.match(path) }

    /// What OpenAPI and help need to know of the route, without its handlers.
    public var description: RouteDescription {
        RouteDescription(pattern: pattern, fields: fields, operations: Set(operations.keys), summary: summary, help: help)
    }
}

/// A route's declaration without its handlers (OpenAPI, help).
public struct RouteDescription: Sendable {
    public var pattern: String
    public var fields: [Field]
    public var operations: Set<LogicalOperation>
    public var summary: String
    public var help: String
}

/// A compiled route pattern (see `Route`).
struct RoutePattern: Sendable {
    let pattern: String
    let segments: [Segment]
    let optionalTrailingSlash: Bool

    enum Segment: Sendable {
        case literal(String)
        case one(String)
        case rest(String)
    }

    init(_ pattern: String) {
        self.pattern = pattern
        var p = pattern
        var optional = false
        if p.hasSuffix("/?") {
            optional = true
            p.removeLast(2)
        }
        self.optionalTrailingSlash = optional
        self.segments = p.isEmpty ? [] : p.split(separator: "/", omittingEmptySubsequences: false).map { s in
            if s.hasPrefix(":") { return .one(String(s.dropFirst())) }
            if s.hasPrefix("*") { return .rest(String(s.dropFirst())) }
            return .literal(String(s))
        }
    }

    /// Walks the path's bytes segment by segment without splitting it.
    func match(_ fullPath: String) -> [String: String]? {
        var path = Substring(fullPath)
        if optionalTrailingSlash, path.utf8.last == UInt8(ascii: "/") { path = path.dropLast() }
        var captures: [String: String] = [:]
        var rest = path.utf8[...]
        var consumedAll = path.isEmpty
        for (si, seg) in segments.enumerated() {
            if case .rest(let name) = seg {
                precondition(si == segments.count - 1, "*name must be last")
                captures[name] = consumedAll ? "" : String(Substring(rest))
                return captures
            }
            guard !consumedAll else { return nil }
            let slash = rest.firstIndex(of: UInt8(ascii: "/"))
            let part = rest[..<(slash ?? rest.endIndex)]
            switch seg {
            case .literal(let l):
                guard part.elementsEqual(l.utf8) else { return nil }
            case .one(let name):
                guard !part.isEmpty else { return nil }
                captures[name] = String(Substring(part))
            case .rest:
                break
            }
            if let slash {
                rest = rest[rest.index(after: slash)...]
            } else {
                consumedAll = true
            }
        }
        return consumedAll ? captures : nil
    }
}

/// A mounted backend as the core routes to it: the instance, and what the ACL needs before
/// calling it (sudo paths, unauthenticated paths).
public struct CompiledBackend: Sendable {
    /// The instance; nil for a mount whose instance is made per request (`sys/`, which acts
    /// on the namespace and the calling token's namespace).
    public let backend: (any LogicalBackend)?
    public let rootPaths: [String]
    public let unauthenticatedPaths: [String]
    let describe: @Sendable () -> [RouteDescription]
    /// The declared billing class of a request, for backends that declare any.
    let classify: (@Sendable (String, LogicalOperation) -> RequestClass?)?

    public init<B: LogicalBackend>(_ backend: B) {
        self.backend = backend
        self.rootPaths = backend.rootPaths
        self.unauthenticatedPaths = backend.unauthenticatedPaths
        self.describe = { B.routeDescriptions }
        self.classify = Self.classifier(B.self)
    }

    /// A mount whose instance the core makes for each request.
    public init<B: LogicalBackend>(declaring type: B.Type, rootPaths: [String], unauthenticatedPaths: [String] = []) {
        self.backend = nil
        self.rootPaths = rootPaths
        self.unauthenticatedPaths = unauthenticatedPaths
        self.describe = { B.routeDescriptions }
        self.classify = Self.classifier(B.self)
    }

    static func classifier<B: LogicalBackend>(_ type: B.Type) -> (@Sendable (String, LogicalOperation) -> RequestClass?)? {
        // Most backends declare none: their requests are not routed a second time.
        guard B.routes.contains(where: { !$0.usage.isEmpty }) else { return nil }
        return { path, operation in B.route(for: path)?.0.usage[operation] }
    }

    /// Whether any route of the backend declares a billing class.
    public var declaresUsage: Bool { classify != nil }

    /// The billing class the route of `path` declares for `operation` (nil: the operation's own).
    public func declaredClass(path: String, operation: LogicalOperation) -> RequestClass? {
        classify?(path, operation)
    }

    /// The declared routes (OpenAPI).
    public var routes: [RouteDescription] { describe() }
}

extension LogicalBackend {
    /// The declarations of `routes`, without handlers.
    public static var routeDescriptions: [RouteDescription] { routes.map(\.description) }

    /// Finds the route for a path.
    @inlinable
    public static func route(for path: String) -> (Route<Self>, [String: String])? {
        for r in routes {
            if let c = r.match(path) { return (r, c) }
        }
        return nil
    }

    /// Whether the object behind a create/update request exists (decides the ACL capability);
    /// nil when the route declares no check.
    @inlinable
    public func exists(_ request: LogicalRequest) async throws -> Bool? {
        guard let (r, c) = Self.route(for: request.path), let check = r.existenceCheck else { return nil }
        var req = request
        req.captures = c
        // The existence check runs before authorization (it decides create vs update), so
        // it sees the path captures only: the body is validated after the ACL allowed the
        // request, and an unauthorised caller never reaches field conversion.
        req.data = [:]
        req.fields = try FieldValues.validate(r.fields.filter { c[$0.name] != nil }, data: [:], captures: c)
        return try await check(self, req)
    }

    /// The one dispatcher every backend shares: route, refuse unsupported operations (405),
    /// validate fields (400), run the handler. Help on a path no route declares (the mount
    /// itself) answers the backend's help. Inlinable and a protocol requirement: each
    /// backend's conformance gets a copy specialized to its type (the core calls it through
    /// `any LogicalBackend`, where an unspecialized generic would look up every route
    /// table and handler through metadata).
    @inlinable
    public func handle(_ request: LogicalRequest) async throws -> LogicalResponse? {
        guard let (r, c) = Self.route(for: request.path) else {
            if request.operation == .help {
                let paths = Self.routes.map { "    \($0.pattern)" + ($0.summary.isEmpty ? "" : "\n        \($0.summary)") }
                return .document(["help": .string(backendHelp + "\n\n## PATHS\n\n" + paths.joined(separator: "\n\n"))])
            }
            throw CofferError(.notFound, "unsupported path")
        }
        if request.operation == .help {
            // Vault answers help with a bare {"help": ...} document, not the envelope.
            return .document(["help": .string(r.help.isEmpty ? r.summary : r.summary + "\n\n" + r.help)])
        }
        var op = request.operation
        if r.operations[op] == nil {
            // Like Vault: a route without create handles create as update, and vice versa.
            if op == .create, r.operations[.update] != nil { op = .update }
            else if op == .update, r.operations[.create] != nil { op = .create }
        }
        guard let handler = r.operations[op] else {
            throw CofferError(.unsupportedOperation, "unsupported operation")
        }
        var req = request
        req.operation = op
        req.captures = c
        req.fields = try FieldValues.validate(r.fields, data: request.data, captures: c)
        return try await handler(self, req)
    }
}

extension FieldValues {
    /// Validates raw data against declared fields: converts types, applies defaults,
    /// enforces required fields. Unknown keys are ignored, as in Vault.
    public static func validate(_ fields: [Field], data: [String: JSONValue], captures: [String: String]) throws -> FieldValues {
        var values: [String: JSONValue] = [:]
        var provided = Set<String>()
        for f in fields {
            let raw: JSONValue?
            if let c = captures[f.name] {
                raw = .string(c)
            } else {
                raw = data[f.name]
            }
            if let raw, !raw.isNull {
                values[f.name] = try convert(raw, to: f.type, field: f.name)
                provided.insert(f.name)
            } else if f.required {
                throw CofferError.invalid("missing required field \"\(f.name)\"")
            } else if let d = f.defaultValue {
                values[f.name] = try convert(d, to: f.type, field: f.name)
            }
        }
        for (k, v) in captures where values[k] == nil {
            values[k] = .string(v)
            provided.insert(k)
        }
        return FieldValues(values: values, provided: provided)
    }

    static func convert(_ raw: JSONValue, to type: FieldType, field: String) throws -> JSONValue {
        func bad(_ expected: String) -> CofferError {
            CofferError.invalid("error converting input for field \"\(field)\": expected \(expected), got \(raw.kindName)")
        }
        switch type {
        case .any:
            return raw
        case .string:
            switch raw {
            case .string: return raw
            case .int(let i): return .string(String(i))
            case .double(let d):
                if let i = Checked.int64(exactly: d) { return .string(String(i)) }
                guard d.isFinite else { throw bad("string") }
                return .string(String(d))
            case .bool(let b): return .string(b ? "true" : "false")
            default: throw bad("string")
            }
        case .int:
            switch raw {
            case .int: return raw
            case .double(let d):
                guard let i = Checked.int64(exactly: d) else { throw bad("integer") }
                return .int(i)
            case .string(let s):
                if s.isEmpty { return .int(0) }
                guard let i = Int64(s.trimmingCharacters(in: .whitespaces)) else { throw bad("integer") }
                return .int(i)
            default: throw bad("integer")
            }
        case .bool:
            switch raw {
            case .bool: return raw
            case .string(let s):
                switch s.lowercased() {
                case "true", "1", "t": return .bool(true)
                case "false", "0", "f", "": return .bool(false)
                default: throw bad("bool")
                }
            case .int(let i): return .bool(i != 0)
            default: throw bad("bool")
            }
        case .duration:
            let invalid = CofferError.invalid("error converting input for field \"\(field)\": invalid duration")
            switch raw {
            case .int(let i):
                guard i >= 0, i <= Checked.maxDurationSeconds else { throw invalid }
                return .int(i)
            case .double(let d):
                guard d >= 0, let i = Checked.int64(truncating: d), i <= Checked.maxDurationSeconds else { throw invalid }
                return .int(i)
            case .string(let s):
                guard let secs = GoDuration.parseSeconds(s) else {
                    throw CofferError.invalid("error converting input for field \"\(field)\": invalid duration \"\(s.prefix(64))\"")
                }
                return .int(secs)
            default: throw bad("duration")
            }
        case .commaStringSlice:
            switch raw {
            case .string(let s):
                return .array(s.split(separator: ",").map { .string($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 != .string("") })
            case .array(let a):
                return .array(try a.map {
                    switch $0 {
                    case .string: return $0
                    case .int(let i): return .string(String(i))
                    default: throw bad("list of strings")
                    }
                })
            default: throw bad("list of strings")
            }
        case .map:
            switch raw {
            case .object: return raw
            case .string(let s) where !s.isEmpty:
                if let v = try? JSONValue.parse(s), case .object = v { return v }
                throw bad("object")
            default: throw bad("object")
            }
        case .keyValuePairs:
            switch raw {
            case .object(let o):
                return .object(try o.mapValues {
                    switch $0 {
                    case .string: return $0
                    case .int(let i): return .string(String(i))
                    case .bool(let b): return .string(String(b))
                    default: throw bad("map of strings")
                    }
                })
            case .array(let a):
                // Vault also accepts ["k=v", ...]
                var o: [String: JSONValue] = [:]
                for e in a {
                    guard let s = e.stringValue, let eq = s.firstIndex(of: "=") else { throw bad("map of strings") }
                    o[String(s[..<eq])] = .string(String(s[s.index(after: eq)...]))
                }
                return .object(o)
            default: throw bad("map of strings")
            }
        }
    }
}

/// Go-style durations, as Vault accepts them (named apart from `Duration`).
public enum GoDuration {
    /// "90", "90s", "1h30m", "1.5h", "768h", "7d" (Vault accepts d) → whole seconds.
    public static func parseSeconds(_ text: String) -> Int64? {
        // Foundation's trimming bridges through UTF-16: only when there is something to trim.
        let padded = text.utf8.first.map { $0 == 0x20 || $0 == 0x09 } == true || text.utf8.last.map { $0 == 0x20 || $0 == 0x09 } == true
        let s = padded ? text.trimmingCharacters(in: .whitespaces) : text
        if s.isEmpty { return 0 }
        if let i = Int64(s) { return i >= 0 && i <= Checked.maxDurationSeconds ? i : nil }
        var total: Double = 0
        var rest = Substring(s)
        guard !rest.hasPrefix("-") else { return nil }
        if rest.hasPrefix("+") { rest = rest.dropFirst() }
        while !rest.isEmpty {
            let numEnd = rest.firstIndex(where: { !($0.isNumber || $0 == ".") }) ?? rest.endIndex
            guard numEnd != rest.startIndex, let n = Double(rest[..<numEnd]) else { return nil }
            rest = rest[numEnd...]
            let unitEnd = rest.firstIndex(where: { $0.isNumber || $0 == "." }) ?? rest.endIndex
            let unit = rest[..<unitEnd]
            rest = rest[unitEnd...]
            let mult: Double
            switch unit {
            case "ns": mult = 1e-9
            case "us", "µs": mult = 1e-6
            case "ms": mult = 1e-3
            case "s": mult = 1
            case "m": mult = 60
            case "h": mult = 3600
            case "d": mult = 86400
            default: return nil
            }
            total += n * mult
        }
        guard total.isFinite, total <= Double(Checked.maxDurationSeconds) else { return nil }
        return Int64(total)
    }

    /// Seconds → Go's duration string form ("768h0m0s", "0s").
    public static func format(_ seconds: Int) -> String {
        if seconds == 0 { return "0s" }
        let h = seconds / 3600, m = (seconds % 3600) / 60, s = seconds % 60
        if h > 0 { return "\(h)h\(m)m\(s)s" }
        if m > 0 { return "\(m)m\(s)s" }
        return "\(s)s"
    }
}
