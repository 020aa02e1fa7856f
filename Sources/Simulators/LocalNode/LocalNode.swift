import Foundation
import Kubernetes
import Logging
import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Plays kubelet and scheduler for one node: registers a Node, binds the pods it may take, and runs each pod's
/// first container as a local process, reporting status and honouring graceful deletion as a kubelet does.
///
/// It is how the demo and the end-to-end tests run real `agent-entrypoint` processes in "pods" without a container
/// runtime. Every process is a child of ``run()`` and is killed when it is cancelled. Restart policies are not
/// honoured: a container that exits makes the pod Succeeded or Failed.
package actor LocalNode {
    /// What the node is called, which pods it takes and how it runs them.
    package nonisolated let configuration: LocalNodeConfiguration
    private let api: any KubernetesAPI
    private let clock: any ShoalClock
    private let logger: Logger
    /// Pods bound to this node that it has seen, by uid.
    private var pods: [String: PodRecord] = [:]

    /// What the node remembers about one of its pods.
    private struct PodRecord {
        /// Whether the process has ended (or never will run).
        var finished: Bool
        /// The grace period of a requested stop (deletion); nil while none was requested.
        var stopGrace: Duration?
        /// Whether the pod object is already gone from the API.
        var vanished = false
        /// The grace period to use if the pod vanishes without one (its spec's).
        var specGrace: Duration
    }

    /// Creates a node that talks to `api`; nothing happens until ``run()``. `clock` stamps statuses and times the
    /// heartbeat and grace periods.
    package init(
        api: any KubernetesAPI, configuration: LocalNodeConfiguration, clock: any ShoalClock = SystemClock(),
        logger: Logger = Logger(label: "shoal.local-node")
    ) {
        self.api = api
        self.clock = clock
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.nodeName)"
        self.logger = logger
    }

    /// The directory of one pod's files (log, termination message, default working directory).
    package nonisolated func podDirectory(namespace: String, name: String, uid: String) -> String {
        configuration.workDirectory + "/pods/\(namespace)_\(name)_\(uid)"
    }

    /// The file receiving the stdout and stderr of a pod's process.
    package nonisolated func logFile(namespace: String, name: String, uid: String) -> String {
        podDirectory(namespace: namespace, name: name, uid: uid) + "/container.log"
    }

    /// The file standing in for the container's `terminationMessagePath`.
    package nonisolated func terminationMessageFile(namespace: String, name: String, uid: String) -> String {
        podDirectory(namespace: namespace, name: name, uid: uid) + "/termination-log"
    }

    /// Registers the Node, then binds and runs pods until cancelled; on cancellation kills every process it started.
    ///
    /// Throws when the Node cannot be registered or the pod watch fails in a way retrying cannot fix (RBAC).
    package func run() async throws {
        try await registerNode()
        logger.info("local node registered", metadata: ["namespace": "\(configuration.namespace ?? "*")", "selector": "\(configuration.labelSelector ?? "")"])
        let watch = ListWatch<Pod>(
            api: api, resource: .pods, namespace: configuration.namespace, labelSelector: configuration.labelSelector, logger: logger)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.heartbeat() }
            for try await event in watch {
                var toStart: [Pod] = []
                switch event {
                case .relisted(let items, _):
                    let present = Set(items.compactMap(\.metadata.uid))
                    for uid in pods.keys where !present.contains(uid) { podVanished(uid: uid) }
                    for pod in items { if let pod = await handle(pod) { toStart.append(pod) } }
                case .added(let pod), .modified(let pod):
                    if let pod = await handle(pod) { toStart.append(pod) }
                case .deleted(let pod):
                    if let uid = pod.metadata.uid { podVanished(uid: uid) }
                }
                for pod in toStart { group.addTask { await self.runPod(pod) } }
            }
        }
    }

    // MARK: - Node

    private func registerNode() async throws(KubernetesError) {
        let now = clock.wallNow()
        let node = Node(metadata: ObjectMeta(name: configuration.nodeName, labels: ["kubernetes.io/hostname": configuration.nodeName, "shoal.dev/local-node": "true"]))
        do {
            _ = try await api.create(node, .nodes, namespace: nil)
        } catch .conflict {
            logger.info("node already registered, taking it over")
        }
        let status: KubeJSON = [
            "capacity": .object(configuration.capacity.mapValues(KubeJSON.string)),
            "allocatable": .object(configuration.capacity.mapValues(KubeJSON.string)),
            "conditions": [readyCondition(now, transition: true)],
            "addresses": [["type": "InternalIP", "address": .string(configuration.podIP)], ["type": "Hostname", "address": .string(configuration.nodeName)]],
        ]
        _ = try await api.patchStatus(Node.self, .nodes, name: configuration.nodeName, patch: .strategicMerge(["status": status]))
    }

    private nonisolated func readyCondition(_ now: Date, transition: Bool) -> KubeJSON {
        var condition: KubeJSON = [
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "shoal local node is posting ready status",
            "lastHeartbeatTime": .string(MicroTime.format(now)),
        ]
        if transition { condition["lastTransitionTime"] = .string(MicroTime.format(now)) }
        return condition
    }

    /// Renews the Ready condition's heartbeat until cancelled; failures are logged and retried next time.
    private nonisolated func heartbeat() async {
        while true {
            do {
                try await clock.sleep(for: configuration.heartbeatInterval)
            } catch {
                return
            }
            do {
                _ = try await api.patchStatus(
                    Node.self, .nodes, name: configuration.nodeName, patch: .strategicMerge(["status": ["conditions": [readyCondition(clock.wallNow(), transition: false)]]]))
            } catch {
                if Task.isCancelled { return }
                logger.warning("node heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: - Pod events

    /// Reacts to the current state of a pod; returns it when its process should be started now.
    private func handle(_ pod: Pod) async -> Pod? {
        guard let uid = pod.metadata.uid, let name = pod.metadata.name, let namespace = pod.metadata.namespace else { return nil }
        let nodeName = pod.spec?.nodeName ?? ""
        if nodeName.isEmpty {
            guard pod.metadata.deletionTimestamp == nil, (pod.status?.phase ?? "Pending") == "Pending" else { return nil }
            do {
                try await api.bindPod(named: name, namespace: namespace, toNode: configuration.nodeName)
                logger.info("pod bound", metadata: ["pod": "\(namespace)/\(name)"])
            } catch {
                // A conflict means someone else bound it first; the watch shows what happened.
                logger.notice("pod not bound", metadata: ["pod": "\(namespace)/\(name)", "error": "\(error)"])
            }
            return nil
        }
        guard nodeName == configuration.nodeName else { return nil }
        if var record = pods[uid] {
            guard pod.metadata.deletionTimestamp != nil else { return nil }
            if record.finished {
                await confirmDeletion(namespace: namespace, name: name, uid: uid)
            } else if record.stopGrace == nil {
                record.stopGrace = Self.gracePeriod(of: pod)
                pods[uid] = record
                logger.info("pod deletion requested, stopping its process", metadata: ["pod": "\(namespace)/\(name)", "grace_s": "\(record.stopGrace?.components.seconds ?? 0)"])
            }
            return nil
        }
        let specGrace = Duration.seconds(pod.spec?.terminationGracePeriodSeconds ?? 30)
        if pod.metadata.deletionTimestamp != nil {
            pods[uid] = PodRecord(finished: true, specGrace: specGrace)
            await confirmDeletion(namespace: namespace, name: name, uid: uid)
            return nil
        }
        switch pod.status?.phase {
        case "Succeeded", "Failed":
            pods[uid] = PodRecord(finished: true, specGrace: specGrace)
            return nil
        case "Running":
            // Started by an earlier run of this node: its process is gone, so the pod failed.
            pods[uid] = PodRecord(finished: true, specGrace: specGrace)
            await patchStatus(pod, ["phase": "Failed", "reason": "NodeRestarted", "message": "the local node restarted and lost the pod's process"])
            return nil
        default:
            pods[uid] = PodRecord(finished: false, specGrace: specGrace)
            return pod
        }
    }

    /// The pod object is gone: stop its process (with the spec's grace period) and forget it once finished.
    private func podVanished(uid: String) {
        guard var record = pods[uid] else { return }
        if record.finished {
            pods[uid] = nil
            return
        }
        record.vanished = true
        if record.stopGrace == nil { record.stopGrace = record.specGrace }
        pods[uid] = record
    }

    /// The grace period a deletion gave the pod.
    private static func gracePeriod(of pod: Pod) -> Duration {
        .seconds(pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30)
    }

    /// The grace period of a requested stop, if any.
    private func stopRequest(uid: String) -> Duration? {
        pods[uid]?.stopGrace
    }

    /// Records that a pod's process ended; returns whether its deletion was requested (and it still exists).
    private func markFinished(uid: String) -> Bool {
        guard var record = pods[uid] else { return false }
        if record.vanished {
            pods[uid] = nil
            return false
        }
        record.finished = true
        pods[uid] = record
        return record.stopGrace != nil
    }

    /// Ends a deletion the way a kubelet does once the containers are gone: DELETE with grace period 0.
    private nonisolated func confirmDeletion(namespace: String, name: String, uid: String) async {
        do {
            _ = try await api.deletePod(
                named: name, namespace: namespace, options: DeleteOptions(gracePeriodSeconds: 0, preconditions: .init(uid: uid)))
            logger.info("pod deletion confirmed", metadata: ["pod": "\(namespace)/\(name)"])
        } catch .notFound, .conflict {
            // Already gone, or a new pod with the same name: nothing of ours to confirm.
        } catch {
            logger.warning("pod deletion not confirmed", metadata: ["pod": "\(namespace)/\(name)", "error": "\(error)"])
        }
    }

    // MARK: - Running a pod

    /// Runs a pod's first container to its end, writing status along the way; kills it if cancelled.
    private nonisolated func runPod(_ pod: Pod) async {
        guard let uid = pod.metadata.uid, let name = pod.metadata.name, let namespace = pod.metadata.namespace,
            let container = pod.spec?.containers.first
        else { return }
        let podLogger = logger.with(metadata: ["pod": "\(namespace)/\(name)"])

        // Resolve the environment (a missing Secret keeps the pod waiting, as kubelet's CreateContainerConfigError).
        var launch: Launch?
        var lastProblem: String?
        while launch == nil {
            if Task.isCancelled { return }
            if await stopRequest(uid: uid) != nil {
                if await markFinished(uid: uid) { await confirmDeletion(namespace: namespace, name: name, uid: uid) }
                return
            }
            do {
                launch = try await prepare(pod, container: container)
            } catch {
                if error.detail != lastProblem {
                    lastProblem = error.detail
                    podLogger.warning("container cannot be configured yet", metadata: ["error": "\(error)"])
                    var status = ContainerStatus(name: container.name, ready: false, image: container.image ?? "", state: ContainerState(waiting: .init(reason: "CreateContainerConfigError", message: error.detail)))
                    status.started = false
                    await patchStatus(pod, ["phase": "Pending", "containerStatuses": [encoded(status)]])
                }
                try? await clock.sleep(for: .seconds(1))
            }
        }
        guard let launch else { return }

        let startedAt = clock.wallNow()
        let process: PodProcess
        do {
            process = try PodProcess.spawn(arguments: launch.arguments, environment: launch.environment, workingDirectory: launch.workingDirectory, logFile: launch.logFile)
        } catch {
            podLogger.warning("container did not start", metadata: ["error": "\(error)"])
            var terminated = ContainerState.Terminated(exitCode: 128, reason: "StartError", message: error.description, startedAt: startedAt, finishedAt: clock.wallNow())
            terminated.containerID = nil
            let status = ContainerStatus(name: container.name, ready: false, image: container.image ?? "", state: ContainerState(terminated: terminated), started: false)
            await patchStatus(pod, ["phase": "Failed", "startTime": .string(MicroTime.format(startedAt)), "containerStatuses": [encoded(status)]])
            if await markFinished(uid: uid) { await confirmDeletion(namespace: namespace, name: name, uid: uid) }
            return
        }
        podLogger.info("container started", metadata: ["pid": "\(process.pid)", "command": "\(launch.arguments)"])
        let containerID = "shoal-local://\(configuration.nodeName)/\(process.pid)"
        var running = ContainerStatus(name: container.name, ready: true, image: container.image ?? "", state: ContainerState(running: .init(startedAt: startedAt)), started: true)
        running.containerID = containerID
        await patchStatus(pod, [
            "phase": "Running", "startTime": .string(MicroTime.format(startedAt)),
            "podIP": .string(configuration.podIP), "hostIP": .string(configuration.podIP), "podIPs": [["ip": .string(configuration.podIP)]],
            "conditions": conditions(ready: true, at: startedAt),
            "containerStatuses": [encoded(running)],
        ])

        // Wait for the end; a deletion sends SIGTERM, then SIGKILL after the grace period.
        var killAt: Duration?
        var exit: ProcessExit
        while true {
            if let ended = process.exitIfFinished() {
                exit = ended
                break
            }
            if Task.isCancelled {
                _ = await process.kill()
                podLogger.info("container killed: the local node is stopping")
                return
            }
            if killAt == nil, let grace = await stopRequest(uid: uid) {
                podLogger.info("sending SIGTERM", metadata: ["grace_s": "\(grace.components.seconds)"])
                process.signal(SIGTERM)
                killAt = clock.monotonicNow() + grace
            }
            if let deadline = killAt, clock.monotonicNow() >= deadline {
                podLogger.info("grace period over, sending SIGKILL")
                process.signal(SIGKILL)
                killAt = clock.monotonicNow() + .seconds(3600)
            }
            try? await clock.sleep(for: .milliseconds(50))
        }
        // Like a container's teardown: whatever the main process left behind in its group dies with it.
        process.signal(SIGKILL)

        let finishedAt = clock.wallNow()
        let message = terminationMessage(file: launch.terminationMessageFile, logFile: launch.logFile, policy: container.terminationMessagePolicy, failed: exit.exitCode != 0)
        var terminated = ContainerState.Terminated(
            exitCode: exit.exitCode, reason: exit.exitCode == 0 ? "Completed" : "Error", message: message, startedAt: startedAt, finishedAt: finishedAt)
        terminated.signal = exit.signal
        terminated.containerID = containerID
        var final = ContainerStatus(name: container.name, ready: false, image: container.image ?? "", state: ContainerState(terminated: terminated), started: false)
        final.containerID = containerID
        podLogger.info("container exited", metadata: ["exit_code": "\(exit.exitCode)"])
        await patchStatus(pod, [
            "phase": exit.exitCode == 0 ? "Succeeded" : "Failed",
            "conditions": conditions(ready: false, at: finishedAt),
            "containerStatuses": [encoded(final)],
        ])
        if await markFinished(uid: uid) { await confirmDeletion(namespace: namespace, name: name, uid: uid) }
    }

    /// Everything needed to start a container's process.
    private struct Launch: Sendable {
        var arguments: [String]
        var environment: [String: String]
        var workingDirectory: String
        var logFile: String
        var terminationMessageFile: String
    }

    /// Resolves the command, environment and directories of a pod's container.
    private nonisolated func prepare(_ pod: Pod, container: Container) async throws(LocalNodeError) -> Launch {
        let namespace = pod.metadata.namespace ?? ""
        let name = pod.metadata.name ?? ""
        let uid = pod.metadata.uid ?? ""
        let podName = "\(namespace)/\(name)"
        let directory = podDirectory(namespace: namespace, name: name, uid: uid)
        let terminationFile = terminationMessageFile(namespace: namespace, name: name, uid: uid)
        let workingDirectory = container.workingDir ?? directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: workingDirectory, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: terminationFile) {
                guard FileManager.default.createFile(atPath: terminationFile, contents: Data()) else { throw LocalNodeError(pod: podName, detail: "cannot create \(terminationFile)") }
            }
        } catch let error as LocalNodeError {
            throw error
        } catch {
            throw LocalNodeError(pod: podName, detail: "cannot prepare directories: \(error)")
        }

        let entrypoint = container.command ?? container.image.flatMap { configuration.imageCommands[$0] } ?? []
        guard !entrypoint.isEmpty else {
            throw LocalNodeError(pod: podName, detail: "container \(container.name) has no command and image '\(container.image ?? "")' has no entrypoint configured")
        }

        var environment = configuration.baseEnvironment
        environment["HOSTNAME"] = name
        var secrets: [String: Secret] = [:]
        for variable in container.env ?? [] {
            if let value = variable.value {
                environment[variable.name] = value
            } else if let reference = variable.valueFrom?.secretKeyRef {
                let secret: Secret
                if let cached = secrets[reference.name] {
                    secret = cached
                } else {
                    do {
                        secret = try await api.secret(named: reference.name, namespace: namespace)
                    } catch .notFound where reference.optional == true {
                        continue
                    } catch {
                        throw LocalNodeError(pod: podName, detail: "secret \"\(reference.name)\" for variable \(variable.name): \(error)")
                    }
                    secrets[reference.name] = secret
                }
                guard let value = secret.string(forKey: reference.key) else {
                    if reference.optional == true { continue }
                    throw LocalNodeError(pod: podName, detail: "couldn't find key \(reference.key) in Secret \(namespace)/\(reference.name)")
                }
                environment[variable.name] = value
            } else if let field = variable.valueFrom?.fieldRef {
                guard let value = fieldValue(field.fieldPath, of: pod) else {
                    throw LocalNodeError(pod: podName, detail: "unsupported fieldRef \(field.fieldPath) for variable \(variable.name)")
                }
                environment[variable.name] = value
            } else if variable.valueFrom == nil {
                environment[variable.name] = ""
            } else {
                throw LocalNodeError(pod: podName, detail: "variable \(variable.name): only value, secretKeyRef and fieldRef are supported")
            }
        }
        try await mountSecretVolumes(pod, container: container, directory: directory, environment: &environment)
        environment["SHOAL_TERMINATION_MESSAGE_PATH"] = terminationFile
        if environment["AZP_TERMINATION_LOG"] == nil { environment["AZP_TERMINATION_LOG"] = terminationFile }

        return Launch(
            arguments: entrypoint + (container.args ?? []), environment: environment, workingDirectory: workingDirectory,
            logFile: logFile(namespace: namespace, name: name, uid: uid), terminationMessageFile: terminationFile)
    }

    /// Materializes the container's Secret volumes in the pod directory, as the kubelet does on its tmpfs.
    ///
    /// Processes here have no mount namespace, so a volume cannot appear at its `mountPath`: its files go to
    /// `<pod dir>/volumes/<volume>/` and every environment variable whose value is the mount path (or below it) is
    /// rewritten to that directory. A Secret that does not exist yet keeps the pod waiting, as a failed mount does.
    private nonisolated func mountSecretVolumes(
        _ pod: Pod, container: Container, directory: String, environment: inout [String: String]
    ) async throws(LocalNodeError) {
        let namespace = pod.metadata.namespace ?? ""
        let podName = "\(namespace)/\(pod.metadata.name ?? "")"
        let volumes = pod.spec?.volumes ?? []
        for mount in container.volumeMounts ?? [] {
            guard let volumeName = mount["name"]?.stringValue, let mountPath = mount["mountPath"]?.stringValue,
                let volume = volumes.first(where: { $0["name"]?.stringValue == volumeName }), let source = volume["secret"],
                let secretName = source["secretName"]?.stringValue
            else { continue }
            let secret: Secret
            do {
                secret = try await api.secret(named: secretName, namespace: namespace)
            } catch {
                throw LocalNodeError(pod: podName, detail: "MountVolume.SetUp failed for volume \"\(volumeName)\": secret \"\(secretName)\": \(error)")
            }
            let target = directory + "/volumes/" + volumeName
            let mode = source["defaultMode"]?.intValue.map { mode_t($0) } ?? 0o644
            do {
                try? FileManager.default.removeItem(atPath: target)
                try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
                for key in (secret.data ?? [:]).keys.sorted() {
                    let file = target + "/" + key
                    guard let value = secret.value(forKey: key), FileManager.default.createFile(atPath: file, contents: value) else {
                        throw LocalNodeError(pod: podName, detail: "cannot write \(file)")
                    }
                    chmod(file, mode)
                }
            } catch let error as LocalNodeError {
                throw error
            } catch {
                throw LocalNodeError(pod: podName, detail: "cannot prepare volume \(volumeName): \(error)")
            }
            let prefix = mountPath.hasSuffix("/") ? String(mountPath.dropLast()) : mountPath
            for (name, value) in environment where value == prefix || value.hasPrefix(prefix + "/") {
                environment[name] = target + value.dropFirst(prefix.count)
            }
        }
    }

    /// The downward-API value of `path` for this node's pod, or nil if unsupported.
    private nonisolated func fieldValue(_ path: String, of pod: Pod) -> String? {
        switch path {
        case "metadata.name": return pod.metadata.name
        case "metadata.namespace": return pod.metadata.namespace
        case "metadata.uid": return pod.metadata.uid
        case "spec.nodeName": return configuration.nodeName
        case "spec.serviceAccountName": return pod.spec?.serviceAccountName ?? "default"
        case "status.podIP", "status.hostIP", "status.podIPs": return configuration.podIP
        default:
            for (prefix, map) in [("metadata.labels['", pod.metadata.labels), ("metadata.annotations['", pod.metadata.annotations)]
            where path.hasPrefix(prefix) && path.hasSuffix("']") {
                let key = String(path.dropFirst(prefix.count).dropLast(2))
                return map?[key] ?? ""
            }
            return nil
        }
    }

    /// The termination message: the file's first 4096 bytes, or with `FallbackToLogsOnError` the log's last
    /// 2048 bytes when the file is empty and the container failed.
    private nonisolated func terminationMessage(file: String, logFile: String, policy: String?, failed: Bool) -> String? {
        let data = (FileManager.default.contents(atPath: file) ?? Data()).prefix(4096)
        if !data.isEmpty { return String(decoding: data, as: UTF8.self) }
        guard policy == "FallbackToLogsOnError", failed, let log = FileManager.default.contents(atPath: logFile), !log.isEmpty else { return nil }
        return String(decoding: log.suffix(2048), as: UTF8.self)
    }

    /// The pod conditions a kubelet writes.
    private nonisolated func conditions(ready: Bool, at time: Date) -> KubeJSON {
        let stamp = KubeJSON.string(MicroTime.format(time))
        let readiness: KubeJSON = ready ? "True" : "False"
        return [
            ["type": "Initialized", "status": "True", "lastTransitionTime": stamp],
            ["type": "Ready", "status": readiness, "lastTransitionTime": stamp],
            ["type": "ContainersReady", "status": readiness, "lastTransitionTime": stamp],
            ["type": "PodScheduled", "status": "True"],
        ]
    }

    private nonisolated func encoded(_ status: ContainerStatus) -> KubeJSON {
        (try? KubeJSON(encoding: status)) ?? .emptyObject
    }

    /// Strategic-merge-patches `pods/NAME/status` (conditions merge by type, container statuses by name).
    private nonisolated func patchStatus(_ pod: Pod, _ status: KubeJSON) async {
        guard let name = pod.metadata.name else { return }
        do {
            _ = try await api.patchStatus(Pod.self, .pods, namespace: pod.metadata.namespace, name: name, patch: .strategicMerge(["status": status]))
        } catch .notFound {
            logger.debug("pod gone before its status was written", metadata: ["pod": "\(pod.metadata.namespace ?? "")/\(name)"])
        } catch {
            logger.warning("pod status not written", metadata: ["pod": "\(pod.metadata.namespace ?? "")/\(name)", "error": "\(error)"])
        }
    }
}

/// Why a pod's container cannot be configured (kubelet's `CreateContainerConfigError`).
package struct LocalNodeError: Error, Sendable, CustomStringConvertible {
    /// The pod, as `namespace/name`.
    package var pod: String
    /// What is wrong.
    package var detail: String

    /// The pod and the problem.
    package var description: String { "pod \(pod): \(detail)" }
}

extension Logger {
    /// A copy with extra metadata.
    fileprivate func with(metadata: Logger.Metadata) -> Logger {
        var copy = self
        for (key, value) in metadata { copy[metadataKey: key] = value }
        return copy
    }
}
