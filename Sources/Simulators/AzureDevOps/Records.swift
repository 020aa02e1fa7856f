import Foundation
import Shared

/// An agent pool of the simulated organization.
package struct SimulatedPool: Sendable, Equatable {
    /// Pool id, unique in the organization.
    package let id: Int
    /// Display name; lookups by name ignore case.
    package var name: String
    /// "Allow agents in this pool to automatically update".
    package var autoUpdate: Bool
    /// When the pool was created.
    package let createdOn: Date
    /// The pool's scope GUID.
    package let scope: String
}

/// A registered (or deleted) agent; deleted agents stay in the history with `deletedOn` set.
package struct SimulatedAgent: Sendable, Equatable {
    /// Agent id, unique in the organization and never reused.
    package let id: Int
    /// The pool the agent belongs to.
    package let poolId: Int
    /// Agent name, unique within the pool (ignoring case).
    package var name: String
    /// Agent version as reported at registration.
    package var version: String
    /// OS description as reported at registration.
    package var osDescription: String
    /// Disabled agents receive no jobs.
    package var enabled: Bool
    /// Jobs the agent may run at once (the simulator dispatches one at a time regardless).
    package var maxParallelism: Int
    /// Registration time.
    package let createdOn: Date
    /// Last online/offline transition (or registration).
    package var statusChangedOn: Date
    /// Online while a session is open.
    package var status: AgentStatus
    /// Capabilities reported by the agent.
    package var systemCapabilities: [String: String]
    /// Capabilities set through `PUT usercapabilities`; they win over system ones of the same name.
    package var userCapabilities: [String: String]
    /// OAuth client id the agent exchanges for its bearer token; replaced on `PUT agent`.
    package var clientId: String
    /// RSA public key exponent from registration.
    package var publicKeyExponent: String
    /// RSA public key modulus from registration; empty for an agent registered without a key (no token ever).
    package var publicKeyModulus: String
    /// The request the agent holds (assigned or running), if any.
    package var assignedRequestId: Int?
    /// The last request the agent finished, if any.
    package var lastCompletedRequestId: Int?
    /// The live session, if any.
    package var sessionId: String?
    /// When the agent was deleted; nil while registered.
    package var deletedOn: Date?

    /// System and user capabilities merged; a user capability overrides a system one with the same name.
    package var capabilities: [String: String] {
        systemCapabilities.merging(userCapabilities) { _, user in user }
    }

    /// Whether the agent is still registered.
    package var isRegistered: Bool { deletedOn == nil }
}

/// The result of a finished job, in the service's camelCase spelling.
package enum JobResult: String, Sendable, Equatable, CaseIterable {
    /// Succeeded.
    case succeeded
    /// Succeeded with warnings.
    case succeededWithIssues
    /// Failed.
    case failed
    /// Cancelled (while queued, or by the agent after `JobCancel`).
    case canceled
    /// Skipped.
    case skipped
    /// The agent went away (session dropped, lock expired) while holding the job.
    case abandoned
}

/// Where a job request is in its lifecycle.
package enum JobPhase: String, Sendable, Equatable {
    /// Waiting for an agent: `queueTime` only.
    case queued
    /// Reserved for an agent and its message queued: `assignTime` and `reservedAgent`.
    case assigned
    /// The agent took the message: `receiveTime` and `lockedUntil`.
    case running
    /// Done: `finishTime` and `result`.
    case finished
}

/// A job request as the simulator keeps it, with everything the wire format and the tests need.
package struct SimulatedJobRequest: Sendable, Equatable {
    /// Request id, unique in the organization.
    package let requestId: Int
    /// The pool the job was queued to.
    package let poolId: Int
    /// The job's display name.
    package let jobName: String
    /// Plan GUID.
    package let planId: String
    /// Job GUID.
    package let jobId: String
    /// Demands as wire strings, including the server-added `Agent.Version -gtVersion X`.
    package let demands: [String]
    /// Parsed demands used for matching.
    package let parsedDemands: [Demand]
    /// Shell script the stand-in runs, if any.
    package let script: String?
    /// How long the stand-in keeps the job alive.
    package let durationSeconds: Double
    /// Variables passed to the job as environment variables.
    package let variables: [String: String]
    /// Project GUID.
    package let scopeId: String
    /// Pipeline definition id and name.
    package let definitionId: Int
    /// Pipeline definition name.
    package let definitionName: String
    /// Build id of the run owning the job.
    package let buildId: Int
    /// Build number of the run owning the job.
    package let buildNumber: String
    /// When the job was queued.
    package let queueTime: Date
    /// When an agent was reserved.
    package var assignTime: Date?
    /// When the agent took the job message.
    package var receiveTime: Date?
    /// When the job finished.
    package var finishTime: Date?
    /// How the job finished.
    package var result: JobResult?
    /// Lock expiry while running; renewed by the agent.
    package var lockedUntil: Date?
    /// The agent the job is reserved for or ran on.
    package var reservedAgentId: Int?
    /// Agents whose capabilities satisfy the demands (kept up to date while unfinished).
    package var matchedAgentIds: [Int]
    /// Token the agent must present to renew or finish the job.
    package var lockToken: String?
    /// When a cancel was requested for an assigned or running job.
    package var cancelRequestedOn: Date?

    /// The lifecycle phase derived from the timestamps.
    package var phase: JobPhase {
        if finishTime != nil { return .finished }
        if receiveTime != nil { return .running }
        if assignTime != nil { return .assigned }
        return .queued
    }

    /// Whether the job is done.
    package var isFinished: Bool { finishTime != nil }
}

/// A job that could not be queued because no registered agent in the pool satisfies its demands.
package struct QueueFailure: Sendable, Equatable, Error, CustomStringConvertible {
    /// When the queue attempt happened.
    package let time: Date
    /// The pool name the job asked for.
    package let poolName: String
    /// The job's display name.
    package let jobName: String
    /// The demands, including the server-added `Agent.Version` demand.
    package let demands: [String]
    /// The message the service logs, e.g. `No agent found in pool p which satisfies the specified demands: ...`.
    package let message: String

    package var description: String { message }
}

/// A message waiting in a session's queue.
package struct AgentMessage: Sendable, Equatable {
    /// Message id, increasing across the organization.
    package let messageId: Int
    /// `PipelineAgentJobRequest`, `JobCancel` or `AgentRefresh`.
    package let messageType: String
    /// The body: a JSON document encoded as a string.
    package let body: String
    /// The job request the message is about, if any.
    package let requestId: Int?
}

/// A listener session of an agent.
package struct SimulatedSession: Sendable, Equatable {
    /// Session GUID.
    package let sessionId: String
    /// The agent owning the session.
    package let agentId: Int
    /// The agent's pool.
    package let poolId: Int
    /// Host name the listener reported.
    package let ownerName: String
    /// When the session was opened.
    package let createdOn: Date
    /// Last poll or lock renewal.
    package var lastHeartbeat: Date
    /// Polls currently held open; a session with an open poll does not expire.
    package var activePolls: Int
    /// Messages not yet acknowledged.
    package var messages: [AgentMessage]
}

/// A published package (`PackageMetadata`).
package struct SimulatedPackage: Sendable, Equatable {
    /// Package type, e.g. `agent`.
    package let type: String
    /// Platform, e.g. `linux-x64`.
    package let platform: String
    /// Version.
    package let version: PackageVersion
    /// When it was published.
    package let createdOn: Date
    /// Where to download it (may be a `/_sim/downloads/` route).
    package let downloadUrl: String
    /// SHA-256 hex of the archive; omitted from the wire when nil.
    package let hashValue: String?
    /// Archive file name.
    package let filename: String
    /// Release notes link.
    package let infoUrl: String
}

/// One entry of the simulator's event log.
package struct SimulatorEvent: Sendable, Equatable, CustomStringConvertible {
    /// What happened.
    package enum Kind: String, Sendable, Equatable {
        /// Pool lifecycle.
        case poolCreated, poolUpdated, poolDeleted
        /// Agent registration, updates and deletion (or a refused deletion).
        case agentRegistered, agentReplaced, agentUpdated, agentDeleted, agentDeleteRefused, capabilitiesUpdated
        /// Listener sessions (expired = heartbeat timeout).
        case sessionOpened, sessionClosed, sessionExpired
        /// Job request lifecycle and message traffic.
        case jobQueued, jobQueueFailed, jobAssigned, jobRequeued, jobReceived, jobLockRenewed, jobFinished
        case jobCancelRequested, messageDelivered, messageAcknowledged
        /// Credentials (a token issued or refused), packages and control actions.
        case tokenIssued, tokenRefused, patAdded, patRevoked, packagePublished, refreshRequested, knobsChanged
    }

    /// When it happened (simulator clock).
    package let time: Date
    /// What happened.
    package let kind: Kind
    /// Human-readable detail.
    package let message: String
    /// The pool concerned, if any.
    package let poolId: Int?
    /// The agent concerned, if any.
    package let agentId: Int?
    /// The job request concerned, if any.
    package let requestId: Int?

    package var description: String {
        "\(WireTimestamp.format(time)) \(kind.rawValue): \(message)"
    }
}

/// What to queue: the control API's stand-in for a pipeline run that needs one agent job.
package struct JobSpecification: Sendable, Equatable {
    /// Pool name (case-insensitive).
    package var pool: String
    /// Job display name.
    package var name: String
    /// User demands as wire strings; the server adds `Agent.Version -gtVersion X`.
    package var demands: [String]
    /// How long the stand-in keeps the job alive.
    package var durationSeconds: Double
    /// Optional shell script the stand-in runs.
    package var script: String?
    /// Environment variables for the job.
    package var variables: [String: String]

    /// A job with these properties.
    package init(
        pool: String,
        name: String = "Job",
        demands: [String] = [],
        durationSeconds: Double = 0,
        script: String? = nil,
        variables: [String: String] = [:]
    ) {
        self.pool = pool
        self.name = name
        self.demands = demands
        self.durationSeconds = durationSeconds
        self.script = script
        self.variables = variables
    }
}

/// What to publish as a package.
package struct PackageSpecification: Sendable, Equatable {
    /// Package type, normally `agent`.
    package var type: String
    /// Platform, e.g. `linux-x64`.
    package var platform: String
    /// Version `x.y.z`.
    package var version: PackageVersion
    /// Download URL.
    package var downloadUrl: String
    /// SHA-256 hex, optional.
    package var hashValue: String?
    /// File name; defaults to `vsts-agent-{platform}-{version}.tar.gz`.
    package var filename: String?

    /// A package with these properties.
    package init(
        type: String = "agent",
        platform: String,
        version: PackageVersion,
        downloadUrl: String,
        hashValue: String? = nil,
        filename: String? = nil
    ) {
        self.type = type
        self.platform = platform
        self.version = version
        self.downloadUrl = downloadUrl
        self.hashValue = hashValue
        self.filename = filename
    }
}
