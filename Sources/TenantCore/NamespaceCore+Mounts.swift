import CofferSDK
import Foundation
import Logging
import Synchronization

extension NamespaceCore {
    // MARK: mount management (used by sys/)

    public func mounts(kind: MountedBackend.Kind) -> [MountedBackend] {
        router.withLock { r in r.mounts.filter { $0.kind == kind || (kind == .secret && $0.kind == .system) } }
    }

    public func enableMount(path rawPath: String, type rawType: String, description: String, config: MountConfig, options: [String: String], local: Bool, sealWrap: Bool, kind: MountedBackend.Kind) async throws {
        let trimmed = rawPath.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !trimmed.isEmpty else { throw CofferError.invalid("path cannot be empty") }
        guard !trimmed.contains("..") && !trimmed.contains("//") && trimmed.count <= 256 else { throw CofferError.invalid("invalid mount path") }
        let path = trimmed + "/"
        let (type, opts) = EngineCatalog.canonical(type: rawType, options: options)
        guard !type.isEmpty else { throw CofferError.invalid("backend type must be specified as a string") }
        if kind == .secret {
            for reserved in ["sys/", "auth/", "cubbyhole/", "identity/"] where path.hasPrefix(reserved) {
                throw CofferError.invalid("cannot mount under reserved path \"\(reserved)\"")
            }
        } else if path == "token/" {
            throw CofferError.invalid("token credential backend cannot be instantiated")
        }
        let factories = kind == .auth ? catalog.auth : catalog.secrets
        guard factories[type] != nil else {
            throw CofferError.invalid(kind == .auth ? "unknown auth method type: \(type)" : "plugin not found in the catalog: \(type)")
        }
        let routePath = kind == .auth ? "auth/" + path : path
        if kind == .secret, let first = path.split(separator: "/").first, try await child(String(first)) != nil {
            throw CofferError.invalid("path is already in use by namespace \"\(self.path)\(first)/\"")
        }
        try await mountLock.withLock {
            if let c = router.withLock({ $0.conflicts(routePath) }) {
                throw CofferError.invalid("path is already in use at \(c)")
            }
            let entry = MountEntry(path: path, type: type, description: description, options: opts, config: config, local: local, sealWrap: sealWrap, accessorPrefix: kind == .auth ? "auth_\(type)" : type)
            try await instantiate(entry, kind: kind)
            let table = kind == .auth ? Self.authTable : Self.secretTable
            var entries = try await mountTable(table)
            entries.append(entry)
            try await rootView.putCodable(table, entries)
        }
    }

    public func disableMount(path rawPath: String, kind: MountedBackend.Kind) async throws {
        let path = rawPath.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        let table = kind == .auth ? Self.authTable : Self.secretTable
        if kind == .secret, path == "sys/" || path == "cubbyhole/" || path == "identity/" {
            throw CofferError.invalid("cannot unmount \"\(path)\"")
        }
        if kind == .auth, path == "token/" { throw CofferError.invalid("token credential backend cannot be disabled") }
        let routePath = kind == .auth ? "auth/" + path : path
        // As Vault: the mount's leases are revoked first, and a failure stops the unmount.
        // It takes no request meanwhile (a lease made now would outlive it), and a lease
        // whose request was already past the router sees it closing and is undone.
        if let leases = node?.leases, leasingBackend(routePath: routePath, accessor: router.withLock({ r in r.mounts.first { $0.routePath == routePath }?.entry.accessor }) ?? "") != nil {
            router.withLock { $0.setClosing(true, routePath: routePath) }
            do {
                _ = try await leases.revokeAll(self, prefix: routePath)
            } catch {
                router.withLock { $0.setClosing(false, routePath: routePath) }
                throw error
            }
        }
        try await mountLock.withLock {
            var entries = try await mountTable(table)
            guard let entry = entries.first(where: { $0.path == path }) else { return }
            entries.removeAll { $0.path == path }
            try await rootView.putCodable(table, entries)
            let gone = router.withLock { r in
                defer { r.remove(routePath: routePath) }
                return r.mounts.first { $0.routePath == routePath }
            }
            if let gone { await teardown(gone) }
            let prefix = kind == .auth ? "auth/\(entry.uuid)/" : "logical/\(entry.uuid)/"
            try await rootView.sub(prefix).deleteTree()
        }
    }

    public func tuneMount(path rawPath: String, kind: MountedBackend.Kind, apply: @Sendable (inout MountEntry) throws -> Void) async throws {
        let path = rawPath.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        let table = kind == .auth ? Self.authTable : Self.secretTable
        try await mountLock.withLock {
            var entries = try await mountTable(table)
            guard let i = entries.firstIndex(where: { $0.path == path }) else {
                // Built-in mounts (token/, sys/) are not in the table: their tunables are kept
                // in a record of their own and only change what they report.
                let routePath = kind == .auth ? "auth/" + path : path
                guard var m = router.withLock({ r in r.mounts.first { $0.routePath == routePath } }) else {
                    throw CofferError.invalid("no mount at \(path)")
                }
                try apply(&m.entry)
                var tuned = try await rootView.getCodable([String: MountEntry].self, Self.builtinTable) ?? [:]
                tuned[routePath] = m.entry
                try await rootView.putCodable(Self.builtinTable, tuned)
                let updated = m
                router.withLock { $0.add(updated) }
                return
            }
            let before = entries[i]
            try apply(&entries[i])
            try await rootView.putCodable(table, entries)
            if before.options != entries[i].options || before.config.defaultLeaseTTL != entries[i].config.defaultLeaseTTL || before.config.maxLeaseTTL != entries[i].config.maxLeaseTTL {
                try await instantiate(entries[i], kind: kind)
            } else {
                let updated = entries[i]
                router.withLock { r in
                    let routePath = kind == .auth ? "auth/" + path : path
                    if var m = r.route(routePath), m.routePath == routePath {
                        m.entry = updated
                        r.add(m)
                    }
                }
            }
        }
    }

    public func remount(from: String, to: String) async throws {
        var srcPath = from.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        var dstPath = to.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        var kindValue = MountedBackend.Kind.secret
        if srcPath.hasPrefix("auth/") {
            guard dstPath.hasPrefix("auth/") else { throw CofferError.invalid("cannot move an auth mount to a secrets path") }
            kindValue = .auth
            srcPath.removeFirst(5)
            dstPath.removeFirst(5)
        }
        let src = srcPath, dst = dstPath, kind = kindValue
        guard dst.count > 1, !dst.contains("..") else { throw CofferError.invalid("invalid destination path") }
        let table = kind == .auth ? Self.authTable : Self.secretTable
        try await mountLock.withLock {
            var entries = try await mountTable(table)
            guard let i = entries.firstIndex(where: { $0.path == src }) else {
                throw CofferError.invalid("no secret engine mount at \(src)")
            }
            let dstRoute = kind == .auth ? "auth/" + dst : dst
            if kind == .secret {
                for reserved in ["sys/", "auth/", "cubbyhole/", "identity/"] where dst.hasPrefix(reserved) {
                    throw CofferError.invalid("cannot remount to reserved path \"\(reserved)\"")
                }
            }
            let srcRoute = kind == .auth ? "auth/" + src : src
            if let c = router.withLock({ r in r.mounts.first { $0.routePath != srcRoute && (dstRoute.hasPrefix($0.routePath) || $0.routePath.hasPrefix(dstRoute)) }?.routePath }) {
                throw CofferError.invalid("path already in use at \(c)")
            }
            entries[i].path = dst
            try await rootView.putCodable(table, entries)
            router.withLock { r in
                if var m = r.mounts.first(where: { $0.routePath == srcRoute }) {
                    r.remove(routePath: srcRoute)
                    m.entry.path = dst
                    m.routePath = dstRoute
                    r.add(m)
                }
            }
        }
    }
}
