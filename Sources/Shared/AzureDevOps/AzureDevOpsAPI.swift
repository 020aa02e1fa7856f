/// The Azure DevOps operations Shoal needs: pools, agents, job requests and agent packages.
///
/// Loops and reconcilers take this protocol, never an HTTP client, so tests can substitute fakes and later
/// issues can inject faults. Every method throws ``AzureDevOpsError``.
package protocol AzureDevOpsAPI: Sendable {
    /// Finds the one pool with this name (`GET pools?poolName=`); fails when none or several match.
    func resolvePool(named name: String) async throws(AzureDevOpsError) -> AgentPool
    /// Reads a pool by id.
    func pool(id: Int) async throws(AzureDevOpsError) -> AgentPool
    /// Lists the pool's agents.
    func agents(poolID: Int, options: AgentQueryOptions) async throws(AzureDevOpsError) -> [Agent]
    /// Reads one agent.
    func agent(poolID: Int, agentID: Int, options: AgentQueryOptions) async throws(AzureDevOpsError) -> Agent
    /// Enables or disables an agent (`PATCH enabled`); a disabled agent receives no new jobs.
    func setAgentEnabled(poolID: Int, agentID: Int, enabled: Bool) async throws(AzureDevOpsError) -> Agent
    /// Deletes a registration; `.alreadyGone` when it did not exist. Refused by the service while it runs a job.
    func deleteAgent(poolID: Int, agentID: Int) async throws(AzureDevOpsError) -> DeletionOutcome
    /// Registers an agent over REST (Shoal's offline placeholder).
    func addAgent(poolID: Int, _ agent: NewAgent) async throws(AzureDevOpsError) -> Agent
    /// Every unfinished job request of the pool (`completedRequestCount=0`, no `$top`, so `matchedAgents` is kept).
    func unfinishedJobRequests(poolID: Int) async throws(AzureDevOpsError) -> [JobRequest]
    /// The newest non-prerelease agent package for a platform such as `linux-x64`, or nil when there is none.
    func newestAgentPackage(platform: String) async throws(AzureDevOpsError) -> AgentPackage?
}

/// Which optional parts of an agent to include, and an optional name filter.
package struct AgentQueryOptions: Sendable, Equatable {
    /// Only agents with exactly this name.
    package var agentName: String?
    /// Include `systemCapabilities` and `userCapabilities`.
    package var includeCapabilities: Bool
    /// Include the job the agent holds, if any (needed to tell idle from busy).
    package var includeAssignedRequest: Bool
    /// Include the last job the agent finished.
    package var includeLastCompletedRequest: Bool

    /// Builds options; by default only the assigned request is included.
    package init(agentName: String? = nil, includeCapabilities: Bool = false, includeAssignedRequest: Bool = true, includeLastCompletedRequest: Bool = false) {
        self.agentName = agentName
        self.includeCapabilities = includeCapabilities
        self.includeAssignedRequest = includeAssignedRequest
        self.includeLastCompletedRequest = includeLastCompletedRequest
    }
}

/// What a delete did.
package enum DeletionOutcome: Sendable, Equatable {
    /// The registration existed and is gone now.
    case deleted
    /// There was nothing to delete (404), which callers treat as success.
    case alreadyGone
}
