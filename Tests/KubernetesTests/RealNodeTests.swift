import Foundation
import Kubernetes
import Shared
import Simulators
import Testing

/// The real node of the cluster in `SHOAL_TEST_KUBE_DIR`, started with `scripts/local-k8s start --node DIR` (a private
/// Docker engine and a kubelet): the `node` object of `DIR/cluster.json`. Nil when there is none.
private struct RealNode: Sendable {
    var name: String
    var ip: String
    var podCIDR: String
    /// `key=value` of the label (and the NoSchedule taint) only this node carries.
    var label: String
    var debianImage: String

    static let current: RealNode? = {
        guard let dir = ProcessInfo.processInfo.environment["SHOAL_TEST_KUBE_DIR"], !dir.isEmpty,
            let data = FileManager.default.contents(atPath: dir + "/cluster.json"),
            let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let node = root["node"] as? [String: Any],
            let name = node["name"] as? String, let ip = node["ip"] as? String, let podCIDR = node["podCIDR"] as? String,
            let label = node["label"] as? String, let images = node["images"] as? [String: Any],
            let debian = images["debian"] as? String
        else { return nil }
        return RealNode(name: name, ip: ip, podCIDR: podCIDR, label: label, debianImage: debian)
    }()

    var labelKey: String { String(label.prefix { $0 != "=" }) }
    var labelValue: String { String(label.drop { $0 != "=" }.dropFirst()) }

    /// A Pod for this node: the local Debian image (never pulled: there is no registry), the node's toleration and
    /// node selector, `bash -c script` as PID 1. Built as JSON for the fields Shoal's models leave out.
    func pod(_ prefix: String, script: String, hostNetwork: Bool = false, grace: Int64 = 30, extraContainerFields: [String: KubeJSON] = [:]) -> DynamicObject {
        var container: [String: KubeJSON] = [
            "name": "main", "image": .string(debianImage), "imagePullPolicy": "Never",
            "command": ["/bin/bash", "-c", .string(script)],
        ]
        for (key, value) in extraContainerFields { container[key] = value }
        return DynamicObject([
            "apiVersion": "v1", "kind": "Pod",
            "metadata": ["generateName": .string(prefix)],
            "spec": [
                "containers": [.object(container)],
                "restartPolicy": "Never",
                "hostNetwork": .bool(hostNetwork),
                "terminationGracePeriodSeconds": .int(grace),
                "automountServiceAccountToken": false,
                "nodeSelector": [labelKey: .string(labelValue)],
                "tolerations": [["key": .string(labelKey), "operator": "Exists", "effect": "NoSchedule"]],
            ],
        ])
    }
}

/// Polls the pod until `condition` holds; returns it then, or nil after the timeout.
private func pollPod(_ k: KubeTestContext, _ name: String, timeout: Duration = .seconds(60), _ condition: (Pod) -> Bool) async throws -> Pod? {
    var last: Pod?
    let reached = try await eventually(timeout: timeout) {
        last = try? await k.admin.pod(named: name)
        return last.map(condition) ?? false
    }
    return reached ? last : nil
}

private func isFinished(_ pod: Pod) -> Bool { pod.status?.phase == "Succeeded" || pod.status?.phase == "Failed" }

/// Whether `ip` lies in the IPv4 `cidr`.
private func ipv4(_ ip: String, isIn cidr: String) -> Bool {
    func value(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".").compactMap { UInt32($0) }
        guard parts.count == 4, parts.allSatisfy({ $0 < 256 }) else { return nil }
        return parts.reduce(0) { $0 << 8 | $1 }
    }
    let pieces = cidr.split(separator: "/")
    guard pieces.count == 2, let network = value(pieces[0]), let bits = UInt32(pieces[1]), bits <= 32, let address = value(Substring(ip)) else { return false }
    let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
    return address & mask == network & mask
}

@Suite(
    "A real kubelet node (scripts/local-k8s start --node) runs pods from local images",
    .enabled(if: RealNode.current != nil, "needs SHOAL_TEST_KUBE_DIR pointing at a cluster started with 'scripts/local-k8s start --node DIR'"),
    .timeLimit(.minutes(3))
)
struct RealNodeTests {
    @Test func podRunsToCompletionAndItsTerminationMessageIsReadBack() async throws {
        let node = try #require(RealNode.current)
        try await KubeTestContext.run { k in
            // `$BASHPID`, not `$$`: Kubernetes turns `$$` in a command into `$`.
            let script = #"echo "hello from $(hostname)"; printf 'done pid=%s debian=%s' "$BASHPID" "$(cat /etc/debian_version)" > /dev/termination-log"#
            let created = try await k.admin.create(node.pod("run-", script: script), .pods, namespace: nil)
            let name = try #require(created.metadata.name)

            let finished = try #require(await pollPod(k, name, isFinished), "pod \(name) did not finish in 60 s")
            #expect(finished.spec?.nodeName == node.name)
            #expect(finished.status?.phase == "Succeeded")
            #expect(finished.status?.hostIP == node.ip)
            // Not hostNetwork: an address from the node's own (isolated) pod subnet.
            let podIP = try #require(finished.status?.podIP)
            #expect(ipv4(podIP, isIn: node.podCIDR), "pod IP \(podIP) not in \(node.podCIDR)")
            let status = try #require(finished.status?.containerStatuses?.first)
            #expect(status.image.contains("local/debian"))
            #expect(status.containerID?.hasPrefix("docker://") == true)
            let terminated = try #require(status.state?.terminated)
            #expect(terminated.exitCode == 0)
            #expect(terminated.reason == "Completed")
            let message = try #require(terminated.message)
            #expect(message.hasPrefix("done pid=1 debian=12."), "termination message: \(message)")
        }
    }

    @Test func deletingThePodDeliversSIGTERMToPID1() async throws {
        let node = try #require(RealNode.current)
        try await KubeTestContext.run { k in
            // bash is PID 1; it says it is ready only once the trap is in place (the readiness probe reads the file).
            let script = """
                trap 'printf "SIGTERM to pid %s" "$BASHPID" > /dev/termination-log; exit 0' TERM
                touch /tmp/trap-set
                while true; do sleep 1 & wait $!; done
                """
            let probe: KubeJSON = ["exec": ["command": ["test", "-f", "/tmp/trap-set"]], "periodSeconds": 1]
            let pod = node.pod("term-", script: script, hostNetwork: true, grace: 60, extraContainerFields: ["readinessProbe": probe])
            let created = try await k.admin.create(pod, .pods, namespace: nil)
            let name = try #require(created.metadata.name)

            let ready = try #require(
                await pollPod(k, name) { $0.status?.containerStatuses?.first?.ready == true || isFinished($0) }, "pod \(name) not ready in 60 s")
            try #require(ready.status?.phase == "Running")
            #expect(ready.status?.podIP == node.ip, "a hostNetwork pod has the node's address")

            // Watch from the current version, then delete: the last state before the Pod is gone carries the message.
            let watch = k.admin.watch(
                Pod.self, .pods, namespace: nil,
                options: WatchOptions(fieldSelector: "metadata.name=\(name)", resourceVersion: ready.metadata.resourceVersion, timeoutSeconds: 90))
            let started = ContinuousClock.now
            _ = try await k.admin.delete(.pods, namespace: nil, name: name, options: DeleteOptions(gracePeriodSeconds: 60))
            var last: Pod?
            var deleted = false
            for try await event in watch {
                switch event {
                case .added(let pod), .modified(let pod): last = pod
                case .deleted(let pod): last = pod; deleted = true
                case .bookmark: break
                }
                if deleted { break }
            }
            let elapsed = ContinuousClock.now - started
            #expect(deleted, "pod \(name) not deleted within the watch")
            // Well inside the 60 s grace period: the container ended on SIGTERM, not on the SIGKILL after the grace.
            #expect(elapsed < .seconds(30), "deletion took \(elapsed)")
            let terminated = try #require(last?.status?.containerStatuses?.first?.state?.terminated, "no terminated state seen")
            #expect(terminated.message == "SIGTERM to pid 1")
            #expect(terminated.exitCode == 0)
        }
    }

    @Test func aPodWithoutTheNodesTolerationIsNotScheduledOnIt() async throws {
        let node = try #require(RealNode.current)
        try await KubeTestContext.run { k in
            var pod = node.pod("untolerated-", script: "true")
            pod.json["spec"]?["tolerations"] = nil
            pod.json["spec"]?["nodeSelector"] = nil
            let created = try await k.admin.create(pod, .pods, namespace: nil)
            let name = try #require(created.metadata.name)
            let unschedulable = try await pollPod(k, name, timeout: .seconds(30)) { pod in
                pod.status?.conditions?.contains { $0.type == "PodScheduled" && $0.status == "False" && $0.reason == "Unschedulable" } == true
            }
            #expect(unschedulable != nil, "the scheduler did not report the pod unschedulable")
            #expect(unschedulable?.spec?.nodeName == nil)
        }
    }
}
