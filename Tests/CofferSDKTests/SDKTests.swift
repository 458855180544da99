import CofferSDK
import Foundation
import Testing

@Suite struct JSONTests {
    @Test func roundTrip() throws {
        let text = #"{"a":[1,2.5,"x",true,false,null],"b":{"c":"\u00e9\n\"q\""},"n":-12}"#
        let v = try JSONValue.parse(text)
        #expect(v["a"]?.arrayValue?.count == 6)
        #expect(v["b"]?["c"] == "é\n\"q\"")
        #expect(v["n"] == -12)
        #expect(try JSONValue.parse(v.serializedString()) == v)
    }

    @Test(arguments: ["", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "nul", "\"\\x\"", "{} extra", "01", "1.", "\"\u{01}\"", String(repeating: "[", count: 10_000)])
    func malformed(text: String) {
        #expect(throws: CofferError.self) { try JSONValue.parse(text) }
    }

    @Test func invalidUTF8() {
        #expect(throws: CofferError.self) { try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }
}

@Suite struct DurationTests {
    @Test(arguments: [("90", 90), ("90s", 90), ("1h30m", 5400), ("768h", 2_764_800), ("1.5h", 5400), ("2d", 172_800), ("", 0), ("500ms", 0)] as [(String, Int64)])
    func parses(text: String, seconds: Int64) {
        #expect(GoDuration.parseSeconds(text) == seconds)
    }

    @Test(arguments: ["abc", "-5s", "5x", "h", "1h-"])
    func rejects(text: String) {
        #expect(GoDuration.parseSeconds(text) == nil)
    }

    @Test func formats() {
        #expect(GoDuration.format(0) == "0s")
        #expect(GoDuration.format(3600) == "1h0m0s")
        #expect(GoDuration.format(61) == "1m1s")
    }
}

@Suite struct RouteTests {
    static let handler: Route<Int>.Handler = { _, _ in nil }

    @Test func patterns() {
        let r = Route<Int>("roles/:name", operations: [.read: Self.handler])
        #expect(r.match("roles/web") == ["name": "web"])
        #expect(r.match("roles/") == nil)
        #expect(r.match("roles/a/b") == nil)
        let rest = Route<Int>("data/*path", operations: [.read: Self.handler])
        #expect(rest.match("data/a/b/c") == ["path": "a/b/c"])
        #expect(rest.match("data/") == ["path": ""])
        #expect(rest.match("other/x") == nil)
        let opt = Route<Int>("roles/?", operations: [.list: Self.handler])
        #expect(opt.match("roles") == [:])
        #expect(opt.match("roles/") == [:])
    }

    @Test func validation() throws {
        let fields = [Field("ttl", .duration), Field("n", .int, default: 5), Field("name", .string, required: true), Field("list", .commaStringSlice), Field("flag", .bool)]
        let v = try FieldValues.validate(fields, data: ["ttl": "1h", "name": "x", "list": "a, b", "flag": "true"], captures: [:])
        #expect(v.int("ttl") == 3600)
        #expect(v.int("n") == 5)
        #expect(!v.has("n"))
        #expect(v.strings("list") == ["a", "b"])
        #expect(v.bool("flag"))
        #expect(throws: CofferError.self) { try FieldValues.validate(fields, data: [:], captures: [:]) }
        #expect(throws: CofferError.self) { try FieldValues.validate(fields, data: ["name": "x", "n": "abc"], captures: [:]) }
        #expect(throws: CofferError.self) { try FieldValues.validate(fields, data: ["name": ["a"]], captures: [:]) }
        #expect(throws: CofferError.self) { try FieldValues.validate(fields, data: ["name": "x", "ttl": "forever"], captures: [:]) }
    }
}

@Suite struct EncodingTests {
    @Test func hex() {
        #expect(Hex.encode([0x00, 0x0f, 0xa5, 0xff]) == "000fa5ff")
        #expect(Hex.encode([]) == "")
    }

    @Test func rfc3339() {
        #expect(RFC3339.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
        #expect(RFC3339.format(Date(timeIntervalSince1970: 1_521_685_446.5)) == "2018-03-22T02:24:06.5Z")
        #expect(RFC3339.format(Date(timeIntervalSince1970: 1_521_685_446.123456)) == "2018-03-22T02:24:06.123456Z")
    }
}

@Suite struct RandomIDTests {
    @Test func uuidShape() {
        let a = RandomID.uuid(), b = RandomID.uuid()
        #expect(a != b)
        #expect(a.count == 36)
        #expect(UUID(uuidString: a) != nil)
        #expect(Array(a)[14] == "4")
    }
}

@Suite struct SecureRandomTests {
    /// Whole buffers from one system call: every length is filled (not left zero) and draws
    /// differ.
    @Test(arguments: [1, 7, 8, 9, 32, 255, 256, 257, 4096])
    func fillsEveryByte(length: Int) {
        let a = SecureRandom.bytes(length), b = SecureRandom.bytes(length)
        #expect(a.count == length && b.count == length)
        if length >= 8 {
            #expect(a != b)
            // A zeroed tail would mean a short read left unfilled.
            #expect(a.suffix(8).contains { $0 != 0 } || b.suffix(8).contains { $0 != 0 })
        }
        if length == 4096 {
            // 16 values of every byte on average: all 256 present is near-certain.
            #expect(Set(a).count > 240)
        }
    }
}
