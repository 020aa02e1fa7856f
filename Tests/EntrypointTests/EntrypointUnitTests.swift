import Foundation
import Logging
import Shared
import Synchronization
import Testing

@testable import agent_entrypoint

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The entrypoint's pure parts, through `@testable import agent_entrypoint`.

/// Which pids of a `/proc` snapshot the entrypoint kills after the job.
@Suite("agent-entrypoint process tree")
struct ProcessTreeTests {
    @Test("stat lines parse, even with a hostile comm holding spaces and parentheses")
    func parseStat() {
        #expect(ProcessTree.parseStat("1234 (sleep) S 1 1234 1234 0 -1 4194304") == ProcessEntry(pid: 1234, parent: 1, state: "S"))
        #expect(ProcessTree.parseStat("77 (a) R 5 (b c)) Z 42 77 77 0") == ProcessEntry(pid: 77, parent: 42, state: "Z"))
        #expect(ProcessTree.parseStat("9 (x y) T 3 9\n") == ProcessEntry(pid: 9, parent: 3, state: "T"))
        #expect(ProcessTree.parseStat("") == nil)
        #expect(ProcessTree.parseStat("12 sleep S 1") == nil)
        #expect(ProcessTree.parseStat("12 (sleep)") == nil)
    }

    /// One table row: a snapshot, the root, and the pids that must be selected (in any order).
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let entries: [ProcessEntry]
        let root: pid_t
        let expected: Set<pid_t>
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "nothing below the root", entries: [.init(pid: 10, parent: 1, state: "S")], root: 10, expected: []),
        Case(
            name: "children and grandchildren, not the root, not its parent or siblings",
            entries: [
                .init(pid: 1, parent: 0, state: "S"), .init(pid: 10, parent: 1, state: "S"), .init(pid: 11, parent: 10, state: "S"),
                .init(pid: 12, parent: 11, state: "R"), .init(pid: 13, parent: 12, state: "S"), .init(pid: 20, parent: 1, state: "S"),
                .init(pid: 21, parent: 20, state: "S"),
            ],
            root: 10, expected: [11, 12, 13]),
        Case(
            name: "setsid orphans re-parented to the subreaper are included",
            entries: [
                .init(pid: 10, parent: 1, state: "S"), .init(pid: 30, parent: 10, state: "S"), .init(pid: 31, parent: 10, state: "S"),
                .init(pid: 32, parent: 31, state: "D"),
            ],
            root: 10, expected: [30, 31, 32]),
        Case(
            name: "zombies are skipped, but what is below them is not",
            entries: [
                .init(pid: 10, parent: 1, state: "S"), .init(pid: 11, parent: 10, state: "Z"), .init(pid: 12, parent: 11, state: "S"),
                .init(pid: 13, parent: 10, state: "X"),
            ],
            root: 10, expected: [12]),
        Case(
            name: "as PID 1: everything else in the namespace, never 1 itself",
            entries: [
                .init(pid: 1, parent: 0, state: "S"), .init(pid: 7, parent: 1, state: "S"), .init(pid: 8, parent: 7, state: "T"),
            ],
            root: 1, expected: [7, 8]),
        Case(
            name: "a malformed self-parented entry does not loop",
            entries: [.init(pid: 10, parent: 1, state: "S"), .init(pid: 11, parent: 11, state: "S"), .init(pid: 12, parent: 10, state: "S")],
            root: 10, expected: [12]),
    ]

    @Test("descendants from a snapshot", arguments: cases)
    func descendants(_ row: Case) {
        let selected = ProcessTree.descendants(of: row.root, in: row.entries)
        #expect(Set(selected) == row.expected)
        #expect(selected.count == Set(selected).count, "each pid once")
    }

    @Test("parents come before their children, so a forking parent is killed first")
    func order() {
        let entries: [ProcessEntry] = [
            .init(pid: 13, parent: 12, state: "S"), .init(pid: 12, parent: 11, state: "S"), .init(pid: 11, parent: 10, state: "S"),
        ]
        #expect(ProcessTree.descendants(of: 10, in: entries) == [11, 12, 13])
    }

    @Test("the live /proc snapshot sees a child of this process", .timeLimit(.minutes(1)))
    func liveSnapshot() async throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["30"]
        try child.run()
        defer {
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
        }
        let snapshot = ProcessTree.snapshot()
        #expect(snapshot.contains { $0.pid == getpid() })
        #expect(ProcessTree.descendants(of: getpid(), in: snapshot).contains(child.processIdentifier))
        #expect(!ProcessTree.descendants(of: getpid(), in: snapshot).contains(getpid()))
    }
}

/// `AZP_REGISTRATION`, `AZP_REGISTRATION_DIR` and the token rules of each mode.
@Suite("agent-entrypoint registration settings")
struct RegistrationSettingsTests {
    private func settings(
        mode: String? = nil, directory: String? = nil, tokenFile: String? = nil, _ environment: [String: String]
    ) throws(SettingsError) -> RegistrationSettings {
        try RegistrationSettings(modeFlag: mode, directoryFlag: directory, tokenFileFlag: tokenFile, environment: environment)
    }

    @Test("default: entrypoint mode with the token from AZP_TOKEN, registration dir /azp/registration")
    func defaults() throws {
        let value = try settings(["AZP_TOKEN": " pat \n"])
        #expect(value == RegistrationSettings(mode: .entrypoint, directory: "/azp/registration", token: .value("pat")))
        #expect(try settings(["AZP_TOKEN": "pat", "AZP_TOKEN_FILE": "/t"]).token == .file("/t"))
    }

    @Test("controller mode holds no token; the mode is case-insensitive; flags win")
    func controller() throws {
        let value = try settings(["AZP_REGISTRATION": "Controller", "AZP_REGISTRATION_DIR": "/reg"])
        #expect(value == RegistrationSettings(mode: .controller, directory: "/reg", token: nil))
        let flagged = try settings(mode: "controller", directory: "/flag", ["AZP_REGISTRATION": "entrypoint", "AZP_REGISTRATION_DIR": "/reg"])
        #expect(flagged == RegistrationSettings(mode: .controller, directory: "/flag", token: nil))
    }

    @Test("a bad mode names the variable and the value")
    func badMode() {
        #expect(throws: SettingsError(description: #"AZP_REGISTRATION must be entrypoint or controller, got "x""#)) {
            try settings(["AZP_REGISTRATION": "x", "AZP_TOKEN": "pat"])
        }
    }

    @Test(
        "controller mode with a token is refused, naming the variable",
        arguments: [
            (["AZP_TOKEN": "pat"], nil, "AZP_TOKEN must not be set"),
            (["AZP_TOKEN_FILE": "/var/run/token"], nil, "AZP_TOKEN_FILE (--token-file) must not be set"),
            ([:], "/var/run/token", "AZP_TOKEN_FILE (--token-file) must not be set"),
        ] as [([String: String], String?, String)])
    func tokenInControllerMode(environment: [String: String], flag: String?, expected: String) {
        var environment = environment
        environment["AZP_REGISTRATION"] = "controller"
        do {
            _ = try settings(tokenFile: flag, environment)
            Issue.record("accepted a token in controller mode")
        } catch {
            #expect(error.description.hasPrefix(expected), "\(error)")
            #expect(error.description.contains("AZP_REGISTRATION=controller"))
        }
    }

    @Test("entrypoint mode without a token names both variables")
    func missingToken() {
        do {
            _ = try settings(["AZP_TOKEN": "  "])
            Issue.record("accepted no token")
        } catch {
            #expect(error.description.contains("AZP_TOKEN or AZP_TOKEN_FILE"), "\(error)")
        }
    }
}

/// The answers of the service, classified once for the loops.
@Suite("agent-entrypoint registry failures")
struct RegistryFailureTests {
    private static let route = "DELETE pools/{poolId}/agents/{agentId}"
    private static func server(_ status: Int, _ typeKey: String? = nil) -> ServerError {
        ServerError(status: status, route: route, message: "refused", typeKey: typeKey)
    }

    @Test(
        "a refused DELETE: every 4xx but 401/403/404 means busy, whatever the text; 401/403 are terminal; the rest transient",
        arguments: [
            (AzureDevOpsError.badRequest(server(400, "TaskAgentJobStillRunningException")), "busy"),
            (.badRequest(server(400, "SomethingNobodyHasSeenException")), "busy"),
            (.unexpectedStatus(server(422, "UnprocessableEntityException")), "busy"),
            (.unexpectedStatus(server(412)), "busy"),
            (.conflict(server(409)), "busy"),
            (.authentication(route: route, status: 401, credential: "PAT", serverMessage: nil), "unauthorized"),
            (.forbidden(server(403)), "unauthorized"),
            (.notFound(server(404)), "notFound"),
            (.serverFailure(server(503)), "transient"),
            (.throttled(server(429), retryAfter: nil), "transient"),
            (.transport(route: route, detail: "connection refused"), "transient"),
            (.unexpectedStatus(server(302)), "transient"),
            (.credential(.unreadable(path: "/t", reason: "gone")), "transient"),
        ] as [(AzureDevOpsError, String)])
    func deletion(error: AzureDevOpsError, expected: String) {
        #expect(Self.kind(RegistryFailure.deletion(error)) == expected)
    }

    @Test(
        "a failed lookup",
        arguments: [
            (AzureDevOpsError.poolNotFound(name: "p"), "notFound"),
            (.notFound(server(404)), "notFound"),
            (.authentication(route: route, status: 203, credential: "PAT", serverMessage: nil), "unauthorized"),
            (.badRequest(server(400)), "refused"),
            (.serverFailure(server(500)), "transient"),
        ] as [(AzureDevOpsError, String)])
    func lookup(error: AzureDevOpsError, expected: String) {
        #expect(Self.kind(RegistryFailure.lookup(error)) == expected)
    }

    static func kind(_ failure: RegistryFailure) -> String {
        switch failure {
        case .busy: "busy"
        case .unauthorized: "unauthorized"
        case .notFound: "notFound"
        case .refused: "refused"
        case .transient: "transient"
        }
    }
}

/// A clock whose sleeps return at once and move its time forward; every sleep is recorded.
final class InstantClock: ShoalClock {
    private let state = Mutex((now: Duration.zero, sleeps: [Duration]()))

    /// The sleeps asked for so far.
    var sleeps: [Duration] { state.withLock { $0.sleeps } }

    func monotonicNow() -> Duration { state.withLock { $0.now } }
    func wallNow() -> Date { Date(timeIntervalSince1970: 1_800_000_000 + state.withLock { $0.now }.seconds) }
    func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        state.withLock { state in
            state.now += duration
            state.sleeps.append(duration)
        }
    }
}

/// A clock whose sleeps last until they are cancelled: as the call clock, no call is ever cut off.
struct PatientClock: ShoalClock {
    func monotonicNow() -> Duration { .zero }
    func wallNow() -> Date { Date() }
    func sleep(for duration: Duration) async throws {
        // Suspends until the task is cancelled (an hour is "never" for these tests).
        try await Task.sleep(for: .seconds(3600))
    }
}

/// A fake service with scripted answers and recorded calls.
actor FakeRegistry: AgentRegistry {
    /// Answers to `delete`, in order; the last one repeats.
    var deletions: [Result<DeletionOutcome, RegistryFailure>]
    /// What `assignedRequest` answers.
    var assigned: Result<Int64?, RegistryFailure>
    /// What `identify` answers.
    var identity: Result<RegisteredAgent, RegistryFailure>
    /// Whether calls hang until cancelled.
    var hangs = false
    /// Every call, e.g. `delete 7`.
    private(set) var calls: [String] = []

    init(
        deletions: [Result<DeletionOutcome, RegistryFailure>] = [.success(.deleted)], assigned: Result<Int64?, RegistryFailure> = .success(nil),
        identity: Result<RegisteredAgent, RegistryFailure> = .success(RegisteredAgent(poolID: 1, agentID: 7, name: "a")), hangs: Bool = false
    ) {
        self.deletions = deletions
        self.assigned = assigned
        self.identity = identity
        self.hangs = hangs
    }

    private func hangIfAsked() async throws(RegistryFailure) {
        guard hangs else { return }
        // Suspends until the call is cut off (cancelled); an hour is "never" for these tests.
        try? await Task.sleep(for: .seconds(3600))
        throw .transient("cancelled")
    }

    func identify(pool: String, agentName: String) async throws(RegistryFailure) -> RegisteredAgent {
        calls.append("identify \(pool)/\(agentName)")
        try await hangIfAsked()
        return try identity.get()
    }

    func assignedRequest(of agent: RegisteredAgent) async throws(RegistryFailure) -> Int64? {
        calls.append("assigned \(agent.agentID)")
        try await hangIfAsked()
        return try assigned.get()
    }

    func delete(_ agent: RegisteredAgent) async throws(RegistryFailure) -> DeletionOutcome {
        calls.append("delete \(agent.agentID)")
        try await hangIfAsked()
        let answer = deletions.count > 1 ? deletions.removeFirst() : deletions[0]
        return try answer.get()
    }
}

/// The unregistration policy against a fake service: busy retries, backoff, terminal auth failures, deadlines.
@Suite("agent-entrypoint unregistration policy", .timeLimit(.minutes(1)))
struct UnregistrarTests {
    private let agent = RegisteredAgent(poolID: 1, agentID: 7, name: "a")

    private func unregistrar(_ registry: FakeRegistry, clock: InstantClock, callClock: any ShoalClock = PatientClock()) -> Unregistrar {
        var value = Unregistrar(registry: registry, clock: clock, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        value.callClock = callClock
        return value
    }

    @Test("busy twice, then deleted: retried every busyRetryInterval")
    func busyThenDeleted() async {
        let registry = FakeRegistry(deletions: [.failure(.busy("running")), .failure(.busy("running")), .success(.deleted)])
        let clock = InstantClock()
        #expect(await unregistrar(registry, clock: clock).unregister(agent, timeout: .seconds(25)) == .removed)
        #expect(await registry.calls == ["delete 7", "delete 7", "delete 7"])
        #expect(clock.sleeps == [.seconds(2), .seconds(2)])
    }

    @Test("already gone counts as removed")
    func alreadyGone() async {
        let registry = FakeRegistry(deletions: [.success(.alreadyGone)])
        #expect(await unregistrar(registry, clock: InstantClock()).unregister(agent, timeout: .seconds(25)) == .removed)
        #expect(await registry.calls == ["delete 7"])
    }

    @Test("401/403 end it at once", arguments: [RegistryFailure.unauthorized("401"), .refused("bad")])
    func terminal(failure: RegistryFailure) async {
        let registry = FakeRegistry(deletions: [.failure(failure)])
        let clock = InstantClock()
        #expect(await unregistrar(registry, clock: clock).unregister(agent, timeout: .seconds(25)) == .failed(detail: failure.description))
        #expect(await registry.calls == ["delete 7"])
        #expect(clock.sleeps.isEmpty)
    }

    @Test("transient failures back off exponentially and stop at the deadline")
    func transientUntilDeadline() async {
        let registry = FakeRegistry(deletions: [.failure(.transient("503"))])
        let clock = InstantClock()
        #expect(await unregistrar(registry, clock: clock).unregister(agent, timeout: .seconds(10)) == .failed(detail: "503"))
        #expect(clock.sleeps == [.seconds(1), .seconds(2), .seconds(4)], "the next wait (8 s) would pass the deadline")
        #expect(await registry.calls.count == 4)
    }

    @Test("busy until the deadline fails, with a bounded number of attempts")
    func busyUntilDeadline() async {
        let registry = FakeRegistry(deletions: [.failure(.busy("running"))])
        let clock = InstantClock()
        #expect(await unregistrar(registry, clock: clock).unregister(agent, timeout: .seconds(5)) == .failed(detail: "running"))
        #expect(await registry.calls.count == 3)
    }

    @Test("a call that hangs is cut off at the time limit")
    func hungCallIsCutOff() async {
        let registry = FakeRegistry(hangs: true)
        let result = await unregistrar(registry, clock: InstantClock(), callClock: InstantClock()).unregister(agent, timeout: .seconds(3))
        guard case .failed(let detail) = result else { Issue.record("\(result)"); return }
        #expect(detail.contains("did not answer within"))
    }

    @Test("by name: looked up over REST first; an agent that does not exist counts as removed")
    func byName() async {
        let registry = FakeRegistry()
        #expect(await unregistrar(registry, clock: InstantClock()).unregister(pool: "p", agentName: "a", timeout: .seconds(5)) == .removed)
        #expect(await registry.calls == ["identify p/a", "delete 7"])
        let gone = FakeRegistry(identity: .failure(.notFound("no agent")))
        #expect(await unregistrar(gone, clock: InstantClock()).unregister(pool: "p", agentName: "a", timeout: .seconds(5)) == .removed)
        #expect(await gone.calls == ["identify p/a"])
    }

    @Test("idle: an assigned request keeps the listener without even trying to delete")
    func idleWithAssignedRequest() async {
        let registry = FakeRegistry(assigned: .success(42))
        let outcome = await unregistrar(registry, clock: InstantClock()).removeIfIdle(agent, timeLimit: .seconds(10))
        #expect(outcome == .busy(detail: "job request 42 is assigned to the agent"))
        #expect(await registry.calls == ["assigned 7"])
    }

    @Test(
        "idle: the delete decides when no request is assigned (or the check fails)",
        arguments: [
            (Result<Int64?, RegistryFailure>.success(nil), Result<DeletionOutcome, RegistryFailure>.success(.deleted), IdleRemoval.removed),
            (.success(nil), .success(.alreadyGone), .removed),
            (.success(nil), .failure(.busy("422 new")), .busy(detail: "422 new")),
            (.failure(.transient("503")), .failure(.busy("400")), .busy(detail: "400")),
            (.success(nil), .failure(.unauthorized("401")), .unauthorized(detail: "401")),
            (.success(nil), .failure(.transient("503")), .failed(detail: "503")),
        ] as [(Result<Int64?, RegistryFailure>, Result<DeletionOutcome, RegistryFailure>, IdleRemoval)])
    func idleDelete(assigned: Result<Int64?, RegistryFailure>, deletion: Result<DeletionOutcome, RegistryFailure>, expected: IdleRemoval) async {
        let registry = FakeRegistry(deletions: [deletion], assigned: assigned)
        #expect(await unregistrar(registry, clock: InstantClock()).removeIfIdle(agent, timeLimit: .seconds(10)) == expected)
        #expect(await registry.calls == ["assigned 7", "delete 7"])
    }

    @Test("idle: an unauthorized check stops before the delete")
    func idleUnauthorized() async {
        let registry = FakeRegistry(assigned: .failure(.unauthorized("401")))
        #expect(await unregistrar(registry, clock: InstantClock()).removeIfIdle(agent, timeLimit: .seconds(10)) == .unauthorized(detail: "401"))
        #expect(await registry.calls == ["assigned 7"])
    }
}

/// The controller's identity files: read, checked, and installed so nothing a previous occupant left is followed.
@Suite("agent-entrypoint controller identity")
struct ControllerIdentityTests {
    private func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("identity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private func write(_ text: String, _ url: URL, bom: Bool = false) throws {
        try Data((bom ? [0xEF, 0xBB, 0xBF] : []) + Array(text.utf8)).write(to: url)
    }

    @Test("reads the three files; agent id and name come from .agent (with the .NET BOM)")
    func load() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        try write(#"{"agentId": 17, "agentName": "pod-a", "poolId": 3, "serverUrl": "https://x"}"#, directory.appendingPathComponent(".agent"), bom: true)
        try write(#"{"scheme": "OAuth"}"#, directory.appendingPathComponent(".credentials"))
        try write(#"{"d": "secret"}"#, directory.appendingPathComponent(".credentials_rsaparams"))
        let identity = try ControllerIdentity.load(from: directory.path)
        #expect(identity.agentId == 17 && identity.agentName == "pod-a" && identity.poolId == 3)
        #expect(identity.files.map(\.name) == [".agent", ".credentials", ".credentials_rsaparams"])
    }

    @Test("a missing, empty or invalid file is named", arguments: [".agent", ".credentials", ".credentials_rsaparams"])
    func missing(name: String) throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        for file in ControllerIdentity.fileNames where file != name {
            try write(#"{"agentId": 1}"#, directory.appendingPathComponent(file))
        }
        #expect(throws: IdentityError.self) { try ControllerIdentity.load(from: directory.path) }
        do {
            _ = try ControllerIdentity.load(from: directory.path)
        } catch {
            #expect(error.description.contains(directory.appendingPathComponent(name).path), "\(error)")
            #expect(error.description.contains("missing"))
        }
        try write("", directory.appendingPathComponent(name))
        #expect(throws: IdentityError(description: "\(directory.appendingPathComponent(name).path) is empty")) {
            try ControllerIdentity.load(from: directory.path)
        }
        if name == ".agent" {
            try write("not json", directory.appendingPathComponent(name))
            do {
                _ = try ControllerIdentity.load(from: directory.path)
                Issue.record("accepted an invalid .agent")
            } catch {
                #expect(error.description.contains("/.agent"), "\(error)")
            }
        }
    }

    @Test("install: mode 0600, replacing files and symlinks without following them")
    func install() throws {
        let source = try scratch()
        let agent = try scratch()
        let elsewhere = try scratch()
        defer { for url in [source, agent, elsewhere] { try? FileManager.default.removeItem(at: url) } }
        for name in ControllerIdentity.fileNames {
            try write(#"{"agentId": 5, "file": "\#(name)"}"#, source.appendingPathComponent(name))
        }
        // What a previous occupant may have left: a symlink into another directory, and a world-readable file.
        let victim = elsewhere.appendingPathComponent("victim")
        try write("untouched", victim)
        try FileManager.default.createSymbolicLink(atPath: agent.appendingPathComponent(".credentials").path, withDestinationPath: victim.path)
        try write("old", agent.appendingPathComponent(".agent"))
        chmod(agent.appendingPathComponent(".agent").path, 0o644)

        try ControllerIdentity.load(from: source.path).install(into: agent.path)
        for name in ControllerIdentity.fileNames {
            let path = agent.appendingPathComponent(name).path
            let attributes = try FileManager.default.attributesOfItem(atPath: path)  // does not follow symlinks
            #expect(attributes[.type] as? FileAttributeType == .typeRegular, "\(name) is a regular file")
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600, "\(name) mode")
            #expect(FileManager.default.contents(atPath: path) == FileManager.default.contents(atPath: source.appendingPathComponent(name).path))
        }
        #expect(String(decoding: try Data(contentsOf: victim), as: UTF8.self) == "untouched")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: agent.path).filter { $0.contains(".shoal-") }
        #expect(leftovers.isEmpty)
    }
}
