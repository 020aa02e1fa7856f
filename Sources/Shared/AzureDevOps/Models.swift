#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The `{"count": N, "value": [...]}` envelope every Azure DevOps collection arrives in.
package struct CollectionEnvelope<Element: Decodable & Sendable>: Decodable, Sendable {
    /// Number of elements the service says it returned.
    package let count: Int?
    /// The elements.
    package let value: [Element]
}

/// A string-backed enum that keeps values it does not know, so a new service value never breaks decoding.
package protocol OpenEnum: RawRepresentable, Codable, Hashable, Sendable, CustomStringConvertible where RawValue == String {
    init(rawValue: String)
}

extension OpenEnum {
    package init(from decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
    package var description: String { rawValue }
}

/// `TaskResult`: how a job request finished. Compared ignoring case; unknown values are kept as they came.
package struct TaskResult: OpenEnum {
    package let rawValue: String
    package init(rawValue: String) { self.rawValue = rawValue }
    package static let succeeded = TaskResult(rawValue: "succeeded")
    package static let succeededWithIssues = TaskResult(rawValue: "succeededWithIssues")
    package static let failed = TaskResult(rawValue: "failed")
    package static let canceled = TaskResult(rawValue: "canceled")
    package static let skipped = TaskResult(rawValue: "skipped")
    package static let abandoned = TaskResult(rawValue: "abandoned")
    package static func == (lhs: TaskResult, rhs: TaskResult) -> Bool { lhs.rawValue.lowercased() == rhs.rawValue.lowercased() }
    package func hash(into hasher: inout Hasher) { hasher.combine(rawValue.lowercased()) }
}

/// `TaskAgentStatus`: `online` while the agent holds a session, `offline` otherwise.
package struct AgentStatus: OpenEnum {
    package let rawValue: String
    package init(rawValue: String) { self.rawValue = rawValue }
    package static let online = AgentStatus(rawValue: "online")
    package static let offline = AgentStatus(rawValue: "offline")
    package static func == (lhs: AgentStatus, rhs: AgentStatus) -> Bool { lhs.rawValue.lowercased() == rhs.rawValue.lowercased() }
    package func hash(into hasher: inout Hasher) { hasher.combine(rawValue.lowercased()) }
}

/// `TaskAgentPoolType`: `automation` (build/release) or `deployment`.
package struct PoolType: OpenEnum {
    package let rawValue: String
    package init(rawValue: String) { self.rawValue = rawValue }
    package static let automation = PoolType(rawValue: "automation")
    package static let deployment = PoolType(rawValue: "deployment")
}

/// An organization-level agent pool (`TaskAgentPool`), with the fields Shoal uses.
package struct AgentPool: Codable, Sendable, Equatable {
    /// Pool id, used in every pool-scoped route.
    package let id: Int
    /// Display name, unique in the organization.
    package let name: String
    /// Number of registered agents.
    package let size: Int?
    /// True for Microsoft-hosted pools, which Shoal cannot manage.
    package let isHosted: Bool?
    /// `automation` or `deployment`.
    package let poolType: PoolType?
    /// The pool setting "Allow agents in this pool to automatically update".
    package let autoUpdate: Bool?

    /// Builds a pool value (tests, simulators).
    package init(id: Int, name: String, size: Int? = nil, isHosted: Bool? = false, poolType: PoolType? = .automation, autoUpdate: Bool? = nil) {
        self.id = id
        self.name = name
        self.size = size
        self.isHosted = isHosted
        self.poolType = poolType
        self.autoUpdate = autoUpdate
    }
}

/// A reference to an agent as it appears in `reservedAgent` and `matchedAgents`.
package struct AgentReference: Codable, Sendable, Equatable {
    /// Agent id.
    package let id: Int
    /// Agent name (for Shoal agents, the pod name).
    package let name: String
    /// Agent version, e.g. `4.266.2`.
    package let version: String?
    /// Whether the agent may receive jobs.
    package let enabled: Bool?
    /// Online while it holds a session.
    package let status: AgentStatus?
}

/// The owner or definition of a job request: a pipeline definition or run.
package struct TaskOrchestrationOwner: Codable, Sendable, Equatable {
    /// Definition id, or build id for a run.
    package let id: Int?
    /// Definition name, or build number for a run.
    package let name: String?
}

/// A job request (`TaskAgentJobRequest`): one pipeline job waiting for, held by, or finished on an agent.
///
/// The service omits null fields, so a queued request has no `assignTime`, `receiveTime` or `result` keys.
/// Use ``phase`` rather than testing fields: it is the one place the lifecycle is derived.
package struct JobRequest: Codable, Sendable, Equatable {
    /// Request id (a 64-bit integer on the service).
    package let requestId: Int64
    /// When the job started waiting for an agent.
    package let queueTime: Date?
    /// When the service reserved an agent for the job.
    package let assignTime: Date?
    /// When the agent picked up the job message.
    package let receiveTime: Date?
    /// When the job finished (also set for a job canceled while queued).
    package let finishTime: Date?
    /// How the job finished; absent while unfinished.
    package let result: TaskResult?
    /// The lock the agent renews while running the job.
    package let lockedUntil: Date?
    /// `Build`, `Release`, ...
    package let planType: String?
    /// The plan (run) the job belongs to.
    package let planId: String?
    /// The job's id within its plan.
    package let jobId: String?
    /// The job's display name.
    package let jobName: String?
    /// The demands as wire strings, including the server-added `Agent.Version -gtVersion` one.
    package let demands: [String]?
    /// The agent the job is assigned to, once assigned.
    package let reservedAgent: AgentReference?
    /// Agents (online or offline) whose capabilities satisfy the demands. Missing when listed with `$top`.
    package let matchedAgents: [AgentReference]?
    /// True when every agent in the pool matches.
    package let matchesAllAgentsInPool: Bool?
    /// The pool the request belongs to.
    package let poolId: Int?
    /// The pipeline definition.
    package let definition: TaskOrchestrationOwner?
    /// The run that owns the job.
    package let owner: TaskOrchestrationOwner?
    /// Queue order hint.
    package let priority: Int?

    /// Builds a job request value (tests, simulators).
    package init(
        requestId: Int64, queueTime: Date? = nil, assignTime: Date? = nil, receiveTime: Date? = nil,
        finishTime: Date? = nil, result: TaskResult? = nil, lockedUntil: Date? = nil, planType: String? = "Build",
        planId: String? = nil, jobId: String? = nil, jobName: String? = nil, demands: [String]? = nil,
        reservedAgent: AgentReference? = nil, matchedAgents: [AgentReference]? = nil,
        matchesAllAgentsInPool: Bool? = nil, poolId: Int? = nil, definition: TaskOrchestrationOwner? = nil,
        owner: TaskOrchestrationOwner? = nil, priority: Int? = nil
    ) {
        self.requestId = requestId
        self.queueTime = queueTime
        self.assignTime = assignTime
        self.receiveTime = receiveTime
        self.finishTime = finishTime
        self.result = result
        self.lockedUntil = lockedUntil
        self.planType = planType
        self.planId = planId
        self.jobId = jobId
        self.jobName = jobName
        self.demands = demands
        self.reservedAgent = reservedAgent
        self.matchedAgents = matchedAgents
        self.matchesAllAgentsInPool = matchesAllAgentsInPool
        self.poolId = poolId
        self.definition = definition
        self.owner = owner
        self.priority = priority
    }

    /// Where the request is in its lifecycle, derived from which fields are present.
    package var phase: JobRequestPhase { JobRequestPhase(self) }

    /// The demands parsed; demands that do not parse are skipped (they can only be matched as exact text).
    package var parsedDemands: [Demand] { (demands ?? []).compactMap { try? Demand(parsing: $0) } }
}

/// The lifecycle of a job request as Shoal reasons about it.
package enum JobRequestPhase: String, Sendable, Hashable, CaseIterable {
    /// Waiting for an agent: no assignment, no receipt, no result.
    case queued
    /// An agent is reserved but has not picked the job up yet.
    case assigned
    /// The agent received the job and is running it.
    case running
    /// Done, whatever the result (including canceled while queued and abandoned).
    case finished

    /// Derives the phase. Finished wins over everything, then running, then assigned.
    package init(_ request: JobRequest) {
        if request.result != nil || request.finishTime != nil {
            self = .finished
        } else if request.receiveTime != nil {
            self = .running
        } else if request.assignTime != nil || request.reservedAgent != nil {
            self = .assigned
        } else {
            self = .queued
        }
    }
}

/// A registered agent (`TaskAgent`), with the fields Shoal uses.
package struct Agent: Codable, Sendable, Equatable {
    /// Agent id within the pool.
    package let id: Int
    /// Agent name, unique within the pool.
    package let name: String
    /// Agent version.
    package let version: String?
    /// Whether the agent may receive jobs.
    package let enabled: Bool?
    /// Online while the agent holds a session.
    package let status: AgentStatus?
    /// Registration time.
    package let createdOn: Date?
    /// Last online/offline transition.
    package let statusChangedOn: Date?
    /// Operating system description the agent reported.
    package let osDescription: String?
    /// `Provisioned`, ...
    package let provisioningState: String?
    /// Only with `includeCapabilities=true`.
    package let systemCapabilities: [String: String]?
    /// Only with `includeCapabilities=true`.
    package let userCapabilities: [String: String]?
    /// Only with `includeAssignedRequest=true`, and absent when the agent holds no job.
    package let assignedRequest: JobRequest?
    /// Only with `includeLastCompletedRequest=true`.
    package let lastCompletedRequest: JobRequest?
    /// The agent's OAuth client, returned by `POST agents` (and `PUT`) when the body carried a public key.
    package var authorization: AgentAuthorization? = nil
    /// The `ServerUrl` property of the registration response (`properties.ServerUrl.$value`), when present.
    package var serverURL: String? = nil

    private enum CodingKeys: String, CodingKey {
        case id, name, version, enabled, status, createdOn, statusChangedOn, osDescription, provisioningState
        case systemCapabilities, userCapabilities, assignedRequest, lastCompletedRequest, authorization, properties
    }

    /// `{"ServerUrl": {"$type": "System.String", "$value": "…"}}` in a registration response.
    private struct Properties: Codable {
        struct Value: Codable {
            let value: String?
            enum CodingKeys: String, CodingKey { case value = "$value" }
        }
        let serverUrl: Value?
        enum CodingKeys: String, CodingKey { case serverUrl = "ServerUrl" }
    }

    /// Decodes a TaskAgent; `properties` is read only for `ServerUrl`.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(Int.self, forKey: .id)
        name = try container.decode(String.self, forKey: .name)
        version = try container.decodeIfPresent(String.self, forKey: .version)
        enabled = try container.decodeIfPresent(Bool.self, forKey: .enabled)
        status = try container.decodeIfPresent(AgentStatus.self, forKey: .status)
        createdOn = try container.decodeIfPresent(Date.self, forKey: .createdOn)
        statusChangedOn = try container.decodeIfPresent(Date.self, forKey: .statusChangedOn)
        osDescription = try container.decodeIfPresent(String.self, forKey: .osDescription)
        provisioningState = try container.decodeIfPresent(String.self, forKey: .provisioningState)
        systemCapabilities = try container.decodeIfPresent([String: String].self, forKey: .systemCapabilities)
        userCapabilities = try container.decodeIfPresent([String: String].self, forKey: .userCapabilities)
        assignedRequest = try container.decodeIfPresent(JobRequest.self, forKey: .assignedRequest)
        lastCompletedRequest = try container.decodeIfPresent(JobRequest.self, forKey: .lastCompletedRequest)
        authorization = try? container.decodeIfPresent(AgentAuthorization.self, forKey: .authorization)
        serverURL = (try? container.decodeIfPresent(Properties.self, forKey: .properties))??.serverUrl?.value
    }

    /// Encodes the fields Shoal reads (simulators and fakes answer with this).
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(name, forKey: .name)
        try container.encodeIfPresent(version, forKey: .version)
        try container.encodeIfPresent(enabled, forKey: .enabled)
        try container.encodeIfPresent(status, forKey: .status)
        try container.encodeIfPresent(createdOn, forKey: .createdOn)
        try container.encodeIfPresent(statusChangedOn, forKey: .statusChangedOn)
        try container.encodeIfPresent(osDescription, forKey: .osDescription)
        try container.encodeIfPresent(provisioningState, forKey: .provisioningState)
        try container.encodeIfPresent(systemCapabilities, forKey: .systemCapabilities)
        try container.encodeIfPresent(userCapabilities, forKey: .userCapabilities)
        try container.encodeIfPresent(assignedRequest, forKey: .assignedRequest)
        try container.encodeIfPresent(lastCompletedRequest, forKey: .lastCompletedRequest)
        try container.encodeIfPresent(authorization, forKey: .authorization)
        if let serverURL {
            try container.encode(Properties(serverUrl: .init(value: serverURL)), forKey: .properties)
        }
    }

    /// Builds an agent value (tests, simulators).
    package init(
        id: Int, name: String, version: String? = nil, enabled: Bool? = true, status: AgentStatus? = .offline,
        createdOn: Date? = nil, statusChangedOn: Date? = nil, osDescription: String? = nil,
        provisioningState: String? = nil, systemCapabilities: [String: String]? = nil,
        userCapabilities: [String: String]? = nil, assignedRequest: JobRequest? = nil,
        lastCompletedRequest: JobRequest? = nil
    ) {
        self.id = id
        self.name = name
        self.version = version
        self.enabled = enabled
        self.status = status
        self.createdOn = createdOn
        self.statusChangedOn = statusChangedOn
        self.osDescription = osDescription
        self.provisioningState = provisioningState
        self.systemCapabilities = systemCapabilities
        self.userCapabilities = userCapabilities
        self.assignedRequest = assignedRequest
        self.lastCompletedRequest = lastCompletedRequest
    }

    /// System and user capabilities merged, user capabilities winning, as the service matches demands.
    package var capabilities: [String: String] {
        (systemCapabilities ?? [:]).merging(userCapabilities ?? [:]) { _, user in user }
    }

    /// Online, enabled and holding no job (requires the list to be read with `includeAssignedRequest`).
    package var isIdle: Bool { status == .online && enabled != false && assignedRequest == nil }
}

/// The body of `POST .../agents`: a registration made over REST, e.g. Shoal's offline placeholder.
package struct NewAgent: Encodable, Sendable, Equatable {
    /// Agent name.
    package var name: String
    /// Agent version to report; jobs demand `Agent.Version -gtVersion`, so it must be current.
    package var version: String
    /// Operating system description.
    package var osDescription: String?
    /// Whether it may receive jobs.
    package var enabled: Bool
    /// Always 1 for Shoal.
    package var maxParallelism: Int
    /// Capabilities matched against job demands.
    package var systemCapabilities: [String: String]
    /// `Provisioned`, as `config.sh` sends it.
    package var provisioningState: String? = nil
    /// The agent's public key; the service answers with the agent's OAuth client (``Agent/authorization``).
    package var authorization: NewAgentAuthorization? = nil

    /// Builds a registration body.
    package init(name: String, version: String, osDescription: String? = nil, enabled: Bool = true, maxParallelism: Int = 1, systemCapabilities: [String: String]) {
        self.name = name
        self.version = version
        self.osDescription = osDescription
        self.enabled = enabled
        self.maxParallelism = maxParallelism
        self.systemCapabilities = systemCapabilities
    }
}

/// `authorization` of a registration body: `{"publicKey": {"exponent": "AQAB", "modulus": "…"}}` (base64).
package struct NewAgentAuthorization: Codable, Sendable, Equatable {
    /// The RSA public key the agent signs its client assertions with.
    package var publicKey: PublicKey

    /// An RSA public key as the TaskAgent body carries it: big-endian unsigned integers, standard base64.
    package struct PublicKey: Codable, Sendable, Equatable {
        /// The public exponent (`AQAB` for 65537).
        package var exponent: String
        /// The modulus.
        package var modulus: String

        /// Builds a key.
        package init(exponent: String, modulus: String) {
            self.exponent = exponent
            self.modulus = modulus
        }
    }

    /// Builds the block.
    package init(exponent: String, modulus: String) { publicKey = PublicKey(exponent: exponent, modulus: modulus) }
}

/// `authorization` of a registered agent: the OAuth client the listener authenticates as.
package struct AgentAuthorization: Codable, Sendable, Equatable {
    /// The client id (a GUID), the `sub` and `iss` of the agent's client assertions.
    package var clientId: String?
    /// The token endpoint, the `aud` of the agent's client assertions.
    package var authorizationUrl: String?

    /// Builds the block.
    package init(clientId: String?, authorizationUrl: String?) {
        self.clientId = clientId
        self.authorizationUrl = authorizationUrl
    }
}

/// The version of an agent package: `{"major": 4, "minor": 266, "patch": 2}`.
package struct PackageVersion: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Major version.
    package let major: Int
    /// Minor version.
    package let minor: Int
    /// Patch version.
    package let patch: Int

    /// Builds a version.
    package init(major: Int, minor: Int, patch: Int) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// Parses `4.266.2`; nil for anything else.
    package init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 3, let major = parts[0], let minor = parts[1], let patch = parts[2],
              major >= 0, minor >= 0, patch >= 0 else { return nil }
        self.init(major: major, minor: minor, patch: patch)
    }

    package var description: String { "\(major).\(minor).\(patch)" }
    package static func < (lhs: PackageVersion, rhs: PackageVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }
}

/// An agent package (`PackageMetadata`): where to download an agent build for a platform.
package struct AgentPackage: Codable, Sendable, Equatable {
    /// `agent`.
    package let type: String?
    /// `linux-x64`, `linux-arm64`, ...
    package let platform: String
    /// Publication time.
    package let createdOn: Date?
    /// Package version.
    package let version: PackageVersion
    /// Tarball URL.
    package let downloadUrl: String
    /// SHA-256 of the tarball, hex.
    package let hashValue: String?
    /// Tarball file name.
    package let filename: String?
    /// Release notes URL.
    package let infoUrl: String?
}

/// The JSON error body (`WrappedException`) Azure DevOps returns with non-2xx statuses.
package struct WrappedException: Codable, Sendable, Equatable {
    /// Human-readable message, e.g. `TF400813: The user '' is not authorized to access this resource.`
    package let message: String?
    /// Short exception type, e.g. `TaskAgentNotFoundException`.
    package let typeKey: String?
    /// Full .NET type name.
    package let typeName: String?
    /// Numeric error code.
    package let errorCode: Int?
    /// Event id.
    package let eventId: Int?
}
