import ArgumentParser
import CofferSDK
import Foundation

/// Where a `kv` command goes: the mount, the path inside it and the KV version.
struct KVTarget: Sendable {
    var mount: String
    var path: String
    var v2: Bool

    /// `mount/<segment>/path` for v2 (`data`, `metadata`, ...), `mount/path` for v1.
    func api(_ segment: String) -> String {
        let tail = path.isEmpty ? "" : "/" + path
        return v2 ? "\(mount)/\(segment)\(tail)" : "\(mount)\(tail)"
    }

    /// `-mount` wins; otherwise the first segment of the path is the mount. The version comes
    /// from `GET sys/mounts/<mount>` (options.version); a token that may not read it gets v2.
    static func resolve(_ api: API, mount mountFlag: String?, path raw: String) async throws -> KVTarget {
        var mount: String
        var path: String
        if let m = mountFlag, !m.isEmpty {
            mount = cleanPath(m)
            path = cleanPath(raw)
        } else {
            let p = cleanPath(raw)
            guard let slash = p.firstIndex(of: "/") else {
                mount = p
                path = ""
                return try await finish(api, mount: mount, path: path)
            }
            mount = String(p[..<slash])
            path = String(p[p.index(after: slash)...])
        }
        while mount.hasSuffix("/") { mount.removeLast() }
        return try await finish(api, mount: mount, path: path)
    }

    private static func finish(_ api: API, mount: String, path: String) async throws -> KVTarget {
        let r = try await api.request(.GET, "sys/mounts/\(mount)", doing: "reading mount \(mount)")
        switch r.status {
        case 200:
            let d = r.data ?? r.json ?? .null
            let version = d["options"]?["version"]?.stringValue ?? d["options"]?["version"]?.intValue.map { String($0) } ?? "1"
            return KVTarget(mount: mount, path: path, v2: version == "2")
        case 403:
            return KVTarget(mount: mount, path: path, v2: true)
        default:
            if r.status == 400 || r.status == 404 {
                Out.err("Error: no secrets engine mounted at \(mount)/ (or it is not a kv mount)")
                throw ExitCode(1)
            }
            try API.fail(r, doing: "reading mount \(mount)")
        }
    }
}

struct KVOptions: ParsableArguments {
    @Option(name: .customLong("mount"), help: "The KV mount (default: the first segment of the path).")
    var mount: String?
}

/// Parses `-versions=1,2` (and repeated flags) into integers.
func parseVersions(_ raw: [String]) throws -> [JSONValue] {
    var out: [JSONValue] = []
    for part in raw.flatMap({ $0.split(separator: ",") }) {
        guard let v = Int64(part.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("invalid version \"\(part)\"")
        }
        out.append(.int(v))
    }
    return out
}

/// `== Secret Path ==` + path, then `=== Metadata ===` and a table (kv put/patch/get).
func printKVMetadata(path: String, metadata: JSONValue?) {
    Out.print(Out.header("Secret Path", width: path.count) + "\n" + path + "\n\n")
    if let m = metadata?.objectValue {
        let table = Out.keyValue(m.keys.sorted().map { ($0, Out.display(m[$0])) })
        Out.print(Out.header("Metadata", width: Out.width(table)) + "\n" + table)
    }
}

struct KVCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv", abstract: "Work with KV secrets engines (v1 and v2).",
        subcommands: [KVGet.self, KVPut.self, KVPatch.self, KVList.self, KVDelete.self, KVUndelete.self, KVDestroy.self, KVMetadata.self])
}

struct KVGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Read a secret.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var kv: KVOptions
    @Option(name: .customLong("version"), help: "The version to read (v2; default latest).") var version: Int?
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        try await API.with(client) { api in
            let t = try await KVTarget.resolve(api, mount: kv.mount, path: path)
            let p = t.api("data")
            let query: [(String, String)] = (t.v2 && version != nil) ? [("version", String(version!))] : []
            let r = try await api.request(.GET, p, query: query, doing: "reading \(p)")
            let metadata = t.v2 ? r.data?["metadata"] : nil
            if r.status == 404 && (metadata == nil || metadata!.isNull) {
                Out.err("No value found at \(p)")
                throw ExitCode(2)
            }
            if r.status >= 400 && r.status != 404 { try API.fail(r, doing: "reading \(p)") }
            let data = t.v2 ? r.data?["data"] : r.data
            if output.field != nil || output.json {
                if output.field != nil, data == nil || data!.isNull {
                    Out.err("No value found at \(p)")
                    throw ExitCode(2)
                }
                try Out.secret(r, output, data: output.json && output.field == nil ? nil : data)
                return
            }
            Out.warnings(r)
            if t.v2 {
                printKVMetadata(path: p, metadata: metadata)
                if let d = data?.objectValue {
                    let table = Out.keyValue(d.keys.sorted().map { ($0, Out.display(d[$0])) })
                    Out.print("\n" + Out.header("Data", width: Out.width(table)) + "\n" + table)
                } else {
                    // A deleted or destroyed version: metadata only, exit 2 like Vault.
                    throw ExitCode(2)
                }
            } else {
                try Out.secret(r, output)
            }
        }
    }
}

/// kv put / kv patch share the write and the metadata output.
func kvWrite(_ api: API, _ t: KVTarget, data: [String: JSONValue], cas: Int?, patch: Bool, output: OutputOptions) async throws {
    if !t.v2 {
        if patch {
            Out.err("Error: kv patch is only supported on KV version 2 mounts")
            throw ExitCode(1)
        }
        let p = t.api("data")
        _ = try await api.call(.PUT, p, body: .object(data), doing: "writing data to \(p)")
        if !output.json { Out.print("Success! Data written to: \(p)") }
        return
    }
    let p = t.api("data")
    var body: [String: JSONValue] = ["data": .object(data)]
    if let cas { body["options"] = ["cas": .int(Int64(cas))] }
    let r = try await api.call(
        patch ? .PATCH : .PUT, p, body: .object(body),
        contentType: patch ? "application/merge-patch+json" : "application/json", doing: "writing data to \(p)")
    if output.field != nil || output.json {
        try Out.secret(r, output)
        return
    }
    Out.warnings(r)
    printKVMetadata(path: p, metadata: r.data)
}

/// What `kv put` and `kv patch` share: the path, the data and check-and-set.
struct KVWriteArguments: ParsableArguments {
    @Option(name: .customLong("cas"), help: "Check-and-set: the current version (0: only if absent).") var cas: Int?
    @Argument(help: "The secret path.") var path: String
    @Argument(help: "key=value pairs, key=@file, key=-, or - for a JSON object on stdin.") var pairs: [String] = []

    func run(client: ClientOptions, output: OutputOptions, kv: KVOptions, patch: Bool) async throws {
        guard !pairs.isEmpty else {
            Out.err("Must supply data")
            throw ExitCode(2)
        }
        let data = try Input.keyValues(pairs)
        try await API.with(client) { api in
            let t = try await KVTarget.resolve(api, mount: kv.mount, path: path)
            try await kvWrite(api, t, data: data, cas: cas, patch: patch, output: output)
        }
    }
}

struct KVPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "put", abstract: "Write a secret (a new version on v2).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var kv: KVOptions
    @OptionGroup var write: KVWriteArguments

    func run() async throws { try await write.run(client: client, output: output, kv: kv, patch: false) }
}

struct KVPatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "patch", abstract: "Merge keys into the latest version (v2).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var kv: KVOptions
    @OptionGroup var write: KVWriteArguments

    func run() async throws { try await write.run(client: client, output: output, kv: kv, patch: true) }
}

struct KVList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the keys under a path.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var kv: KVOptions
    @Argument(help: "The path (a folder).") var path: String

    func run() async throws {
        let t: KVTarget = try await API.with(client) { api in try await KVTarget.resolve(api, mount: kv.mount, path: path) }
        var p = t.api("metadata")
        if !p.hasSuffix("/") { p += "/" }
        try await listPath(client, output, p)
    }
}

struct KVDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Soft-delete the latest version, or -versions (v2).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var kv: KVOptions
    @Option(name: .customLong("versions"), help: "Versions to delete (comma separated).") var versions: [String] = []
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        let vs = try parseVersions(versions)
        try await API.with(client) { api in
            let t = try await KVTarget.resolve(api, mount: kv.mount, path: path)
            if t.v2 && !vs.isEmpty {
                let p = t.api("delete")
                _ = try await api.call(.PUT, p, body: ["versions": .array(vs)], doing: "deleting \(p)")
                Out.print("Success! Data deleted (if it existed) at: \(p)")
            } else {
                let p = t.api("data")
                _ = try await api.call(.DELETE, p, doing: "deleting \(p)")
                Out.print("Success! Data deleted (if it existed) at: \(p)")
            }
        }
    }
}

/// kv undelete / destroy: PUT <mount>/<segment>/<path> {"versions": [...]}.
func kvVersionsOp(_ client: ClientOptions, mount: String?, path: String, versions: [String], segment: String, verb: String) async throws {
    let vs = try parseVersions(versions)
    guard !vs.isEmpty else {
        Out.err("No versions provided, use the \"-versions\" flag to specify the version to \(verb).")
        throw ExitCode(2)
    }
    try await API.with(client) { api in
        let t = try await KVTarget.resolve(api, mount: mount, path: path)
        guard t.v2 else {
            Out.err("Error: kv \(verb) is only supported on KV version 2 mounts")
            throw ExitCode(1)
        }
        let p = t.api(segment)
        _ = try await api.call(.PUT, p, body: ["versions": .array(vs)], doing: "writing data to \(p)")
        Out.print("Success! Data written to: \(p)")
    }
}

struct KVUndelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "undelete", abstract: "Restore soft-deleted versions (v2).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var kv: KVOptions
    @Option(name: .customLong("versions"), help: "Versions to undelete (comma separated).") var versions: [String] = []
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        try await kvVersionsOp(client, mount: kv.mount, path: path, versions: versions, segment: "undelete", verb: "undelete")
    }
}

struct KVDestroy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "destroy", abstract: "Permanently destroy versions (v2).")
    @OptionGroup var client: ClientOptions
    @OptionGroup var kv: KVOptions
    @Option(name: .customLong("versions"), help: "Versions to destroy (comma separated).") var versions: [String] = []
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        try await kvVersionsOp(client, mount: kv.mount, path: path, versions: versions, segment: "destroy", verb: "destroy")
    }
}

struct KVMetadata: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metadata", abstract: "Secret metadata (v2): get, put, delete.",
        subcommands: [KVMetadataGet.self, KVMetadataPut.self, KVMetadataDelete.self])
}

struct KVMetadataGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Read a secret's metadata and versions.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var kv: KVOptions
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        try await API.with(client) { api in
            let t = try await KVTarget.resolve(api, mount: kv.mount, path: path)
            guard t.v2 else {
                Out.err("Error: kv metadata is only supported on KV version 2 mounts")
                throw ExitCode(1)
            }
            let p = t.api("metadata")
            let r = try await api.request(.GET, p, doing: "reading \(p)")
            if r.status == 404 {
                Out.err("No value found at \(p)")
                throw ExitCode(2)
            }
            if r.status >= 400 { try API.fail(r, doing: "reading \(p)") }
            if output.field != nil || output.json {
                try Out.secret(r, output)
                return
            }
            Out.warnings(r)
            let d = r.data?.objectValue ?? [:]
            Out.print(Out.header("Metadata Path", width: p.count) + "\n" + p + "\n\n")
            let meta = d.keys.filter { $0 != "versions" }.sorted()
            let table = Out.keyValue(meta.map { ($0, Out.display(d[$0])) })
            Out.print(Out.header("Metadata", width: Out.width(table)) + "\n" + table)
            if let versions = d["versions"]?.objectValue {
                for v in versions.keys.sorted(by: { (Int($0) ?? 0) < (Int($1) ?? 0) }) {
                    let vo = versions[v]?.objectValue ?? [:]
                    let vt = Out.keyValue(vo.keys.sorted().map { ($0, Out.display(vo[$0])) })
                    Out.print("\n" + Out.header("Version \(v)", width: Out.width(vt)) + "\n" + vt)
                }
            }
        }
    }
}

struct KVMetadataPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "put", abstract: "Write a secret's metadata settings.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var kv: KVOptions
    @Option(name: .customLong("max-versions"), help: "Versions to keep (0: the mount's setting).") var maxVersions: Int?
    @Option(name: .customLong("cas-required"), help: "Require check-and-set on writes (true/false).") var casRequired: Bool?
    @Option(name: .customLong("delete-version-after"), help: "Delete versions after this duration.") var deleteVersionAfter: String?
    @Option(name: .customLong("custom-metadata"), help: "key=value custom metadata (repeatable).") var customMetadata: [String] = []
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        var body: [String: JSONValue] = [:]
        if let maxVersions { body["max_versions"] = .int(Int64(maxVersions)) }
        if let casRequired { body["cas_required"] = .bool(casRequired) }
        if let deleteVersionAfter { body["delete_version_after"] = .string(deleteVersionAfter) }
        if !customMetadata.isEmpty {
            let kvs = try Input.keyValues(customMetadata)
            body["custom_metadata"] = .object(kvs.mapValues { v in v.stringValue.map { .string($0) } ?? .string(Out.display(v)) })
        }
        try await API.with(client) { api in
            let t = try await KVTarget.resolve(api, mount: kv.mount, path: path)
            guard t.v2 else {
                Out.err("Error: kv metadata is only supported on KV version 2 mounts")
                throw ExitCode(1)
            }
            let p = t.api("metadata")
            _ = try await api.call(.PUT, p, body: .object(body), doing: "writing data to \(p)")
            Out.print("Success! Data written to: \(p)")
        }
    }
}

struct KVMetadataDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a secret's metadata and all its versions.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var kv: KVOptions
    @Argument(help: "The secret path.") var path: String

    func run() async throws {
        try await API.with(client) { api in
            let t = try await KVTarget.resolve(api, mount: kv.mount, path: path)
            guard t.v2 else {
                Out.err("Error: kv metadata is only supported on KV version 2 mounts")
                throw ExitCode(1)
            }
            let p = t.api("metadata")
            _ = try await api.call(.DELETE, p, doing: "deleting \(p)")
            Out.print("Success! Data deleted (if it existed) at: \(p)")
        }
    }
}
