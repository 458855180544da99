import CofferSDK
import Testing

@testable import Replication
@testable import TenantCore

/// The HA campaign's transitions, without etcd or clocks.
@Suite struct HAStateMachineTests {
    static let t0 = ContinuousClock.now
    static func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int(seconds * 1000)) }
    static func advert(_ node: String) -> LeaderAdvertisement {
        LeaderAdvertisement(nodeID: node, apiAddr: "http://\(node)", clusterAddr: "https://\(node)", session: "s", since: 0)
    }

    func machine() -> HAStateMachine {
        HAStateMachine(nodeID: "me", pollInterval: .milliseconds(250), lockTTL: .seconds(3), stepDownHold: .seconds(10))
    }

    /// A machine that holds lease 7 and is active since t0.
    func active() -> HAStateMachine {
        var m = machine()
        _ = m.start()
        _ = m.handle(.lockHolder(nil, held: false))
        _ = m.handle(.acquired(lease: 7, now: Self.t0))
        _ = m.handle(.activated(now: Self.t0))
        return m
    }

    @Test func aFreeLockIsAcquiredAndRenewedEveryThirdOfTheTTL() {
        var m = machine()
        #expect(m.start() == [.readLock])
        #expect(m.handle(.lockHolder(nil, held: false)) == [.acquire])
        #expect(m.handle(.acquired(lease: 7, now: Self.t0)) == [.activate(lease: 7)])
        #expect(m.handle(.activated(now: Self.t0)) == [.wait(.seconds(1))])
        #expect(m.state == .active(lease: 7, lastRenewal: Self.t0))
        #expect(m.handle(.tick(now: Self.at(1))) == [.renew(lease: 7)])
        #expect(m.handle(.renewed(now: Self.at(1))) == [.wait(.seconds(1))])
        #expect(m.state == .active(lease: 7, lastRenewal: Self.at(1)))
    }

    @Test func aLockHeldByAnotherNodeIsFollowedNotTaken() {
        var m = machine()
        _ = m.start()
        let other = Self.advert("other")
        #expect(m.handle(.lockHolder(other, held: true)) == [.setLeader(other), .follow(.milliseconds(250))])
        #expect(m.state == .standby)
        #expect(m.handle(.tick(now: Self.at(0.25))) == [.readLock])
        // An advertisement that does not read is still a holder.
        #expect(m.handle(.lockHolder(nil, held: true)) == [.setLeader(nil), .follow(.milliseconds(250))])
        // This node's own earlier term (a restart within the TTL): try to take it back.
        #expect(m.handle(.lockHolder(Self.advert("me"), held: true)) == [.acquire])
        // Someone was faster.
        #expect(m.handle(.heldBy(other)) == [.setLeader(other), .follow(.milliseconds(250))])
        #expect(m.state == .standby)
    }

    @Test func renewalFailuresStopWritesAfterTwoThirdsOfTheTTL() {
        var m = active()
        #expect(m.handle(.renewalFailed(now: Self.at(1))) == [.wait(.seconds(1))])
        #expect(m.handle(.renewalFailed(now: Self.at(1.9))) == [.wait(.seconds(1))])
        // 2.1 s without a renewal, over 2/3 of 3 s: the lease may be gone; stop writing.
        #expect(m.handle(.renewalFailed(now: Self.at(2.1))) == [.closeGate, .demote, .readLock])
        #expect(m.state == .standby)
    }

    @Test func aLostLeaseDemotesAtOnce() {
        var m = active()
        #expect(m.handle(.leaseGone) == [.closeGate, .demote, .readLock])
        #expect(m.state == .standby)
    }

    @Test func stepDownReleasesThenHoldsOffUntilAnotherNodeIsActive() {
        var m = active()
        #expect(m.handle(.stepDownRequested(now: Self.at(1))) == [.closeGate, .release(lease: 7), .demote, .setLeader(nil), .follow(.milliseconds(250))])
        #expect(m.state == .holdingOff(until: Self.at(11)))
        // While holding off, a free lock is not taken.
        #expect(m.handle(.tick(now: Self.at(1.25))) == [.readLock])
        #expect(m.handle(.lockHolder(nil, held: false)) == [.setLeader(nil), .follow(.milliseconds(250))])
        #expect(m.state == .holdingOff(until: Self.at(11)))
        // Another node took over: back to a plain standby.
        let other = Self.advert("other")
        _ = m.handle(.tick(now: Self.at(1.5)))
        #expect(m.handle(.lockHolder(other, held: true)) == [.setLeader(other), .follow(.milliseconds(250))])
        #expect(m.state == .standby)
    }

    @Test func theHoldEndsAfterItsTimeWithNobodyActive() {
        var m = active()
        _ = m.handle(.stepDownRequested(now: Self.at(1)))
        #expect(m.handle(.tick(now: Self.at(11))) == [.readLock])
        #expect(m.state == .standby)
        #expect(m.handle(.lockHolder(nil, held: false)) == [.acquire])
    }

    @Test func shutdownGivesTheLockBackAndStops() {
        var m = active()
        #expect(m.handle(.shutdown) == [.closeGate, .release(lease: 7)])
        #expect(m.state == .stopped)
        #expect(m.handle(.tick(now: Self.at(2))) == [])
        var s = machine()
        _ = s.start()
        #expect(s.handle(.shutdown) == [])
        #expect(s.state == .stopped)
    }

    @Test func failedActivationGivesTheLockBackAndCampaignsLater() {
        var m = machine()
        _ = m.start()
        _ = m.handle(.lockHolder(nil, held: false))
        _ = m.handle(.acquired(lease: 9, now: Self.t0))
        #expect(m.handle(.activationFailed) == [.release(lease: 9), .demote, .wait(.seconds(1))])
        #expect(m.state == .standby)
        _ = m.handle(.tick(now: Self.at(1)))
        _ = m.handle(.lockHolder(nil, held: false))
        _ = m.handle(.acquired(lease: 10, now: Self.at(1)))
        #expect(m.handle(.foreignKeyring) == [.closeGate, .release(lease: 10), .demote, .seal])
        #expect(m.state == .stopped)
    }

    @Test func storageOutagesRetryAtThePollInterval() {
        var m = machine()
        _ = m.start()
        #expect(m.handle(.storageFailed) == [.wait(.milliseconds(250))])
        _ = m.handle(.tick(now: Self.at(0.25)))
        _ = m.handle(.lockHolder(nil, held: false))
        #expect(m.state == .acquiring)
        #expect(m.handle(.storageFailed) == [.wait(.milliseconds(250))])
        #expect(m.state == .standby)
        // A step-down request to a standby changes nothing.
        #expect(m.handle(.stepDownRequested(now: Self.at(1))) == [.wait(.milliseconds(250))])
        #expect(m.state == .standby)
    }
}
