import Foundation
import Testing

@testable import CofferSDK

/// The one JSON writer: commas in objects, arrays and nested values; the caller's member
/// order kept; a whole value canonical (sorted keys), the same bytes `serialized()` gives;
/// strings escaped once, by `JSONValue.writeString`.
@Suite struct JSONWriterTests {
    @Test func membersElementsAndNesting() throws {
        var w = JSONWriter()
        w.beginObject()
        w.key("z")
        w.int(1)
        w.key("a")
        w.beginArray()
        w.string("x")
        w.object { o in
            o.key("k")
            o.null()
        }
        w.beginArray()
        w.endArray()
        w.bool(true)
        w.value(["b": 2, "a": [1, "é"]])
        w.endArray()
        w.key("raw" as String)
        w.rawValue { $0.append(contentsOf: "\"cmF3\"".utf8) }
        w.endObject()
        let text = String(decoding: w.bytes, as: UTF8.self)
        #expect(text == #"{"z":1,"a":["x",{"k":null},[],true,{"a":[1,"é"],"b":2}],"raw":"cmF3"}"#)
        // It parses, and the caller's order ("z" before "a") was kept.
        #expect(try JSONValue.parse(w.bytes)["a"]?.arrayValue?.count == 5)
    }

    @Test func aWholeValueIsTheCanonicalSerialization() {
        let v: JSONValue = ["q": "<a&b>\"\\\n\u{1}", "n": [3.5, -0.0, 1e300], "o": ["y": .null, "x": false]]
        var w = JSONWriter()
        w.value(v)
        #expect(w.bytes == v.serialized())
        var keyed = JSONWriter()
        keyed.beginObject()
        keyed.key("q")
        keyed.string("<a&b>\"\\\n\u{1}")
        keyed.endObject()
        #expect(String(decoding: keyed.bytes, as: UTF8.self) == #"{"q":"\u003ca\u0026b\u003e\"\\\n\u0001"}"#)
    }
}

@Suite struct Base64URLTests {
    @Test func matchesFoundationForEveryLength() {
        for n in 0..<70 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255) }
            let reference = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Base64URL.encode(bytes) == reference)
            #expect(Base64URL.decode(Substring(reference)) == bytes)
        }
        #expect(Base64URL.decode("ab=") == nil && Base64URL.decode("a+b/") == nil && Base64URL.decode("abcde") == nil)
    }
}
