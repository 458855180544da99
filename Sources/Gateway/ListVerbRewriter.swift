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
    /// An incomplete request line carried over from the previous read (not yet forwarded).
    var heldLine: [UInt8] = []
    /// An incomplete header line carried over (already forwarded; kept only to parse it).
    var headerLine: [UInt8] = []
    var contentLength = 0
    var chunked = false
    static let maxLine = 64 * 1024

    /// What to forward, in order: ranges of the input, or replacement bytes.
    enum Piece { case input(Range<Int>), bytes([UInt8]) }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buf = unwrapInboundIn(data)
        let pieces = buf.withUnsafeReadableBytes { scan($0) }
        if pieces.count == 1, case .input(let r) = pieces[0], r.count == buf.readableBytes {
            context.fireChannelRead(data)  // the common case: nothing to change
            return
        }
        var out = context.channel.allocator.buffer(capacity: buf.readableBytes + 16)
        for piece in pieces {
            switch piece {
            case .input(let r): out.writeBytes(buf.readableBytesView[(buf.readerIndex + r.lowerBound)..<(buf.readerIndex + r.upperBound)])
            case .bytes(let b): out.writeBytes(b)
            }
        }
        if out.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(out)) }
    }

    func scan(_ p: UnsafeRawBufferPointer) -> [Piece] {
        var pieces: [Piece] = []
        var pending: Range<Int>?  // contiguous input range not yet appended to pieces
        func emit(_ r: Range<Int>) {
            if let cur = pending, cur.upperBound == r.lowerBound { pending = cur.lowerBound..<r.upperBound; return }
            if let cur = pending { pieces.append(.input(cur)) }
            pending = r
        }
        func emitBytes(_ b: [UInt8]) {
            if let cur = pending { pieces.append(.input(cur)); pending = nil }
            pieces.append(.bytes(b))
        }
        func lf(from i: Int) -> Int? {
            guard i < p.count, let base = p.baseAddress else { return nil }
            guard let hit = memchr(base + i, 10, p.count - i) else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
        let n = p.count
        var i = 0
        while i < n {
            switch state {
            case .passthrough:
                emit(i..<n)
                i = n
            case .body(let remaining):
                let take = min(remaining, n - i)
                emit(i..<(i + take))
                i += take
                state = remaining - take == 0 ? .requestLine : .body(remaining - take)
            case .requestLine:
                guard let end = lf(from: i) else {
                    heldLine.append(contentsOf: p[i..<n])
                    i = n
                    if heldLine.count > Self.maxLine {
                        emitBytes(heldLine)
                        heldLine = []
                        state = .passthrough
                    }
                    continue
                }
                if heldLine.isEmpty {
                    if let rewritten = rewriteRequestLine(p[i...end]) { emitBytes(rewritten) } else { emit(i..<(end + 1)) }
                } else {
                    heldLine.append(contentsOf: p[i...end])
                    emitBytes(rewriteRequestLine(heldLine[...]) ?? heldLine)
                    heldLine = []
                }
                i = end + 1
            case .headers:
                guard let end = lf(from: i) else {
                    headerLine.append(contentsOf: p[i..<n])
                    emit(i..<n)
                    i = n
                    if headerLine.count > Self.maxLine { state = .passthrough }
                    continue
                }
                emit(i..<(end + 1))
                if headerLine.isEmpty {
                    headerDone(p[i..<end])
                } else {
                    headerLine.append(contentsOf: p[i..<end])
                    let line = headerLine
                    headerLine = []
                    headerDone(line[...])
                }
                i = end + 1
            }
        }
        if let cur = pending { pieces.append(.input(cur)) }
        return pieces
    }

    /// Starts a new message; returns the rewritten line for `LIST`, nil to keep it as is.
    func rewriteRequestLine<C: RandomAccessCollection>(_ line: C) -> [UInt8]? where C.Element == UInt8, C.Index == Int {
        let bytes = line
        // Blank lines before a request are allowed and ignored.
        if bytes.count <= 2 && bytes.allSatisfy({ $0 == 13 || $0 == 10 }) { return nil }
        state = .headers
        contentLength = 0
        chunked = false
        let s = bytes.startIndex
        guard bytes.count > 5, bytes[s] == 76, bytes[s + 1] == 73, bytes[s + 2] == 83, bytes[s + 3] == 84, bytes[s + 4] == 32,
              let uriEnd = bytes[(s + 5)...].firstIndex(of: UInt8(ascii: " ")) else {
            return nil
        }
        let uri = bytes[(s + 5)..<uriEnd]
        var out = Array("GET ".utf8)
        out.append(contentsOf: uri)
        out.append(contentsOf: (uri.contains(UInt8(ascii: "?")) ? "&list=true" : "?list=true").utf8)
        out.append(contentsOf: bytes[uriEnd...])
        return out
    }

    static let contentLengthName = Array("content-length:".utf8)
    static let transferEncodingName = Array("transfer-encoding:".utf8)

    static func hasPrefixIgnoringCase<C: Collection>(_ line: C, _ prefix: [UInt8]) -> Bool where C.Element == UInt8 {
        guard line.count >= prefix.count else { return false }
        for (a, b) in zip(line, prefix) where (a | 0x20) != b && a != b { return false }
        return true
    }

    func headerDone<C: Collection>(_ raw: C) where C.Element == UInt8 {
        // Only the blank line and the two framing headers matter: the rest are not copied.
        guard let first = raw.first else { return endOfHeaders() }
        if first == 13 && raw.count == 1 { return endOfHeaders() }
        guard first | 0x20 == UInt8(ascii: "c") || first | 0x20 == UInt8(ascii: "t") else { return }
        if Self.hasPrefixIgnoringCase(raw, Self.contentLengthName) {
            let value = String(decoding: raw.dropFirst(Self.contentLengthName.count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            contentLength = Int(value) ?? 0
        } else if Self.hasPrefixIgnoringCase(raw, Self.transferEncodingName) {
            let value = String(decoding: raw.dropFirst(Self.transferEncodingName.count), as: UTF8.self).lowercased()
            if value.contains("chunked") { chunked = true }
        }
    }

    private func endOfHeaders() {
        if chunked {
            state = .passthrough
        } else if contentLength > 0 {
            state = .body(contentLength)
        } else {
            state = .requestLine
        }
    }
}

import Foundation
