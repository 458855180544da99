import CofferSDK
import Foundation
import TenantCore

/// The HA campaign as a value: it is told what happened (an `Event`) and answers what to do
/// next (`Action`s), without I/O or clocks of its own, so every transition is tested
/// without etcd (`HAStateMachineTests`). `HAService` drives it: it runs each action,
/// turns its outcome into the next event, and does nothing the machine did not ask for.
///
/// A node is a standby that looks at the lock every poll interval; it tries to take the
/// lock only when it is free; once it holds it, it becomes active and renews the lease
/// every third of the TTL; it gives the lock up on step-down (then holds off for a while),
/// on shutdown, and when renewals have failed for two thirds of the TTL (the lease may be
/// gone: it must stop writing before another node can start).
struct HAStateMachine: Sendable {
    enum State: Equatable, Sendable {
        /// Following the active node; looking at the lock every poll interval.
        case standby
        /// Asked etcd for the lock.
        case acquiring
        /// Holding the lock, becoming active (reloading from storage).
        case activating(lease: Int64)
        /// Active: holding the lock, renewing it.
        case active(lease: Int64, lastRenewal: ContinuousClock.Instant)
        /// Stepped down: following, not campaigning, until `until` or another node is active.
        case holdingOff(until: ContinuousClock.Instant)
        /// Shut down or sealed for good: no more actions.
        case stopped
    }

    /// What the driver learned.
    enum Event: Sendable {
        /// The time to look at the lock came (after a poll interval or a renewal interval).
        case tick(now: ContinuousClock.Instant)
        /// The lock as read: `held` (by anyone), and the holder's advertisement when it reads.
        case lockHolder(LeaderAdvertisement?, held: Bool)
        case acquired(lease: Int64, now: ContinuousClock.Instant)
        case heldBy(LeaderAdvertisement?)
        case activated(now: ContinuousClock.Instant)
        /// Activation failed (storage unavailable, reload failed).
        case activationFailed
        case renewed(now: ContinuousClock.Instant)
        /// etcd answered that the lease no longer exists.
        case leaseGone
        case renewalFailed(now: ContinuousClock.Instant)
        case stepDownRequested(now: ContinuousClock.Instant)
        /// Seal or shutdown.
        case shutdown
        /// A storage call failed (etcd unreachable).
        case storageFailed
        /// Storage holds another cluster's keyring (a foreign snapshot was restored).
        case foreignKeyring
    }

    enum Action: Equatable, Sendable {
        /// Read the lock's holder; answer `.lockHolder`.
        case readLock
        /// Try to take the lock with this node's advertisement; answer `.acquired` or `.heldBy`.
        case acquire
        /// Fence storage to this term and become active; answer `.activated` or `.activationFailed`.
        case activate(lease: Int64)
        /// Renew the lease; answer `.renewed`, `.leaseGone` or `.renewalFailed`.
        case renew(lease: Int64)
        /// Give the lock back (no answer).
        case release(lease: Int64)
        /// Stop writing now (close the storage gate).
        case closeGate
        /// Active → standby: stop background work, reload caches (no answer).
        case demote
        /// Remember who is active (nil: nobody known).
        case setLeader(LeaderAdvertisement?)
        /// Seal the node (another cluster's keyring).
        case seal
        /// Follow the change feed for `duration`, then answer `.tick`.
        case follow(Duration)
        /// Wait `duration` (renewal interval, back-off), then answer `.tick`.
        case wait(Duration)
    }

    let nodeID: String
    let pollInterval: Duration
    let lockTTL: Duration
    let stepDownHold: Duration
    private(set) var state = State.standby

    init(nodeID: String, pollInterval: Duration, lockTTL: Duration, stepDownHold: Duration) {
        self.nodeID = nodeID
        self.pollInterval = pollInterval
        self.lockTTL = lockTTL
        self.stepDownHold = stepDownHold
    }

    /// The first actions of a campaign.
    mutating func start() -> [Action] {
        state = .standby
        return [.readLock]
    }

    var renewalInterval: Duration { lockTTL / 3 }

    mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.stopped, _):
            return []

        case (.active(let lease, _), .shutdown), (.activating(let lease), .shutdown):
            state = .stopped
            return [.closeGate, .release(lease: lease)]
        case (_, .shutdown):
            state = .stopped
            return []

        case (.active(let lease, _), .foreignKeyring), (.activating(let lease), .foreignKeyring):
            state = .stopped
            return [.closeGate, .release(lease: lease), .demote, .seal]
        case (_, .foreignKeyring):
            state = .stopped
            return [.seal]

        // Standby: look at the lock; take it only when it is free (or is our own stale term).
        case (.standby, .tick):
            return [.readLock]
        case (.standby, .lockHolder(let holder, let held)):
            // Held by another node (or by an advertisement that does not read): follow it.
            // Free, or held by this node's own earlier term: try to take it.
            if held && holder?.nodeID != nodeID { return [.setLeader(holder), .follow(pollInterval)] }
            state = .acquiring
            return [.acquire]
        case (.acquiring, .heldBy(let holder)):
            state = .standby
            return [.setLeader(holder), .follow(pollInterval)]
        case (.acquiring, .acquired(let lease, _)):
            state = .activating(lease: lease)
            return [.activate(lease: lease)]
        case (.activating(let lease), .activated(let now)):
            state = .active(lease: lease, lastRenewal: now)
            return [.wait(renewalInterval)]
        case (.activating(let lease), .activationFailed):
            state = .standby
            return [.release(lease: lease), .demote, .wait(.seconds(1))]

        // Active: renew every third of the TTL.
        case (.active(let lease, _), .tick):
            return [.renew(lease: lease)]
        case (.active(let lease, _), .renewed(let now)):
            state = .active(lease: lease, lastRenewal: now)
            return [.wait(renewalInterval)]
        case (.active, .leaseGone):
            state = .standby
            return [.closeGate, .demote, .readLock]
        case (.active(_, let last), .renewalFailed(let now)):
            // The lease may have expired: stop writing before another node can start.
            if now - last > lockTTL * 2 / 3 {
                state = .standby
                return [.closeGate, .demote, .readLock]
            }
            return [.wait(renewalInterval)]
        case (.active(let lease, _), .stepDownRequested(let now)):
            state = .holdingOff(until: now + stepDownHold)
            return [.closeGate, .release(lease: lease), .demote, .setLeader(nil), .follow(pollInterval)]

        // Stepped down: follow whoever is active; campaign again after the hold.
        case (.holdingOff(let until), .tick(let now)):
            if now >= until { state = .standby }
            return [.readLock]
        case (.holdingOff, .lockHolder(let holder, let held)):
            if held, let holder, holder.nodeID != nodeID {
                // Another node took over: the hold has done its job.
                state = .standby
            }
            return [.setLeader(holder), .follow(pollInterval)]

        case (.active, .storageFailed):
            return [.wait(renewalInterval)]
        case (.activating(let lease), .storageFailed):
            state = .standby
            return [.release(lease: lease), .demote, .wait(.seconds(1))]
        case (.acquiring, .storageFailed):
            state = .standby
            return [.wait(pollInterval)]
        case (.standby, .storageFailed), (.holdingOff, .storageFailed):
            return [.wait(pollInterval)]

        default:
            // Step-down of a node that is not active, or an answer that does not fit the
            // state: carry on from where it is at the next look.
            return [.wait(pollInterval)]
        }
    }
}
