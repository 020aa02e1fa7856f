import Foundation
import Kubernetes
import Shared
import Simulators
import Testing

/// Runs a ``LocalNode`` for the test's namespace while `body` runs, then cancels it and removes its Node.
private func withLocalNode(
    _ k: KubeTestContext, imageCommands: [String: [String]] = [:], _ body: (LocalNode) async throws -> Void
) async throws {
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-local-node-test-\(UUID().uuidString.prefix(8))").path
    let configuration = LocalNodeConfiguration(
        nodeName: "local-\(k.namespace)", namespace: k.namespace, imageCommands: imageCommands, workDirectory: work, heartbeatInterval: .seconds(2))
    let node = LocalNode(api: k.admin, configuration: configuration)
    var failure: (any Error)?
    await withTaskGroup(of: (any Error)?.self) { group in
        group.addTask {
            do {
                try await node.run()
                return nil
            } catch is CancellationError {
                return nil
            } catch {
                return Task.isCancelled ? nil : error
            }
        }
        do {
            // The Node must be registered and Ready before pods are created.
            let registered = try await eventually(timeout: .seconds(30)) {
                let object = try? await k.admin.get(Node.self, .nodes, namespace: nil, name: configuration.nodeName)
                return object?.status?.conditions?.contains { $0.type == "Ready" && $0.status == "True" } == true
            }
            try #require(registered, "the local node registered itself as Ready")
            try await body(node)
        } catch {
            failure = error
        }
        group.cancelAll()
        for await result in group { if let result, failure == nil { failure = result } }
    }
    _ = try? await k.admin.delete(.nodes, namespace: nil, name: configuration.nodeName, options: DeleteOptions())
    try? FileManager.default.removeItem(atPath: work)
    if let failure { throw failure }
}

/// A Pod whose one container runs `script` with /bin/sh.
private func shellPod(_ prefix: String, script: String, env: [EnvVar] = [], grace: Int64? = nil) -> Pod {
    var pod = Pod(
        metadata: ObjectMeta(generateName: prefix),
        spec: PodSpec(containers: [Container(name: "main", image: "shoal.invalid/shell:1", command: ["/bin/sh", "-c", script], env: env)], restartPolicy: "Never")
    )
    pod.spec?.terminationGracePeriodSeconds = grace
    return pod
}

/// Polls the pod until `condition` holds for it; returns it then, or nil after the timeout.
private func waitForPod(_ k: KubeTestContext, _ name: String, timeout: Duration = .seconds(45), _ condition: (Pod) -> Bool) async throws -> Pod? {
    var last: Pod?
    let reached = try await eventually(timeout: timeout) {
        last = try? await k.admin.pod(named: name)
        return last.map(condition) ?? false
    }
    return reached ? last : nil
}

/// Whether the pod no longer exists (404); other errors fail the test.
private func podIsGone(_ k: KubeTestContext, _ name: String) async throws -> Bool {
    do {
        _ = try await k.admin.pod(named: name)
        return false
    } catch .notFound {
        return true
    }
}

@Suite("Local node runs pods as processes", .timeLimit(.minutes(2)))
struct LocalNodeTests {
    @Test func podRunsToSuccessWithEnvironmentAndTerminationMessage() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k) { node in
                _ = try await k.admin.create(Secret(metadata: ObjectMeta(name: "creds"), stringData: ["token": "s3cret"]), .secrets, namespace: nil)
                let script = #"echo "hello $GREETING $TOKEN $POD_NAME"; pwd; printf 'done %s %s %s' "$GREETING" "$TOKEN" "$POD_NAME" > "$AZP_TERMINATION_LOG""#
                let env = [
                    EnvVar(name: "GREETING", value: "hi"),
                    EnvVar(name: "TOKEN", valueFrom: EnvVarSource(secretKeyRef: SecretKeySelector(name: "creds", key: "token"))),
                    EnvVar(name: "POD_NAME", valueFrom: EnvVarSource(fieldRef: ObjectFieldSelector(fieldPath: "metadata.name"))),
                ]
                var pod = shellPod("ok-", script: script, env: env)
                pod.spec?.containers[0].workingDir = node.configuration.workDirectory + "/custom-wd"
                let created = try await k.admin.createPod(pod)
                let name = try #require(created.metadata.name)
                let uid = try #require(created.metadata.uid)

                let finished = try #require(await waitForPod(k, name) { $0.status?.phase == "Succeeded" || $0.status?.phase == "Failed" })
                #expect(finished.spec?.nodeName == node.configuration.nodeName)
                #expect(finished.status?.phase == "Succeeded")
                #expect(finished.status?.podIP == "127.0.0.1")
                #expect(finished.status?.startTime != nil)
                let terminated = try #require(finished.status?.containerStatuses?.first?.state?.terminated)
                #expect(terminated.exitCode == 0)
                #expect(terminated.reason == "Completed")
                #expect(terminated.message == "done hi s3cret \(name)")

                let log = try String(contentsOfFile: node.logFile(namespace: k.namespace, name: name, uid: uid), encoding: .utf8)
                #expect(log.contains("hello hi s3cret \(name)"))
                #expect(log.contains(node.configuration.workDirectory + "/custom-wd"))

            }
        }
    }

    @Test("a Secret volume is materialized and variables naming its mount path are pointed at it; the pod waits for a missing Secret")
    func secretVolume() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k) { _ in
                let script = #"printf '%s|%s' "$(cat "$REG/.agent")" "$(stat -c %a "$REG/.agent")" > "$AZP_TERMINATION_LOG""#
                var pod = shellPod("vol-", script: script, env: [EnvVar(name: "REG", value: "/azp/registration")])
                pod.spec?.volumes = [["name": "reg", "secret": ["secretName": "later-files", "defaultMode": 0o444]]]
                pod.spec?.containers[0].volumeMounts = [["name": "reg", "mountPath": "/azp/registration", "readOnly": true]]
                let created = try await k.admin.createPod(pod)
                let name = try #require(created.metadata.name)
                let waiting = try #require(await waitForPod(k, name) { $0.status?.containerStatuses?.first?.state?.waiting != nil })
                #expect(waiting.status?.containerStatuses?.first?.state?.waiting?.message?.contains("later-files") == true)
                _ = try await k.admin.create(
                    Secret(metadata: ObjectMeta(name: "later-files"), stringData: [".agent": "{\"agentId\":7}"]), .secrets, namespace: nil)
                let finished = try #require(await waitForPod(k, name) { $0.status?.phase == "Succeeded" || $0.status?.phase == "Failed" })
                #expect(finished.status?.containerStatuses?.first?.state?.terminated?.message == "{\"agentId\":7}|444")
            }
        }
    }

    @Test func failingCommandFailsThePodWithItsExitCode() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k) { _ in
                let created = try await k.admin.createPod(shellPod("fail-", script: "echo oops >&2; exit 7"))
                let name = try #require(created.metadata.name)
                let finished = try #require(await waitForPod(k, name) { $0.status?.phase == "Succeeded" || $0.status?.phase == "Failed" })
                #expect(finished.status?.phase == "Failed")
                let terminated = try #require(finished.status?.containerStatuses?.first?.state?.terminated)
                #expect(terminated.exitCode == 7)
                #expect(terminated.reason == "Error")
            }
        }
    }

    @Test func gracefulDeletionSendsSigtermThenConfirms() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k) { node in
                let script = #"trap 'echo bye; echo terminated-by-sigterm > "$AZP_TERMINATION_LOG"; exit 0' TERM; echo started; sleep 100 & wait"#
                let created = try await k.admin.createPod(shellPod("grace-", script: script, grace: 20))
                let name = try #require(created.metadata.name)
                let uid = try #require(created.metadata.uid)
                let logFile = node.logFile(namespace: k.namespace, name: name, uid: uid)

                let running = try #require(await waitForPod(k, name) { $0.status?.phase == "Running" })
                #expect(running.status?.containerStatuses?.first?.state?.running != nil)
                #expect(running.status?.conditions?.contains { $0.type == "Ready" && $0.status == "True" } == true)
                // The trap is installed once the script printed "started".
                let started = try await eventually(timeout: .seconds(20)) {
                    ((try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "").contains("started")
                }
                try #require(started)

                let deletedAt = ContinuousClock.now
                let result = try await k.admin.deletePod(named: name)
                guard case .pending = result else {
                    Issue.record("a bound pod's deletion should wait for the node, got \(result)")
                    return
                }
                let gone = try await eventually(timeout: .seconds(30)) {
                    try await podIsGone(k, name)
                }
                #expect(gone)
                // SIGTERM, not the SIGKILL after the 20 s grace period, ended it.
                #expect(ContinuousClock.now - deletedAt < .seconds(15))
                let log = try String(contentsOfFile: logFile, encoding: .utf8)
                #expect(log.contains("bye"))
            }
        }
    }

    @Test func imageEntrypointFromTheTableRunsWithArgs() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k, imageCommands: ["shoal/agent:latest": ["/bin/sh", "-c"]]) { _ in
                var pod = Pod(metadata: ObjectMeta(generateName: "image-"), spec: PodSpec(containers: [Container(name: "agent", image: "shoal/agent:latest")], restartPolicy: "Never"))
                pod.spec?.containers[0].args = [#"printf 'from-table' > "$AZP_TERMINATION_LOG"; exit 3"#]
                let name = try #require(try await k.admin.createPod(pod).metadata.name)
                let finished = try #require(await waitForPod(k, name) { $0.status?.phase == "Succeeded" || $0.status?.phase == "Failed" })
                let terminated = try #require(finished.status?.containerStatuses?.first?.state?.terminated)
                #expect(finished.status?.phase == "Failed")
                #expect(terminated.exitCode == 3 && terminated.reason == "Error" && terminated.message == "from-table")
            }
        }
    }

    @Test func missingSecretKeepsThePodWaitingUntilItExists() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k) { _ in
                let env = [EnvVar(name: "TOKEN", valueFrom: EnvVarSource(secretKeyRef: SecretKeySelector(name: "later", key: "token")))]
                let name = try #require(try await k.admin.createPod(shellPod("wait-", script: #"printf '%s' "$TOKEN" > "$AZP_TERMINATION_LOG""#, env: env)).metadata.name)
                let waiting = try #require(await waitForPod(k, name) { $0.status?.containerStatuses?.first?.state?.waiting != nil })
                #expect(waiting.status?.phase == "Pending")
                #expect(waiting.status?.containerStatuses?.first?.state?.waiting?.reason == "CreateContainerConfigError")

                _ = try await k.admin.create(Secret(metadata: ObjectMeta(name: "later"), stringData: ["token": "arrived"]), .secrets, namespace: nil)
                let finished = try #require(await waitForPod(k, name) { $0.status?.phase == "Succeeded" || $0.status?.phase == "Failed" })
                #expect(finished.status?.phase == "Succeeded")
                #expect(finished.status?.containerStatuses?.first?.state?.terminated?.message == "arrived")
            }
        }
    }

    @Test func cancellingTheNodeKillsItsProcesses() async throws {
        try await KubeTestContext.run { k in
            var pid: pid_t = 0
            try await withLocalNode(k) { _ in
                let name = try #require(try await k.admin.createPod(shellPod("long-", script: "sleep 300")).metadata.name)
                let running = try #require(await waitForPod(k, name) { $0.status?.phase == "Running" })
                let containerID = try #require(running.status?.containerStatuses?.first?.containerID)
                pid = try #require(containerID.split(separator: "/").last.flatMap { pid_t($0) })
                #expect(kill(pid, 0) == 0, "the pod's process runs while the node does")
            }
            // withLocalNode returned: the node was cancelled, and its child is gone (killed and reaped).
            #expect(pid > 0)
            #expect(kill(pid, 0) == -1 && errno == ESRCH)
        }
    }

    @Test func processIgnoringSigtermIsKilledAfterTheGracePeriod() async throws {
        try await KubeTestContext.run { k in
            try await withLocalNode(k) { _ in
                // An ignored SIGTERM is inherited by `sleep`: only the SIGKILL after the 1 s grace period ends it.
                let created = try await k.admin.createPod(shellPod("stubborn-", script: "trap '' TERM; sleep 300", grace: 1))
                let name = try #require(created.metadata.name)
                let running = try #require(await waitForPod(k, name) { $0.status?.phase == "Running" })
                let pid = try #require(running.status?.containerStatuses?.first?.containerID?.split(separator: "/").last.flatMap { pid_t($0) })

                guard case .pending = try await k.admin.deletePod(named: name) else {
                    Issue.record("a bound pod's deletion should wait for the node")
                    return
                }
                let gone = try await eventually(timeout: .seconds(30)) { try await podIsGone(k, name) }
                #expect(gone)
                #expect(kill(pid, 0) == -1 && errno == ESRCH, "the process was killed and reaped")
            }
        }
    }
}
