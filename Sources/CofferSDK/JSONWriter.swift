/// The one JSON writer: compact JSON straight into bytes, with the commas between members
/// and elements kept for the caller. Strings are escaped by `JSONValue.writeString` (Go's
/// rules: `"` `\` and control bytes, and `< > &` for HTML safety); a whole `JSONValue`
/// is written with its object keys sorted, which is the canonical form the audit hash
/// chain signs. Objects the caller writes member by member keep the caller's order (the
/// Vault envelope's key order, etcd's field names).
public struct JSONWriter {
    public var bytes: [UInt8] = []
    /// Per open object or array: whether it has a member or element yet (the next one
    /// takes a comma).
    private var levels: [Bool] = []
    /// A key was written and its value not yet.
    private var afterKey = false

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    /// Before any value: nothing after a key; the comma before an array's next element.
    private mutating func prefix() {
        if afterKey {
            afterKey = false
        } else if let i = levels.indices.last {
            if levels[i] { bytes.append(UInt8(ascii: ",")) }
            levels[i] = true
        }
    }

    public mutating func beginObject() {
        prefix()
        bytes.append(UInt8(ascii: "{"))
        levels.append(false)
    }

    public mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        levels.removeLast()
    }

    public mutating func beginArray() {
        prefix()
        bytes.append(UInt8(ascii: "["))
        levels.append(false)
    }

    public mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        levels.removeLast()
    }

    private mutating func memberComma() {
        guard let i = levels.indices.last else { return }
        if levels[i] { bytes.append(UInt8(ascii: ",")) }
        levels[i] = true
    }

    /// A member's key, escaped.
    public mutating func key(_ k: String) {
        memberComma()
        JSONValue.writeString(k, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
        afterKey = true
    }

    /// A member's key known when compiled (plain ASCII that needs no escape).
    public mutating func key(_ k: StaticString) {
        memberComma()
        bytes.append(UInt8(ascii: "\""))
        k.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        afterKey = true
    }

    public mutating func string(_ s: String) {
        prefix()
        JSONValue.writeString(s, into: &bytes)
    }

    public mutating func int(_ i: Int64) {
        prefix()
        bytes.append(contentsOf: String(i).utf8)
    }

    public mutating func bool(_ b: Bool) {
        prefix()
        bytes.append(contentsOf: (b ? "true" : "false").utf8)
    }

    public mutating func null() {
        prefix()
        bytes.append(contentsOf: "null".utf8)
    }

    /// A whole value, its object keys sorted (canonical).
    public mutating func value(_ v: JSONValue) {
        prefix()
        v.write(into: &bytes)
    }

    /// Bytes that are JSON already (a value rendered before, base64 in quotes).
    public mutating func raw(_ json: some Sequence<UInt8>) {
        prefix()
        bytes.append(contentsOf: json)
    }

    /// A value the caller writes itself, as JSON, straight into the bytes (base64 of a
    /// large blob without a copy).
    public mutating func rawValue(_ body: (inout [UInt8]) -> Void) {
        prefix()
        body(&bytes)
    }

    /// An object (as the pending key's value, or the next element), its members by `body`.
    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        beginObject()
        body(&self)
        endObject()
    }
}
