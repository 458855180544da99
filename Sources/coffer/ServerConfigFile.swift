import CofferSDK
import Foundation
import Gateway
import TenantCore

/// The server configuration file: Vault's format, in HCL or JSON.
struct ServerConfigFile {
    var storageType = "inmem"
    var storageOptions: [String: JSONValue] = [:]
    var listeners: [ListenerConfiguration] = []
    var defaultLeaseTTL = 2_764_800
    var maxLeaseTTL = 2_764_800
    var apiAddr = ""
    var clusterAddr = ""
    var clusterName = ""
    var logLevel: String?
    var logFormat: String?
    var namespaceIdleTimeout = 300
    /// `quota_store "redis" { ... }`: where rate-limit buckets live (nil: in process).
    var quotaStore: RedisQuotaConfiguration?
    var quotaFailureMode = QuotaFailureMode.open
    /// How often usage counters are flushed into storage.
    var usageFlushInterval = 60
    /// Namespaces with their own Prometheus series (the rest are summed as "other").
    var usageMetricsTopNamespaces = 20
    /// `allow_plaintext_api = true`: a non-dev server may serve the API without TLS
    /// (`tls_disable`), with a warning at start. Without it such a server refuses to start.
    var allowPlaintextAPI = false
    /// `database_allowed_hosts` / `database_denied_cidrs`: where database connections of
    /// tenant namespaces may go (`OutboundPolicy`).
    var tenantOutbound = OutboundPolicy.defaultTenant
    /// `seal "pkcs11" { ... }` / `seal "awskms" { ... }` (nil: Shamir).
    var seal: (type: String, options: [String: JSONValue])?
    /// A `seal` stanza with `disabled = true`: the seal a migration starts from.
    var disabledSeal: (type: String, options: [String: JSONValue])?
    var warnings: [String] = []

    static let knownKeys: Set<String> = [
        "storage", "backend", "listener", "default_lease_ttl", "max_lease_ttl", "api_addr", "cluster_addr", "cluster_name",
        "disable_mlock", "ui", "log_level", "log_format", "pid_file", "disable_cache", "plugin_directory", "telemetry",
        "seal", "ha_storage", "raw_storage_endpoint", "namespace_idle_timeout", "introspection_endpoint", "disable_clustering", "default_max_request_duration",
        "quota_store", "usage_flush_interval", "usage_metrics_top_namespaces", "allow_plaintext_api",
        "database_allowed_hosts", "database_denied_cidrs",
    ]

    static func load(path: String) throws -> ServerConfigFile {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CofferError.invalid("cannot read config file \(path)")
        }
        return try parse(text)
    }

    static func duration(_ v: JSONValue?, _ name: String) throws -> Int? {
        guard let v else { return nil }
        if let i = v.intValue { return Int(i) }
        if let s = v.stringValue, let secs = CofferSDK.GoDuration.parseSeconds(s) { return Int(secs) }
        throw CofferError.invalid("config: \(name) must be a duration")
    }

    static func parse(_ text: String) throws -> ServerConfigFile {
        var cfg = ServerConfigFile()
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let body: HCLBody
        if trimmed.hasPrefix("{") {
            body = try jsonBody(JSONValue.parse(trimmed))
        } else {
            body = try HCL.parseBody(text)
        }
        for a in body.attributes where !knownKeys.contains(a.name) { cfg.warnings.append("unknown config key \"\(a.name)\" ignored") }
        for b in body.blocks where !knownKeys.contains(b.type) { cfg.warnings.append("unknown config block \"\(b.type)\" ignored") }
        let storageBlocks = body.blocks(ofType: "storage") + body.blocks(ofType: "backend")
        guard storageBlocks.count <= 1 else { throw CofferError.invalid("config: only one storage block is allowed") }
        if let s = storageBlocks.first {
            guard let t = s.labels.first else { throw CofferError.invalid("config: storage block needs a type label") }
            cfg.storageType = t
            cfg.storageOptions = s.body.asJSON().objectValue ?? [:]
        }
        for l in body.blocks(ofType: "listener") {
            guard l.labels.first == "tcp" else { throw CofferError.invalid("config: only listener \"tcp\" is supported") }
            let o = l.body.asJSON()
            let address = o["address"]?.stringValue ?? "127.0.0.1:8200"
            let disable = o["tls_disable"].map { $0.boolValue ?? ($0.stringValue == "true" || $0.intValue == 1) } ?? false
            var listener = try ListenerConfiguration(address: address, tlsDisable: disable, tlsCertFile: o["tls_cert_file"]?.stringValue, tlsKeyFile: o["tls_key_file"]?.stringValue)
            if let c = o["cluster_address"]?.stringValue, !c.isEmpty {
                _ = try ListenerConfiguration(address: c, tlsDisable: false)
                listener.clusterAddress = c
            }
            let telemetry = o["telemetry"]?.objectValue ?? [:]
            let unauth = telemetry["unauthenticated_metrics_access"]
            listener.unauthenticatedMetricsAccess = unauth?.boolValue ?? (unauth?.stringValue == "true")
            if let xff = o["x_forwarded_for_authorized_addrs"] {
                let items = xff.arrayValue?.compactMap(\.stringValue) ?? (xff.stringValue ?? "").split(separator: ",").map(String.init)
                listener.forwardedForAuthorized = try items.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.map { try AddressRange($0) }
            }
            cfg.listeners.append(listener)
        }
        func isDisabled(_ b: HCLBlock) -> Bool {
            let d = b.body.asJSON()["disabled"]
            return d?.boolValue ?? (d?.stringValue == "true")
        }
        let allSeals = body.blocks(ofType: "seal")
        let sealBlocks = allSeals.filter { !isDisabled($0) }
        let disabledBlocks = allSeals.filter(isDisabled)
        guard sealBlocks.count <= 1 else { throw CofferError.invalid("config: only one enabled seal block is allowed") }
        guard disabledBlocks.count <= 1 else { throw CofferError.invalid("config: only one disabled seal block (the seal a migration starts from) is allowed") }
        func parseSeal(_ b: HCLBlock) throws -> (type: String, options: [String: JSONValue])? {
            guard let t = b.labels.first else { throw CofferError.invalid("config: seal block needs a type label") }
            switch t {
            case "shamir": return nil
            case "pkcs11", "awskms": return (t, b.body.asJSON().objectValue ?? [:])
            default: throw CofferError.invalid("config: unknown seal type \"\(t)\" (supported: shamir, pkcs11, awskms)")
            }
        }
        if let b = sealBlocks.first { cfg.seal = try parseSeal(b) }
        if let b = disabledBlocks.first { cfg.disabledSeal = try parseSeal(b) }
        if let d = cfg.disabledSeal, let e = cfg.seal, d.type == e.type {
            throw CofferError.invalid("config: the disabled seal and the enabled seal are both \(d.type) (a migration goes between two kinds of seal)")
        }
        let quotaBlocks = body.blocks(ofType: "quota_store")
        guard quotaBlocks.count <= 1 else { throw CofferError.invalid("config: only one quota_store block is allowed") }
        if let q = quotaBlocks.first {
            guard q.labels.first == "redis" else { throw CofferError.invalid("config: quota_store type must be \"redis\"") }
            (cfg.quotaStore, cfg.quotaFailureMode) = try quotaStore(q.body.asJSON().objectValue ?? [:])
        }
        if let v = try duration(body.attribute("default_lease_ttl"), "default_lease_ttl") { cfg.defaultLeaseTTL = v }
        if let v = try duration(body.attribute("max_lease_ttl"), "max_lease_ttl") { cfg.maxLeaseTTL = v }
        if cfg.defaultLeaseTTL > cfg.maxLeaseTTL { throw CofferError.invalid("config: default_lease_ttl cannot exceed max_lease_ttl") }
        cfg.apiAddr = body.attribute("api_addr")?.stringValue ?? ""
        cfg.clusterAddr = body.attribute("cluster_addr")?.stringValue ?? ""
        cfg.clusterName = body.attribute("cluster_name")?.stringValue ?? ""
        cfg.logLevel = body.attribute("log_level")?.stringValue
        cfg.logFormat = body.attribute("log_format")?.stringValue
        func stringList(_ name: String) throws -> [String]? {
            guard let v = body.attribute(name) else { return nil }
            if let s = v.stringValue { return s.split(separator: ",").map(String.init) }
            guard let items = v.arrayValue?.map(\.stringValue), !items.contains(nil) else {
                throw CofferError.invalid("config: \(name) must be a list of strings")
            }
            return items.compactMap { $0 }
        }
        let allowed = try stringList("database_allowed_hosts") ?? []
        let denied = try stringList("database_denied_cidrs") ?? OutboundPolicy.defaultDeniedCIDRs
        do {
            cfg.tenantOutbound = try .tenant(allowed: allowed, denied: denied)
        } catch let e as CofferError {
            throw CofferError.invalid("config: database_denied_cidrs: \(e.message)")
        }
        if let v = body.attribute("allow_plaintext_api") {
            guard let b = v.boolValue ?? (v.stringValue == "true" ? true : v.stringValue == "false" ? false : nil) else {
                throw CofferError.invalid("config: allow_plaintext_api must be true or false")
            }
            cfg.allowPlaintextAPI = b
        }
        if let v = try duration(body.attribute("usage_flush_interval"), "usage_flush_interval") {
            guard (1...3600).contains(v) else { throw CofferError.invalid("config: usage_flush_interval must be between 1s and 1h") }
            cfg.usageFlushInterval = v
        }
        if let v = body.attribute("usage_metrics_top_namespaces") {
            guard let n = v.intValue, (0...1000).contains(n) else {
                throw CofferError.invalid("config: usage_metrics_top_namespaces must be an integer 0...1000")
            }
            cfg.usageMetricsTopNamespaces = Int(n)
        }
        if let v = try duration(body.attribute("namespace_idle_timeout"), "namespace_idle_timeout") {
            guard v >= 1 else { throw CofferError.invalid("config: namespace_idle_timeout must be at least 1s") }
            cfg.namespaceIdleTimeout = v
        }
        return cfg
    }

    /// `quota_store "redis" { address, password, db, pool_size, timeout, failure_mode }`.
    static func quotaStore(_ o: [String: JSONValue]) throws -> (RedisQuotaConfiguration, QuotaFailureMode) {
        guard let address = o["address"]?.stringValue, !address.isEmpty else {
            throw CofferError.invalid("config: quota_store \"redis\" needs an address (host:port)")
        }
        func int(_ name: String, _ dflt: Int) throws -> Int {
            guard let v = o[name] else { return dflt }
            if let i = v.intValue { return Int(i) }
            if let s = v.stringValue, let i = Int(s) { return i }
            throw CofferError.invalid("config: quota_store \(name) must be an integer")
        }
        let db = try int("db", 0), pool = try int("pool_size", 4)
        guard db >= 0, (1...256).contains(pool) else { throw CofferError.invalid("config: quota_store db must be >= 0 and pool_size 1...256") }
        var timeout = 1.0
        if let t = o["timeout"] {
            if let d = t.doubleValue, t.stringValue == nil { timeout = d }
            else if let s = t.stringValue, let secs = CofferSDK.GoDuration.parseSeconds(s) { timeout = Double(secs) }
            else if let s = t.stringValue, s.hasSuffix("ms"), let ms = Double(s.dropLast(2)) { timeout = ms / 1000 }
            else { throw CofferError.invalid("config: quota_store timeout must be a duration") }
        }
        guard timeout > 0 && timeout <= 60 else { throw CofferError.invalid("config: quota_store timeout must be within (0, 60s]") }
        let modeText = o["failure_mode"]?.stringValue ?? "open"
        guard let mode = QuotaFailureMode(rawValue: modeText) else {
            throw CofferError.invalid("config: quota_store failure_mode must be \"open\" or \"closed\"")
        }
        return (RedisQuotaConfiguration(address: address, password: o["password"]?.stringValue, db: db, poolSize: pool, timeout: timeout), mode)
    }

    /// Vault's JSON config form: `{"storage": {"sqlite": {...}}, "listener": [{"tcp": {...}}]}`.
    static func jsonBody(_ v: JSONValue) throws -> HCLBody {
        guard let o = v.objectValue else { throw CofferError.invalid("config: JSON config must be an object") }
        var body = HCLBody(attributes: [], blocks: [])
        for (k, value) in o {
            if k == "storage" || k == "backend" || k == "listener" || k == "seal" || k == "ha_storage" || k == "quota_store" {
                let items = value.arrayValue ?? [value]
                for item in items {
                    for (label, inner) in item.objectValue ?? [:] {
                        body.blocks.append(HCLBlock(type: k, labels: [label], body: HCLBody(attributes: (inner.objectValue ?? [:]).map { ($0.key, $0.value) }, blocks: [])))
                    }
                }
            } else {
                body.attributes.append((k, value))
            }
        }
        return body
    }
}
