import Foundation
import Testing
@testable import Shared

@Suite("Wire timestamps")
struct WireTimestampTests {
    @Test("parses 0 to 7 fractional digits", arguments: [
        ("2022-09-28T11:19:49Z", 1_664_363_989.0),
        ("2022-09-28T11:19:49.8Z", 1_664_363_989.8),
        ("2022-09-28T11:19:49.89Z", 1_664_363_989.89),
        ("2022-09-28T11:20:22.4633333Z", 1_664_364_022.4633333),
        ("2022-09-28T11:20:32.0530499Z", 1_664_364_032.0530499),
        ("2022-09-28T13:19:49.5+02:00", 1_664_363_989.5),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T23:59:59.9999999Z", 1_709_251_199.9999999),
    ])
    func parses(text: String, expected: Double) throws {
        let date = try #require(WireTimestamp.parse(text))
        #expect(abs(date.timeIntervalSince1970 - expected) < 0.000_001)
    }

    @Test("rejects what is not a timestamp", arguments: ["", "2022-09-28", "2022-09-28T11:19:49", "2022-13-01T00:00:00Z", "2022-09-28T11:19:49.Z", "yesterday", "2022-09-28T11:19:49Zjunk"])
    func rejects(text: String) {
        #expect(WireTimestamp.parse(text) == nil)
    }

    @Test("formats like the service: UTC, microseconds, trailing zeros trimmed", arguments: [
        (1_664_363_989.0, "2022-09-28T11:19:49Z"),
        (1_664_363_989.89, "2022-09-28T11:19:49.89Z"),
        (1_664_364_022.4633333, "2022-09-28T11:20:22.463333Z"),
        (1_664_364_022.9999999, "2022-09-28T11:20:23Z"),
        (951_782_400.5, "2000-02-29T00:00:00.5Z"),
    ])
    func formats(seconds: Double, expected: String) {
        #expect(WireTimestamp.format(Date(timeIntervalSince1970: seconds)) == expected)
    }

    @Test("round-trips through format and parse")
    func roundTrips() throws {
        for seconds in stride(from: -86_400.0 * 400, through: 86_400.0 * 30_000, by: 86_400.0 * 97.123_456_7) {
            let date = Date(timeIntervalSince1970: seconds)
            let back = try #require(WireTimestamp.parse(WireTimestamp.format(date)))
            #expect(abs(back.timeIntervalSince1970 - seconds) < 0.000_001)
        }
    }

    @Test("the agent's log prefix is the .NET 'u' format")
    func agentLogPrefix() {
        #expect(WireTimestamp.agentLogPrefix(Date(timeIntervalSince1970: 1_714_564_809.7)) == "2024-05-01 12:00:09Z")
    }
}

@Suite("Demands")
struct DemandTests {
    @Test("parses the wire forms", arguments: [
        ("docker", "docker", Demand.Operation.exists),
        ("Agent.OS -equals Linux", "Agent.OS", .equals("Linux")),
        ("Agent.Version -gtVersion 2.163.1", "Agent.Version", .minimumVersion("2.163.1")),
        ("  java   -equals  17 LTS ", "java", .equals("17 LTS")),
        ("gpu -like a100", "gpu", .unknown(operator: "like", value: "a100")),
    ])
    func parses(text: String, name: String, operation: Demand.Operation) throws {
        let demand = try Demand(parsing: text)
        #expect(demand.name == name)
        #expect(demand.operation == operation)
    }

    @Test("rejects empty and operator-less demands", arguments: ["", "   ", "docker equals", "a -equals"])
    func rejects(text: String) {
        #expect(throws: Demand.ParseError.self) { try Demand(parsing: text) }
    }

    @Test("prints back the wire form")
    func description() throws {
        for text in ["docker", "Agent.OS -equals Linux", "Agent.Version -gtVersion 2.163.1"] {
            #expect(try Demand(parsing: text).description == text)
        }
    }

    static let capabilities = [
        "docker": "/usr/bin/docker", "Agent.OS": "Linux", "Agent.Version": "4.266.2", "java": "17", "empty": "",
    ]

    @Test("matches like the service", arguments: [
        ("docker", true),
        ("DOCKER", true),                          // names are looked up ignoring case
        ("kubectl", false),
        ("empty", true),                           // exists ignores the value
        ("Agent.OS -equals linux", true),          // equals ignores case
        ("Agent.OS -equals Windows_NT", false),
        ("missing -equals x", false),
        ("Agent.Version -gtVersion 2.163.1", true),
        ("Agent.Version -gtVersion 4.266.2", true),  // equal versions satisfy
        ("Agent.Version -gtVersion 4.266.3", false),
        ("Agent.Version -gtVersion 4.1000.0", false),   // numeric, not lexical
        ("Agent.Version -gtVersion 4.266", true),
        ("Agent.Version -gtVersion 4.266.2-preview", true), // cut at the first '-'
        ("java -gtVersion 11", true),
        ("Agent.OS -gtVersion 1.0", false),        // a non-version value never satisfies
        ("java -like 1*", false),                  // unknown operators are never satisfied
    ])
    func matches(text: String, expected: Bool) throws {
        #expect(try Demand(parsing: text).isSatisfied(by: Self.capabilities) == expected)
    }

    @Test("all demands must hold")
    func allSatisfied() throws {
        let demands = try Demand.parseAll(["docker", "Agent.OS -equals Linux"])
        #expect(Demand.allSatisfied(demands, by: Self.capabilities))
        #expect(!Demand.allSatisfied(demands + [try Demand(parsing: "gpu")], by: Self.capabilities))
        #expect(Demand.allSatisfied([], by: [:]))
    }

    @Test("dotted versions compare numerically")
    func versions() throws {
        #expect(try #require(DottedVersion("2.10.0")) > #require(DottedVersion("2.9.9")))
        #expect(try #require(DottedVersion("1.2")) == #require(DottedVersion("1.2.0")))
        #expect(DottedVersion("1.2.3.4.5") == nil)
        #expect(DottedVersion("a.b") == nil)
    }
}
