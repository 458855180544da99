import CofferSDK
import Foundation

/// What the HTTP tier needs beyond the core: limits and the metrics exporter.
public struct GatewayConfiguration: Sendable {
    /// Request bodies above this size get 413.
    public var maxRequestSize: Int
    /// Snapshot uploads (`sys/storage/snapshot`) above this size get 413. A restore holds
    /// the snapshot in memory (about twice, while it is checked).
    public var maxSnapshotSize = 1 << 30
    /// The listener's `telemetry { unauthenticated_metrics_access = true }`.
    public var unauthenticatedMetricsAccess: Bool
    /// Renders every metric in the Prometheus text format.
    public var metricsExporter: @Sendable () async -> String
    /// Proxies whose `X-Forwarded-For` names the client.
    public var forwardedForAuthorized: [AddressRange] = []
    /// HA: how a standby reaches the active node (nil: not in a cluster).
    public var cluster: ClusterLink?
    /// This responder serves the cluster listener: requests come forwarded from a standby.
    public var clusterListener = false
    /// The address clients use for this node (`sys/ha-status` of a single node).
    public var apiAddress = ""
    /// Where rate-limit quotas draw their tokens (Redis or the in-process table; nil: no
    /// rate limiting).
    public var rateLimiter: (any RateLimiter)?

    public init(maxRequestSize: Int = 32 * 1024 * 1024, unauthenticatedMetricsAccess: Bool = false, metricsExporter: @escaping @Sendable () async -> String = { "" }) {
        self.maxRequestSize = maxRequestSize
        self.unauthenticatedMetricsAccess = unauthenticatedMetricsAccess
        self.metricsExporter = metricsExporter
    }
}

/// Turns Prometheus text into Vault's JSON metrics shape (`Gauges`, `Counters`, `Samples`).
enum PrometheusText {
    static func summary(_ text: String) -> JSONValue {
        var types: [String: String] = [:]
        var gauges: [JSONValue] = [], counters: [JSONValue] = [], samples: [JSONValue] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count >= 4 { types[String(parts[2])] = String(parts[3]) }
                continue
            }
            if line.hasPrefix("#") || line.isEmpty { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var name = String(series)
            var labels: [String: JSONValue] = [:]
            if let brace = series.firstIndex(of: "{") {
                name = String(series[..<brace])
                let inner = series[series.index(after: brace)...].dropLast()
                for pair in inner.split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { labels[String(kv[0])] = .string(String(kv[1]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
                }
            }
            let entry: JSONValue = ["Name": .string(name), "Value": .double(value), "Labels": .object(labels)]
            var base = name
            for suffix in ["_bucket", "_sum", "_count"] where base.hasSuffix(suffix) { base = String(base.dropLast(suffix.count)) }
            switch types[name] ?? types[base] {
            case "counter": counters.append(entry)
            case "gauge": gauges.append(entry)
            default: samples.append(entry)
            }
        }
        return ["Timestamp": .string(RFC3339.format(Date())), "Gauges": .array(gauges), "Counters": .array(counters), "Samples": .array(samples)]
    }
}
