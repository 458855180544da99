import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Hummingbird's HTTP/1.1 child channel plus the `LIST` verb rewriter in front of the
/// decoder and the framing guard behind it (broken framing is the client's fault: 4xx or
/// 501, never 500; see ``HTTPFramingGuard``).
struct CofferHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let idleTimeout: TimeAmount?
    let bodyLimits: RequestBodyLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try Self.configureHTTP1(channel.pipeline.syncOperations, bodyLimits: bodyLimits, logger: logger)
            // Closes idle keep-alive connections on graceful shutdown (and after the idle timeout).
            try channel.pipeline.syncOperations.addHandler(
                HTTPConnectionStateHandler(idleTimeout: idleTimeout.map { .nanoseconds($0.nanoseconds) }, logger: logger))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    /// Bytes in, HTTPTypes request parts out: the `LIST` rewriter, NIO's HTTP/1.1 codec
    /// (its own error handling off: the guard answers), the framing guard, Hummingbird's codec.
    static func configureHTTP1(_ pipeline: ChannelPipeline.SynchronousOperations, bodyLimits: RequestBodyLimits, logger: Logger) throws {
        let witness = RequestBytesWitness()
        try pipeline.addHandler(ListVerbRewriter())
        try pipeline.addHandler(witness)
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: false,
            withErrorHandling: false,
            withOutboundHeaderValidation: false)
        try pipeline.addHandler(HTTPFramingGuard(limits: bodyLimits, witness: witness, logger: logger))
        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 that accepts Vault's `LIST` verb; request bodies over `bodyLimits` get 413
    /// before they are read.
    static func cofferHTTP1(idleTimeout: TimeAmount? = .seconds(300), bodyLimits: RequestBodyLimits = .defaults) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in CofferHTTPChannel(responder: responder, idleTimeout: idleTimeout, bodyLimits: bodyLimits) }
    }
}
