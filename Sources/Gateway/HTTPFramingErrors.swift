import CofferSDK
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// The largest request body the HTTP channel lets through, by request target: snapshot
/// uploads (`sys/storage/snapshot`, `-force`) get `snapshot`, everything else `standard`.
///
/// The channel answers 413 as soon as a `Content-Length` over the limit arrives, and
/// stops a chunked body the moment it crosses it; the responder's own `collect(upTo:)`
/// applies the same numbers (``GatewayConfiguration``).
public struct RequestBodyLimits: Sendable, Equatable {
    public var standard: Int
    public var snapshot: Int

    public init(standard: Int, snapshot: Int) {
        self.standard = standard
        self.snapshot = snapshot
    }

    public init(_ configuration: GatewayConfiguration) {
        self.init(standard: configuration.maxRequestSize, snapshot: configuration.maxSnapshotSize)
    }

    /// The limits of a default ``GatewayConfiguration``.
    public static let defaults = RequestBodyLimits(GatewayConfiguration())

    /// The limit for a request target (`/v1/...?query`). Generous on purpose: an odd
    /// spelling of a snapshot path (`//`, `%2F`-free percent-encoding, a namespace prefix)
    /// still counts as one; the responder enforces its own limit after routing.
    func limit(forURI uri: String) -> Int {
        guard snapshot > standard else { return standard }
        let path = uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? Substring(uri)
        let segments = path.split(separator: "/").suffix(3).map { $0.removingPercentEncoding ?? String($0) }
        guard segments.count == 3, segments[0] == "sys", segments[1] == "storage",
            segments[2] == "snapshot" || segments[2] == "snapshot-force"
        else { return standard }
        return snapshot
    }
}

/// What the client did wrong in the framing of a request: the status and the Vault-style
/// message it gets, and the error the responder sees when the fault is found mid-body.
struct HTTPFramingFault: Equatable {
    var status: HTTPResponseStatus
    var message: String

    init(status: HTTPResponseStatus, message: String) {
        self.status = status
        self.message = message
    }

    static let bodyTooLarge = HTTPFramingFault(status: .payloadTooLarge, message: "http: request body too large")
    static let unsupportedTransferCoding = HTTPFramingFault(status: .notImplemented, message: "unsupported transfer encoding")
    static let unsupportedExpectation = HTTPFramingFault(status: .expectationFailed, message: "unsupported expectation")

    static func malformed(_ detail: String?) -> HTTPFramingFault {
        HTTPFramingFault(status: .badRequest, message: detail.map { "malformed HTTP request: \($0)" } ?? "malformed HTTP request")
    }

    /// The fault for an error from NIO's HTTP decoder, nil for errors that are not about
    /// framing (I/O, TLS). `transferCodings` reads the coding a request declared, for the
    /// one parser error (`.unknown`) that an unknown transfer coding produces.
    init?(_ error: any Error, transferCodings: () -> [String]) {
        if error is ByteToMessageDecoderError.PayloadTooLargeError {
            self = .bodyTooLarge
            return
        }
        guard let error = error as? HTTPParserError else { return nil }
        switch error {
        case .headerOverflow: self = HTTPFramingFault(status: .requestHeaderFieldsTooLarge, message: "http: request header fields too large")
        case .invalidEOFState: self = .malformed("connection closed before the request was complete")
        case .invalidVersion: self = .malformed("unsupported HTTP version")
        case .invalidMethod: self = .malformed("invalid method")
        case .invalidURL: self = .malformed("invalid request target")
        case .invalidHeaderToken, .invalidCharactersUsed: self = .malformed("invalid header")
        case .invalidContentLength: self = .malformed("invalid Content-Length")
        case .unexpectedContentLength: self = .malformed("conflicting Content-Length or Transfer-Encoding")
        case .invalidChunkSize: self = .malformed("invalid chunk size")
        case .lfExpected, .invalidConstant, .trailingGarbage: self = .malformed("invalid line ending or framing")
        case .unknown:
            let codings = transferCodings()
            self = codings.isEmpty || codings.allSatisfy({ $0 == "chunked" }) ? .malformed(nil) : .unsupportedTransferCoding
        default: self = .malformed(nil)
        }
    }

    /// What the responder's `request.body.collect` throws when the body breaks mid-way.
    func cofferError(cause: any Error) -> CofferError {
        CofferError(status == .payloadTooLarge ? .payloadTooLarge : .invalidRequest, message, cause: cause)
    }

    /// The transfer codings in a `Transfer-Encoding` value list, lowercased.
    static func codings<S: Sequence<String>>(_ values: S) -> [String] {
        values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }.filter { !$0.isEmpty }
    }
}

/// Keeps the bytes of the read being decoded within reach of ``HTTPFramingGuard``, which
/// sits behind the decoder: NIO's parser rejects an unknown transfer coding with a bare
/// `.unknown`, and only the raw header says that it was one (501, not 400).
///
/// It holds a reference only while the read travels down the pipeline, so the decoder's
/// buffer stays uniquely owned between reads.
final class RequestBytesWitness: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private(set) var current: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        current = unwrapInboundIn(data)
        context.fireChannelRead(data)
        current = nil
    }

    /// The codings of every `Transfer-Encoding` header line in the current read.
    func transferCodings() -> [String] {
        guard let current else { return [] }
        return Self.transferCodings(in: current.readableBytesView)
    }

    static let transferEncodingName = Array("transfer-encoding:".utf8)

    static func transferCodings<C: Collection<UInt8>>(in bytes: C) -> [String] where C.Index == Int {
        var values: [String] = []
        var lineStart = bytes.startIndex
        while lineStart < bytes.endIndex {
            let lineEnd = bytes[lineStart...].firstIndex(of: 10) ?? bytes.endIndex
            let line = bytes[lineStart..<lineEnd]
            if line.count > transferEncodingName.count, zip(line, transferEncodingName).allSatisfy({ $0 | 0x20 == $1 || $0 == $1 }) {
                values.append(String(decoding: line.dropFirst(transferEncodingName.count), as: UTF8.self))
            }
            lineStart = lineEnd + 1
        }
        return HTTPFramingFault.codings(values)
    }
}

/// Answers broken HTTP framing as the client's fault, never as a 500: sits between NIO's
/// HTTP/1.1 codec and Hummingbird's, and sees every decoded part and every response part.
///
/// - A fault before a request reaches the responder (a malformed head, an unknown
///   transfer coding, a `Content-Length` over the limit, an unknown `Expect`) gets an
///   answer of its own, `{"errors": [...]}` with `Connection: close`, once any response
///   still being written has ended.
/// - A fault inside a body the responder is reading (bad chunk, early EOF, a chunked body
///   over the limit) reaches it as a ``CofferError`` (400 or 413) from
///   `request.body.collect`; its response gets `Connection: close`.
/// - Either way nothing more is decoded, and the connection closes after the answer: the
///   output first, then, once the client has finished sending (or after a short linger),
///   all of it, so a client still uploading reads the answer instead of a reset.
///
/// `Expect: 100-continue` gets its `100 Continue` here, when a body is due and fits.
final class HTTPFramingGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let limits: RequestBodyLimits
    let witness: RequestBytesWitness?
    let logger: Logger
    /// How long a closing connection keeps reading (and dropping) what the client still sends.
    let linger: TimeAmount

    /// Requests passed up whose response has not ended.
    private var inFlight = 0
    /// The last request passed up is still receiving its body.
    private var readingBody = false
    private var bodyBytes = 0
    private var bodyLimit: Int?
    private var uri = ""
    /// A `100 Continue` to send once the response in flight before its request has ended.
    private var continuePending: HTTPVersion?
    /// After a fault: nothing more goes up, and the connection closes after the answer.
    private var failed = false
    /// The answer of our own still to write (it waits for the responses in flight).
    private var answer: (fault: HTTPFramingFault, version: HTTPVersion)?
    private var inputClosed = false
    private var state = Closing.open
    private var lingerTimer: Scheduled<Void>?
    /// A full close asked for while the connection lingers, completed when it closes.
    private var heldClose: EventLoopPromise<Void>?

    enum Closing { case open, lingering, closed }

    init(limits: RequestBodyLimits, witness: RequestBytesWitness?, logger: Logger, linger: TimeAmount = .milliseconds(500)) {
        self.limits = limits
        self.witness = witness
        self.logger = logger
        self.linger = linger
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            let framing = HeadFraming(head)
            if let fault = check(framing, head) {
                reject(fault, version: head.version, context: context)
                return
            }
            inFlight += 1
            readingBody = true
            bodyBytes = 0
            bodyLimit = nil
            uri = head.uri
            if framing.expectation == .continue, framing.bodyIsDue {
                if inFlight == 1 { writeContinue(head.version, context: context) } else { continuePending = head.version }
            }
            context.fireChannelRead(data)
        case .body(let part):
            bodyBytes += part.readableBytes
            if bodyBytes > limits.standard {
                let limit = bodyLimit ?? limits.limit(forURI: uri)
                bodyLimit = limit
                if bodyBytes > limit {
                    failBody(.bodyTooLarge, cause: NIOTooManyBytesError(maxBytes: limit), context: context)
                    return
                }
            }
            context.fireChannelRead(data)
        case .end:
            readingBody = false
            context.fireChannelRead(data)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let e = error as? ByteToMessageDecoderError, case .dataReceivedInErrorState = e { return }  // bytes after a fault
        guard let fault = HTTPFramingFault(error, transferCodings: { witness?.transferCodings() ?? [] }) else {
            context.fireErrorCaught(error)
            return
        }
        guard !failed else { return }
        logger.debug("malformed HTTP request", metadata: ["error": "\(error)", "status": "\(fault.status.code)"])
        if readingBody {
            failBody(fault, cause: error, context: context)
        } else {
            reject(fault, version: .http1_1, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            inputClosed = true
            if state == .lingering { closeNow(context: context) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        lingerTimer?.cancel()
        lingerTimer = nil
        heldClose?.succeed(())
        heldClose = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
        lingerTimer = nil
    }

    /// A fault in a head that passed the parser: a body over the limit, an unknown
    /// transfer coding, an expectation we cannot meet.
    private func check(_ framing: HeadFraming, _ head: HTTPRequestHead) -> HTTPFramingFault? {
        if framing.unknownCoding { return .unsupportedTransferCoding }
        if let length = framing.contentLength, length > limits.standard, length > limits.limit(forURI: head.uri) { return .bodyTooLarge }
        if framing.expectation == .unsupported { return .unsupportedExpectation }
        return nil
    }

    /// The framing headers of a request head, read in one pass over its fields.
    struct HeadFraming {
        enum Expectation { case none, `continue`, unsupported }

        var contentLength: Int?
        var transferEncoding = false
        var unknownCoding = false
        /// HTTP/1.0 knows no `Expect`: ignored there (RFC 9110 §10.1.1).
        var expectation = Expectation.none

        var bodyIsDue: Bool { transferEncoding || (contentLength ?? 0) > 0 }

        init(_ head: HTTPRequestHead) {
            let http11 = head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1)
            for (name, value) in head.headers {
                switch name.utf8.count {
                case 14 where Self.equalsLowercase(name, "content-length"):
                    contentLength = Int(value)
                case 17 where Self.equalsLowercase(name, "transfer-encoding"):
                    transferEncoding = true
                    if !Self.equalsLowercase(value, "chunked"), HTTPFramingFault.codings(CollectionOfOne(value)).contains(where: { $0 != "chunked" }) {
                        unknownCoding = true
                    }
                case 6 where http11 && Self.equalsLowercase(name, "expect"):
                    let isContinue = Self.equalsLowercase(value, "100-continue")
                        || HTTPFramingFault.codings(CollectionOfOne(value)).allSatisfy { $0 == "100-continue" }
                    if !isContinue { expectation = .unsupported } else if expectation == .none { expectation = .continue }
                default:
                    continue
                }
            }
        }

        /// ASCII case-insensitive equality with a lowercase literal.
        static func equalsLowercase(_ s: String, _ lowercase: StaticString) -> Bool {
            let target = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
            guard s.utf8.count == target.count else { return false }
            return s.utf8.elementsEqual(target) { ($0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0) == $1 }
        }
    }

    /// A fault before the request reached the responder: our own answer, then close.
    private func reject(_ fault: HTTPFramingFault, version: HTTPVersion, context: ChannelHandlerContext) {
        failed = true
        readingBody = false
        answer = (fault, version.major == 1 && version.minor == 0 ? .http1_0 : .http1_1)
        if inFlight == 0 { writeAnswer(context: context) }
    }

    /// A fault inside the body the responder is reading: it learns from `collect`.
    private func failBody(_ fault: HTTPFramingFault, cause: any Error, context: ChannelHandlerContext) {
        failed = true
        readingBody = false
        context.fireErrorCaught(fault.cofferError(cause: cause))
        if inFlight == 0 { finish(context: context) }  // its response was already written
    }

    // MARK: outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            guard failed, inFlight == 1, answer == nil, head.status.code >= 200 else {
                context.write(data, promise: promise)
                return
            }
            var closing = head
            closing.headers.replaceOrAdd(name: "connection", value: "close")
            context.write(wrapOutboundOut(.head(closing)), promise: promise)
        case .end:
            inFlight = max(0, inFlight - 1)
            if inFlight == 1, let version = continuePending, !failed {
                // The response before a pipelined `Expect: 100-continue` request is done.
                continuePending = nil
                context.write(data, promise: promise)
                writeContinue(version, context: context)
            } else if inFlight == 0, failed, answer != nil {
                context.write(data, promise: promise)
                writeAnswer(context: context)
            } else if inFlight == 0, failed {
                let written = promise ?? context.eventLoop.makePromise()
                context.writeAndFlush(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { _ in self.finish(context: context) }
            } else {
                context.write(data, promise: promise)
            }
        case .body:
            context.write(data, promise: promise)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard state == .lingering else {
            context.close(mode: mode, promise: promise)
            return
        }
        switch mode {
        case .input:
            context.close(mode: .input, promise: promise)
        case .output:
            promise?.succeed(())  // already closed
        case .all:
            // Hummingbird closes as soon as it is done; the client may still be sending.
            if let promise {
                if let held = heldClose { held.futureResult.cascade(to: promise) } else { heldClose = promise }
            }
        }
    }

    private func writeContinue(_ version: HTTPVersion, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .continue))), promise: nil)
    }

    private func writeAnswer(context: ChannelHandlerContext) {
        guard let (fault, version) = answer else { return }
        answer = nil
        guard context.channel.isActive else {
            context.close(promise: nil)
            return
        }
        let body = JSONValue.object(["errors": .array([.string(fault.message)])]).serialized()
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "content-length", value: String(body.count))
        headers.add(name: "connection", value: "close")
        headers.add(name: "date", value: Self.httpDate(Date()))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: fault.status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in self.finish(context: context) }
    }

    /// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for the `Date` header.
    static func httpDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: date)
    }

    /// After the answer: close the output, drop what still arrives, close fully on the
    /// client's EOF or after `linger`.
    private func finish(context: ChannelHandlerContext) {
        guard state == .open else { return }
        if inputClosed || !context.channel.isActive {
            closeNow(context: context)
            return
        }
        state = .lingering
        let closed = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: closed)
        closed.futureResult.assumeIsolated().whenFailure { _ in self.closeNow(context: context) }  // no half-closure here
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: linger) { self.closeNow(context: context) }
    }

    private func closeNow(context: ChannelHandlerContext) {
        guard state != .closed else { return }
        state = .closed
        lingerTimer?.cancel()
        lingerTimer = nil
        let held = heldClose
        heldClose = nil
        context.close(mode: .all, promise: held)
    }
}
