import Foundation
import Synchronization

/// A fault injected into the organization's HTTP routes.
///
/// Faults never apply to the `/_sim` control routes. A fault may be limited to one route template (e.g.
/// `pools/{poolId}/jobrequests`) and/or one method, and fires either a fixed number of times or until cleared.
package struct FaultRule: Sendable, Equatable {
    /// What the fault does.
    package enum Kind: Sendable, Equatable {
        /// Adds the throttling headers to a successful response.
        case throttleHeaders(ThrottleHeaders)
        /// Answers 429 with `Retry-After` and a TF400733 WrappedException.
        case tooManyRequests(retryAfterSeconds: Int)
        /// Answers with this 5xx status.
        case serverError(status: Int)
        /// Answers with any status and a WrappedException of this type and message (e.g. 403 AccessDenied).
        case errorStatus(status: Int, typeKey: String, message: String)
        /// Delays the response by this much.
        case latency(Duration)
        /// Closes the TCP connection without any response.
        case dropConnection
    }

    /// What the fault does.
    package var kind: Kind
    /// Route template the fault is limited to (`pools/{poolId}/jobrequests`), nil for every org route.
    package var route: String?
    /// HTTP method the fault is limited to (`GET`), nil for any.
    package var method: String?
    /// How many more times the fault fires; nil for until cleared.
    package var remaining: Int?

    /// A fault of this kind, optionally scoped and counted.
    package init(_ kind: Kind, route: String? = nil, method: String? = nil, count: Int? = nil) {
        self.kind = kind
        self.route = route
        self.method = method
        self.remaining = count
    }

    /// Whether the fault's scope covers this method and route template.
    func applies(method: String, route: String) -> Bool {
        (self.method == nil || self.method?.uppercased() == method.uppercased())
            && (self.route == nil || self.route?.lowercased() == route.lowercased())
    }
}

/// The throttling headers the service sends before it starts delaying or blocking.
package struct ThrottleHeaders: Sendable, Equatable {
    /// `Retry-After` in seconds.
    package var retryAfter: Int = 10
    /// `X-RateLimit-Resource`.
    package var resource: String = "Core"
    /// `X-RateLimit-Delay` in seconds (up to 3 decimals).
    package var delay: String = "2.517"
    /// `X-RateLimit-Limit`.
    package var limit: Int = 200
    /// `X-RateLimit-Remaining`.
    package var remaining: Int = 0
    /// `X-RateLimit-Reset` as Unix time; nil for five minutes from now.
    package var reset: Int?

    /// The suggested values of the fact sheet.
    package init() {}
}

/// Faults and per-route request counts, shared between the HTTP handler and the NIO channel handler.
///
/// A `Mutex` rather than an actor because the channel handler that drops connections must decide
/// synchronously on the event loop.
package final class TrafficControl: Sendable {
    private struct State {
        var faults: [UUID: (order: Int, rule: FaultRule)] = [:]
        var nextOrder = 0
        var counts: [String: [Int: Int]] = [:]
    }

    private let state = Mutex(State())

    /// An empty fault table.
    package init() {}

    /// Adds a fault; returns its id for removal.
    @discardableResult
    package func addFault(_ rule: FaultRule) -> UUID {
        let id = UUID()
        state.withLock { state in
            state.faults[id] = (state.nextOrder, rule)
            state.nextOrder += 1
        }
        return id
    }

    /// Removes one fault.
    package func removeFault(_ id: UUID) {
        _ = state.withLock { $0.faults.removeValue(forKey: id) }
    }

    /// Removes every fault.
    package func clearFaults() {
        state.withLock { $0.faults = [:] }
    }

    /// The active faults in the order they were added.
    package var faults: [FaultRule] {
        state.withLock { $0.faults.values.sorted { $0.order < $1.order }.map(\.rule) }
    }

    /// Consumes (counts down) the faults matching the request that `select` picks, returning their kinds.
    ///
    /// With `firstOnly`, only the oldest matching fault fires (a request gets one error status, not several).
    func consume(
        method: String, route: String, firstOnly: Bool = false, where select: (FaultRule.Kind) -> Bool
    ) -> [FaultRule.Kind] {
        state.withLock { state in
            var fired: [FaultRule.Kind] = []
            for (id, entry) in state.faults.sorted(by: { $0.value.order < $1.value.order })
            where select(entry.rule.kind) && entry.rule.applies(method: method, route: route) {
                if firstOnly && !fired.isEmpty { break }
                fired.append(entry.rule.kind)
                if let remaining = entry.rule.remaining {
                    if remaining <= 1 {
                        state.faults[id] = nil
                    } else {
                        state.faults[id]?.rule.remaining = remaining - 1
                    }
                }
            }
            return fired
        }
    }

    /// Counts a request by route key (`GET pools/{poolId}/jobrequests`) and final status (0 = dropped).
    func record(routeKey: String, status: Int) {
        state.withLock { $0.counts[routeKey, default: [:]][status, default: 0] += 1 }
    }

    /// Requests seen so far: route key → status → count.
    package var requestCounts: [String: [Int: Int]] {
        state.withLock { $0.counts }
    }
}
