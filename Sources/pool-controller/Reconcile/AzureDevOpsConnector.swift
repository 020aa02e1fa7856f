import AsyncHTTPClient
import Logging
import Shared
import Synchronization

/// Hands out Azure DevOps API clients per organization and token: the seam where tests put a simulator and where
/// later work adds fault injection or Entra ID credentials.
protocol AzureDevOpsConnector: Sendable {
    /// A client for `organization` authenticating with `token`; the same one is returned while the token is unchanged.
    func api(organization: OrganizationURL, token: String) throws(AzureDevOpsError) -> any AzureDevOpsAPI
}

/// The real connector: ``AzureDevOpsClient``s over one shared HTTP client, cached by organization and token, with
/// every request reported to `observer` (metrics).
final class LiveAzureDevOpsConnector: AzureDevOpsConnector {
    private let http: HTTPClient
    private let clock: any ShoalClock
    private let logger: Logger
    private let observer: @Sendable (AzureDevOpsRequestRecord) -> Void
    /// Clients by organization and token. A Mutex because `api` is called from the reconcile loop only, but the type
    /// must be Sendable to be shared with the composition root.
    private let clients = Mutex<[String: AzureDevOpsClient]>([:])

    /// A connector over `http` (owned by the caller).
    init(http: HTTPClient, clock: any ShoalClock, logger: Logger, observer: @escaping @Sendable (AzureDevOpsRequestRecord) -> Void) {
        self.http = http
        self.clock = clock
        self.logger = logger
        self.observer = observer
    }

    func api(organization: OrganizationURL, token: String) throws(AzureDevOpsError) -> any AzureDevOpsAPI {
        let key = "\(organization)\n\(token)"
        if let client = clients.withLock({ $0[key] }) { return client }
        let credentials: StaticTokenSource
        do { credentials = try StaticTokenSource(token: token, origin: "the AgentPool's token Secret") } catch { throw .credential(error) }
        let client = AzureDevOpsClient(
            configuration: AzureDevOpsClientConfiguration(organization: organization, userAgent: "shoal-pool-controller"),
            credentials: credentials, http: http, clock: clock, logger: logger, observer: observer)
        clients.withLock { cache in
            // Drop clients of the same organization with an older token: rotation replaces them.
            cache = cache.filter { !$0.key.hasPrefix("\(organization)\n") }
            cache[key] = client
        }
        return client
    }
}
