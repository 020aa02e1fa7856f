import Foundation
import Shared

/// Renders the simulator's records in the service's JSON wire format.
///
/// Field names, order, omitted-versus-null choices and enum spellings follow the fact sheet (KEDA fixtures and
/// the DistributedTask contracts), independent of the Shared client's Codable models.
struct WireFormat {
    /// `http://127.0.0.1:PORT/ORG`, the base of every `_links` href.
    let organizationURL: String
    /// The state the records come from (to resolve agent references).
    let state: OrganizationState

    /// The `authorizationUrl` handed out at registration, which is also the audience the token endpoint
    /// requires in client assertions: `{organizationURL}/_apis/oauth2/token`.
    static func authorizationURL(organizationURL: String) -> String {
        "\(organizationURL)/_apis/oauth2/token"
    }

    /// A `{count, value}` collection envelope.
    static func envelope(_ values: [JSONValue]) -> JSONValue {
        .object(JSONObject([("count", .int(values.count)), ("value", .array(values))]))
    }

    private var identity: JSONValue {
        .object(JSONObject([
            ("displayName", "Shoal Simulator"),
            ("url", .string("\(organizationURL)/_apis/Identities/00000000-0000-0000-0000-000000000001")),
            ("id", "00000000-0000-0000-0000-000000000001"),
            ("uniqueName", "simulator@shoal.invalid"),
            ("descriptor", "aad.c2ltdWxhdG9y"),
        ]))
    }

    /// A `TaskAgentPool`.
    func pool(_ pool: SimulatedPool) -> JSONValue {
        .object(JSONObject([
            ("createdOn", .string(WireTimestamp.format(pool.createdOn))),
            ("autoProvision", false),
            ("autoUpdate", .bool(pool.autoUpdate)),
            ("autoSize", .null),
            ("targetSize", .null),
            ("agentCloudId", .null),
            ("createdBy", identity),
            ("owner", identity),
            ("id", .int(pool.id)),
            ("scope", .string(pool.scope)),
            ("name", .string(pool.name)),
            ("isHosted", false),
            ("poolType", "automation"),
            ("size", .int(state.registeredAgents(inPool: pool.id).count)),
            ("isLegacy", false),
            ("options", "none"),
        ]))
    }

    private func agentLinks(_ agent: SimulatedAgent) -> JSONValue {
        .object(JSONObject([
            ("self", .object(JSONObject([
                ("href", .string("\(organizationURL)/_apis/distributedtask/pools/\(agent.poolId)/agents/\(agent.id)")),
            ]))),
            ("web", .object(JSONObject([
                ("href", .string("\(organizationURL)/_settings/agentpools?view=jobs&poolId=\(agent.poolId)&agentId=\(agent.id)")),
            ]))),
        ]))
    }

    /// A `TaskAgentReference` (as in `matchedAgents` and `reservedAgent`).
    func agentReference(_ agent: SimulatedAgent) -> JSONValue {
        .object(JSONObject([
            ("_links", agentLinks(agent)),
            ("id", .int(agent.id)),
            ("name", .string(agent.name)),
            ("version", .string(agent.version)),
            ("osDescription", .string(agent.osDescription)),
            ("enabled", .bool(agent.enabled)),
            ("status", .string(agent.status.rawValue)),
            ("provisioningState", "Provisioned"),
            ("accessPoint", "CodexAccessMapping"),
        ]))
    }

    /// Which optional parts of a `TaskAgent` to include.
    struct AgentDetail {
        /// Include `systemCapabilities` and `userCapabilities`.
        var capabilities = false
        /// Include `assignedRequest` when the agent holds one.
        var assignedRequest = false
        /// Include `lastCompletedRequest` when there is one.
        var lastCompletedRequest = false
        /// Everything.
        static let all = AgentDetail(capabilities: true, assignedRequest: true, lastCompletedRequest: true)
    }

    /// A `TaskAgent`.
    func agent(_ agent: SimulatedAgent, detail: AgentDetail) -> JSONValue {
        var object = JSONObject([
            ("_links", agentLinks(agent)),
            ("maxParallelism", .int(agent.maxParallelism)),
            ("createdOn", .string(WireTimestamp.format(agent.createdOn))),
            ("statusChangedOn", .string(WireTimestamp.format(agent.statusChangedOn))),
            ("authorization", .object(JSONObject([
                ("authorizationUrl", .string(Self.authorizationURL(organizationURL: organizationURL))),
                ("clientId", .string(agent.clientId)),
                ("publicKey", .object(JSONObject([
                    ("exponent", .string(agent.publicKeyExponent)),
                    ("modulus", .string(agent.publicKeyModulus)),
                ]))),
            ]))),
        ])
        if detail.capabilities {
            object["systemCapabilities"] = .stringMap(agent.systemCapabilities)
            object["userCapabilities"] = .stringMap(agent.userCapabilities)
        }
        if detail.assignedRequest, let id = agent.assignedRequestId, let request = state.requests[id] {
            object["assignedRequest"] = jobRequest(request, includeMatchedAgents: false)
        }
        if detail.lastCompletedRequest, let id = agent.lastCompletedRequestId, let request = state.requests[id] {
            object["lastCompletedRequest"] = jobRequest(request, includeMatchedAgents: false)
        }
        for (key, value) in [
            ("id", JSONValue.int(agent.id)),
            ("name", .string(agent.name)),
            ("version", .string(agent.version)),
            ("osDescription", .string(agent.osDescription)),
            ("enabled", .bool(agent.enabled)),
            ("status", .string(agent.status.rawValue)),
            ("provisioningState", "Provisioned"),
            ("accessPoint", "CodexAccessMapping"),
        ] {
            object[key] = value
        }
        return .object(object)
    }

    private func ownerObject(id: Int, name: String, web: String, api: String) -> JSONValue {
        .object(JSONObject([
            ("_links", .object(JSONObject([
                ("web", .object(JSONObject([("href", .string(web))]))),
                ("self", .object(JSONObject([("href", .string(api))]))),
            ]))),
            ("id", .int(id)),
            ("name", .string(name)),
        ]))
    }

    /// The Build service's GUID, as in the KEDA fixtures.
    static let buildServiceOwner = "00025394-6065-48ca-87d9-7f5672854ef7"
    /// The host GUID of the simulated organization.
    static let hostId = "41a18c7d-df5e-4032-a4df-d533b56bd2de"

    /// A `TaskAgentJobRequest`; null fields are omitted, `matchedAgents` only when asked.
    func jobRequest(_ request: SimulatedJobRequest, includeMatchedAgents: Bool) -> JSONValue {
        var object = JSONObject([
            ("requestId", .int(request.requestId)),
            ("queueTime", .string(WireTimestamp.format(request.queueTime))),
        ])
        object["assignTime"] = .timestamp(request.assignTime)
        object["receiveTime"] = .timestamp(request.receiveTime)
        object["finishTime"] = .timestamp(request.finishTime)
        object["result"] = request.result.map { .string($0.rawValue) }
        object["lockedUntil"] = .timestamp(request.lockedUntil)
        object["serviceOwner"] = .string(Self.buildServiceOwner)
        object["hostId"] = .string(Self.hostId)
        object["scopeId"] = .string(request.scopeId)
        object["planType"] = "Build"
        object["planId"] = .string(request.planId)
        object["jobId"] = .string(request.jobId)
        object["jobName"] = .string(request.jobName)
        object["demands"] = .array(request.demands.map { .string($0) })
        if let agentId = request.reservedAgentId, let agent = state.agents[agentId] {
            object["reservedAgent"] = agentReference(agent)
        }
        if includeMatchedAgents {
            let matched = request.matchedAgentIds.compactMap { state.agents[$0] }.map(agentReference)
            object["matchedAgents"] = .array(matched)
        }
        let project = "\(organizationURL)/\(request.scopeId)"
        object["definition"] = ownerObject(
            id: request.definitionId, name: request.definitionName,
            web: "\(project)/_build/definition?definitionId=\(request.definitionId)",
            api: "\(project)/_apis/build/Definitions/\(request.definitionId)")
        object["owner"] = ownerObject(
            id: request.buildId, name: request.buildNumber,
            web: "\(project)/_build/results?buildId=\(request.buildId)",
            api: "\(project)/_apis/build/Builds/\(request.buildId)")
        object["data"] = .object(JSONObject([("ParallelismTag", "Private"), ("IsScheduledKey", "False")]))
        object["poolId"] = .int(request.poolId)
        object["orchestrationId"] = .string("\(request.planId).build.__default")
        object["priority"] = 0
        return .object(object)
    }

    /// A `PackageMetadata`.
    func package(_ package: SimulatedPackage) -> JSONValue {
        var object = JSONObject([
            ("type", .string(package.type)),
            ("platform", .string(package.platform)),
            ("createdOn", .string(WireTimestamp.format(package.createdOn))),
            ("version", .object(JSONObject([
                ("major", .int(package.version.major)),
                ("minor", .int(package.version.minor)),
                ("patch", .int(package.version.patch)),
            ]))),
            ("downloadUrl", .string(package.downloadUrl)),
        ])
        object["hashValue"] = package.hashValue.map { .string($0) }
        object["infoUrl"] = .string(package.infoUrl)
        object["filename"] = .string(package.filename)
        return .object(object)
    }

    /// A session as returned by `POST sessions`.
    func session(_ session: SimulatedSession) -> JSONValue {
        var object = JSONObject([
            ("sessionId", .string(session.sessionId)),
            ("ownerName", .string(session.ownerName)),
        ])
        if let agent = state.agents[session.agentId] { object["agent"] = agentReference(agent) }
        return .object(object)
    }

    /// A message as returned by `GET messages`.
    static func message(_ message: AgentMessage) -> JSONValue {
        .object(JSONObject([
            ("messageId", .int(message.messageId)),
            ("messageType", .string(message.messageType)),
            ("body", .string(message.body)),
        ]))
    }
}
