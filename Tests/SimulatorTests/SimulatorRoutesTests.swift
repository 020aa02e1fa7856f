import AgentIdentity
import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Shared
import Simulators
import Testing

/// The public REST routes through raw HTTP: envelopes, field sets, omitted fields, timestamps and query modes.
@Suite(.timeLimit(.minutes(1)))
struct SimulatorRoutesTests {
    @Test func poolsListFiltersAndShape() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration(pools: ["pool-a", "Pool-B"])) { simulator in
            let http = SimHTTP(simulator: simulator)
            #expect(try await http.list("_apis/distributedtask/pools").count == 2)
            let byName = try await http.list("_apis/distributedtask/pools?POOLNAME=pool-b&poolType=automation&poolID=99")
            let pool = try #require(byName.first?.objectValue)
            #expect(byName.count == 1)
            #expect(pool["name"] == "Pool-B")
            #expect(pool["poolType"] == "automation")
            #expect(pool["isHosted"] == false)
            #expect(pool["size"] == 0)
            #expect(pool["autoUpdate"] == true)
            #expect(pool["targetSize"] == .null)
            #expect(pool["agentCloudId"] == .null)
            #expect(pool["autoSize"] == .null)
            #expect(WireTimestamp.parse(pool["createdOn"]?.stringValue ?? "") != nil)
            let id = try #require(pool["id"]?.intValue)
            #expect(try await http.list("_apis/distributedtask/pools?poolIds=\(id)").count == 1)
            #expect(try await http.list("_apis/distributedtask/pools?poolName=nope").isEmpty)
            #expect(try await http.list("_apis/distributedtask/pools?poolType=deployment").isEmpty)

            let single = try await http.get("_apis/distributedtask/pools/\(id)?api-version=7.1")
            #expect(try single.json["name"] == "Pool-B")
            let missing = try await http.get("_apis/distributedtask/pools/999")
            #expect(missing.status == 404)
            #expect(try missing.json["typeKey"] == "TaskAgentPoolNotFoundException")
            #expect(try missing.json["$id"] == "1")

            let patched = try await http.send(
                .PATCH, "_apis/distributedtask/pools/\(id)", body: .object(JSONObject([("autoUpdate", false)])))
            #expect(try patched.json["autoUpdate"] == false)
            let deleted = try await http.send(.DELETE, "_apis/distributedtask/pools/\(id)")
            #expect(deleted.status == 204)
            #expect(try await http.get("_apis/distributedtask/pools/\(id)").status == 404)
        }
    }

    @Test(arguments: [
        ("7.1", 200), ("7.2-preview", 200), ("7.2-preview.1", 200), ("5.0", 200), ("6.0-preview.2", 200),
        ("7.3", 400), ("4.1", 400), ("7.1-beta", 400), ("abc", 400),
    ])
    func apiVersionForms(version: String, status: Int) async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let query = try await http.get("_apis/distributedtask/pools?api-version=\(version)")
            #expect(query.status == status)
            let header = try await http.get(
                "_apis/distributedtask/pools", headers: [("Accept", "application/json;api-version=\(version)")])
            #expect(header.status == status)
            if status == 400 { #expect(try query.json["typeKey"] == "VssVersionOutOfRangeException") }
        }
    }

    @Test func agentRoutesAndIncludeFlags() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1", capabilities: ["docker": "/usr/bin/docker"])
            _ = try await TestAgent.register(http, poolId: poolId, name: "agent-2")
            let agents = "_apis/distributedtask/pools/\(poolId)/agents"

            let plain = try await http.list(agents)
            #expect(plain.count == 2)
            let first = try #require(plain.first?.objectValue)
            #expect(first["systemCapabilities"] == nil)
            #expect(first["status"] == "offline")
            #expect(first["enabled"] == true)
            #expect(first["provisioningState"] == "Provisioned")
            #expect(first["_links"]?["self"]?["href"]?.stringValue?.hasSuffix("/pools/\(poolId)/agents/\(agent.agentId)") == true)
            #expect(first["authorization"]?["clientId"]?.stringValue == agent.clientId)
            #expect(first["authorization"]?["authorizationUrl"]?.stringValue == "\(simulator.organizationURL)/_apis/oauth2/token")

            let named = try await http.list("\(agents)?agentName=AGENT-1&includeCapabilities=true")
            #expect(named.count == 1)
            #expect(named.first?["systemCapabilities"]?["docker"] == "/usr/bin/docker")
            #expect(named.first?["userCapabilities"] == .object(JSONObject()))
            #expect(try await http.list("\(agents)?demands=docker,Agent.OS%20-equals%20linux").count == 1)
            #expect(try await http.list("\(agents)?demands=kubectl").isEmpty)

            let duplicate = try await http.send(
                .POST, agents, body: .object(JSONObject([("name", "agent-1"), ("version", "4.266.2")])))
            #expect(duplicate.status == 409)
            #expect(try duplicate.json["typeKey"] == "TaskAgentExistsException")
            #expect(try duplicate.json["message"] == "Pool pool-a already contains an agent with name agent-1.")

            let disabled = try await http.send(
                .PATCH, "\(agents)/\(agent.agentId)", body: .object(JSONObject([("id", .int(agent.agentId)), ("enabled", "false")])))
            #expect(disabled.status == 200)
            #expect(try disabled.json["enabled"] == false)

            let capabilities = try await http.send(
                .PUT, "\(agents)/\(agent.agentId)/usercapabilities", body: .stringMap(["gpu": "a100"]))
            #expect(capabilities.status == 200)
            let overwritten = try await http.send(
                .PUT, "\(agents)/\(agent.agentId)/usercapabilities", body: .stringMap(["fpga": "yes"]))
            #expect(try overwritten.json["userCapabilities"] == .stringMap(["fpga": "yes"]))

            let one = try await http.get("\(agents)/\(agent.agentId)?includeCapabilities=true")
            #expect(try one.json["userCapabilities"]?["fpga"] == "yes")
            #expect(try one.json["enabled"] == false)
            #expect(try await http.get("\(agents)/999").status == 404)
            #expect(try await http.get("\(agents)/999").json["typeKey"] == "TaskAgentNotFoundException")

            let pool = try await http.get("_apis/distributedtask/pools/\(poolId)")
            #expect(try pool.json["size"] == 2)

            #expect(try await http.send(.DELETE, "\(agents)/\(agent.agentId)").status == 204)
            #expect(try await http.send(.DELETE, "\(agents)/\(agent.agentId)").status == 404)
            #expect(try await http.list(agents).count == 1)
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.agents.first { $0.id == agent.agentId }?.deletedOn != nil)
        }
    }

    @Test func replaceIssuesANewClientIdAndKillsTheOldToken() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let newKey = try AgentKey.generate()
            let replaced = try await http.send(
                .PUT, "_apis/distributedtask/pools/\(poolId)/agents/\(agent.agentId)",
                body: TestAgent.registrationBody(name: "agent-1", publicKey: newKey.publicKey, id: agent.agentId))
            #expect(replaced.status == 200)
            let newClientId = try #require(try replaced.json["authorization"]?["clientId"]?.stringValue)
            #expect(newClientId != agent.clientId)
            #expect(try await agent.poll(session).status == 401)
            let oldExchange = try await TestAgent.tokenReply(http, clientId: agent.clientId, key: agent.key)
            #expect(oldExchange.status == 401)
            #expect(try oldExchange.json["error"]?.stringValue == "invalid_client")
            let oldKeyNewClient = try await TestAgent.tokenReply(http, clientId: newClientId, key: agent.key)
            #expect(oldKeyNewClient.status == 401)
            #expect(try await TestAgent.token(http, clientId: newClientId, key: newKey).isEmpty == false)
            #expect(await simulator.organization.snapshot().agent(named: "agent-1")?.status == .offline)
        }
    }

    @Test func queuedRequestShapeOmitsNullFields() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let placeholder = try await TestAgent.register(http, poolId: poolId, name: "template", capabilities: ["kubectl": "/bin/kubectl"])
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a", name: "Build", demands: ["kubectl"]))
            let raw = try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests")
            // Field order as in the service's responses (checked on the raw text; parsing loses key order).
            let order = [
                "requestId", "queueTime", "serviceOwner", "hostId", "scopeId", "planType", "planId", "jobId", "jobName",
                "demands", "matchedAgents", "definition", "owner", "data", "poolId", "orchestrationId", "priority",
            ].map { raw.text.range(of: "\"\($0)\":")?.lowerBound }
            #expect(order.allSatisfy { $0 != nil })
            #expect(order.compactMap { $0 } == order.compactMap { $0 }.sorted())
            let list = try await http.list("_apis/distributedtask/pools/\(poolId)/jobrequests")
            let request = try #require(list.first?.objectValue)
            for omitted in ["assignTime", "receiveTime", "finishTime", "result", "lockedUntil", "reservedAgent"] {
                #expect(request[omitted] == nil, "\(omitted) must be omitted while queued")
            }
            #expect(request["requestId"]?.intValue == requestId)
            #expect(request["demands"] == .array(["kubectl", "Agent.Version -gtVersion 2.163.1"]))
            #expect(request["planType"] == "Build")
            #expect(request["matchedAgents"]?.arrayValue?.first?["name"] == "template")
            #expect(request["matchedAgents"]?.arrayValue?.first?["status"] == "offline")
            #expect(request["matchedAgents"]?.arrayValue?.first?["id"]?.intValue == placeholder.agentId)
            #expect(request["matchedAgents"]?.arrayValue?.first?["_links"]?["web"] != nil)
            let queueTime = try #require(request["queueTime"]?.stringValue)
            #expect(WireTimestamp.parse(queueTime) != nil)
            #expect(queueTime.hasSuffix("Z"))
            let one = try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)")
            #expect(try one.json["jobName"] == "Build")
            #expect(try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests/999").status == 404)
        }
    }

    @Test func everyJobRequestsQueryMode() async throws {
        var knobs = fastKnobs()
        knobs.defaultCompletedRequestCount = 2
        knobs.maximumTop = 4
        try await AzureDevOpsSimulator.withSimulator(testConfiguration(knobs: knobs)) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            _ = try await TestAgent.register(http, poolId: poolId, name: "placeholder")
            var ids: [Int] = []
            for index in 0..<6 {
                ids.append(try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a", name: "job-\(index)")))
            }
            for id in ids.prefix(4) { try await organization.cancelJob(requestId: id) }
            let path = "_apis/distributedtask/pools/\(poolId)/jobrequests"
            func requestIds(_ query: String) async throws -> [Int] {
                try await http.list(path + query).compactMap { $0["requestId"]?.intValue }
            }
            // No parameters: unfinished plus the 2 most recently finished (knob).
            #expect(try await requestIds("") == [ids[2], ids[3], ids[4], ids[5]])
            #expect(try await requestIds("?completedRequestCount=0") == [ids[4], ids[5]])
            #expect(try await requestIds("?completedRequestCount=1") == [ids[3], ids[4], ids[5]])
            // $top: newest first, finished included, no matchedAgents, capped, continuation header.
            let top = try await http.get(path + "?$top=3&completedRequestCount=0")
            let topValues = try #require(try top.json["value"]?.arrayValue)
            #expect(topValues.compactMap { $0["requestId"]?.intValue } == [ids[5], ids[4], ids[3]])
            #expect(topValues.allSatisfy { $0["matchedAgents"] == nil })
            let token = try #require(top.headers.first(name: "X-MS-ContinuationToken"))
            #expect(try await requestIds("?$top=3&continuationToken=\(token)") == [ids[2], ids[1], ids[0]])
            #expect(try await requestIds("?$top=250").count == 4)
            let finished = try #require(try await http.list(path + "?$top=6").last?.objectValue)
            #expect(finished["result"] == "canceled")
            #expect(finished["finishTime"] != nil)
            #expect(finished["assignTime"] == nil)
            // Plan and agent filters.
            let request = try #require(await organization.snapshot().request(ids[5]))
            #expect(try await requestIds("?planId=\(request.planId)") == [ids[5]])
            #expect(try await requestIds("?planId=\(request.planId)&jobId=\(request.jobId)") == [ids[5]])
            #expect(try await requestIds("?planId=\(request.planId)&jobId=00000000-0000-0000-0000-000000000000").isEmpty)
            #expect(try await requestIds("?agentId=12345").isEmpty)
        }
    }

    @Test func packagesNewestFirstWithTopForms() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let url = await organization.registerDownload(filename: "agent.tar.gz", contents: Array("tarball".utf8))
            for version in ["4.251.0", "4.266.2", "4.260.0"] {
                await organization.publishPackage(PackageSpecification(
                    platform: "linux-x64", version: try #require(PackageVersion(version)), downloadUrl: url, hashValue: "abc"))
            }
            await organization.publishPackage(PackageSpecification(
                platform: "linux-arm64", version: try #require(PackageVersion("4.266.2")), downloadUrl: url))
            func versions(_ query: String) async throws -> [String] {
                try await http.list("_apis/distributedtask/packages/agent" + query).compactMap { value in
                    guard let v = value["version"] else { return nil }
                    return "\(v["major"]?.intValue ?? -1).\(v["minor"]?.intValue ?? -1).\(v["patch"]?.intValue ?? -1)"
                }
            }
            #expect(try await versions("?platform=linux-x64") == ["4.266.2", "4.260.0", "4.251.0"])
            #expect(try await versions("?platform=linux-x64&top=1") == ["4.266.2"])
            #expect(try await versions("?platform=linux-x64&$top=2") == ["4.266.2", "4.260.0"])
            #expect(try await versions("/linux-x64?$top=1") == ["4.266.2"])
            #expect(try await versions("").count == 4)
            let first = try #require(try await http.list("_apis/distributedtask/packages/agent?platform=linux-arm64").first)
            #expect(first["hashValue"] == nil)
            #expect(first["filename"] == "vsts-agent-linux-arm64-4.266.2.tar.gz")
            let pinned = try await http.get("_apis/distributedtask/packages/agent/linux-x64/4.260.0")
            #expect(try pinned.json["downloadUrl"]?.stringValue == url)
            #expect(try pinned.json["hashValue"] == "abc")
            #expect(try await http.get("_apis/distributedtask/packages/agent/linux-x64/1.0.0").status == 404)
            let download = try await http.send(.GET, url, auth: .none, absolute: true)
            #expect(download.text == "tarball")
        }
    }

    @Test func controlRoutesOverHTTP() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let base = simulator.baseURL
            let pool = try await http.send(.POST, "\(base)/_sim/pools", body: .object(JSONObject([("name", "ctl"), ("autoUpdate", false)])), auth: .none, absolute: true)
            #expect(pool.status == 201)
            let failed = try await http.send(.POST, "\(base)/_sim/jobs", body: .object(JSONObject([("pool", "ctl"), ("demands", .array(["docker"]))])), auth: .none, absolute: true)
            #expect(failed.status == 422)
            #expect(try failed.json["message"] == "No agent found in pool ctl which satisfies the specified demands: docker, Agent.Version -gtVersion 2.163.1")
            let knobs = try await http.send(.PATCH, "\(base)/_sim/knobs", body: .object(JSONObject([("minimumAgentVersion", "3.0.0")])), auth: .none, absolute: true)
            #expect(try knobs.json["minimumAgentVersion"] == "3.0.0")
            _ = try await http.get("_apis/distributedtask/pools")
            let state = try await http.send(.GET, "\(base)/_sim/state", auth: .none, absolute: true)
            #expect(try state.json["queueFailures"]?.arrayValue?.count == 1)
            #expect(try state.json["requestCounts"]?["GET pools"]?["200"] == 1)
            #expect(await simulator.organization.knobs.minimumAgentVersion == "3.0.0")
        }
    }
}
