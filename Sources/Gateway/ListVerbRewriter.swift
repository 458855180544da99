import NIOCore

/// Lets Vault's `LIST` verb through SwiftNIO's HTTP parser, which knows only registered
/// methods: a request line `LIST /v1/x HTTP/1.1` becomes `GET /v1/x?list=true HTTP/1.1`,
/// which Vault itself treats as the same request.
///
/// It sits in front of the HTTP decoder and tracks message boundaries (request line,
/// headers, `Content-Length` body). A chunked request body switches it to pass-through for
/// the rest of the connection (a later `LIST` on that connection then fails to parse; hvac
/// and Vault's CLI never send chunked requests).
public final class ListVerbRewriter: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    public init() {}

    enum State { case requestLine, headers, body(Int), passthrough }

    var state = State.requestLine
    var heldLine: [UInt8] = []
    var headerLine: [UInt8] = []
    var contentLength = 0
    var chunked = false
    static let maxLine = 64 * 1024

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buf = unwrapInboundIn(data)
        var out = context.channel.allocator.buffer(capacity: buf.readableBytes + 16)
        let bytes = buf.readableBytesView
        var i = bytes.startIndex
        while i < bytes.endIndex {
            switch state {
            case .passthrough:
                out.writeBytes(bytes[i...])
                i = bytes.endIndex
            case .body(let n):
                let take = min(n, bytes.endIndex - i)
                out.writeBytes(bytes[i..<(i + take)])
                i += take
                state = n - take == 0 ? .requestLine : .body(n - take)
            case .requestLine:
                if let lf = bytes[i...].firstIndex(of: 10) {
                    heldLine.append(contentsOf: bytes[i...lf])
                    i = lf + 1
                    emitRequestLine(into: &out)
                } else {
                    heldLine.append(contentsOf: bytes[i...])
                    i = bytes.endIndex
                    if heldLine.count > Self.maxLine {
                        out.writeBytes(heldLine)
                        heldLine = []
                        state = .passthrough
                    }
                }
            case .headers:
                if let lf = bytes[i...].firstIndex(of: 10) {
                    headerLine.append(contentsOf: bytes[i..<lf])
                    out.writeBytes(bytes[i...lf])
                    i = lf + 1
                    headerDone()
                } else {
                    headerLine.append(contentsOf: bytes[i...])
                    out.writeBytes(bytes[i...])
                    i = bytes.endIndex
                    if headerLine.count > Self.maxLine { state = .passthrough }
                }
            }
        }
        if out.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(out)) }
    }

    func emitRequestLine(into out: inout ByteBuffer) {
        defer { heldLine = [] }
        // Blank lines before a request are allowed and ignored.
        if heldLine == [13, 10] || heldLine == [10] {
            out.writeBytes(heldLine)
            return
        }
        state = .headers
        contentLength = 0
        chunked = false
        let list: [UInt8] = Array("LIST ".utf8)
        guard heldLine.count > 5, Array(heldLine[0..<5]) == list,
              let uriEnd = heldLine[5...].firstIndex(of: UInt8(ascii: " ")) else {
            out.writeBytes(heldLine)
            return
        }
        let uri = heldLine[5..<uriEnd]
        out.writeString("GET ")
        out.writeBytes(uri)
        out.writeString(uri.contains(UInt8(ascii: "?")) ? "&list=true" : "?list=true")
        out.writeBytes(heldLine[uriEnd...])
    }

    func headerDone() {
        var line = headerLine
        headerLine = []
        if line.last == 13 { line.removeLast() }
        if line.isEmpty {
            if chunked {
                state = .passthrough
            } else if contentLength > 0 {
                state = .body(contentLength)
            } else {
                state = .requestLine
            }
            return
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
        let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
        let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        if name == "content-length" {
            contentLength = Int(value) ?? 0
        } else if name == "transfer-encoding", value.lowercased().contains("chunked") {
            chunked = true
        }
    }
}

import Foundation
