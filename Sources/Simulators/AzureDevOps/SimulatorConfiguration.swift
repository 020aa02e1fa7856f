import Foundation

/// Behaviour knobs of the simulated organization, adjustable at run time.
///
/// Defaults follow the protocol between the simulator and the agent stand-in; tests shrink the timeouts so
/// expiry paths run in a second instead of minutes.
package struct SimulatorKnobs: Sendable, Equatable {
    /// A session whose last heartbeat (message poll or lock renewal) is older than this is dropped.
    package var sessionTimeout: Duration = .seconds(15)
    /// How long `GET messages` is held open when nothing is queued for the session.
    package var messageLongPollTimeout: Duration = .seconds(5)
    /// How far `lockedUntil` is pushed on receipt and on every renewal.
    package var lockDuration: Duration = .seconds(300)
    /// How long an agent has to finish a cancelled job before the simulator finishes it as canceled itself.
    package var cancelTimeout: Duration = .seconds(30)
    /// Whether disabled agents count as matching agents (in `matchedAgents` and at queue time).
    package var disabledAgentsMatch: Bool = false
    /// HTTP status of a refused `DELETE agent` while the agent holds a job.
    package var deleteBusyAgentStatus: Int = 400
    /// The `Agent.Version -gtVersion X` demand the server adds to every job.
    package var minimumAgentVersion: String = "2.163.1"
    /// How many finished requests `GET jobrequests` without parameters includes.
    package var defaultCompletedRequestCount: Int = 50
    /// The largest page `GET jobrequests?$top=` returns.
    package var maximumTop: Int = 200
    /// Whether `X-TFS-FedAuthRedirect: Suppress` turns the 203 sign-in page into a 401. The service documents
    /// it for its SDKs; whether every PAT path honours it is not certain, so both behaviours can be tested.
    package var honoursFedAuthRedirectSuppress: Bool = true
    /// How often the background sweeper looks for expired sessions, locks and cancellations.
    package var sweepInterval: Duration = .milliseconds(200)
    /// How long an agent access token from `oauth2/token` is accepted (`expires_in`); the real lifetime is not
    /// documented. An expired token gets 401 on agent routes and the listener must fetch a new one.
    package var accessTokenLifetime: Duration = .seconds(3600)

    /// The defaults described on each knob.
    package init() {}
}

/// How to start a simulated organization.
package struct SimulatorConfiguration: Sendable {
    /// The organization name, the first path segment of every org route.
    package var organization: String
    /// Port to listen on; 0 picks an ephemeral port.
    package var port: Int
    /// Host to bind; the simulator is meant for loopback only.
    package var host: String
    /// Personal access tokens accepted from the start.
    package var personalAccessTokens: [String]
    /// Pools created at start (name, autoUpdate true).
    package var pools: [String]
    /// Initial knobs.
    package var knobs: SimulatorKnobs
    /// The wall clock; injected so tests can pin or shift time.
    package var clock: @Sendable () -> Date

    /// A configuration with the defaults used by tests: organization `shoal-sim`, PAT `sim-pat`, ephemeral port.
    package init(
        organization: String = "shoal-sim",
        port: Int = 0,
        host: String = "127.0.0.1",
        personalAccessTokens: [String] = ["sim-pat"],
        pools: [String] = [],
        knobs: SimulatorKnobs = .init(),
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.organization = organization
        self.port = port
        self.host = host
        self.personalAccessTokens = personalAccessTokens
        self.pools = pools
        self.knobs = knobs
        self.clock = clock
    }
}

extension Duration {
    /// The duration in seconds as a `TimeInterval`, for `Date` arithmetic.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// A duration from a `TimeInterval`.
    static func interval(_ seconds: TimeInterval) -> Duration {
        .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
