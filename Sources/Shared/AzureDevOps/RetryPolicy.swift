/// How the client retries throttling, server failures and network errors: capped exponential backoff with jitter.
package struct RetryPolicy: Sendable, Equatable {
    /// Attempts in total, including the first (1 = no retry).
    package var maxAttempts: Int
    /// Delay before the first retry.
    package var initialBackoff: Duration
    /// Upper bound for one backoff delay.
    package var maxBackoff: Duration
    /// Upper bound for honouring a server's `Retry-After`/`X-RateLimit-Delay`, so a bad header cannot stall a loop.
    package var maxServerDelay: Duration

    /// Defaults suited to a controller polling every few seconds: 5 attempts, 0.5 s doubling to 30 s.
    package init(maxAttempts: Int = 5, initialBackoff: Duration = .milliseconds(500), maxBackoff: Duration = .seconds(30), maxServerDelay: Duration = .seconds(120)) {
        self.maxAttempts = max(1, maxAttempts)
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.maxServerDelay = maxServerDelay
    }

    /// The backoff before retry number `retry` (1-based): `initial * 2^(retry-1)`, capped, scaled by `jitter`
    /// (a factor in 0.5...1 so concurrent clients spread out but never retry immediately).
    package func backoff(beforeRetry retry: Int, jitter: Double) -> Duration {
        let exponent = min(max(retry - 1, 0), 30)
        let raw = initialBackoff.seconds * Double(1 << exponent)
        let capped = min(raw, maxBackoff.seconds)
        return .fractionalSeconds(capped * min(max(jitter, 0.5), 1.0))
    }
}

/// The service's rate-limit headers as last seen (`X-RateLimit-*`, `Retry-After`).
///
/// Azure DevOps sends them before it starts delaying or blocking an identity, so a controller can slow down early.
package struct RateLimitStatus: Sendable, Equatable {
    /// TSTUs left before the service starts delaying (`X-RateLimit-Remaining`).
    package var remaining: Double?
    /// TSTUs allowed in the window (`X-RateLimit-Limit`).
    package var limit: Double?
    /// How long the service delayed the last request (`X-RateLimit-Delay`).
    package var delay: Duration?
    /// How long to wait before the next request (`Retry-After`).
    package var retryAfter: Duration?
    /// Which limit was hit (`X-RateLimit-Resource`), for people only.
    package var resource: String?

    /// An empty status: nothing seen yet.
    package init(remaining: Double? = nil, limit: Double? = nil, delay: Duration? = nil, retryAfter: Duration? = nil, resource: String? = nil) {
        self.remaining = remaining
        self.limit = limit
        self.delay = delay
        self.retryAfter = retryAfter
        self.resource = resource
    }
}
