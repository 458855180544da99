import CofferSDK
import Foundation
import Replication

/// `storage "etcd" { ... }` with Vault's keys.
struct EtcdOptions {
    var storage: EtcdStorageConfiguration
    var haEnabled: Bool
    /// The HA lock's lease TTL in seconds (`lock_timeout`).
    var lockTTL: Int

    static let known: Set<String> = [
        "address", "etcd_api", "path", "ha_enabled", "username", "password", "tls_ca_file", "tls_cert_file", "tls_key_file",
        "request_timeout", "lock_timeout", "sync", "max_receive_size", "discovery_srv", "max_request_bytes",
    ]

    static func parse(_ o: [String: JSONValue]) throws -> (EtcdOptions, warnings: [String]) {
        var warnings: [String] = []
        for key in o.keys.sorted() where !known.contains(key) { warnings.append("storage \"etcd\": unknown key \"\(key)\" ignored") }
        let env = ProcessInfo.processInfo.environment
        let address = o["address"]?.stringValue ?? env["ETCD_ADDR"] ?? "127.0.0.1:2379"
        let addresses = address.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !addresses.isEmpty else { throw CofferError.invalid("config: storage \"etcd\" needs an address") }
        if let api = o["etcd_api"]?.stringValue, api != "v3" {
            throw CofferError.invalid("config: storage \"etcd\": only etcd_api = \"v3\" is supported")
        }
        if o["discovery_srv"] != nil {
            throw CofferError.invalid("config: storage \"etcd\": discovery_srv is not supported; list the members in address")
        }
        var path = o["path"]?.stringValue ?? "/coffer/"
        if !path.hasSuffix("/") { path += "/" }
        func bool(_ key: String) throws -> Bool {
            guard let v = o[key] else { return false }
            if let b = v.boolValue { return b }
            if let s = v.stringValue?.lowercased(), ["true", "1", "false", "0"].contains(s) { return s == "true" || s == "1" }
            throw CofferError.invalid("config: storage \"etcd\": \(key) must be true or false")
        }
        func seconds(_ key: String, _ dflt: Double) throws -> Double {
            guard let v = o[key] else { return dflt }
            if let s = v.stringValue {
                if s.hasSuffix("ms"), let ms = Double(s.dropLast(2)) { return ms / 1000 }
                if let secs = CofferSDK.GoDuration.parseSeconds(s) { return Double(secs) }
            } else if let d = v.doubleValue {
                return d
            }
            throw CofferError.invalid("config: storage \"etcd\": \(key) must be a duration")
        }
        let requestTimeout = try seconds("request_timeout", 5)
        let lockTTL = try seconds("lock_timeout", 3)
        guard requestTimeout > 0, requestTimeout <= 300 else { throw CofferError.invalid("config: storage \"etcd\": request_timeout must be within (0, 300s]") }
        guard lockTTL >= 2, lockTTL <= 300 else { throw CofferError.invalid("config: storage \"etcd\": lock_timeout must be between 2s and 300s") }
        var storage = EtcdStorageConfiguration(
            addresses: addresses, prefix: path, requestTimeout: .milliseconds(Int(requestTimeout * 1000)),
            username: o["username"]?.stringValue ?? env["ETCD_USERNAME"], password: o["password"]?.stringValue ?? env["ETCD_PASSWORD"])
        storage.tlsCAFile = o["tls_ca_file"]?.stringValue
        storage.tlsCertFile = o["tls_cert_file"]?.stringValue
        storage.tlsKeyFile = o["tls_key_file"]?.stringValue
        if let v = o["max_request_bytes"] {
            guard let n = v.intValue ?? v.stringValue.flatMap({ Int64($0) }), n >= 65536 else {
                throw CofferError.invalid("config: storage \"etcd\": max_request_bytes must be an integer >= 65536")
            }
            storage.maxRequestBytes = Int(n)
        }
        return (EtcdOptions(storage: storage, haEnabled: try bool("ha_enabled"), lockTTL: Int(lockTTL.rounded(.up))), warnings)
    }
}
