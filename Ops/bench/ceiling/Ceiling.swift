// The "bare HTTP ceiling" for Ops/bench: the fastest a Hummingbird 2 JSON route can answer
// on this machine. It does no auth, no storage, no crypto and no JSON coding; it returns a
// fixed body with the size and shape of a Vault KV v2 read of the bench secret, so the
// Coffer/ceiling ratio measures what Coffer's full request path costs on top of HTTP.
//
// Usage: coffer-ceiling 127.0.0.1:PORT

// MemberImportVisibility is on: import every module whose members are used here
// (HTTPTypes: .contentType/.ok; HummingbirdCore: Response, collectBody; NIOCore: ByteBuffer).
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore

@main
struct Ceiling {
    /// The bench secret, identical to what `Ops/bench/run` writes to `secret/data/bench`.
    static let secretJSON = #"{"password":"correct-horse-battery-staple-0123456789","username":"bench-user"}"#

    /// A KV v2 read response as Vault/OpenBao/Coffer send it (same keys, same value sizes).
    static let readBody: String = [
        #"{"request_id":"5f0c6a3e-8d1b-4c2a-9e7f-2b3c4d5e6f70","lease_id":"","renewable":false,"#,
        #""lease_duration":0,"data":{"data":"#, secretJSON, ",",
        #""metadata":{"created_time":"2026-11-29T02:38:00.123456789Z","custom_metadata":null,"#,
        #""deletion_time":"","destroyed":false,"version":1}},"#,
        #""wrap_info":null,"warnings":null,"auth":null,"mount_type":"kv"}"#,
    ].joined()

    /// A KV v2 write response (version metadata), small.
    static let writeBody: String = [
        #"{"request_id":"5f0c6a3e-8d1b-4c2a-9e7f-2b3c4d5e6f71","lease_id":"","renewable":false,"#,
        #""lease_duration":0,"data":{"created_time":"2026-11-29T02:38:00.123456789Z","#,
        #""custom_metadata":null,"deletion_time":"","destroyed":false,"version":1},"#,
        #""wrap_info":null,"warnings":null,"auth":null,"mount_type":"kv"}"#,
    ].joined()

    static func main() async throws {
        let arguments = CommandLine.arguments
        let spec = arguments.count > 1 ? arguments[1] : "127.0.0.1:8300"
        guard let colon = spec.lastIndex(of: ":"), let port = Int(spec[spec.index(after: colon)...]) else {
            FileHandle.standardError.write(Data("usage: coffer-ceiling HOST:PORT (got \(spec))\n".utf8))
            exit(2)
        }
        let host = String(spec[..<colon])

        let readBuffer = ByteBuffer(string: readBody)
        let writeBuffer = ByteBuffer(string: writeBody)
        let jsonHeaders: HTTPFields = [.contentType: "application/json"]

        let router = Router()
        router.get("/v1/secret/data/bench") { _, _ in
            Response(status: .ok, headers: jsonHeaders, body: .init(byteBuffer: readBuffer))
        }
        // Writes: read the whole request body (as any real server must), answer a fixed body.
        let write: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
            var request = request
            _ = try await request.collectBody(upTo: 1 << 20)
            return Response(status: .ok, headers: jsonHeaders, body: .init(byteBuffer: writeBuffer))
        }
        router.put("/v1/secret/data/bench", use: write)
        router.post("/v1/secret/data/bench", use: write)

        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port))
        )
        try await app.runService()
    }
}
