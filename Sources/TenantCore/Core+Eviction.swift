import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

extension Core {
    // MARK: idle eviction

    func beginUse(_ path: String) {
        activity.withLock { u in
            u[path, default: Activity()].inFlight += 1
            u[path]!.lastUsed = .now
        }
    }

    func endUse(_ path: String) {
        activity.withLock { u in
            u[path, default: Activity()].inFlight -= 1
            u[path]!.lastUsed = .now
        }
    }

    /// How many child namespaces are loaded now.
    public var loadedNamespaceCount: Int { loaded.withLock { $0.count } }

    /// Drops loaded namespaces that have served no request for `idle` and have no request
    /// in flight and no loaded descendant (deepest first). They load again on next use;
    /// an idle namespace then costs only its record in its parent. Returns how many went.
    @discardableResult
    public func evictIdle(olderThan idle: Duration) async -> Int {
        (try? await namespaceLoadLock.withLock {
            let now = ContinuousClock.now
            var evicted = 0
            // A namespace stays while it is busy or a descendant stays; the ancestors of every
            // busy namespace are exactly those, so two linear passes (no sort of tens of
            // thousands of paths) decide.
            let paths = loaded.withLock { Array($0.keys) }
            let activityNow = activity.withLock { $0 }
            var busy: [String] = []
            var idlePaths: [String] = []
            for path in paths {
                let use = activityNow[path]
                if use.map({ $0.inFlight > 0 || now - $0.lastUsed < idle }) ?? false { busy.append(path) } else { idlePaths.append(path) }
            }
            var keptBelow: Set<Substring> = []
            for path in busy {
                var end = path.index(before: path.endIndex)
                while let slash = path[..<end].lastIndex(of: "/") {
                    guard keptBelow.insert(path[...slash]).inserted else { break }  // the rest are marked
                    end = slash
                }
            }
            let gone = idlePaths.filter { !keptBelow.contains(Substring($0)) }
            let dropped = loaded.withLock { l in gone.compactMap { l.removeValue(forKey: $0) } }
            for ns in dropped { await ns.teardownBackends() }
            activity.withLock { a in
                for path in gone where (a[path]?.inFlight ?? 0) == 0 { a[path] = nil }
            }
            evicted = gone.count
            return evicted
        }) ?? 0
    }

    func rotateNamespaceKeyring(path: String) async throws {
        let (pp, name) = try split("", path)
        try await namespaceLoadLock.withLock {
            guard let parent = try await namespace(path: pp), var record = try await parent.child(name),
                  let ns = try await namespace(path: path), let nsBarrier = ns.storage as? Barrier else {
                throw CofferError(.notFound, "namespace not found")
            }
            let rotated = try keyring(of: record).rotated()
            if var seal = record.seal {
                // Sealable: the rotated keyring is sealed again with the namespace root key.
                guard let rootKey = namespaceRootKeys.withLock({ $0[record.id] }) else {
                    throw CofferError(.sealed, "namespace is sealed")
                }
                seal.sealedKeyring = try Self.sealKeyring(rotated, rootKey: rootKey, id: record.id)
                record.seal = seal
            } else {
                record.keyring = rotated
            }
            try await parent.rootView.putCodable(NamespaceCore.childPrefix + name, record)
            let updated = record
            parent.setChild(name, updated)
            recordChanged()
            nsBarrier.install(rotated)
        }
    }

    func namespaceKeyStatus(path: String) async throws -> [String: JSONValue] {
        guard let ns = try await namespace(path: path), let nsBarrier = ns.storage as? Barrier,
              let ring = nsBarrier.keyring, let active = ring.terms.first(where: { $0.term == ring.activeTerm }) else {
            throw CofferError(.notFound, "namespace not found")
        }
        return ["term": .int(Int64(active.term)), "install_time": .string(RFC3339.format(active.installTime)), "encryptions": .int(nsBarrier.encryptions)]
    }
}
