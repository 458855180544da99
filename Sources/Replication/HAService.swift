import CofferSDK
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TenantCore
import Audit

/// The HA campaign of one node, as a ServiceLifecycle `Service`: it drives the
/// `HAStateMachine` (runs each action, turns its outcome into the next event) while the
/// core is unsealed — the core starts it at unseal and stops it at seal — follows the
/// change feed as a standby, and on SIGTERM (it is the first service to stop) hands the
/// lock over: the audit chain heads are stored while the node may still write, then an
/// active node steps down and gives its etcd lock back, so a standby takes over at its next
/// look instead of after the lock TTL.
public final class HAService: Service, HACampaign {
    weak let core: Core?
    let config: HAConfiguration
    let logger: Logger

    struct Tasks {
        var campaign: Task<Void, Never>?
        /// A standby's watch on the change feed, and when it was last seen lagging.
        var feed: Task<Void, Never>?
        var lastLagCheck: ContinuousClock.Instant?
        var laggingSince: (at: ContinuousClock.Instant, head: UInt64)?
    }
    let tasks = Mutex(Tasks())

    /// Makes `core` an HA cluster member campaigning through this service: after unseal it
    /// is a standby until it takes the lock. Call before the first unseal.
    public init(core: Core, config: HAConfiguration, logger: Logger) {
        self.core = core
        self.config = config
        self.logger = logger
        core.enableHA(config, campaign: self)
    }

    /// The service: idle until shutdown, then the handover.
    public func run() async throws {
        try? await gracefulShutdown()
        guard let core else { return }
        try? await core.audit.flushHeads()
        await core.handOver()
    }

    // MARK: HACampaign (called by the core)

    public func start() {
        let t = Task<Void, Never> { [weak self] in await self?.campaign() }
        tasks.withLock { $0.campaign = t }
    }

    public func stop() async {
        let t = tasks.withLock { s -> Task<Void, Never>? in
            defer { s.campaign = nil }
            return s.campaign
        }
        t?.cancel()
        await t?.value
        stopFeedWatcher()
    }

    // MARK: the campaign

    func campaign() async {
        guard let core else { return }
        var machine = HAStateMachine(
            nodeID: core.nodeID, pollInterval: config.pollInterval, lockTTL: .seconds(config.lockTTL), stepDownHold: config.stepDownHold)
        var pending = machine.start()
        var lastError = ContinuousClock.now - .seconds(60)
        var advertised: (advert: LeaderAdvertisement, bytes: [UInt8])?
        while !pending.isEmpty {
            let action = pending.removeFirst()
            if Task.isCancelled, machine.state != .stopped {
                pending = machine.handle(.shutdown)
                continue
            }
            guard let event = await perform(action, core, machine: machine, advertised: &advertised, lastError: &lastError) else { continue }
            let actions = machine.handle(event)
            switch event {
            case .foreignKeyring: logger.error("HA: storage holds another cluster's keyring; sealing")
            case .leaseGone: logger.error("HA: the lock's lease is gone; this node is no longer active")
            case .renewalFailed where actions.contains(.closeGate): logger.error("HA: cannot renew the lock; stepping down")
            default: break
            }
            pending += actions
        }
        if Task.isCancelled { config.gate.setOpen(false) }
    }

    /// Runs one action of the campaign; answers the event it produced (nil: none).
    func perform(
        _ action: HAStateMachine.Action, _ core: Core, machine: HAStateMachine,
        advertised: inout (advert: LeaderAdvertisement, bytes: [UInt8])?, lastError: inout ContinuousClock.Instant
    ) async -> HAStateMachine.Event? {
        do {
            switch action {
            case .readLock:
                guard let holder = try await config.lock.holder() else { return .lockHolder(nil, held: false) }
                return .lockHolder(LeaderAdvertisement.decoded(holder), held: true)
            case .acquire:
                let advert = LeaderAdvertisement(
                    nodeID: core.nodeID, apiAddr: config.apiAddress, clusterAddr: config.clusterAddress,
                    session: RandomID.secureUUID(), since: Date().timeIntervalSince1970)
                let bytes = Array(try StoredJSON.encoder.encode(advert))
                switch try await config.lock.acquire(value: bytes, ttlSeconds: config.lockTTL) {
                case .held(let holder):
                    return .heldBy(holder.flatMap(LeaderAdvertisement.decoded))
                case .acquired(let lease):
                    advertised = (advert, bytes)
                    return .acquired(lease: lease, now: .now)
                }
            case .activate:
                guard let advertised else { return .activationFailed }
                config.lock.fence(advertised.bytes)
                stopFeedWatcher()
                do {
                    try await core.activate(advertised.advert)
                    return .activated(now: .now)
                } catch is ForeignKeyring {
                    return .foreignKeyring
                } catch {
                    logger.error("could not become active; giving the lock back", metadata: ["error": "\(error)"])
                    return .activationFailed
                }
            case .renew(let lease):
                do {
                    return try await config.lock.keepAlive(lease: lease) ? .renewed(now: .now) : .leaseGone
                } catch {
                    if ContinuousClock.now - lastError > .seconds(10) {
                        logger.warning("HA: cannot renew the lock", metadata: ["error": "\(error)"])
                        lastError = .now
                    }
                    return .renewalFailed(now: .now)
                }
            case .release(let lease):
                // Outside this task: on seal or shutdown it is cancelled, and a cancelled
                // task's etcd call would be abandoned before it is sent.
                await Task { [config] in try? await config.lock.release(lease: lease) }.value
                logger.info("HA: lock released")
                return nil
            case .closeGate:
                config.gate.setOpen(false)
                return nil
            case .demote:
                if case .holdingOff = machine.state { logger.info("HA: stepping down") }
                await core.demote(config)
                return nil
            case .setLeader(let leader):
                core.setLeader(leader)
                return nil
            case .seal:
                core.sealForForeignKeyring()
                return nil
            case .follow:
                try await standbyTick(core)
                return .tick(now: .now)
            case .wait(let duration):
                // Short sleeps, so a step-down or a seal is acted on at once.
                let until = ContinuousClock.now + duration
                while ContinuousClock.now < until {
                    if case .active = machine.state, core.takeStepDownRequest() {
                        return .stepDownRequested(now: .now)
                    }
                    try await Task.sleep(for: min(.milliseconds(50), until - .now))
                }
                return .tick(now: .now)
            }
        } catch is CancellationError {
            return .shutdown
        } catch is ForeignKeyring {
            return .foreignKeyring
        } catch {
            if Task.isCancelled { return .shutdown }
            if ContinuousClock.now - lastError > .seconds(10) {
                logger.warning("HA: storage unavailable, retrying", metadata: ["error": "\(error)"])
                lastError = ContinuousClock.now
            }
            return .storageFailed
        }
    }

    // MARK: following the active node (a standby)

    /// One standby period: follow the change feed until the next look at the lock. A
    /// watcher task applies changes as they come and this only checks, once a second, that
    /// it is not falling behind (a member that stopped answering keeps a watch open but
    /// silent): a watcher behind for over a second is replaced.
    func standbyTick(_ core: Core) async throws {
        ensureFeedWatcher()
        try await Task.sleep(for: config.pollInterval)
        let now = ContinuousClock.now
        let due = tasks.withLock { s -> Bool in
            guard s.lastLagCheck.map({ now - $0 >= .seconds(1) }) ?? true else { return false }
            s.lastLagCheck = now
            return true
        }
        guard due else { return }
        let head = try await core.feedHead()
        let read = core.feedRevision
        let stale = tasks.withLock { s -> Bool in
            guard head > read else {
                s.laggingSince = nil
                return false
            }
            guard let lag = s.laggingSince else {
                s.laggingSince = (now, head)
                return false
            }
            // Still short of what was already written a second ago: the watch is stuck.
            return now - lag.at >= .seconds(1) && read < lag.head
        }
        if stale {
            logger.warning("HA: the change feed watch fell behind; reconnecting")
            stopFeedWatcher()
            tasks.withLock { $0.laggingSince = nil }
            try await core.followFeed()
            ensureFeedWatcher()
        }
    }

    func ensureFeedWatcher() {
        tasks.withLock { s in
            guard s.feed == nil else { return }
            s.feed = Task { [weak self] in await self?.watchFeed() }
        }
    }

    func stopFeedWatcher() {
        let t = tasks.withLock { s -> Task<Void, Never>? in
            defer { s.feed = nil }
            return s.feed
        }
        t?.cancel()
    }

    /// Applies the change feed as it comes (etcd's watch) while this node is a standby.
    func watchFeed() async {
        var lastError = ContinuousClock.now - .seconds(60)
        while !Task.isCancelled, let core, core.haRole == .standby {
            do {
                for try await item in config.feed.watchChanges(after: core.feedRevision) {
                    if Task.isCancelled { return }
                    switch item {
                    case .changes(let changes, _):
                        try await core.apply(changes)
                    case .compacted(let head):
                        logger.warning("HA: the change feed was compacted past this standby; reloading everything")
                        try await core.reloadEverything(feedAt: head)
                    }
                }
            } catch is ForeignKeyring {
                core.sealForForeignKeyring()
                return
            } catch {
                if Task.isCancelled { return }
                if ContinuousClock.now - lastError > .seconds(10) {
                    logger.warning("HA: change feed watch interrupted; resuming", metadata: ["error": "\(error)"])
                    lastError = ContinuousClock.now
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}
