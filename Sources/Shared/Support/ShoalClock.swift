#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Time as Shoal's loops see it: injected so backoff, polling and timeouts can be tested without sleeping.
package protocol ShoalClock: Sendable {
    /// Monotonic time since an arbitrary origin; only differences are meaningful.
    func monotonicNow() -> Duration
    /// Wall-clock time, for timestamps shown to people and compared with the service's.
    func wallNow() -> Date
    /// Suspends for `duration`; throws `CancellationError` when the task is cancelled.
    func sleep(for duration: Duration) async throws
}

/// The real clock: `ContinuousClock` for monotonic time and sleeping, `Date()` for wall time.
package struct SystemClock: ShoalClock {
    private let origin = ContinuousClock.now

    /// Creates a clock whose monotonic origin is now.
    package init() {}

    package func monotonicNow() -> Duration { ContinuousClock.now - origin }
    package func wallNow() -> Date { Date() }
    package func sleep(for duration: Duration) async throws {
        guard duration > .zero else { return try Task.checkCancellation() }
        try await Task.sleep(for: duration)
    }
}

extension Duration {
    /// The duration in seconds as a floating-point number.
    package var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }

    /// A duration from fractional seconds; negative and non-finite values become zero.
    package static func fractionalSeconds(_ value: Double) -> Duration {
        guard value.isFinite, value > 0 else { return .zero }
        return .nanoseconds(Int64((value * 1e9).rounded()))
    }
}
