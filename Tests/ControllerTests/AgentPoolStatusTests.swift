import Foundation
import Kubernetes
import Testing

@testable import pool_controller

@Suite("AgentPool status encoding")
struct AgentPoolStatusEncodingTests {
    /// Regression: the API server refused every status write because `Degraded` carried an empty message, which
    /// arrives at CRD validation as null.
    @Test("a condition never carries an empty message")
    func emptyMessage() throws {
        var status = AgentPoolStatus()
        var conditions: [PoolCondition] = []
        conditions.set(PoolCondition(type: "Degraded", status: false, reason: "AsExpected", message: ""), now: Date(timeIntervalSince1970: 0))
        status.conditions = conditions
        let json = try KubeJSON(encoding: status)
        #expect(json["conditions"]?.arrayValue?.first?["message"] == .string("AsExpected"), "\(json.jsonText)")
    }
}
