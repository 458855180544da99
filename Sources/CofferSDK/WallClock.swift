import Foundation
import Synchronization

/// The time of day as the core sees it: seconds since 1970.
///
/// Token expiry, lease deadlines, lockout windows and secret-ID TTLs all read it, so a
/// test can move time by hand (`ManualClock`) instead of sleeping. Production uses
/// `.system`. Schedulers that sleep until a deadline wake at least every half second and
/// read the clock again, so a manual advance takes effect without waking them by hand.
public struct WallClock: Sendable {
    let read: @Sendable () -> Double

    public init(_ read: @escaping @Sendable () -> Double) { self.read = read }

    /// Seconds since 1970, with a fraction.
    public func now() -> Double { read() }

    /// Whole seconds since 1970 (token records keep whole seconds).
    public func seconds() -> Int64 { Int64(read().rounded(.down)) }

    public static let system = WallClock { Date().timeIntervalSince1970 }
}

/// A clock that moves only when told to: for tests.
public final class ManualClock: Sendable {
    let time: Mutex<Double>

    /// Starts at `start`, by default the current whole second (token records keep whole seconds).
    public init(start: Double = Date().timeIntervalSince1970.rounded(.down)) { time = Mutex(start) }

    public var clock: WallClock { WallClock { [self] in time.withLock { $0 } } }
    public var now: Double { time.withLock { $0 } }

    public func advance(by seconds: Double) { time.withLock { $0 += seconds } }
}
