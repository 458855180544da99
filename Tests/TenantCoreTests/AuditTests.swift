#if canImport(Glibc)
import Glibc
#endif
import CofferSDK
import Foundation
import Logging
import Synchronization
@testable import TenantCore
import Testing
@testable import Audit

// MARK: helpers

private let quiet = Logger(label: "audit-test", factory: { _ in SwiftLogNoOpLogHandler() })

private func openBarrier() -> Barrier {
    let b = Barrier(physical: MemoryStorage())
    b.install(Keyring.generate())
    return b
}

private func makeBroker(_ storage: any LogicalStorage, retry: Duration = .zero, syslog: String = "/dev/log") -> AuditBroker {
    AuditBroker(storage: storage, configuration: AuditConfiguration(retryInterval: retry, syslogSocketPath: syslog), logger: quiet)
}

private final class TempDir {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "coffer-audit-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

private func lines(_ path: String) throws -> [String] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
}

private func json(_ line: String) throws -> JSONValue {
    let start = try #require(line.firstIndex(of: "{"))
    return try JSONValue.parse(String(line[start...]))
}

private func write(_ lines: [String], to path: String) throws {
    try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
}

private func sampleRequest(
    _ op: LogicalOperation = .update, path: String = "secret/data/app", namespace: AuditNamespace = AuditNamespace(),
    mountType: String = "kv", mountPoint: String = "secret/", data: [String: JSONValue]? = ["data": ["password": "s3cr3t-value"]]
) -> AuditRequestInfo {
    AuditRequestInfo(
        id: "req-1", operation: op, path: path, namespace: namespace, mountType: mountType, mountPoint: mountPoint,
        mountAccessor: "kv_1234", clientToken: "hvs.SECRET-TOKEN", clientTokenAccessor: "accessor-xyz", data: data,
        remoteAddress: "127.0.0.1", remotePort: 5555,
        auth: AuditAuth(
            clientToken: "hvs.SECRET-TOKEN", accessor: "accessor-xyz", displayName: "token", policies: ["default", "dev"],
            tokenPolicies: ["default", "dev"], metadata: ["team": "payments"], tokenType: "service", tokenTTL: 3600))
}

/// Runs `body`, which must throw a `CofferError` with `code` (and `text` in its message).
private func expectError(
    _ code: CofferError.Code, containing text: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async {
    do {
        try await body()
        Issue.record("expected a \(code) error", sourceLocation: sourceLocation)
    } catch let error as CofferError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        if let text { #expect(error.message.contains(text), "\(error)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

private func eventually(_ timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

private func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let len = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + 1)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, len) } }
}

/// A TCP (or unix stream) server that collects newline-terminated lines, on plain threads.
private final class LineServer: @unchecked Sendable {
    let port: UInt16
    let unixPath: String?
    private let readData: Bool
    private let listenFD: Int32
    private let state = Mutex<(lines: [String], clients: [Int32], running: Bool)>(([], [], true))
    private let acceptDone = DispatchSemaphore(value: 0)

    /// A TCP server on a port below Linux's ephemeral range (32768+), so no port another
    /// test gets from the kernel (bind to port 0) can be this one after it stops, and a
    /// reconnect to it can never be a TCP self-connection.
    convenience init() throws {
        var lastError: (any Error)?
        for _ in 0..<50 {
            do {
                try self.init(port: UInt16.random(in: 20_000..<32_000))
                return
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    init(port: UInt16, unixPath: String? = nil, readData: Bool = true, receiveBuffer: Int32? = nil) throws {
        self.unixPath = unixPath
        self.readData = readData
        // Close-on-exec: other suites fork (popen, Ops/etcd) while this runs, and a child
        // that inherits the listening socket keeps the port accepting after `stop()`, so a
        // "peer is down" test would see its reconnects succeed (the etcd suite's long-lived
        // etcd did exactly that).
        let fd = socket(unixPath == nil ? AF_INET : AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CofferError.internalError("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let rc: Int32
        if let unixPath {
            unlink(unixPath)
            rc = withUnixAddress(unixPath) { bind(fd, $0, $1) }
        } else {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard rc == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw CofferError.internalError("bind/listen: \(String(cString: strerror(errno)))")
        }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        self.port = unixPath == nil ? UInt16(bigEndian: bound.sin_port) : 0
        listenFD = fd
        Thread { [self] in acceptLoop() }.start()
    }

    var address: String { unixPath ?? "127.0.0.1:\(port)" }
    var lines: [String] { state.withLock { $0.lines } }

    private func acceptLoop() {
        while state.withLock({ $0.running }) {
            var p = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 20) > 0 else { continue }
            let client = accept(listenFD, nil, nil)
            guard client >= 0 else { continue }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            state.withLock { $0.clients.append(client) }
            if readData { Thread { [self] in readLoop(client) }.start() }
        }
        close(listenFD)
        acceptDone.signal()
    }

    private func readLoop(_ fd: Int32) {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            pending.append(contentsOf: buffer[0..<n])
            while let nl = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                state.withLock { $0.lines.append(line) }
            }
        }
    }

    /// Closes the listener and every connection (the peer sees EOF).
    func stop() {
        state.withLock { $0.running = false }
        acceptDone.wait()
        // Only now: the accept loop may have taken one more client while it wound down.
        let clients = state.withLock { $0.clients }
        for c in clients {
            shutdown(c, Int32(SHUT_RDWR))
            close(c)
        }
        if let unixPath { unlink(unixPath) }
    }
}

/// A bound unix datagram socket standing in for /dev/log.
private final class DatagramReceiver {
    let fd: Int32
    let path: String

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let rc = withUnixAddress(path) { bind(fd, $0, $1) }
        guard fd >= 0, rc == 0 else { throw CofferError.internalError("bind \(path)") }
    }

    func receive(timeoutMilliseconds: Int32 = 5000) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMilliseconds) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 1 << 18)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    deinit {
        close(fd)
        unlink(path)
    }
}

// MARK: tests

@Suite struct AuditTests {
    // MARK: entries

    @Test func requestAndResponseEntriesAreVaultShapedAndHMACed() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "file", type: "file", options: ["file_path": dir.file("audit.log")])
        let request = sampleRequest(
            namespace: AuditNamespace(id: "ns1", path: "acme/"),
            data: ["data": ["password": "s3cr3t-value", "nested": ["deep": ["x-deep-secret", 7, true, nil]]], "count": 3])
        try await broker.logRequest(request)
        try await broker.logResponse(AuditResponseInfo(
            request: request, data: ["token_value": "resp-secret", "keys": ["k1"]],
            auth: AuditAuth(AuthInfo(clientToken: "hvs.NEW-TOKEN", accessor: "new-accessor", policies: ["p"], tokenPolicies: ["p"], leaseDuration: 60)),
            leaseID: "database/creds/app/abc", wrapInfo: AuditWrapInfo(token: "hvs.WRAP-TOKEN", accessor: "wrap-accessor", ttl: 30),
            warnings: ["careful"]))

        let text = try String(contentsOfFile: dir.file("audit.log"), encoding: .utf8)
        for plaintext in ["hvs.SECRET-TOKEN", "accessor-xyz", "s3cr3t-value", "x-deep-secret", "resp-secret", "hvs.NEW-TOKEN", "new-accessor", "hvs.WRAP-TOKEN", "wrap-accessor", "\"k1\""] {
            #expect(!text.contains(plaintext), "\(plaintext) leaked into the audit log")
        }
        let all = try lines(dir.file("audit.log"))
        #expect(all.count == 3)
        let link = try json(all[0])
        #expect(link["type"] == "link")
        #expect(link["link"]?["reason"] == "enable")
        #expect(link["chain"]?["seq"] == 1)

        let h = { (s: String) in try broker.hash(path: "file/", input: s) }
        let req = try json(all[1])
        #expect(req["type"] == "request")
        let time = try #require(req["time"]?.stringValue)
        #expect(try Regex(#"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$"#).wholeMatch(in: time) != nil)
        #expect(req["auth"]?["client_token"] == .string(try h("hvs.SECRET-TOKEN")))
        #expect(req["auth"]?["accessor"] == .string(try h("accessor-xyz")))
        #expect(req["auth"]?["display_name"] == "token")
        #expect(req["auth"]?["policies"] == ["default", "dev"])
        #expect(req["auth"]?["token_policies"] == ["default", "dev"])
        #expect(req["auth"]?["metadata"] == ["team": "payments"])
        #expect(req["auth"]?["token_type"] == "service")
        #expect(req["auth"]?["token_ttl"] == 3600)
        let r = try #require(req["request"])
        #expect(r["id"] == "req-1")
        #expect(r["operation"] == "update")
        #expect(r["mount_type"] == "kv")
        #expect(r["mount_point"] == "secret/")
        #expect(r["mount_accessor"] == "kv_1234")
        #expect(r["client_token"] == .string(try h("hvs.SECRET-TOKEN")))
        #expect(r["client_token_accessor"] == .string(try h("accessor-xyz")))
        #expect(r["namespace"] == ["id": "ns1", "path": "acme/"])
        #expect(r["path"] == "secret/data/app")
        #expect(r["remote_address"] == "127.0.0.1")
        #expect(r["remote_port"] == 5555)
        // Keys stay, every string value is HMAC'd at any depth, other values stay.
        #expect(r["data"]?["data"]?["password"] == .string(try h("s3cr3t-value")))
        #expect(r["data"]?["data"]?["nested"]?["deep"] == [.string(try h("x-deep-secret")), 7, true, nil])
        #expect(r["data"]?["count"] == 3)
        #expect(req["chain"]?["seq"] == 2)
        #expect(req["error"] == nil)

        let resp = try json(all[2])
        #expect(resp["type"] == "response")
        #expect(resp["request"]?["id"] == "req-1")
        let body = try #require(resp["response"])
        #expect(body["mount_type"] == "kv")
        #expect(body["data"]?["token_value"] == .string(try h("resp-secret")))
        #expect(body["auth"]?["client_token"] == .string(try h("hvs.NEW-TOKEN")))
        #expect(body["auth"]?["accessor"] == .string(try h("new-accessor")))
        #expect(body["auth"]?["token_ttl"] == 60)
        #expect(body["secret"] == ["lease_id": "database/creds/app/abc"])
        #expect(body["wrap_info"]?["token"] == .string(try h("hvs.WRAP-TOKEN")))
        #expect(body["wrap_info"]?["accessor"] == .string(try h("wrap-accessor")))
        #expect(body["wrap_info"]?["ttl"] == 30)
        #expect(body["warnings"] == ["careful"])

        #expect(try AuditChainVerifier.verify(files: [dir.file("audit.log")]) == .ok(entries: 3, links: 1, head: broker.chainHead(path: "file")))
        await broker.close()
    }

    @Test func errorsAndUnauthenticatedRequests() async throws {
        let salt = AuditSalt(Array(repeating: 7, count: 32))
        var request = AuditRequestInfo(operation: .read, path: "sys/health")
        request.error = "permission denied"
        let entry = AuditEntry.request(request, time: "2026-01-01T00:00:00Z", format: AuditFormat(), salt: salt).json
        #expect(entry["auth"] == .object([:]))
        #expect(entry["error"] == "permission denied")
        #expect(entry["request"]?["namespace"] == ["id": "root"])
        #expect(entry["request"]?["client_token"] == nil)
        let response = AuditEntry.response(AuditResponseInfo(request: AuditRequestInfo(operation: .read, path: "x"), error: "boom"), time: "t", format: AuditFormat(), salt: salt).json
        #expect(response["error"] == "boom")
        #expect(response["response"] == .object([:]))
        #expect(AuditEntry.timestamp(seconds: 0, nanoseconds: 0) == "1970-01-01T00:00:00Z")
        #expect(AuditEntry.timestamp(seconds: 1_700_000_000, nanoseconds: 120_000_000) == "2023-11-14T22:13:20.12Z")
        #expect(AuditEntry.timestamp(seconds: 1_700_000_000, nanoseconds: 1) == "2023-11-14T22:13:20.000000001Z")
    }

    @Test func conveniencesMapTheCoreTypes() throws {
        let token = RequestToken(accessor: "acc-1", policies: ["root"], displayName: "root", entityID: "e-1")
        let caller = AuditAuth(token: token, clientToken: "hvs.raw", tokenTTL: 10)
        #expect(caller.clientToken == "hvs.raw" && caller.accessor == "acc-1" && caller.policies == ["root"] && caller.tokenType == "service")
        var logical = LogicalResponse.document(["sealed": false, "keys": ["k"]])
        logical.wrapInfo = ["token": "hvs.wrap", "accessor": "wa", "ttl": 60, "creation_path": "sys/wrapping/wrap"]
        logical.warnings = ["w"]
        let info = AuditResponseInfo(request: AuditRequestInfo(operation: .read, path: "sys/seal-status"), response: logical, leaseID: "l-1")
        #expect(info.data?["sealed"] == false)
        #expect(info.wrapInfo == AuditWrapInfo(token: "hvs.wrap", accessor: "wa", ttl: 60, creationPath: "sys/wrapping/wrap"))
        #expect(info.leaseID == "l-1" && info.warnings == ["w"])
        #expect(AuditWrapInfo(nil) == nil)
    }

    @Test func discardAndStdoutDestinations() async throws {
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "nowhere", type: "file", options: ["file_path": "discard"])
        try await broker.logRequest(sampleRequest())
        #expect(broker.chainHead(path: "nowhere")?.seq == 2)
        #expect(await broker.reopenAll().isEmpty)
        await broker.close()
        let config = FileAuditDeviceConfiguration(filePath: "stdout")
        #expect(config.destination == .stdout && config.mode == 0o600)
    }

    @Test func logRawAndHMACAccessorOptions() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "raw", type: "file", options: ["file_path": dir.file("raw.log"), "log_raw": "true"])
        try await broker.enable(path: "noacc", type: "file", options: ["file_path": dir.file("noacc.log"), "hmac_accessor": "false"])
        try await broker.logRequest(sampleRequest())
        await broker.close()

        let raw = try json(try lines(dir.file("raw.log"))[1])
        #expect(raw["request"]?["client_token"] == "hvs.SECRET-TOKEN")
        #expect(raw["request"]?["client_token_accessor"] == "accessor-xyz")
        #expect(raw["request"]?["data"]?["data"]?["password"] == "s3cr3t-value")
        #expect(raw["auth"]?["client_token"] == "hvs.SECRET-TOKEN")

        let noacc = try json(try lines(dir.file("noacc.log"))[1])
        #expect(noacc["request"]?["client_token_accessor"] == "accessor-xyz")
        #expect(noacc["auth"]?["accessor"] == "accessor-xyz")
        #expect(noacc["request"]?["client_token"]?.stringValue?.hasPrefix("hmac-sha256:") == true)
        #expect(noacc["request"]?["data"]?["data"]?["password"]?.stringValue?.hasPrefix("hmac-sha256:") == true)
    }

    @Test func elideListResponses() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "elide", type: "file", options: ["file_path": dir.file("e.log"), "elide_list_responses": "true"])
        try await broker.enable(path: "elide-raw", type: "file", options: ["file_path": dir.file("r.log"), "elide_list_responses": "1", "log_raw": "t"])
        try await broker.enable(path: "keep", type: "file", options: ["file_path": dir.file("k.log")])
        let list = sampleRequest(.list, path: "secret/metadata/", data: nil)
        try await broker.logResponse(AuditResponseInfo(request: list, response: .list(["a", "b", "c"])))
        let read = sampleRequest(.read, data: nil)
        try await broker.logResponse(AuditResponseInfo(request: read, data: ["keys": ["x", "y"]]))
        await broker.close()

        let elided = try lines(dir.file("e.log")).map(json)
        #expect(elided[1]["response"]?["data"]?["keys"] == 3)
        #expect(elided[2]["response"]?["data"]?["keys"]?.arrayValue?.count == 2, "only list operations are elided")
        #expect(try json(try lines(dir.file("r.log"))[1])["response"]?["data"]?["keys"] == 3)
        #expect(try json(try lines(dir.file("k.log"))[1])["response"]?["data"]?["keys"]?.arrayValue?.count == 3)
    }

    @Test func prefixIsPrependedAndVerified() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "p", type: "file", options: ["file_path": dir.file("p.log"), "prefix": "@cee: "])
        try await broker.logRequest(sampleRequest())
        await broker.close()
        let all = try lines(dir.file("p.log"))
        #expect(all.allSatisfy { $0.hasPrefix("@cee: {") })
        #expect(try AuditChainVerifier.verify(files: [dir.file("p.log")], prefix: "@cee: ").isOK)
        #expect(try AuditChainVerifier.verify(files: [dir.file("p.log")]).isOK)
        let wrong = try AuditChainVerifier.verify(files: [dir.file("p.log")], prefix: "other: ")
        guard case .failed(let problem) = wrong else { Issue.record("a wrong prefix must fail"); return }
        #expect(problem.kind == .garbage && problem.line == 1)
    }

    // MARK: chain

    /// Entries are written straight into canonical bytes; reading them back and serializing
    /// again (what `coffer audit verify` hashes) must give the same bytes, for every shape.
    @Test(arguments: [false, true]) func directlyWrittenEntriesAreCanonical(logRaw: Bool) throws {
        let salt = AuditSalt(Array(repeating: 3, count: 32))
        let format = AuditFormat(logRaw: logRaw, hmacAccessor: true, elideListResponses: false)
        var request = AuditRequestInfo(
            operation: .update, path: "secret/data/ü<x>", namespace: AuditNamespace(id: "Ab12", path: "acme/"),
            mountType: "kv", mountPoint: "secret/", mountAccessor: "kv_1", clientToken: "hvs.tok", clientTokenAccessor: "acc",
            data: ["z": "1", "a": ["nested": ["x", 2, true, .null], "\u{1}k": 1.5]], remoteAddress: "127.0.0.1", remotePort: 5050, wrapTTL: 30,
            auth: AuditAuth(clientToken: "hvs.tok", accessor: "acc", displayName: "d", policies: ["a", "b"], tokenPolicies: ["a"], metadata: ["m2": "v", "m1": "w"], entityID: "e", tokenType: "service", tokenTTL: 60, numUses: 2))
        let plain = AuditEntry.request(request, time: "t", format: format, salt: salt)
        #expect(try JSONValue.parse(plain.bytes).serialized() == plain.bytes)
        request.error = "denied"
        var response = AuditResponseInfo(
            request: request, data: ["keys": ["a", "b"], "n": 1], auth: AuditAuth(clientToken: "hvs.new", accessor: "na", policies: ["p"]),
            leaseID: "database/creds/r/1", wrapInfo: AuditWrapInfo(token: "w", accessor: "wa", ttl: 5, creationTime: "c", creationPath: "p", wrappedAccessor: "x"),
            warnings: ["w1"], redirect: "/r", error: "boom")
        for body in [AuditEntry.response(response, time: "t", format: format, salt: salt), AuditEntry.request(request, time: "t", format: format, salt: salt)] {
            #expect(try JSONValue.parse(body.bytes).serialized() == body.bytes)
            let (line, head) = AuditChain.render(body, after: .genesis, prefix: [])
            #expect(AuditChain.head(ofLine: line[...].dropLast()) == head)
            var parsed = try JSONValue.parse(line[...].dropLast()).objectValue ?? [:]
            parsed["chain"] = nil
            #expect(JSONValue.object(parsed).serialized() == body.bytes)
        }
        // The response entry reuses the request's rendered members through the memo.
        response.request.path = "changed"
        let memo = AuditRenderMemo()
        let first = AuditEntry.entry(request, error: nil, time: "t", type: "request", format: format, salt: salt, memo: memo, memoKey: "d", response: nil)
        let second = AuditEntry.entry(response.request, error: nil, time: "t", type: "response", format: format, salt: salt, memo: memo, memoKey: "d", response: response)
        #expect(first.json["request"] == second.json["request"])
        #expect(second.json["request"]?["path"] == "secret/data/ü<x>")
    }

    @Test func canonicalFormIsTheLineWithoutItsChain() throws {
        let entry: [String: JSONValue] = ["type": "request", "auth": ["b": 1, "a": "<&>"], "z": 1.5, "time": "t"]
        let (line, head) = AuditChain.render(entry, after: .genesis, prefix: [])
        let text = String(decoding: line, as: UTF8.self)
        #expect(text == #"{"auth":{"a":"\u003c\u0026\u003e","b":1},"chain":{"hash":"\#(head.hash)","prev":"\#(AuditChain.genesisHash)","seq":1},"time":"t","type":"request","z":1.5}"# + "\n")
        let canonical = Array(#"{"auth":{"a":"\u003c\u0026\u003e","b":1},"time":"t","type":"request","z":1.5}"#.utf8)
        #expect(AuditChain.canonical(entry) == canonical)
        #expect(head.hash == AuditChain.hash(canonical: canonical, prev: AuditChain.genesisHash))
        // A member sorting after "chain" only, and an empty entry.
        let late = AuditChain.render(["zz": 1], after: head, prefix: Array("p ".utf8))
        #expect(String(decoding: late.line, as: UTF8.self) == #"p {"chain":{"hash":"\#(late.head.hash)","prev":"\#(head.hash)","seq":2},"zz":1}"# + "\n")
        let early = AuditChain.render(["a": 1], after: .genesis, prefix: [])
        #expect(String(decoding: early.line, as: UTF8.self).hasPrefix(#"{"a":1,"chain":{"#))
        #expect(AuditChainHead(head.description) == head)
        #expect(AuditChainHead("12:xyz") == nil)
    }

    @Test func chainContinuesAcrossABrokerRestart() async throws {
        let dir = try TempDir()
        let storage = openBarrier()
        let first = makeBroker(storage)
        try await first.enable(path: "file", type: "file", options: ["file_path": dir.file("a.log")])
        let salt1 = try first.hash(path: "file", input: "x")
        try await first.logRequest(sampleRequest())
        try await first.logRequest(sampleRequest())
        let head1 = try #require(first.chainHead(path: "file"))
        #expect(head1.seq == 3)
        await first.close()

        let second = makeBroker(storage)
        #expect(try await second.load().isEmpty)
        #expect(try second.hash(path: "file", input: "x") == salt1, "the salt is kept behind the barrier")
        try await second.logRequest(sampleRequest())
        try await second.logResponse(AuditResponseInfo(request: sampleRequest(), data: ["a": "b"]))
        let head2 = try #require(second.chainHead(path: "file"))
        #expect(head2.seq == 6)
        await second.close()

        let all = try lines(dir.file("a.log"))
        let relink = try json(all[3])
        #expect(relink["type"] == "link" && relink["link"]?["reason"] == "load")
        #expect(relink["chain"]?["prev"] == .string(head1.hash))
        #expect(try AuditChainVerifier.verify(files: [dir.file("a.log")], expectedHead: head2) == .ok(entries: 6, links: 2, head: head2))
    }

    @Test func chainContinuesAfterACrashFromTheFileTail() async throws {
        let dir = try TempDir()
        let storage = openBarrier()
        let crashed = makeBroker(storage)
        try await crashed.enable(path: "file", type: "file", options: ["file_path": dir.file("a.log")])
        for _ in 0..<3 { try await crashed.logRequest(sampleRequest()) }
        // No close(), no flushHeads(): storage still holds the head written at enable (seq 1).
        let restarted = makeBroker(storage)
        try await restarted.load()
        try await restarted.logRequest(sampleRequest())
        let head = try #require(restarted.chainHead(path: "file"))
        #expect(head.seq == 6)
        await restarted.close()
        #expect(try AuditChainVerifier.verify(files: [dir.file("a.log")], expectedHead: head) == .ok(entries: 6, links: 2, head: head))
    }

    @Test func concurrentEntriesStayChainedInOrder() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "file", type: "file", options: ["file_path": dir.file("c.log")])
        try await broker.enable(path: "file2", type: "file", options: ["file_path": dir.file("d.log"), "fsync": "true"])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask { try await broker.logRequest(sampleRequest(path: "secret/data/\(i)")) }
            }
            try await group.waitForAll()
        }
        let head = broker.chainHead(path: "file")
        await broker.close()
        #expect(try AuditChainVerifier.verify(files: [dir.file("c.log")], expectedHead: head) == .ok(entries: 201, links: 1, head: head))
        #expect(try AuditChainVerifier.verify(files: [dir.file("d.log")]).isOK)
    }

    enum Tamper: String, CaseIterable, Sendable {
        case untouched, editedValue, deletedLine, swappedLines, cutTail, droppedLastLines, garbageLine, missingStart
    }

    @Test(arguments: Tamper.allCases)
    func verifierFindsTheFirstProblem(_ tamper: Tamper) async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        let log = dir.file("t.log")
        try await broker.enable(path: "file", type: "file", options: ["file_path": log])
        for i in 0..<7 { try await broker.logRequest(sampleRequest(path: "secret/data/\(i)")) }
        let head = try #require(broker.chainHead(path: "file"))
        await broker.close()
        var all = try lines(log)
        #expect(all.count == 8)
        var expected: (AuditChainProblem.Kind, Int)?
        switch tamper {
        case .untouched: break
        case .editedValue:
            all[3] = all[3].replacingOccurrences(of: "\"operation\":\"update\"", with: "\"operation\":\"delete\"")
            expected = (.altered, 4)
        case .deletedLine:
            all.remove(at: 3)
            expected = (.missing, 4)
        case .swappedLines:
            all.swapAt(3, 4)
            expected = (.reordered, 4)
        case .cutTail:
            break
        case .droppedLastLines:
            all.removeLast(2)
            expected = (.truncated, 7)
        case .garbageLine:
            all.insert("this is not an audit entry", at: 2)
            expected = (.garbage, 3)
        case .missingStart:
            all.removeFirst()
            expected = (.missing, 1)
        }
        try write(all, to: log)
        if tamper == .cutTail {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: log))
            try bytes.dropLast(10).write(to: URL(fileURLWithPath: log))
            expected = (.truncated, 8)
        }
        let result = try AuditChainVerifier.verify(files: [log], expectedHead: head)
        if let (kind, line) = expected {
            guard case .failed(let problem) = result else {
                Issue.record("\(tamper) went unnoticed")
                return
            }
            #expect(problem.kind == kind, "\(problem)")
            #expect(problem.line == line, "\(problem)")
            #expect(problem.file == log)
        } else {
            #expect(result == .ok(entries: 8, links: 1, head: head))
        }
    }

    @Test func rotatedFilesStartWithALinkAndVerifyInOrder() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        let log = dir.file("audit.log")
        try await broker.enable(path: "file", type: "file", options: ["file_path": log])
        try await broker.logRequest(sampleRequest())
        // SIGHUP rotation.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".2")
        #expect(await broker.reopenAll().isEmpty)
        try await broker.logRequest(sampleRequest())
        // Rotation without SIGHUP: the device notices the path moved.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        try await broker.logRequest(sampleRequest())
        let head = broker.chainHead(path: "file")
        await broker.close()

        for file in [log + ".1", log] {
            let first = try json(try lines(file)[0])
            #expect(first["type"] == "link" && first["link"]?["reason"] == "reopen")
        }
        #expect(try AuditChainVerifier.verify(files: [log + ".2", log + ".1", log], expectedHead: head) == .ok(entries: 6, links: 3, head: head))
        #expect(try AuditChainVerifier.verify(files: [log]).isOK, "a file that starts with a link verifies alone")
        guard case .failed(let skipped) = try AuditChainVerifier.verify(files: [log + ".2", log]) else {
            Issue.record("a left-out file must be noticed")
            return
        }
        #expect(skipped.kind == .missing && skipped.file == log && skipped.line == 1)
        guard case .failed(let swapped) = try AuditChainVerifier.verify(files: [log + ".1", log + ".2"]) else {
            Issue.record("files out of order must be noticed")
            return
        }
        #expect(swapped.kind == .reordered && swapped.line == 1)
    }

    // MARK: blocking semantics

    @Test func noDeviceMeansNoAudit() async throws {
        let broker = makeBroker(openBarrier())
        #expect(!broker.hasDevices)
        try await broker.logRequest(sampleRequest())
        try await broker.logResponse(AuditResponseInfo(request: sampleRequest()))
    }

    @Test func unwritableOnlyDeviceBlocksAndASecondHealthyDeviceIsEnough() async throws {
        let dir = try TempDir()
        let failing = dir.file("failing")
        try FileManager.default.createDirectory(atPath: failing, withIntermediateDirectories: true)
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "failing", type: "file", options: ["file_path": failing + "/audit.log"])
        try await broker.logRequest(sampleRequest())

        // The file's directory disappears: the device cannot write any more.
        try FileManager.default.removeItem(atPath: failing)
        await expectError(.auditFailed, containing: "no audit device accepted the entry; the request was not processed") {
            try await broker.logRequest(sampleRequest())
        }
        await expectError(.auditFailed, containing: "the response was withheld") {
            try await broker.logResponse(AuditResponseInfo(request: sampleRequest()))
        }

        try await broker.enable(path: "healthy", type: "file", options: ["file_path": dir.file("healthy.log")])
        try await broker.logRequest(sampleRequest(path: "secret/data/after"))
        #expect(try lines(dir.file("healthy.log")).last?.contains("secret/data/after") == true)

        // The directory comes back: the device recovers, its chain intact.
        try FileManager.default.createDirectory(atPath: failing, withIntermediateDirectories: true)
        try await broker.logRequest(sampleRequest(path: "secret/data/recovered"))
        let recovered = try lines(failing + "/audit.log")
        #expect(try json(recovered[0])["link"]?["reason"] == "reopen")
        #expect(recovered.last?.contains("secret/data/recovered") == true)
        await broker.close()
    }

    @Test func enableFailuresStoreNothing() async throws {
        let storage = openBarrier()
        let broker = makeBroker(storage)
        await expectError(.invalidRequest, containing: "No such file or directory") {
            try await broker.enable(path: "file", type: "file", options: ["file_path": "/nonexistent-dir-\(UUID().uuidString)/a.log"])
        }
        #expect(broker.list().isEmpty)
        #expect(try await storage.get("core/audit") == nil)
    }

    static let badOptions: [(String, [String: String])] = [
        ("nope", ["file_path": "/tmp/x"]),
        ("file", [:]),
        ("file", ["file_path": "relative.log"]),
        ("file", ["file_path": "/tmp/x", "mode": "abc"]),
        ("file", ["file_path": "/tmp/x", "mode": "99999"]),
        ("file", ["file_path": "/tmp/x", "log_raw": "yes"]),
        ("file", ["file_path": "/tmp/x", "unknown": "1"]),
        ("file", ["file_path": "/tmp/x", "format": "jsonx"]),
        ("file", ["file_path": "/tmp/x", "prefix": "a\nb"]),
        ("file", ["file_path": "/tmp/x", "filter": "namespace = \"a\""]),
        ("socket", [:]),
        ("socket", ["address": "localhost"]),
        ("socket", ["address": "127.0.0.1:9", "socket_type": "sctp"]),
        ("socket", ["address": "127.0.0.1:9", "write_timeout": "soon"]),
        ("socket", ["address": "relative", "socket_type": "unix"]),
        ("syslog", ["facility": "nonsense"]),
        ("syslog", ["tag": "has space"]),
        ("syslog", ["syslog_format": "rfc9999"]),
    ]

    @Test(arguments: badOptions)
    func invalidOptionsAreRefused(_ type: String, _ options: [String: String]) async throws {
        let storage = openBarrier()
        let broker = makeBroker(storage)
        await expectError(.invalidRequest) { try await broker.enable(path: "x", type: type, options: options) }
        #expect(try await storage.get("core/audit") == nil)
    }

    @Test func listHashAndDisable() async throws {
        let dir = try TempDir()
        let storage = openBarrier()
        let broker = makeBroker(storage)
        try await broker.enable(path: "/file/", type: "file", description: "main log", options: ["file_path": dir.file("a.log"), "mode": "0640"], local: true)
        #expect(broker.list() == ["file/": ["type": "file", "description": "main log", "options": ["file_path": .string(dir.file("a.log")), "mode": "0640"], "local": true, "path": "file/"]])
        var st = stat()
        #expect(stat(dir.file("a.log"), &st) == 0 && st.st_mode & 0o777 == 0o640)
        await expectError(.invalidRequest, containing: "already in use") {
            try await broker.enable(path: "file", type: "file", options: ["file_path": dir.file("b.log")])
        }
        await expectError(.invalidRequest, containing: "already in use") {
            try await broker.enable(path: "file/sub", type: "file", options: ["file_path": dir.file("b.log")])
        }
        let first = try broker.hash(path: "file", input: "known-value")
        #expect(first.hasPrefix("hmac-sha256:") && first.count == "hmac-sha256:".count + 64)
        #expect(throws: CofferError.self) { try broker.hash(path: "other", input: "x") }
        // The table (salts included) is barrier ciphertext in physical storage.
        let record = try #require(try await storage.physical.get("core/audit"))
        #expect(!String(decoding: record, as: UTF8.self).contains("file/"))

        try await broker.disable(path: "file")
        #expect(broker.list().isEmpty)
        try await broker.disable(path: "file")
        try await broker.enable(path: "file", type: "file", options: ["file_path": dir.file("a.log")])
        #expect(try broker.hash(path: "file", input: "known-value") != first, "a re-enabled device has a new salt")
        await broker.close()
        // The file now holds two chains; the second starts over at seq 1 with a link.
        #expect(try AuditChainVerifier.verify(files: [dir.file("a.log")]).isOK)
    }

    // MARK: filter

    @Test func filterParsing() throws {
        let acme = AuditFilter.Fields(namespace: "acme/", mountType: "kv", mountPoint: "secret/", operation: "read", path: "secret/data/a")
        let root = AuditFilter.Fields(namespace: "", mountType: "transit", mountPoint: "transit/", operation: "update", path: "transit/encrypt/k")
        let cases: [(String, Bool, Bool)] = [
            (#"namespace == "acme/""#, true, false),
            (#"namespace == "acme""#, true, false),
            (#"namespace == """#, false, true),
            (#"namespace != "acme/""#, false, true),
            (#"namespace == "acme/" and operation != "read""#, false, false),
            (#"namespace == "acme/" or operation == "update""#, true, true),
            (#"mount_type == "kv" or mount_type == "transit" and operation == "read""#, true, false),
            (#"(mount_type == "kv" or mount_type == "transit") and operation == "update""#, false, true),
            (#"path matches "secret/*""#, true, false),
            (#"path matches "*/encrypt/*""#, false, true),
            (#"path not matches "secret/*""#, false, true),
            (#"not (namespace == "acme/")"#, false, true),
            (#"NAMESPACE == "acme/" AND Mount_Point == "secret""#, true, false),
            (#"path == "secret/data/a" and mount_point == "/secret/""#, true, false),
            (#"namespace matches "acme/*" or namespace matches "acme/""#, true, false),
        ]
        for (text, onAcme, onRoot) in cases {
            let filter = try AuditFilter(parsing: text)
            #expect(filter.matches(acme) == onAcme, "\(text) on acme")
            #expect(filter.matches(root) == onRoot, "\(text) on root")
        }
        let bad = [
            "", #"namespace"#, #"namespace =="#, #"namespace == acme"#, #"tenant == "x""#, #"namespace == "x" and"#,
            #"(namespace == "x""#, #"namespace == "x")"#, #"namespace == "unterminated"#, #"namespace = "x""#,
            #"namespace == "x" namespace == "y""#, #"path not "x""#, String(repeating: "(", count: 100) + #"path == "x""#,
        ]
        for text in bad {
            #expect(throws: CofferError.self, "\(text)") { try AuditFilter(parsing: text) }
        }
    }

    @Test func filteredDeviceReceivesOnlyItsTenant() async throws {
        let dir = try TempDir()
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "acme", type: "file", options: ["file_path": dir.file("acme.log"), "filter": #"namespace == "acme/""#])
        try await broker.enable(path: "all", type: "file", options: ["file_path": dir.file("all.log")])
        try await broker.logRequest(sampleRequest(path: "secret/data/root-one"))
        try await broker.logRequest(sampleRequest(path: "secret/data/acme-one", namespace: AuditNamespace(id: "a1", path: "acme/")))
        try await broker.logResponse(AuditResponseInfo(request: sampleRequest(path: "secret/data/acme-one", namespace: AuditNamespace(id: "a1", path: "acme/"))))
        try await broker.logRequest(sampleRequest(path: "secret/data/child", namespace: AuditNamespace(id: "a2", path: "acme/payments/")))
        await broker.close()
        let acme = try lines(dir.file("acme.log")).dropFirst().map(json)
        #expect(acme.count == 2)
        #expect(acme.allSatisfy { $0["request"]?["namespace"]?["path"] == "acme/" })
        #expect(try lines(dir.file("all.log")).count == 5)
        #expect(try AuditChainVerifier.verify(files: [dir.file("acme.log")]).isOK)

        // Only filtered-out devices: nothing to write, the request goes on.
        let only = makeBroker(openBarrier())
        try await only.enable(path: "acme", type: "file", options: ["file_path": dir.file("acme2.log"), "filter": #"namespace == "acme/""#])
        try await only.logRequest(sampleRequest())
        await only.close()
    }

    // MARK: socket and syslog

    @Test func socketDeviceFailsWhilePeerIsDownAndRecovers() async throws {
        let server = try LineServer()
        let port = server.port
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "siem", type: "socket", options: ["address": server.address, "socket_type": "tcp"])
        try await broker.logRequest(sampleRequest(path: "secret/data/one"))
        #expect(await eventually { server.lines.count == 2 })
        var captured = server.lines

        server.stop()
        try await Task.sleep(for: .milliseconds(50))
        // A write right after the peer left can still land in the kernel's buffer (TCP learns
        // of the reset later); within a few writes the device must report the failure.
        var failures = 0
        for _ in 0..<20 where failures < 2 {
            do { try await broker.logRequest(sampleRequest()) } catch let e as CofferError where e.code == .auditFailed { failures += 1 }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(failures == 2)

        let again = try LineServer(port: port)
        defer { again.stop() }
        try await broker.logRequest(sampleRequest(path: "secret/data/two"))
        #expect(await eventually { again.lines.count == 2 })
        captured += again.lines
        let relink = try json(captured[2])
        #expect(relink["type"] == "link" && relink["link"]?["reason"] == "reconnect")
        #expect(captured[3].contains("secret/data/two"))
        #expect(!captured.joined().contains("hvs.SECRET-TOKEN"))
        // The capture after the reconnect verifies on its own (it starts with the link); the
        // whole capture verifies too unless an entry vanished into a dead connection, which
        // the chain then reports as missing — that is what it is for.
        let dir = try TempDir()
        try write(again.lines, to: dir.file("after.log"))
        #expect(try AuditChainVerifier.verify(files: [dir.file("after.log")], expectedHead: broker.chainHead(path: "siem")).isOK)
        try write(captured, to: dir.file("capture.log"))
        let whole = try AuditChainVerifier.verify(files: [dir.file("capture.log")], expectedHead: broker.chainHead(path: "siem"))
        if case .failed(let problem) = whole { #expect(problem.kind == .missing) }
        await broker.close()
    }

    @Test func socketEnableFailsWhenThePeerIsDown() async throws {
        let server = try LineServer()
        let address = server.address
        server.stop()
        let broker = makeBroker(openBarrier())
        await expectError(.invalidRequest, containing: "cannot connect") {
            try await broker.enable(path: "siem", type: "socket", options: ["address": address])
        }
        #expect(broker.list().isEmpty)
    }

    @Test func socketWriteTimesOutWhenThePeerStopsReading() async throws {
        let server = try LineServer(port: 0, readData: false, receiveBuffer: 4096)
        defer { server.stop() }
        let broker = makeBroker(openBarrier(), retry: .seconds(60))
        try await broker.enable(path: "slow", type: "socket", options: ["address": server.address, "write_timeout": "2s", "log_raw": "true"])
        let big = String(repeating: "x", count: 8 << 20)
        let start = ContinuousClock.now
        await expectError(.auditFailed) { try await broker.logRequest(sampleRequest(data: ["blob": .string(big)])) }
        #expect(ContinuousClock.now - start < .seconds(10))
        // While down, later writes fail at once until the retry interval passes: well under
        // the 2 s write timeout they would otherwise wait (a loaded machine took 259 ms for
        // "at once", so the margin is wide).
        let fast = ContinuousClock.now
        await expectError(.auditFailed) { try await broker.logRequest(sampleRequest()) }
        #expect(ContinuousClock.now - fast < .seconds(1))
        await broker.close()
    }

    @Test func unixAndUDPSockets() async throws {
        let dir = try TempDir()
        let server = try LineServer(port: 0, unixPath: dir.file("siem.sock"))
        defer { server.stop() }
        let broker = makeBroker(openBarrier())
        try await broker.enable(path: "unix", type: "socket", options: ["address": server.address, "socket_type": "unix"])
        try await broker.logRequest(sampleRequest())
        #expect(await eventually { server.lines.count == 2 })

        // UDP: a bound loopback socket receives one datagram per entry.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        try await broker.enable(path: "udp", type: "socket", options: ["address": "127.0.0.1:\(UInt16(bigEndian: addr.sin_port))", "socket_type": "udp"])
        try await broker.logRequest(sampleRequest(path: "secret/data/udp"))
        var received: [String] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        for _ in 0..<2 {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 5000) > 0 else { break }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            received.append(String(decoding: buffer[0..<max(0, n)], as: UTF8.self))
        }
        #expect(received.count == 2)
        #expect(received.last?.contains("secret/data/udp") == true)
        await broker.close()
    }

    @Test(arguments: ["rfc3164", "rfc5424"])
    func syslogDeviceWritesDatagramsToTheSyslogSocket(_ framing: String) async throws {
        let dir = try TempDir()
        let receiver = try DatagramReceiver(path: dir.file("log.sock"))
        let broker = makeBroker(openBarrier(), syslog: receiver.path)
        try await broker.enable(path: "syslog", type: "syslog", options: ["facility": "local0", "tag": "coffer-test", "syslog_format": framing])
        try await broker.logRequest(sampleRequest())
        let link = try #require(receiver.receive())
        let entry = try #require(receiver.receive())
        await broker.close()
        let pri = "<\(16 * 8 + 6)>"
        for message in [link, entry] {
            #expect(message.hasPrefix(framing == "rfc3164" ? pri : pri + "1 "), "\(message.prefix(60))")
            #expect(message.contains(framing == "rfc3164" ? "coffer-test[\(getpid())]: {" : " coffer-test \(getpid()) - - {"))
            #expect(!message.hasSuffix("\n"))
        }
        #expect(try json(entry)["type"] == "request")
        #expect(!entry.contains("s3cr3t-value"))
        try write([link, entry], to: dir.file("capture.log"))
        #expect(try AuditChainVerifier.verify(files: [dir.file("capture.log")]).isOK)
    }

    @Test func syslogWithoutADaemonIsRefusedClearly() async throws {
        let broker = makeBroker(openBarrier(), syslog: NSTemporaryDirectory() + "no-syslog-\(UUID().uuidString.prefix(8)).sock")
        await expectError(.invalidRequest, containing: "no syslog daemon is listening") {
            try await broker.enable(path: "syslog", type: "syslog")
        }
        #expect(broker.list().isEmpty)
    }
}
