import ServiceLifecycle
import TenantCore

/// The last service to stop: the core's background work (lease expiry, engines' timers)
/// ends after the listener has drained and before the storage closes.
struct CoreWorkService: Service {
    let core: Core

    func run() async throws {
        try? await gracefulShutdown()
        await core.stopBackgroundWork()
    }
}
