/// Conversions and arithmetic for values that come from a request (or from stored
/// configuration a request wrote), which never trap.
///
/// A trap (`Int64(1e300)`, an overflowing `+` or `*`, a force unwrap, an index out of
/// range) kills the process and with it every tenant of the node. Every value a client can
/// choose goes through these helpers (or the declared field types of a `Route`, which
/// already bound them) before it meets arithmetic; a value they refuse is a 400.
public enum Checked {
    /// The longest duration Coffer accepts, in seconds: Go's `time.Duration` maximum
    /// (int64 nanoseconds, about 292 years), as Vault does. `now + duration` and
    /// `duration * 1000` can never overflow below it.
    public static let maxDurationSeconds: Int64 = 9_223_372_036

    /// The integer value of a double, or nil when it is not finite, not whole or out of
    /// Int64's range.
    public static func int64(exactly d: Double) -> Int64? {
        guard d.isFinite, d.rounded() == d, d >= -9.223_372_036_854_775e18, d <= 9.223_372_036_854_775e18 else { return nil }
        return Int64(exactly: d)
    }

    /// The double truncated towards zero, or nil when it is not finite or out of range.
    public static func int64(truncating d: Double) -> Int64? {
        guard d.isFinite else { return nil }
        let t = d.rounded(.towardZero)
        guard t >= -9.223_372_036_854_775e18, t <= 9.223_372_036_854_775e18 else { return nil }
        return Int64(exactly: t)
    }

    /// `a + b`, or nil on overflow.
    public static func add<T: FixedWidthInteger>(_ a: T, _ b: T) -> T? {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? nil : r
    }

    /// `a * b`, or nil on overflow.
    public static func multiply<T: FixedWidthInteger>(_ a: T, _ b: T) -> T? {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        return o ? nil : r
    }

    /// The sum of all values, or nil on overflow.
    public static func sum<T: FixedWidthInteger>(_ values: some Sequence<T>) -> T? {
        var total: T = 0
        for v in values {
            guard let t = add(total, v) else { return nil }
            total = t
        }
        return total
    }

    /// `a + b` clamped to the type's range.
    public static func clampedAdd<T: FixedWidthInteger>(_ a: T, _ b: T) -> T {
        let (r, o) = a.addingReportingOverflow(b)
        if !o { return r }
        return b > 0 ? T.max : T.min
    }

    /// A duration in seconds that is within `0...maxDurationSeconds`, or a 400 naming the field.
    public static func duration(_ seconds: Int64, field: String) throws -> Int {
        guard seconds >= 0, seconds <= maxDurationSeconds else {
            throw CofferError.invalid("invalid duration for field \"\(field.prefix(64))\": must be between 0 and \(maxDurationSeconds) seconds")
        }
        return Int(seconds)
    }

    /// An integer within `range`, or a 400 naming the field.
    public static func int(_ value: Int, in range: ClosedRange<Int>, field: String) throws -> Int {
        guard range.contains(value) else {
            throw CofferError.invalid("invalid value for field \"\(field.prefix(64))\": must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return value
    }

    /// A finite double within `range`, or a 400 naming the field.
    public static func double(_ value: Double, in range: ClosedRange<Double>, field: String) throws -> Double {
        guard value.isFinite, range.contains(value) else {
            throw CofferError.invalid("invalid value for field \"\(field.prefix(64))\": must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return value
    }
}
