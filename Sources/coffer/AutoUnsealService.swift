import CofferSDK
import Logging
import ServiceLifecycle
import TenantCore

/// With an auto seal, the node unseals itself: at start, and whenever it finds itself
/// sealed while the seal is reachable (not after `sys/seal`, which holds until a restart
/// or a quorum of recovery shares). A failure is logged and kept for `sys/seal-status`,
/// and retried with backoff (1 s doubling to 30 s); the node stays sealed meanwhile.
struct AutoUnsealService: Service {
    let core: Core
    let seal: any AutoSeal
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var backoff = 1.0
            while !Task.isCancelled {
                var wait = 1.0
                do {
                    if try await core.autoUnseal() {
                        logger.info("unsealed by the auto seal", metadata: ["seal": "\(seal.type)"])
                    }
                    backoff = 1
                } catch let e as CofferError {
                    logger.error("auto-unseal failed; the node stays sealed", metadata: ["seal": "\(seal.type)", "error": "\(e.message)", "retry_in_s": "\(Int(backoff))"])
                    wait = backoff
                    backoff = min(backoff * 2, 30)
                } catch {
                    logger.error("auto-unseal failed; the node stays sealed", metadata: ["seal": "\(seal.type)", "error": "\(error)", "retry_in_s": "\(Int(backoff))"])
                    wait = backoff
                    backoff = min(backoff * 2, 30)
                }
                try? await Task.sleep(for: .seconds(wait))
            }
        }
        await seal.close()
    }
}
