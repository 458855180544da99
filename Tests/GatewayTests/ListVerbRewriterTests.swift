import Gateway
import NIOCore
import NIOEmbedded
import Testing

/// The LIST rewriter must find request boundaries however the bytes are split.
@Suite struct ListVerbRewriterTests {
    func run(_ chunks: [String]) throws -> String {
        let channel = EmbeddedChannel(handler: ListVerbRewriter())
        for c in chunks { try channel.writeInbound(ByteBuffer(string: c)) }
        var out = ""
        while var b: ByteBuffer = try channel.readInbound() { out += b.readString(length: b.readableBytes) ?? "" }
        _ = try channel.finish()
        return out
    }

    @Test func rewritesList() throws {
        #expect(try run(["LIST /v1/secret/metadata/ HTTP/1.1\r\nHost: x\r\n\r\n"]) == "GET /v1/secret/metadata/?list=true HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try run(["LIST /v1/a?x=1 HTTP/1.1\r\n\r\n"]) == "GET /v1/a?x=1&list=true HTTP/1.1\r\n\r\n")
    }

    @Test func leavesOthersAndTracksBodies() throws {
        // A body that itself contains "LIST " must not be rewritten; the LIST after it must be.
        let body = "LIST /v1/evil HTTP/1.1\r\n"
        let input = "POST /v1/x HTTP/1.1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)LIST /v1/y HTTP/1.1\r\n\r\n"
        let expected = "POST /v1/x HTTP/1.1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)GET /v1/y?list=true HTTP/1.1\r\n\r\n"
        #expect(try run([input]) == expected)
        // Same bytes, split at every position.
        for i in 1..<input.utf8.count {
            let bytes = Array(input.utf8)
            let a = String(decoding: bytes[..<i], as: UTF8.self), b = String(decoding: bytes[i...], as: UTF8.self)
            #expect(try run([a, b]) == expected, "split at \(i)")
        }
    }

    @Test func chunkedSwitchesToPassThrough() throws {
        let input = "POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nLIST /v1/y HTTP/1.1\r\n\r\n"
        #expect(try run([input]) == input)
    }
}
