import Foundation
import Kubernetes
import Testing

@Suite("KubeJSON")
struct KubeJSONTests {
    /// Regression: an empty string went through `init(encoding:)` as `null`, and the API server refused an AgentPool
    /// status whose condition had an empty message.
    @Test("empty strings, zeros and false survive a round trip")
    func emptyValuesRoundTrip() throws {
        struct Sample: Encodable { var text = ""; var zero = 0; var flag = false; var missing: String? = nil }
        let json = try KubeJSON(encoding: Sample())
        #expect(json["text"] == .string(""))
        #expect(json["zero"] == .int(0))
        #expect(json["flag"] == .bool(false))
        #expect(json["missing"] == nil)
        let parsed = try KubeJSON(parsing: Data(#"{"a":"","b":null}"#.utf8))
        #expect(parsed["a"] == .string(""))
        #expect(parsed["b"] == .null)
    }
}
