import CofferSDK
import Engines
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import TenantCore

@testable import Gateway

/// The Vault HTTP mapping, through the Gateway's responder without sockets
/// (`app.test(.router)`): the response envelope, `{"errors": [...]}` with Vault's statuses,
/// the LIST verb and `?list=true`, HEAD, namespaces by header and by path prefix.
@Suite struct VaultMappingTests {
    static let token: HTTPFields = [HTTPField.Name("X-Vault-Token")!: "root"]

    static func withGateway(_ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let logger = Logger(label: "gateway-test")
        let core = Core(
            physical: MemoryStorage(), storageType: "inmem", catalog: EngineCatalog(secrets: ["kv": KVEngine.factory]),
            configuration: CoreConfiguration(), logger: logger)
        _ = try await core.bootstrapDev(rootTokenID: "root")
        try await core.mountDefault(path: "secret/", type: "kv", options: ["version": "2"])
        let app = Application(responder: VaultPipeline(VaultGateway(core: core, logger: logger)), logger: logger)
        try await app.test(.router) { client in try await test(client) }
    }

    static func json(_ r: TestResponse) throws -> JSONValue { try JSONValue.parse(r.body.readableBytesView) }

    static func body(_ v: JSONValue) -> ByteBuffer { ByteBuffer(bytes: v.serialized()) }

    @Test func envelopeOfAWriteAndARead() async throws {
        try await Self.withGateway { client in
            try await client.execute(uri: "/v1/sys/mounts/kv", method: .post, headers: Self.token, body: Self.body(["type": "kv"])) { r async throws in
                #expect(r.status == .noContent)
            }
            try await client.execute(uri: "/v1/kv/app", method: .put, headers: Self.token, body: Self.body(["user": "a"])) { r async throws in
                #expect(r.status == .noContent)
            }
            try await client.execute(uri: "/v1/kv/app", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType] == "application/json")
                let j = try Self.json(r)
                #expect(j["data"]?["user"] == "a")
                #expect(j["request_id"]?.stringValue?.count == 36)
                for key in ["lease_id", "renewable", "lease_duration", "wrap_info", "warnings", "auth", "mount_type"] {
                    #expect(j[key] != nil, "envelope key \(key)")
                }
                #expect(j["mount_type"] == "kv")
            }
            // HEAD: the status and headers of a GET, no body.
            try await client.execute(uri: "/v1/kv/app", method: .head, headers: Self.token) { r async throws in
                #expect(r.status == .ok)
                #expect(r.body.readableBytes == 0)
            }
        }
    }

    @Test func errorsAreVaultShaped() async throws {
        try await Self.withGateway { client in
            // No such object: 404 with an empty error list.
            try await client.execute(uri: "/v1/secret/data/missing", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .notFound)
                #expect(try Self.json(r) == ["errors": []])
            }
            // No token: 403.
            try await client.execute(uri: "/v1/secret/data/x", method: .get) { r async throws in
                #expect(r.status == .forbidden)
                #expect(try Self.json(r)["errors"] == ["permission denied"])
            }
            // No route: 404 with a message.
            try await client.execute(uri: "/v1/nomount/x", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .notFound)
                #expect(try Self.json(r)["errors"]?.arrayValue?.first?.stringValue?.contains("no handler for route") == true)
            }
            // Malformed body: 400.
            try await client.execute(uri: "/v1/secret/data/x", method: .post, headers: Self.token, body: ByteBuffer(string: "{not json")) { r async throws in
                #expect(r.status == .badRequest)
                #expect(try Self.json(r)["errors"]?.arrayValue?.count == 1)
            }
            // An operation the route does not have: 405.
            try await client.execute(uri: "/v1/secret/config", method: .delete, headers: Self.token) { r async throws in
                #expect(r.status == .methodNotAllowed)
            }
            // A path outside /v1/: 404.
            try await client.execute(uri: "/v2/secret/data/x", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .notFound)
            }
            // Dot segments: refused before routing.
            try await client.execute(uri: "/v1/secret/data/../x", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .badRequest)
            }
        }
    }

    @Test func listVerbAndListQueryAreOneOperation() async throws {
        try await Self.withGateway { client in
            for key in ["a", "b/c"] {
                try await client.execute(uri: "/v1/secret/data/\(key)", method: .post, headers: Self.token, body: Self.body(["data": ["v": 1]])) { r async throws in
                    #expect(r.status == .ok)
                }
            }
            let expected: JSONValue = ["a", "b/"]
            try await client.execute(uri: "/v1/secret/metadata", method: HTTPRequest.Method("LIST")!, headers: Self.token) { r async throws in
                #expect(r.status == .ok)
                #expect(try Self.json(r)["data"]?["keys"] == expected)
            }
            try await client.execute(uri: "/v1/secret/metadata/?list=true", method: .get, headers: Self.token) { r async throws in
                #expect(try Self.json(r)["data"]?["keys"] == expected)
            }
            try await client.execute(uri: "/v1/secret/metadata?list=maybe", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .badRequest)
            }
            // An empty folder: 404, as in Vault.
            try await client.execute(uri: "/v1/secret/metadata/none/?list=true", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .notFound)
            }
        }
    }

    @Test func namespacesByHeaderAndByPathPrefixAreTheSame() async throws {
        try await Self.withGateway { client in
            try await client.execute(uri: "/v1/sys/namespaces/team", method: .post, headers: Self.token) { r async throws in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/v1/team/sys/mounts/kv", method: .post, headers: Self.token, body: Self.body(["type": "kv"])) { r async throws in
                #expect(r.status == .noContent)
            }
            var inTeam = Self.token
            inTeam[HTTPField.Name("X-Vault-Namespace")!] = "team"
            try await client.execute(uri: "/v1/kv/x", method: .put, headers: inTeam, body: Self.body(["n": 1])) { r async throws in
                #expect(r.status == .noContent)
            }
            try await client.execute(uri: "/v1/team/kv/x", method: .get, headers: Self.token) { r async throws in
                #expect(try Self.json(r)["data"]?["n"] == 1)
            }
            // The root namespace has no kv/ mount.
            try await client.execute(uri: "/v1/kv/x", method: .get, headers: Self.token) { r async throws in
                #expect(r.status == .notFound)
            }
        }
    }
}
