import CofferSDK
import Foundation
import Synchronization

extension SystemBackend {
    /// `sys/internal/ui/mounts` and `sys/internal/ui/mounts/*path`, as Vault's UI and CLI
    /// use them: the mounts a token can reach (any capability below them), and those tuned
    /// `listing_visibility=unauth` to anyone, with their type, description and options only.
    static let uiMountRoutes: [Route<SystemBackend>] = [
        Route("internal/ui/mounts", operations: [.read: { try await $0.uiMounts($1) }],
              summary: "The mounts the calling token can reach (or those listed to anyone)."),
        Route("internal/ui/mounts/*path", fields: [Field("path", .string)], operations: [.read: { try await $0.uiMount($1) }],
              summary: "The mount that serves a path, when the calling token can reach it."),
    ]

    /// The calling token's ACL, judging paths of this namespace (prefixed for a token of an
    /// ancestor), or nil without a token.
    func callerACL(_ req: LogicalRequest) async throws -> (ACL, String)? {
        guard let token = req.token else { return nil }
        let acl = try await tokenNamespace.policies.acl(for: callerPolicies(token))
        return (acl, String(ns.path.dropFirst(tokenNamespace.path.count)))
    }

    func uiMounts(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let caller = try await callerACL(req)
        var out: [String: JSONValue] = [:]
        for (kind, key) in [(MountedBackend.Kind.secret, "secret"), (.auth, "auth")] {
            var listed: [String: JSONValue] = [:]
            for m in ns.mounts(kind: kind) {
                if let (acl, prefix) = caller {
                    guard m.entry.config.listingVisibility == "unauth" || acl.hasMountAccess(prefix + m.routePath) else { continue }
                    listed[m.entry.path] = m.entry.json(systemDefaultTTL: ns.configuration.defaultLeaseTTL, systemMaxTTL: ns.configuration.maxLeaseTTL, auth: m.kind == .auth)
                } else {
                    guard m.entry.config.listingVisibility == "unauth" else { continue }
                    var o: [String: JSONValue] = ["type": .string(m.entry.type), "description": .string(m.entry.description)]
                    if !m.entry.options.isEmpty { o["options"] = .object(m.entry.options.mapValues { .string($0) }) }
                    listed[m.entry.path] = .object(o)
                }
            }
            out[key] = .object(listed)
        }
        return LogicalResponse(data: out)
    }

    func uiMount(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var path = req.fields.string("path")
        while path.hasPrefix("/") { path.removeFirst() }
        guard !path.isEmpty else { throw CofferError.invalid("path must not be empty") }
        let refusal = CofferError(.permissionDenied, "preflight capability check returned 403, please ensure client's policies grant access to path \"\(path.prefix(256))\"")
        guard let m = ns.router.withLock({ $0.route(path) ?? $0.route(path + "/") }) else { throw refusal }
        guard let (acl, prefix) = try await callerACL(req), acl.hasMountAccess(prefix + m.routePath) else { throw refusal }
        var data = m.entry.json(systemDefaultTTL: ns.configuration.defaultLeaseTTL, systemMaxTTL: ns.configuration.maxLeaseTTL, auth: m.kind == .auth).objectValue ?? [:]
        data["path"] = .string(m.routePath)
        return LogicalResponse(data: data)
    }
}

extension ACL {
    /// Whether the ACL grants anything (create, read, update, delete, list) on the mount at
    /// `mountPath` or on some path below it, as Vault's `hasMountAccess` decides what a
    /// token may see in the UI's mount listing.
    func hasMountAccess(_ mountPath: String) -> Bool {
        if isRoot { return true }
        let useful: Capabilities = [.create, .read, .update, .delete, .list, .patch]
        if let r = rule(for: mountPath), !r.capabilities.contains(.deny), !r.capabilities.isDisjoint(with: useful) { return true }
        let candidates = Array(exact.values) + wildcard
        return candidates.contains { r in
            !r.capabilities.contains(.deny) && !r.capabilities.isDisjoint(with: useful)
                && (r.stem.hasPrefix(mountPath) || (r.plusCount > 0 && r.matches(mountPath)))
        }
    }
}
