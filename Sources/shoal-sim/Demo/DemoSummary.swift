import Foundation
import Shared
import Simulators

/// The end-of-run figures and the invariants the exit status depends on.
struct DemoSummary {
    let report: String
    let failures: [String]

    init(
        facts: DemoFacts, snapshot: OrganizationSnapshot, pods: [String: PodTracker.Entry], peak: Int, workload: DemoWorkload, minutes: Double,
        tokenPods: (seen: Int, holding: Int)
    ) {
        let ids = Set(facts.requestIds)
        let mine = snapshot.requests.filter { ids.contains($0.requestId) }
        let finished = mine.filter(\.isFinished)
        let others = mine.filter { $0.requestId != facts.victimRequest }
        let succeeded = others.count { $0.result == .succeeded }
        let victim = facts.victimRequest.flatMap { snapshot.request($0) }
        let runners = mine.compactMap(\.reservedAgentId)
        let waits = mine.compactMap { request in request.receiveTime.map { $0.timeIntervalSince(request.queueTime) } }.sorted()
        let agents = DemoScenario.ours(snapshot)
        let idle = agents.count { $0.status == .online && $0.assignedRequestId == nil }
        let offline = agents.count { $0.status != .online }
        let completedPods = pods.values.count { !$0.isLive }
        let calls = snapshot.requestCounts.values.flatMap(\.values).reduce(0, +)
        let perMinute = Int((Double(calls) / max(minutes, 1.0 / 60)).rounded())

        var failures: [String] = []
        if facts.refusedMessage == nil { failures.append("the job demanding a gpu was not refused at queue time") }
        if finished.count != mine.count || mine.isEmpty { failures.append("\(mine.count - finished.count) of \(mine.count) jobs did not finish") }
        if succeeded != others.count { failures.append("\(others.count - succeeded) of \(others.count) burst jobs did not succeed") }
        if runners.count != mine.count || Set(runners).count != runners.count { failures.append("a registration ran more than one job, or a job ran on none") }
        if peak > workload.maxAgents { failures.append("\(peak) live pods at once, above maxAgents \(workload.maxAgents)") }
        if !facts.settled { failures.append("the pool did not return to standby") }
        if idle != workload.standby { failures.append("\(idle) idle agents at the end, expected \(workload.standby)") }
        if offline > 0 { failures.append("\(offline) offline registrations left (besides the placeholder)") }
        if completedPods > 0 { failures.append("\(completedPods) completed pods left") }
        if facts.victimPod == nil { failures.append("no pod was killed mid-job") }
        if facts.victimPod != nil && facts.podCollectedAt == nil { failures.append("the killed pod was not collected") }
        if facts.victimAgent != nil && facts.registrationRemovedAt == nil { failures.append("the killed pod's registration was not removed") }
        if facts.orphanRemovedAt == nil { failures.append("the orphan registration \(facts.orphan ?? "?") was not removed") }
        if workload.registration == .controller && tokenPods.holding > 0 {
            failures.append("\(tokenPods.holding) agent pods carried the PAT despite controller registration")
        }

        func percentile(_ p: Double) -> String {
            guard !waits.isEmpty else { return "n/a" }
            return String(format: "%.1f s", waits[min(waits.count - 1, max(0, Int((Double(waits.count) * p).rounded(.up)) - 1))])
        }
        func after(_ end: Double?, _ start: Double?) -> String {
            guard let end, let start else { return "no" }
            return String(format: "yes, %.1f s after", end - start)
        }
        let victimResult = victim?.result.map { "\($0)" } ?? "unfinished"
        report = """

            Summary
              jobs served:             \(succeeded)/\(others.count) burst jobs succeeded; the killed job ended \(victimResult); \
            \(Set(runners).count) registrations for \(mine.count) jobs (one job each)
              refused at queue time:   \(facts.refusedMessage ?? "none")
              queue-to-start latency:  p50 \(percentile(0.5)), p95 \(percentile(0.95)) (queued → agent received the job)
              peak pods:               \(peak) of maxAgents \(workload.maxAgents) (standby \(workload.standby))
              Azure DevOps requests:   \(calls) in \(String(format: "%.1f", minutes)) min = \(perMinute)/min (controller and agents)
              killed pod collected:    \(after(facts.podCollectedAt, facts.killedAt)) the kill; registration removed: \(after(facts.registrationRemovedAt, facts.killedAt))
              orphan removed:          \(after(facts.orphanRemovedAt, facts.orphanRegisteredAt)) it was registered
              registration:            \(workload.registration.rawValue): \(tokenPods.holding) of \(tokenPods.seen) agent pods carried the PAT
              leftovers:               \(offline) offline registrations, \(completedPods) completed pods, \(max(0, pods.count - workload.standby)) pods above standby \
            (idle agents: \(idle) of \(workload.standby))
              result:                  \(failures.isEmpty ? "OK: every invariant held" : "FAILED: " + failures.joined(separator: "; "))
            """
        self.failures = failures
    }
}
