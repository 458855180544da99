import Metrics
import Prometheus
import TenantCore

/// Renders the Prometheus registry, refreshing the gauges that are cheaper to compute at
/// scrape time than to maintain (seal state, token count) and the build info.
struct MetricsExporter: Sendable {
    let registry: PrometheusCollectorRegistry
    let core: Core
    let unsealed: Metrics.Gauge
    let tokens: Metrics.Gauge
    let buildInfo: Metrics.Gauge
    let topNamespaces: Int

    init(registry: PrometheusCollectorRegistry, core: Core, version: String, topNamespaces: Int) {
        self.registry = registry
        self.topNamespaces = topNamespaces
        self.core = core
        unsealed = Metrics.Gauge(label: "coffer_core_unsealed")
        tokens = Metrics.Gauge(label: "coffer_token_count")
        buildInfo = Metrics.Gauge(label: "coffer_build_info", dimensions: [("version", version)])
    }

    func render() async -> String {
        buildInfo.record(1)
        unsealed.record(core.isSealed ? 0 : 1)
        if let ns = try? core.root(), let n = try? await ns.tokens.count() {
            tokens.record(n)
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self) + core.usage.prometheusText(top: topNamespaces)
    }
}
