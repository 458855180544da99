import CofferSDK
import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing

@testable import Gateway

/// Broken HTTP framing is the client's fault: 400/413/417/431/501 with `{"errors": [...]}`,
/// or a `CofferError` the responder turns into one; never a 500. The real child pipeline
/// (`CofferHTTPChannel.configureHTTP1`) on an `EmbeddedChannel`, fed raw bytes.
@Suite struct HTTPFramingTests {
    /// Stands in for a socket that can close its output alone (EmbeddedChannel closes
    /// everything on any close), so the lingering close can be watched.
    final class HalfClosableTransport: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var outputClosed = false

        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            if mode == .output {
                outputClosed = true
                promise?.succeed(())
            } else {
                context.close(mode: mode, promise: promise)
            }
        }
    }

    /// The pipeline behind a connected EmbeddedChannel. `standard`/`snapshot` are the body limits.
    struct Connection {
        let channel = EmbeddedChannel()
        let transport = HalfClosableTransport()

        init(standard: Int = 1024, snapshot: Int = 4096, halfClose: Bool = false) throws {
            if halfClose { try channel.pipeline.syncOperations.addHandler(transport) }
            try CofferHTTPChannel.configureHTTP1(
                channel.pipeline.syncOperations, bodyLimits: RequestBodyLimits(standard: standard, snapshot: snapshot),
                logger: Logger(label: "HTTPFramingTests"))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8200)).wait()
        }

        /// Raw bytes from the client; the error the pipeline's tail caught, if any.
        @discardableResult
        func send(_ text: String) -> (any Error)? {
            do {
                try channel.writeInbound(ByteBuffer(string: text))
                return nil
            } catch {
                return error
            }
        }

        /// The client half-closes (EOF after what was sent).
        func sendEOF() -> (any Error)? {
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            do {
                try channel.throwIfErrorCaught()
                return nil
            } catch {
                return error
            }
        }

        /// What reached the responder (Hummingbird's request parts).
        func received() throws -> [HTTPRequestPart] {
            var parts: [HTTPRequestPart] = []
            while let part = try channel.readInbound(as: HTTPRequestPart.self) { parts.append(part) }
            return parts
        }

        /// Everything written to the client so far.
        func output() throws -> String {
            var text = ""
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case .byteBuffer(var buffer) = data else { continue }
                text += buffer.readString(length: buffer.readableBytes) ?? ""
            }
            return text
        }

        /// The responder answers (as Hummingbird writes a response).
        func respond(_ status: HTTPResponse.Status = .noContent) throws {
            try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: status)))
            try channel.writeOutbound(HTTPResponsePart.end(nil))
        }

        var isOpen: Bool { channel.isActive }
    }

    static let post = "POST /v1/secret/data/x HTTP/1.1\r\nHost: coffer\r\n"

    /// The status line and the `errors` of a complete answer of our own.
    static func answer(_ text: String) -> (status: Int, errors: [String], headers: String)? {
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let head = String(text[..<split.lowerBound])
        let statusLine = head.prefix(while: { $0 != "\r" }).split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]),
            let json = try? JSONSerialization.jsonObject(with: Data(text[split.upperBound...].utf8)) as? [String: Any],
            let errors = json["errors"] as? [String]
        else { return nil }
        return (status, errors, head.lowercased())
    }

    /// The error a body fault hands the responder through `request.body.collect`.
    static func bodyFault(_ error: (any Error)?) -> CofferError? { error as? CofferError }

    // MARK: faults inside a body the responder reads: a CofferError, then Connection: close

    @Test func expectContinueWithoutBodyThenEOFIsA400ForTheResponder() throws {
        let c = try Connection()
        #expect(c.send(Self.post + "Content-Length: 20\r\nExpect: 100-continue\r\n\r\n") == nil)
        #expect(try c.output() == "HTTP/1.1 100 Continue\r\n\r\n")
        let error = Self.bodyFault(c.sendEOF())
        #expect(error?.code == .invalidRequest)
        #expect(error?.message == "malformed HTTP request: connection closed before the request was complete")
        try c.respond(.badRequest)
        #expect(try c.output().lowercased().contains("connection: close"))
        #expect(!c.isOpen)
    }

    @Test func contentLengthLongerThanBodyThenEOF() throws {
        let c = try Connection()
        #expect(c.send(Self.post + "Content-Length: 100\r\n\r\n{\"data\":{}") == nil)
        #expect(Self.bodyFault(c.sendEOF())?.code == .invalidRequest)
        let parts = try c.received()
        #expect(parts.count == 2)  // the head and the 10 bytes; never an `.end`
        if case .end = parts.last { Issue.record("a truncated body must not end normally") }
    }

    @Test(arguments: ["zz", "fffffffffffffffffffff", "-1", "5 5"])
    func badChunkSize(size: String) throws {
        let c = try Connection()
        let error = Self.bodyFault(c.send(Self.post + "Transfer-Encoding: chunked\r\n\r\n\(size)\r\nhello\r\n0\r\n\r\n"))
        #expect(error?.code == .invalidRequest)
        #expect(error?.message.hasPrefix("malformed HTTP request") == true)
        try c.respond(.badRequest)
        #expect(try c.output().lowercased().contains("connection: close"))
        #expect(!c.isOpen)
    }

    @Test func chunkedBodyWithoutTerminatorThenEOF() throws {
        let c = try Connection()
        #expect(c.send(Self.post + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n") == nil)
        #expect(Self.bodyFault(c.sendEOF())?.code == .invalidRequest)
    }

    @Test func chunkedBodyOverTheLimitIs413() throws {
        let c = try Connection(standard: 1024)
        #expect(c.send(Self.post + "Transfer-Encoding: chunked\r\n\r\n") == nil)
        #expect(c.send("200\r\n" + String(repeating: "a", count: 512) + "\r\n") == nil)
        let error = Self.bodyFault(c.send("201\r\n" + String(repeating: "a", count: 513) + "\r\n"))
        #expect(error?.code == .payloadTooLarge)
        #expect(error?.message == "http: request body too large")
        // What follows is dropped, not decoded.
        #expect(c.send("10\r\n" + String(repeating: "a", count: 16) + "\r\n0\r\n\r\n") == nil)
        var bodyBytes = 0
        for case .body(let b) in try c.received() { bodyBytes += b.readableBytes }
        #expect(bodyBytes == 512)
    }

    @Test func responseAlreadyWrittenBeforeABodyFaultStillCloses() throws {
        // A GET the responder answers without reading its (broken) body: one response, then close.
        let c = try Connection()
        #expect(c.send("GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n") == nil)
        try c.respond(.ok)
        #expect(Self.bodyFault(c.send("zz\r\n")) != nil)
        let out = try c.output()
        #expect(out.components(separatedBy: "HTTP/1.1 ").count == 2)  // exactly one status line
        #expect(!c.isOpen)
    }

    // MARK: faults before the responder: an answer of our own

    @Test(arguments: ["gzip", "gzip, chunked", "identity", "x-custom, chunked"])
    func unknownTransferCodingIs501(coding: String) throws {
        let c = try Connection()
        let error = c.send(Self.post + "Transfer-Encoding: \(coding)\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        #expect(error == nil)
        #expect(try c.received().isEmpty)
        let answer = try #require(Self.answer(try c.output()))
        #expect(answer.status == 501)
        #expect(answer.errors == ["unsupported transfer encoding"])
        #expect(answer.headers.contains("connection: close"))
        #expect(answer.headers.contains("content-type: application/json"))
        #expect(!c.isOpen)
    }

    @Test(arguments: ["1099511627776", "1025"])
    func contentLengthOverTheLimitIs413AtOnce(length: String) throws {
        let c = try Connection(standard: 1024)
        #expect(c.send(Self.post + "Content-Length: \(length)\r\n\r\n{}") == nil)  // the body never comes
        #expect(try c.received().isEmpty)
        let answer = try #require(Self.answer(try c.output()))
        #expect(answer.status == 413)
        #expect(answer.errors == ["http: request body too large"])
        #expect(!c.isOpen)
    }

    @Test func contentLengthOverTheLimitWithExpectGets413NotContinue() throws {
        let c = try Connection(standard: 1024)
        #expect(c.send(Self.post + "Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n") == nil)
        let out = try c.output()
        #expect(!out.contains("100 Continue"))
        #expect(Self.answer(out)?.status == 413)
    }

    @Test func snapshotUploadsGetTheirOwnLimit() throws {
        for uri in ["/v1/sys/storage/snapshot", "/v1/sys/storage/snapshot-force?x=1", "/v1//sys/storage/snapshot", "/v1/ns1/sys/storage/snapshot"] {
            let c = try Connection(standard: 1024, snapshot: 4096)
            #expect(c.send("POST \(uri) HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n") == nil)
            #expect(try c.received().count == 1, "\(uri)")
            #expect(try c.output().isEmpty)
        }
        let c = try Connection(standard: 1024, snapshot: 4096)
        #expect(c.send("POST /v1/sys/storage/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n") == nil)
        #expect(Self.answer(try c.output())?.status == 413)
    }

    @Test func unknownExpectationIs417() throws {
        let c = try Connection()
        #expect(c.send(Self.post + "Content-Length: 2\r\nExpect: bogus\r\n\r\n{}") == nil)
        #expect(try c.received().isEmpty)
        #expect(Self.answer(try c.output())?.status == 417)
    }

    /// A malformed head and the status it gets (shown by name in the test log).
    struct MalformedHead: Sendable, CustomTestStringConvertible {
        let name: String
        let request: String
        let status: Int
        var testDescription: String { name }
    }

    static let malformedHeads: [MalformedHead] = [
        .init(name: "bad HTTP version", request: "GET /v1/sys/health HTTP/9.9\r\nHost: x\r\n\r\n", status: 400),
        .init(name: "HTTP/2.0 request line", request: "GET /v1/sys/health HTTP/2.0\r\nHost: x\r\n\r\n", status: 400),
        .init(name: "garbage protocol", request: "GET /v1/sys/health HTXP/1.1\r\nHost: x\r\n\r\n", status: 400),
        .init(name: "header without colon", request: "GET /v1/sys/health HTTP/1.1\r\nHost x\r\n\r\n", status: 400),
        .init(name: "oversized header", request: "GET /v1/sys/health HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 90_000))\r\n\r\n", status: 431),
        .init(name: "bare LF", request: "GET /v1/sys/health HTTP/1.1\nHost: x\n\n", status: 400),
        .init(name: "NUL in header", request: "GET /v1/sys/health HTTP/1.1\r\nX-A: a\u{0}b\r\n\r\n", status: 400),
        .init(name: "two Content-Lengths that differ", request: "POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", status: 400),
        .init(
            name: "Content-Length and Transfer-Encoding",
            request: "POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", status: 400),
        .init(name: "Content-Length not a number", request: "POST /v1/x HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", status: 400),
        .init(name: "Content-Length overflows", request: "POST /v1/x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", status: 400),
        .init(name: "invalid method", request: "G@T /v1/sys/health HTTP/1.1\r\n\r\n", status: 400),
        .init(name: "space in target", request: "GET /v1/sys/ health HTTP/1.1\r\n\r\n", status: 400),
    ]

    @Test(arguments: malformedHeads)
    func malformedHead(_ head: MalformedHead) throws {
        let c = try Connection()
        #expect(c.send(head.request) == nil)
        #expect(try c.received().isEmpty)
        let answer = try #require(Self.answer(try c.output()))
        #expect(answer.status == head.status)
        #expect(answer.errors.count == 1 && !answer.errors[0].isEmpty)
        #expect(answer.headers.contains("connection: close"))
        #expect(!c.isOpen)
    }

    @Test func incompleteHeadThenEOFIs400() throws {
        let c = try Connection()
        #expect(c.send("GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n") == nil)
        #expect(c.sendEOF() == nil)
        #expect(Self.answer(try c.output())?.status == 400)
        #expect(!c.isOpen)
    }

    @Test func faultAfterAPipelinedRequestWaitsForItsResponse() throws {
        let c = try Connection()
        #expect(c.send("GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/sys/health HTTP/9.9\r\n\r\n") == nil)
        #expect(try c.received().count == 2)  // head and end of the first request only
        #expect(try c.output().isEmpty)
        try c.respond(.ok)
        let out = try c.output()
        #expect(out.hasPrefix("HTTP/1.1 200 OK\r\n"))
        let second = try #require(out.range(of: "HTTP/1.1 400"))
        #expect(!out[..<second.lowerBound].lowercased().contains("connection: close"))  // the 200 stays a normal response
        #expect(Self.answer(String(out[second.lowerBound...]))?.status == 400)
        #expect(!c.isOpen)
    }

    // MARK: what must not change

    @Test func wellFramedRequestsPassUntouched() throws {
        let c = try Connection()
        #expect(c.send(Self.post + "Content-Length: 2\r\n\r\n{}" + Self.post + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n") == nil)
        #expect(try c.received().count == 6)
        try c.respond()
        try c.respond()
        let out = try c.output()
        #expect(out.components(separatedBy: "HTTP/1.1 204").count == 3)
        #expect(!out.lowercased().contains("connection: close"))
        #expect(c.isOpen)
    }

    @Test func expectContinueIsAnsweredOnceABodyIsDue() throws {
        let c = try Connection()
        #expect(c.send(Self.post + "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n") == nil)
        #expect(try c.output() == "HTTP/1.1 100 Continue\r\n\r\n")
        #expect(c.send("{}") == nil)
        #expect(try c.received().count == 3)
        // No body due, or HTTP/1.0 (which knows no Expect): no 100.
        #expect(c.send(Self.post + "Content-Length: 0\r\nExpect: 100-continue\r\n\r\n") == nil)
        #expect(c.send("POST /v1/x HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}") == nil)
        #expect(try c.output().isEmpty)
        #expect(try c.received().count == 5)
    }

    @Test func continueForAPipelinedRequestWaitsForTheResponseBeforeIt() throws {
        let c = try Connection()
        #expect(c.send("GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n" + Self.post + "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n") == nil)
        #expect(try c.output().isEmpty)  // no 100 in the middle of the first response
        try c.respond(.ok)
        let out = try c.output()
        #expect(out.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(out.hasSuffix("HTTP/1.1 100 Continue\r\n\r\n"))
        #expect(c.send("{}") == nil)
        #expect(try c.received().count == 5)
    }

    @Test func lingersAfterTheAnswerUntilTheClientsEOF() throws {
        let c = try Connection(halfClose: true)
        #expect(c.send(Self.post + "Content-Length: 1099511627776\r\n\r\n") == nil)
        #expect(Self.answer(try c.output())?.status == 413)
        #expect(c.transport.outputClosed)
        #expect(c.isOpen)
        // Hummingbird's close waits; what the client still sends is dropped.
        let closed = c.channel.close()
        #expect(c.send(String(repeating: "a", count: 4096)) == nil)
        #expect(c.isOpen)
        #expect(c.sendEOF() == nil)
        #expect(!c.isOpen)
        c.channel.embeddedEventLoop.run()
        #expect(throws: Never.self) { try closed.wait() }
    }

    @Test func lingerEndsAfterItsTime() throws {
        let c = try Connection(halfClose: true)
        #expect(c.send("GET / HTTP/9.9\r\n\r\n") == nil)
        #expect(c.isOpen)
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(499))
        #expect(c.isOpen)
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!c.isOpen)
    }

    // MARK: pieces

    @Test func transferCodingsAreReadFromRawHeaders() {
        let raw = Array("POST / HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: gzip\r\ntransfer-encoding:  Chunked \r\n\r\n".utf8)
        #expect(RequestBytesWitness.transferCodings(in: raw) == ["gzip", "chunked"])
        #expect(RequestBytesWitness.transferCodings(in: Array("GET / HTTP/1.1\r\n\r\n".utf8)).isEmpty)
    }

    @Test func bodyLimitsByTarget() {
        let limits = RequestBodyLimits(standard: 10, snapshot: 20)
        #expect(limits.limit(forURI: "/v1/secret/data/x") == 10)
        #expect(limits.limit(forURI: "/v1/sys/storage/snapshot") == 20)
        #expect(limits.limit(forURI: "/v1/sys/storage/snapshot/") == 20)
        #expect(limits.limit(forURI: "/v1/sys/storage/snapsh%6Ft-force") == 20)
        #expect(limits.limit(forURI: "/v1/secret/data/x?path=/sys/storage/snapshot") == 10)
        #expect(limits.limit(forURI: "/v1/sys/storage/snapshots") == 10)
        #expect(RequestBodyLimits.defaults == RequestBodyLimits(GatewayConfiguration()))
    }
}

/// What the framing guard costs per request: the child pipeline with and without the
/// witness and the guard, a typical hvac request and response through an EmbeddedChannel.
/// Prints ns per request. Only with COFFER_BENCH=1.
@Suite struct HTTPFramingCostTests {
    static let request = ByteBuffer(
        string: "GET /v1/secret/data/app/config HTTP/1.1\r\nHost: 127.0.0.1:8200\r\nUser-Agent: python-requests/2.32.3\r\n"
            + "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nX-Vault-Token: hvs.0123456789abcdefghijklmn\r\n\r\n")

    func nanosecondsPerRequest(guarded: Bool, count: Int) throws -> Double {
        let channel = EmbeddedChannel()
        let pipeline = channel.pipeline.syncOperations
        if guarded {
            try CofferHTTPChannel.configureHTTP1(pipeline, bodyLimits: .defaults, logger: Logger(label: "bench"))
        } else {
            try pipeline.addHandler(ListVerbRewriter())
            try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8200)).wait()
        let body = ByteBuffer(string: #"{"data":{"data":{"k":"v"}}}"#)
        let response = HTTPResponse(status: .ok, headerFields: [.contentType: "application/json", .contentLength: "27"])
        let start = ContinuousClock.now
        for _ in 0..<count {
            try channel.writeInbound(Self.request)
            while try channel.readInbound(as: HTTPRequestPart.self) != nil {}
            try channel.writeOutbound(HTTPResponsePart.head(response))
            try channel.writeOutbound(HTTPResponsePart.body(body))
            try channel.writeOutbound(HTTPResponsePart.end(nil))
            while try channel.readOutbound(as: IOData.self) != nil {}
        }
        let elapsed = ContinuousClock.now - start
        _ = try channel.finish()
        return Double(elapsed.components.seconds) * 1e9 / Double(count) + Double(elapsed.components.attoseconds) / 1e9 / Double(count)
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["COFFER_BENCH"] == "1"))
    func guardCostPerRequest() throws {
        var plain: [Double] = [], guarded: [Double] = []
        for _ in 0..<5 {
            plain.append(try nanosecondsPerRequest(guarded: false, count: 50_000))
            guarded.append(try nanosecondsPerRequest(guarded: true, count: 50_000))
        }
        print("framing guard: plain \(plain.min()!) ns/request, guarded \(guarded.min()!) ns/request")
    }
}
