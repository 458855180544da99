import CofferSDK
import Foundation
import Identity
import Synchronization

extension NamespaceCore {
    // MARK: logins

    /// Makes the token of a login: an auth method (userpass, AppRole…) answered an `auth`
    /// block without a token, naming the policies, metadata and token parameters of the
    /// identity it verified; the token is made here, in this namespace's store, as Vault's
    /// core does. Login tokens are orphans; their path is the login's request path.
    func issueLoginToken(_ auth: AuthInfo, mount: MountedBackend, requestPath: String) async throws -> (AuthInfo, [String]) {
        var policies = TokenParameters.policyList(auth.policies)
        if policies.contains("root") { throw CofferError.invalid("auth methods cannot create root tokens") }
        if !auth.noDefaultPolicy && !policies.contains("default") { policies.append("default") }
        policies.sort()
        guard ["batch", "default", "service", ""].contains(auth.tokenType) else {
            throw CofferError.invalid("invalid token type \"\(auth.tokenType.prefix(16))\"")
        }
        // The mount's token_type decides with the method's, as Vault's router does.
        let batch = mount.entry.config.loginTokenType(asked: auth.tokenType) == "batch"

        // TTLs as Vault's CalculateTTL: the method's TTL or the mount's default, under the
        // method's max TTL, the mount's and an explicit max.
        let mountDefault = mount.entry.config.defaultTTL(system: configuration.defaultLeaseTTL)
        let mountMax = mount.entry.config.maxTTL(system: configuration.maxLeaseTTL)
        var warnings: [String] = []
        var ttl: Int
        var maxTTL = mountMax
        if auth.period > 0 {
            ttl = auth.period
            if auth.explicitMaxTTL > 0 && ttl > auth.explicitMaxTTL { ttl = auth.explicitMaxTTL }
        } else {
            ttl = auth.ttl > 0 ? auth.ttl : mountDefault
            if auth.maxTTL > 0 && auth.maxTTL < maxTTL { maxTTL = auth.maxTTL }
            if auth.explicitMaxTTL > 0 && auth.explicitMaxTTL < maxTTL { maxTTL = auth.explicitMaxTTL }
            if maxTTL > 0 && ttl > maxTTL {
                warnings.append("TTL of \"\(GoDuration.format(ttl))\" exceeded the effective max_ttl of \"\(GoDuration.format(maxTTL))\"; TTL value is capped accordingly")
                ttl = maxTTL
            }
        }
        if ttl <= 0 { ttl = configuration.defaultLeaseTTL }

        // `userpass/` + `alice` → `userpass-alice`, as Vault names login tokens.
        var source = String(mount.routePath.dropFirst("auth/".count).map { $0 == "/" ? "-" : $0 })
        source += auth.displayName
        while source.hasSuffix("-") { source.removeLast() }

        let now = tokens.now()
        var template = TokenEntry(
            idHash: "", accessor: "", parentHash: "", policies: policies, meta: auth.metadata, displayName: source,
            numUses: max(0, auth.numUses), creationTime: now, creationTTL: ttl, expireTime: now + Int64(ttl),
            explicitMaxTTL: auth.explicitMaxTTL, period: auth.period, renewable: auth.renewable, orphan: true,
            path: requestPath, role: "", type: "service", entityID: auth.entityID, namespacePath: path, lastRenewalTime: 0)
        if !auth.boundCIDRs.isEmpty { template.boundCIDRs = auth.boundCIDRs }
        if auth.period == 0 { template.maxTTL = maxTTL }
        // A batch login writes nothing: the token is its own sealed entry.
        let (token, entry) = batch ? try tokens.makeBatch(template) : try await tokens.create(template)
        var issued = entry.authInfo(token: token)
        issued.leaseDuration = ttl
        if !auth.identityPolicies.isEmpty {
            issued.identityPolicies = auth.identityPolicies
            issued.policies = Self.union(policies, auth.identityPolicies).sorted()
        }
        return (issued, warnings)
    }

    /// A login token's renewal: the auth method that made it (its path names the mount) may
    /// refuse it. A token whose mount is gone renews as any token does.
    func checkLoginRenewal(_ e: TokenEntry) async throws {
        guard e.namespacePath == path, e.path.hasPrefix("auth/"), !e.path.hasPrefix("auth/token/"),
              let mount = router.withLock({ $0.route(e.path) }), mount.kind == .auth, let backend = mount.backend.backend else { return }
        try await backend.renewLogin(LoginRenewal(metadata: e.meta, policies: e.policies.filter { $0 != "default" }))
    }
}
