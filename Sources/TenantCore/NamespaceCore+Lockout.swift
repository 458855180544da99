import CofferSDK
import Foundation
import Synchronization

/// Failed logins of one alias on one mount, counted on this node (as Vault counts them).
struct FailedLogins: Sendable {
    var count: Int
    var last: Int64
}

extension NamespaceCore {
    // MARK: user lockout (Vault 1.13+)

    /// Locked users are stored (so every node and a restart see them): `sys/login/locked-users/
    /// <mount accessor>/<hex of the alias>` → the time the lockout began. Counts of failures
    /// below the threshold are memory only.
    static let lockedUsersPrefix = "sys/login/locked-users/"

    static func lockoutKey(accessor: String, alias: String) -> String { accessor + "/" + Hex.encode(Array(alias.utf8)) }

    /// Refuses a login of a locked alias with Vault's 403 (the credentials are not even
    /// checked). A lockout past its duration is lifted.
    func checkLockout(mount: MountedBackend, alias: String) async throws {
        let policy = mount.entry.config.effectiveLockout
        guard !policy.disabled else { return }
        let key = Self.lockoutKey(accessor: mount.entry.accessor, alias: alias)
        let now = tokens.now()
        if let f = failedLogins.withLock({ $0[key] }), f.count >= policy.threshold, now - f.last < Int64(policy.duration) {
            throw CofferError.denied()
        }
        guard let stored = try await rootView.getJSON(Self.lockedUsersPrefix + key), let since = stored["locked_at"]?.intValue else { return }
        if now - since < Int64(policy.duration) { throw CofferError.denied() }
        try await rootView.delete(Self.lockedUsersPrefix + key)
        _ = failedLogins.withLock { $0.removeValue(forKey: key) }
    }

    /// A login failed on its credentials: count it; at the threshold the alias is locked.
    func recordFailedLogin(mount: MountedBackend, alias: String) async {
        let policy = mount.entry.config.effectiveLockout
        guard !policy.disabled else {
            node?.usage.recordFailedLogin(namespace: path, lockedOut: false)
            return
        }
        let key = Self.lockoutKey(accessor: mount.entry.accessor, alias: alias)
        let now = tokens.now()
        let count = failedLogins.withLock { m -> Int in
            var f = m[key] ?? FailedLogins(count: 0, last: now)
            if now - f.last > Int64(policy.counterReset) { f.count = 0 }
            f.count += 1
            f.last = now
            // Bounded: a flood of made-up names cannot grow it without end.
            if m.count >= 100_000, m[key] == nil { m.removeAll(keepingCapacity: true) }
            m[key] = f
            return f.count
        }
        node?.usage.recordFailedLogin(namespace: path, lockedOut: count == policy.threshold)
        if count == policy.threshold {
            try? await rootView.putJSON(Self.lockedUsersPrefix + key, ["locked_at": .int(now), "count": .int(Int64(count))])
        }
    }

    /// A login succeeded: its failures are forgotten.
    func recordSuccessfulLogin(mount: MountedBackend, alias: String) {
        let key = Self.lockoutKey(accessor: mount.entry.accessor, alias: alias)
        _ = failedLogins.withLock { $0.removeValue(forKey: key) }
    }

    /// `sys/locked-users`: this namespace's locked aliases by mount accessor, Vault's shape.
    func lockedUsers() async throws -> [String: JSONValue] {
        var byAccessor: [JSONValue] = []
        var total = 0
        let now = tokens.now()
        let mounts = router.withLock { $0.mounts }
        for accessorDir in try await rootView.list(prefix: Self.lockedUsersPrefix) where accessorDir.hasSuffix("/") {
            let accessor = String(accessorDir.dropLast())
            let duration = mounts.first { $0.entry.accessor == accessor }?.entry.config.effectiveLockout.duration ?? 900
            var aliases: [String] = []
            for hex in try await rootView.list(prefix: Self.lockedUsersPrefix + accessorDir) {
                guard let record = try await rootView.getJSON(Self.lockedUsersPrefix + accessorDir + hex),
                      let since = record["locked_at"]?.intValue, now - since < Int64(duration),
                      let bytes = Hex.decode(hex) else { continue }
                aliases.append(String(decoding: bytes, as: UTF8.self))
            }
            guard !aliases.isEmpty else { continue }
            total += aliases.count
            byAccessor.append(["mount_accessor": .string(accessor), "counts": .int(Int64(aliases.count)), "alias_identifiers": .array(aliases.sorted().map { .string($0) })])
        }
        let entry: JSONValue = [
            "namespace_id": .string(id), "namespace_path": .string(path), "counts": .int(Int64(total)),
            "mount_accessors": .array(byAccessor),
        ]
        return ["by_namespace": .array(total == 0 ? [] : [entry]), "total": .int(Int64(total))]
    }

    /// `sys/locked-users/:mount_accessor/unlock/:alias_identifier`.
    func unlockUser(accessor: String, alias: String) async throws {
        guard router.withLock({ $0.mounts.contains { $0.entry.accessor == accessor } }) else {
            throw CofferError.invalid("mount accessor \"\(accessor.prefix(64))\" not found")
        }
        let key = Self.lockoutKey(accessor: accessor, alias: alias)
        try await rootView.delete(Self.lockedUsersPrefix + key)
        _ = failedLogins.withLock { $0.removeValue(forKey: key) }
    }
}

extension SystemBackend {
    static let lockoutRoutes: [Route<SystemBackend>] = [
        Route("locked-users", operations: [.read: { b, _ in LogicalResponse(data: try await b.ns.lockedUsers()) }],
              summary: "Users locked out by too many failed logins."),
        Route("locked-users/:mount_accessor/unlock/*alias_identifier", fields: [Field("mount_accessor", .string), Field("alias_identifier", .string)],
              operations: [.update: { b, req in
                  let alias = req.fields.string("alias_identifier")
                  guard !alias.isEmpty else { throw CofferError.invalid("missing alias_identifier") }
                  try await b.ns.unlockUser(accessor: req.fields.string("mount_accessor"), alias: alias)
                  return nil
              }], summary: "Unlock a locked user."),
    ]
}
