import Foundation
import Kubernetes
import Shared
import Simulators

/// The agent pods as a watch sees them, and the most that were alive at once.
actor PodTracker {
    /// One pod's state.
    struct Entry: Sendable {
        var name: String
        var uid: String
        var phase: String
        var terminating: Bool
        /// `Terminating` while a deletion is pending, else the phase.
        var column: String { terminating ? "Terminating" : phase }
        /// Neither Succeeded nor Failed: counts against `maxAgents`.
        var isLive: Bool { phase != "Succeeded" && phase != "Failed" }
    }

    private(set) var pods: [String: Entry] = [:]
    /// The largest number of live pods seen at once.
    private(set) var peak = 0
    /// Whether the first list arrived.
    private(set) var synced = false
    /// Every pod seen, and those whose spec carried the PAT or referenced its Secret (controller registration: none).
    private(set) var seen: Set<String> = []
    private(set) var holdingToken: Set<String> = []

    /// Follows the pool's pods until cancelled.
    func follow(_ api: any KubernetesAPI) async throws {
        let watch = ListWatch<Pod>(
            api: api, resource: .pods, namespace: DemoNames.agentNamespace, labelSelector: "\(AgentPodLabels.pool)=\(DemoNames.pool)")
        for try await event in watch {
            switch event {
            case .relisted(let items, _):
                pods = [:]
                items.forEach(record)
                synced = true
            case .added(let pod), .modified(let pod): record(pod)
            case .deleted(let pod): pods[pod.metadata.name ?? ""] = nil
            }
            peak = max(peak, pods.values.count(where: \.isLive))
        }
    }

    private func record(_ pod: Pod) {
        guard let name = pod.metadata.name else { return }
        // A pod's spec never changes: check it once, not on every status event.
        if seen.insert(name).inserted, let spec = try? JSONEncoder().encode(pod.spec), let text = String(data: spec, encoding: .utf8),
            text.contains(DemoNames.token) || text.contains("\"AZP_TOKEN\"") || text.contains("\"name\":\"azdo\"")
        {
            holdingToken.insert(name)
        }
        pods[name] = Entry(
            name: name, uid: pod.metadata.uid ?? "", phase: pod.status?.phase ?? "Pending", terminating: pod.metadata.deletionTimestamp != nil)
    }

    /// Pod counts by column (Pending, Running, Succeeded, Failed, Terminating).
    func byColumn() -> [String: Int] {
        var counts: [String: Int] = [:]
        for pod in pods.values { counts[pod.column, default: 0] += 1 }
        return counts
    }
}

/// Reads the controller's JSON log as it grows and turns its decisions into one-line messages.
struct ControllerLogReader {
    let path: String
    private var offset: UInt64 = 0
    private var partial = ""

    init(path: String) { self.path = path }

    /// New decision lines since the last call.
    mutating func newDecisions() -> [String] {
        guard let handle = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        guard let data = try? handle.readToEnd(), !data.isEmpty else { return [] }
        offset += UInt64(data.count)
        var text = partial + String(decoding: data, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        partial = lines.removeLast()
        text = ""
        return lines.compactMap(Self.decision)
    }

    /// The message for one log line, or nil for lines that are no key decision.
    static func decision(_ line: String) -> String? {
        guard line.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let message = object["message"] as? String
        else { return nil }
        func field(_ key: String) -> String { object[key] as? String ?? "?" }
        let counts = "queued \(field("queued")), busy \(field("busy")), idle \(field("idle")), starting \(field("starting")) → desired \(field("desired"))"
        switch message {
        case "created pods":
            let created = field("created").split(separator: ",")
            return "controller: created \(created.count) pod\(created.count == 1 ? "" : "s") (\(created.joined(separator: ", "))): \(counts)"
        case "deleted pod":
            return "controller: deleted pod \(field("pod")) (\(field("reason")))"
        case "deleted registration":
            return "controller: deleted registration \(field("agent")) (\(field("reason")))"
        case "registered placeholder":
            return "controller: registered the offline placeholder agent (id \(field("agent.id"))) so jobs can queue"
        case "removed placeholder":
            return "controller: removed the placeholder agent"
        case "scale-down lost to an assignment; agents enabled again":
            return "controller: a scale-down lost to a job assignment; re-enabled \(field("agents"))"
        case "became leader", "took over the lease":
            return "controller: became leader (Lease shoal-system/shoal-pool-controller)"
        case "action failed", "could not write status":
            return "controller: \(message): \(field("error"))"
        default:
            let level = object["level"] as? String ?? ""
            return ["warning", "error", "critical"].contains(level) ? "controller \(level): \(message) \(object["error"] as? String ?? "")" : nil
        }
    }
}

/// One frame of what the demo shows: jobs, agents, pods and the AgentPool's status.
struct DemoFrame: Sendable {
    var elapsed: Double
    var step: String
    var jobsQueued = 0
    var jobsRunning = 0
    var jobsDone = 0
    var jobsTotal = 0
    var agentsIdle = 0
    var agentsBusy = 0
    var agentsOffline = 0
    var placeholder = false
    var pods: [String: Int] = [:]
    var peakPods = 0
    var maxAgents = 0
    var poolStatus = ""

    static let podColumns = ["Pending", "Running", "Succeeded", "Failed", "Terminating"]

    /// The status line of the plain output.
    var line: String {
        let podText = Self.podColumns.map { "\($0) \(pods[$0] ?? 0)" }.joined(separator: " ")
        return String(
            format: "%6.1fs  jobs queued %d running %d done %d/%d | agents idle %d busy %d offline %d | pods %@ (peak %d/%d)",
            elapsed, jobsQueued, jobsRunning, jobsDone, jobsTotal, agentsIdle, agentsBusy, agentsOffline, podText, peakPods, maxAgents)
    }
}
