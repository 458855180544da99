import ArgumentParser
import AsyncHTTPClient
import CofferSDK
import Foundation
import NIOCore
import NIOHTTP1
import TenantCore

/// `operator snapshot save|restore`: storage snapshots through `sys/storage/snapshot`.
struct OperatorSnapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Save or restore a snapshot of the server's storage (root token).",
        subcommands: [OperatorSnapshotSave.self, OperatorSnapshotRestore.self])
}

struct OperatorSnapshotSave: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "save",
        abstract: "Save a snapshot of all storage (still encrypted) to FILE.",
        discussion: "The file is checked, then written with mode 0600 through a temporary file and a rename.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The file to write.") var file: String

    func run() async throws {
        let bytes = try await API.with(client) { api in
            let r = try await api.binary(.GET, "sys/storage/snapshot", doing: "saving snapshot")
            if r.status >= 400 { try API.fail(r, doing: "saving snapshot") }
            return r.body
        }
        let snapshot: StorageSnapshot
        do {
            snapshot = try StorageSnapshot.decode(bytes)
        } catch let e as CofferError {
            Out.err("Error saving snapshot: the server's answer is not a valid snapshot: \(e.message)")
            throw ExitCode(1)
        }
        do {
            try SnapshotFile.save(bytes, to: file)
        } catch let e as CLIError {
            Out.err("Error saving snapshot: \(e.message)")
            throw ExitCode(1)
        }
        Out.print("Success! Snapshot of \(snapshot.header.keyCount) keys saved to \(file).")
    }
}

struct OperatorSnapshotRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a snapshot from FILE, replacing all storage; the server is sealed afterwards.",
        discussion: """
            Unseal the server again with the unseal keys of the cluster the snapshot was taken from. \
            A snapshot of another cluster is refused unless -force is given.
            """)
    @OptionGroup var client: ClientOptions
    @Flag(name: .customLong("force"), help: "Restore a snapshot taken from another cluster.") var force = false
    @Argument(help: "The snapshot file.") var file: String

    func run() async throws {
        let bytes = try Input.readFile(file)
        do {
            _ = try StorageSnapshot.decode(bytes)
        } catch let e as CofferError {
            Out.err("Error restoring snapshot: \(file): \(e.message)")
            throw ExitCode(1)
        }
        let path = force ? "sys/storage/snapshot-force" : "sys/storage/snapshot"
        try await API.with(client) { api in
            let r = try await api.binary(.POST, path, body: bytes, doing: "restoring snapshot")
            if r.status >= 400 { try API.fail(r, doing: "restoring snapshot") }
        }
        Out.print("""
            Success! Snapshot restored. The server is now sealed: unseal it with the unseal keys of the
            cluster the snapshot was taken from.
            """)
    }
}

extension API {
    /// Snapshots are large: no 64 MiB cap on the answer, and a long deadline.
    static let snapshotLimit = 1 << 31
    static let snapshotTimeout: TimeAmount = .minutes(30)

    /// One request with a binary body (or none) whose answer is kept as bytes; JSON is parsed
    /// only from an error answer.
    func binary(_ method: Verb, _ path: String, body: [UInt8]? = nil, doing: String) async throws -> APIResponse {
        let url = config.address + "/v1/" + API.encodePath(path)
        var req = HTTPClientRequest(url: url)
        req.method = method.http
        req.headers.add(name: "X-Vault-Request", value: "true")
        req.headers.add(name: "User-Agent", value: "coffer-cli/\(Coffer.version)")
        if let t = config.token { req.headers.add(name: "X-Vault-Token", value: t) }
        if let ns = config.namespace { req.headers.add(name: "X-Vault-Namespace", value: ns) }
        if let body {
            req.headers.add(name: "Content-Type", value: "application/octet-stream")
            req.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let resp = try await http.execute(req, timeout: Self.snapshotTimeout)
            let buffer = try await resp.body.collect(upTo: Self.snapshotLimit)
            let bytes = Array(buffer.readableBytesView)
            let status = Int(resp.status.code)
            let json = status >= 400 && !bytes.isEmpty ? try? JSONValue.parse(bytes) : nil
            return APIResponse(method: method.rawValue, url: url, status: status, body: bytes, json: json)
        } catch {
            Out.err("Error \(doing): \(method.rawValue) \"\(url)\": \(Self.describe(error))")
            throw ExitCode(1)
        }
    }
}

/// Writing a snapshot file: never half-written, never readable by others.
enum SnapshotFile {
    /// Writes `bytes` to a temporary file beside `path` (mode 0600), syncs it, renames it
    /// over `path` and syncs the directory.
    static func save(_ bytes: [UInt8], to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let temp = dir + "/." + url.lastPathComponent + ".tmp-" + UUID().uuidString
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CLIError("could not create \(temp): \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            defer { close(fd) }
            guard fchmod(fd, 0o600) == 0 else { throw CLIError("could not chmod \(temp): \(String(cString: strerror(errno)))") }
            var written = 0
            while written < bytes.count {
                let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw CLIError("could not write \(temp): \(String(cString: strerror(errno)))") }
                written += n
            }
            guard fsync(fd) == 0 else { throw CLIError("could not sync \(temp): \(String(cString: strerror(errno)))") }
        }
        guard rename(temp, url.path) == 0 else {
            throw CLIError("could not rename \(temp) to \(url.path): \(String(cString: strerror(errno)))")
        }
        ok = true
        let dirFD = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }
}
