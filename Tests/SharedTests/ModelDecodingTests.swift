import Foundation
import Testing
@testable import Shared

/// Recorded shapes of the service's responses (values invented, field names and layout as the service sends them).
enum Fixtures {
    static let queuedRequest = """
    {"requestId":890659,"queueTime":"2022-09-28T11:19:49.89Z","serviceOwner":"00025394-6065-48ca-87d9-7f5672854ef7",
     "hostId":"41a18c7d-df5e-4032-a4df-d533b56bd2de","scopeId":"1858395a-257e-4efd-bbc5-eb618128452b","planType":"Build",
     "planId":"5c5c8ec9-786f-4e97-99d4-a29279befba3","jobId":"12f1170f-54f2-53f3-20dd-22fc7dff55f9",
     "demands":["kubectl","Agent.Version -gtVersion 2.182.1"],
     "matchedAgents":[{"_links":{"self":{"href":"https://dev.azure.com/contoso/_apis/distributedtask/pools/44/agents/1755"}},
        "id":1755,"name":"shoal-placeholder","version":"2.210.1","enabled":true,"status":"offline","provisioningState":"Provisioned"}],
     "definition":{"_links":{"web":{"href":"https://dev.azure.com/contoso/x/_build/definition?definitionId=4869"}},"id":4869,"name":"base - main"},
     "owner":{"_links":{"web":{"href":"https://dev.azure.com/contoso/x/_build/results?buildId=673584"}},"id":673584,"name":"20220928.2"},
     "data":{"ParallelismTag":"Private","IsScheduledKey":"False"},"poolId":44,
     "orchestrationId":"5c5c8ec9-786f-4e97-99d4-a29279befba3.build.__default","priority":0}
    """

    static let assignedRequest = """
    {"requestId":890660,"queueTime":"2022-09-28T11:19:49.89Z","assignTime":"2022-09-28T11:20:29.5033333Z",
     "planType":"Build","planId":"p","jobId":"j","demands":["Agent.Version -gtVersion 2.182.1"],
     "reservedAgent":{"id":11735,"name":"pool-a-x7k2p","version":"4.266.2","enabled":true,"status":"online"},
     "poolId":44,"priority":0}
    """

    static let runningRequest = """
    {"requestId":890664,"queueTime":"2022-09-28T11:19:49.89Z","assignTime":"2022-09-28T11:20:29.5033333Z",
     "receiveTime":"2022-09-28T11:20:32.0530499Z","lockedUntil":"2022-09-28T11:30:32.07Z","planType":"Build",
     "planId":"p","jobId":"j","demands":["dotnet60","java","Agent.Version -gtVersion 2.182.1"],
     "reservedAgent":{"_links":{},"id":11735,"name":"pool-a-x7k2p","version":"2.210.1","osDescription":"Linux 5.4.0",
        "enabled":true,"status":"online","provisioningState":"Provisioned","accessPoint":"CodexAccessMapping"},
     "matchedAgents":[{"id":11735,"name":"pool-a-x7k2p","enabled":true,"status":"online"}],"poolId":44,"priority":0}
    """

    static let finishedRequest = """
    {"requestId":890665,"queueTime":"2022-09-28T11:19:49Z","assignTime":"2022-09-28T11:20:29.5Z",
     "receiveTime":"2022-09-28T11:20:32.05Z","finishTime":"2022-09-28T11:24:02.1234567Z","result":"succeeded",
     "lockedUntil":"2022-09-28T11:30:32.07Z","planType":"Build","reservedAgent":{"id":11735,"name":"pool-a-x7k2p"},"poolId":44}
    """

    static let canceledWhileQueued = """
    {"requestId":890666,"queueTime":"2022-09-28T11:19:49Z","finishTime":"2022-09-28T11:21:00Z","result":"canceled","poolId":44}
    """

    static let futureResultRequest = """
    {"requestId":890667,"queueTime":"2022-09-28T11:19:49Z","finishTime":"2022-09-28T11:21:00Z","result":"someNewOutcome",
     "reservedAgent":{"id":1,"name":"a","status":"hibernating"}}
    """

    static let agentList = """
    {"count":2,"value":[
      {"_links":{"self":{"href":"https://dev.azure.com/contoso/_apis/distributedtask/pools/44/agents/11735"}},
       "maxParallelism":1,"createdOn":"2024-05-01T12:00:03.31Z","statusChangedOn":"2024-05-01T12:00:09.143Z",
       "authorization":{"clientId":"3b2a","publicKey":{"exponent":"AQAB","modulus":"rHRh=="}},
       "systemCapabilities":{"Agent.Name":"pool-a-x7k2p","Agent.Version":"4.266.2","Agent.OS":"Linux","docker":"/usr/bin/docker"},
       "userCapabilities":{"gpu":"a100","docker":"override"},
       "assignedRequest":{"requestId":890664,"queueTime":"2022-09-28T11:19:49.89Z","assignTime":"2022-09-28T11:20:29.5033333Z",
          "receiveTime":"2022-09-28T11:20:32.0530499Z","planType":"Build","poolId":44},
       "id":11735,"name":"pool-a-x7k2p","version":"4.266.2","osDescription":"Linux 5.15.0-1061-azure",
       "enabled":true,"status":"online","provisioningState":"Provisioned","accessPoint":"CodexAccessMapping"},
      {"id":11736,"name":"pool-a-q9w8e","version":"4.266.2","enabled":true,"status":"online","createdOn":"2024-05-01T12:00:04Z"}
    ]}
    """

    static let poolList = """
    {"count":1,"value":[{"createdOn":"2024-03-01T10:15:42.373Z","autoProvision":false,"autoUpdate":true,"autoSize":null,
      "targetSize":null,"agentCloudId":null,"createdBy":{"displayName":"Jane Admin","id":"6f2b"},
      "owner":{"displayName":"Jane Admin","id":"6f2b"},"id":44,"scope":"27d50f95-4d70-427f-b48a-3995cccdcd72",
      "name":"k8s-elastic","isHosted":false,"poolType":"automation","size":3,"isLegacy":false,"options":"none"}]}
    """

    static let packageList = """
    {"count":2,"value":[
      {"type":"agent","platform":"linux-x64","createdOn":"2025-12-17T14:25:22.87Z","version":{"major":4,"minor":266,"patch":2},
       "downloadUrl":"https://download.example/agent/4.266.2/vsts-agent-linux-x64-4.266.2.tar.gz",
       "hashValue":"d0c0204972cb2298ad9a149d959b4c3d9085226f04e7b83a499980509b439146","infoUrl":"https://example/info",
       "filename":"vsts-agent-linux-x64-4.266.2.tar.gz"},
      {"type":"agent","platform":"linux-x64","createdOn":"2018-01-01T00:00:00Z","version":{"major":2,"minor":126,"patch":0},
       "downloadUrl":"https://download.example/agent/2.126.0/vsts-agent-linux-x64-2.126.0.tar.gz","filename":"old.tar.gz"}
    ]}
    """

    static let wrappedException = """
    {"$id":"1","innerException":null,"message":"No agent found for pool 23 with identifier 2884.",
     "typeName":"Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentNotFoundException, Microsoft.TeamFoundation.DistributedTask.WebApi",
     "typeKey":"TaskAgentNotFoundException","errorCode":0,"eventId":3000}
    """

    static func decode<T: Decodable>(_ type: T.Type, _ json: String) throws -> T {
        try AzureDevOpsClient.makeDecoder().decode(T.self, from: Data(json.utf8))
    }
}

@Suite("Decoding the service's wire format")
struct ModelDecodingTests {
    @Test("a queued request has no assign/receive/result and keeps matched agents")
    func queued() throws {
        let request = try Fixtures.decode(JobRequest.self, Fixtures.queuedRequest)
        #expect(request.requestId == 890_659)
        #expect(request.phase == .queued)
        #expect(request.assignTime == nil && request.receiveTime == nil && request.result == nil)
        #expect(request.demands == ["kubectl", "Agent.Version -gtVersion 2.182.1"])
        #expect(request.parsedDemands.map(\.name) == ["kubectl", "Agent.Version"])
        #expect(request.matchedAgents?.map(\.name) == ["shoal-placeholder"])
        #expect(request.matchedAgents?.first?.status == .offline)
        #expect(request.owner?.name == "20220928.2")
        #expect(abs(try #require(request.queueTime).timeIntervalSince1970 - 1_664_363_989.89) < 0.000_001)
    }

    @Test("phases: assigned, running, finished, canceled while queued", arguments: [
        (Fixtures.assignedRequest, JobRequestPhase.assigned),
        (Fixtures.runningRequest, .running),
        (Fixtures.finishedRequest, .finished),
        (Fixtures.canceledWhileQueued, .finished),
        (Fixtures.queuedRequest, .queued),
    ])
    func phases(json: String, phase: JobRequestPhase) throws {
        #expect(try Fixtures.decode(JobRequest.self, json).phase == phase)
    }

    @Test("a running request carries its agent and lock")
    func running() throws {
        let request = try Fixtures.decode(JobRequest.self, Fixtures.runningRequest)
        #expect(request.reservedAgent?.id == 11735)
        #expect(request.reservedAgent?.status == .online)
        #expect(request.lockedUntil != nil)
    }

    @Test("results decode and unknown enum values are kept, not fatal")
    func results() throws {
        #expect(try Fixtures.decode(JobRequest.self, Fixtures.finishedRequest).result == .succeeded)
        #expect(try Fixtures.decode(JobRequest.self, Fixtures.canceledWhileQueued).result == .canceled)
        let future = try Fixtures.decode(JobRequest.self, Fixtures.futureResultRequest)
        #expect(future.result?.rawValue == "someNewOutcome")
        #expect(future.reservedAgent?.status?.rawValue == "hibernating")
        #expect(future.phase == .finished)
        #expect(TaskResult(rawValue: "Succeeded") == .succeeded)
    }

    @Test("phase derivation covers every combination in one place")
    func phaseTable() {
        let now = Date()
        #expect(JobRequest(requestId: 1).phase == .queued)
        #expect(JobRequest(requestId: 1, reservedAgent: AgentReference(id: 1, name: "a", version: nil, enabled: nil, status: nil)).phase == .assigned)
        #expect(JobRequest(requestId: 1, assignTime: now).phase == .assigned)
        #expect(JobRequest(requestId: 1, assignTime: now, receiveTime: now).phase == .running)
        #expect(JobRequest(requestId: 1, receiveTime: now).phase == .running)
        #expect(JobRequest(requestId: 1, assignTime: now, receiveTime: now, result: .failed).phase == .finished)
        #expect(JobRequest(requestId: 1, finishTime: now).phase == .finished)
    }

    @Test("agents: capabilities merged with user winning, assigned request, idle")
    func agents() throws {
        let list = try Fixtures.decode(CollectionEnvelope<Agent>.self, Fixtures.agentList)
        #expect(list.count == 2)
        let busy = list.value[0]
        #expect(busy.status == .online)
        #expect(busy.capabilities["gpu"] == "a100")
        #expect(busy.capabilities["docker"] == "override")
        #expect(busy.assignedRequest?.phase == .running)
        #expect(!busy.isIdle)
        let idle = list.value[1]
        #expect(idle.systemCapabilities == nil)
        #expect(idle.isIdle)
    }

    @Test("pools: nulls and extra fields are tolerated")
    func pools() throws {
        let pools = try Fixtures.decode(CollectionEnvelope<AgentPool>.self, Fixtures.poolList)
        #expect(pools.value == [AgentPool(id: 44, name: "k8s-elastic", size: 3, isHosted: false, poolType: .automation, autoUpdate: true)])
    }

    @Test("packages: versions as objects")
    func packages() throws {
        let packages = try Fixtures.decode(CollectionEnvelope<AgentPackage>.self, Fixtures.packageList)
        #expect(packages.value.map(\.version.description) == ["4.266.2", "2.126.0"])
        #expect(packages.value[1].hashValue == nil)
        #expect(packages.value.max { $0.version < $1.version }?.filename == "vsts-agent-linux-x64-4.266.2.tar.gz")
    }

    @Test("error bodies: WrappedException")
    func errorBody() throws {
        let error = try Fixtures.decode(WrappedException.self, Fixtures.wrappedException)
        #expect(error.typeKey == "TaskAgentNotFoundException")
        #expect(error.message == "No agent found for pool 23 with identifier 2884.")
    }

    @Test("an empty envelope decodes to no elements")
    func emptyEnvelope() throws {
        #expect(try Fixtures.decode(CollectionEnvelope<JobRequest>.self, #"{"count":0,"value":[]}"#).value.isEmpty)
    }
}
