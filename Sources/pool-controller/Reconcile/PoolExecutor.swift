import Kubernetes
import Logging
import Shared

/// What the executor did for one pool, for status, Events, metrics and logs.
struct ExecutionReport: Sendable {
    /// Names of pods created.
    var createdPods: [String] = []
    /// Pods deleted, with why.
    var deletedPods: [(name: String, reason: PodDeletionReason, detail: String)] = []
    /// Registrations deleted, with why.
    var deletedRegistrations: [(name: String, reason: RegistrationDeletionReason)] = []
    /// Agents disabled for scale-down that took a job meanwhile and were enabled again.
    var reEnabled: [Int] = []
    /// The placeholder's id after this reconcile (registered now or already there), nil when none is kept.
    var placeholderRegistered: Int?
    /// Whether the placeholder was removed.
    var placeholderRemoved = false
    /// Creations left for the next reconcile because the API server throttled (429); other failures are in ``failures``.
    var creationsDeferred = 0
    /// Failures of single actions; the reconcile goes on with the others.
    var failures: [ActionFailure] = []
}

/// One action that failed.
struct ActionFailure: Sendable, CustomStringConvertible {
    /// The action, in words.
    var action: String
    /// The error.
    var error: any Error & Sendable

    var description: String { "\(action): \(error)" }

    /// Whether Kubernetes refused it for lack of RBAC permission.
    var isForbidden: Bool {
        if case .forbidden = error as? KubernetesError { return true }
        return false
    }
}

/// Applies a pool's actions: Kubernetes writes through `kube`, Azure DevOps writes through `api`.
struct PoolExecutor: Sendable {
    /// Kubernetes API.
    var kube: any KubernetesAPI
    /// The pod cache, updated write-through.
    var cache: PodCache
    /// Logger with the pool's metadata.
    var logger: Logger
    /// How pods are made for a registration mode (tests substitute fakes).
    var provisioners: @Sendable (RegistrationMode) -> any PodProvisioner

    /// An executor whose pods are made by the real provisioners.
    init(kube: any KubernetesAPI, cache: PodCache, logger: Logger, provisioners: (@Sendable (RegistrationMode) -> any PodProvisioner)? = nil) {
        self.kube = kube
        self.cache = cache
        self.logger = logger
        self.provisioners = provisioners ?? { mode in provisioner(for: mode, kube: kube, logger: logger) }
    }

    /// Runs `actions` in order; a failed action is reported and the rest still run.
    func execute(
        _ actions: [PoolAction], spec: PoolSpec, pool: PoolReference, poolID: Int, api: any AzureDevOpsAPI, agentVersion: String
    ) async -> ExecutionReport {
        var report = ExecutionReport()
        for action in actions {
            switch action {
            case .createPods(let count):
                await createPods(count, spec: spec, pool: pool, poolID: poolID, api: api, agentVersion: agentVersion, report: &report)
            case .deletePod(let name, let reason, let detail):
                if await deletePod(name, namespace: pool.key.namespace, report: &report) {
                    report.deletedPods.append((name, reason, detail))
                }
            case .deleteRegistration(let agentID, let name, let reason):
                do {
                    _ = try await api.deleteAgent(poolID: poolID, agentID: agentID)
                    report.deletedRegistrations.append((name, reason))
                } catch {
                    report.failures.append(ActionFailure(action: "delete registration \(name) (\(reason.rawValue))", error: error))
                }
            case .scaleDown(let candidates):
                await scaleDown(candidates, namespace: pool.key.namespace, poolID: poolID, api: api, report: &report)
            case .registerPlaceholder:
                do {
                    let agent = try await api.addAgent(poolID: poolID, Self.placeholder(spec: spec, version: agentVersion))
                    report.placeholderRegistered = agent.id
                } catch {
                    report.failures.append(ActionFailure(action: "register placeholder \(PoolDecision.placeholderName(prefix: spec.prefix))", error: error))
                }
            case .removePlaceholder(let agentID):
                do {
                    _ = try await api.deleteAgent(poolID: poolID, agentID: agentID)
                    report.placeholderRemoved = true
                } catch {
                    report.failures.append(ActionFailure(action: "remove placeholder \(agentID)", error: error))
                }
            }
        }
        return report
    }

    /// The placeholder registration: offline forever, with the template's capabilities and a current version.
    static func placeholder(spec: PoolSpec, version: String) -> NewAgent {
        let name = PoolDecision.placeholderName(prefix: spec.prefix)
        var capabilities = spec.templateCapabilities
        capabilities["Agent.Version"] = version
        capabilities["Agent.Name"] = name
        capabilities["shoal.placeholder"] = "true"
        return NewAgent(name: name, version: version, osDescription: "Shoal placeholder (scale to zero)", enabled: true, maxParallelism: 1, systemCapabilities: capabilities)
    }

    private func createPods(
        _ count: Int, spec: PoolSpec, pool: PoolReference, poolID: Int, api: any AzureDevOpsAPI, agentVersion: String, report: inout ExecutionReport
    ) async {
        let provisioner = provisioners(spec.registration)
        let context = ProvisioningContext(spec: spec, pool: pool, poolID: poolID, agentVersion: agentVersion, api: api)
        for index in 0..<count {
            do {
                let pod = try await provisioner.provision(context)
                await cache.record(pod)
                report.createdPods.append(pod.metadata.name ?? "?")
            } catch {
                switch error {
                case .throttled:
                    report.creationsDeferred = count - index
                    logger.warning(
                        "API server throttles pod creation; the rest waits for the next reconcile", metadata: ["deferred": "\(count - index)"])
                case .failed(let step, let cause):
                    // Not throttling: reported as a failure (which also brings the next reconcile forward), not deferred.
                    report.failures.append(ActionFailure(action: step, error: cause))
                }
                return
            }
        }
    }

    /// Deletes a pod; true when it is gone or going. A pod already gone counts as deleted.
    private func deletePod(_ name: String, namespace: String, report: inout ExecutionReport) async -> Bool {
        do {
            switch try await kube.deletePod(named: name, namespace: namespace) {
            case .deleted: await cache.forget(namespace: namespace, name: name)
            case .pending(let object): if let pod = try? object.json.decode(as: Pod.self) { await cache.record(pod) }
            }
            return true
        } catch .notFound {
            await cache.forget(namespace: namespace, name: name)
            return true
        } catch {
            report.failures.append(ActionFailure(action: "delete pod \(name)", error: error))
            return false
        }
    }

    /// Disable, re-read, then delete only pods whose agent still holds no job; enable the others again.
    private func scaleDown(_ candidates: [ScaleDownCandidate], namespace: String, poolID: Int, api: any AzureDevOpsAPI, report: inout ExecutionReport) async {
        var disabled: [ScaleDownCandidate] = []
        for candidate in candidates {
            do {
                _ = try await api.setAgentEnabled(poolID: poolID, agentID: candidate.agentID, enabled: false)
                disabled.append(candidate)
            } catch .notFound {
                disabled.append(candidate)
            } catch {
                report.failures.append(ActionFailure(action: "disable agent \(candidate.podName)", error: error))
            }
        }
        var reRead: [Int: AgentFacts] = [:]
        var unreadable: Set<Int> = []
        var gone: Set<Int> = []
        for candidate in disabled {
            do {
                reRead[candidate.agentID] = AgentFacts(try await api.agent(poolID: poolID, agentID: candidate.agentID, options: AgentQueryOptions(includeAssignedRequest: true)))
            } catch .notFound {
                gone.insert(candidate.agentID)
                continue
            } catch {
                unreadable.insert(candidate.agentID)
                report.failures.append(ActionFailure(action: "re-read agent \(candidate.podName)", error: error))
            }
        }
        // The job list too: a job reserved for a candidate by either read keeps it.
        var reserved: Set<Int> = []
        var readable = disabled.filter { !unreadable.contains($0.agentID) }
        do {
            reserved = Set(try await api.unfinishedJobRequests(poolID: poolID).filter { $0.phase != .queued }.compactMap { $0.reservedAgent?.id })
        } catch {
            report.failures.append(ActionFailure(action: "re-read job requests for scale-down", error: error))
            unreadable.formUnion(readable.map(\.agentID).filter { !gone.contains($0) })
            readable = []
        }
        // An agent we could not re-read is neither deleted nor trusted: enable it again.
        var (deletions, reEnable) = PoolDecision.resolveScaleDown(readable, reRead: reRead, reservedAgentIDs: reserved)
        // Agents the controller registered lose their registration first: the service refuses while a job runs, which
        // closes the last window for an assignment. Their pods hold no credential to do it themselves.
        for candidate in deletions where candidate.registeredByController && !gone.contains(candidate.agentID) {
            do {
                _ = try await api.deleteAgent(poolID: poolID, agentID: candidate.agentID)
                report.deletedRegistrations.append((candidate.podName, .podRemoved))
            } catch {
                deletions.removeAll { $0 == candidate }
                reEnable.append(candidate.agentID)
                logger.notice("registration not deleted; keeping the pod", metadata: ["pod": "\(candidate.podName)", "error": "\(error)"])
            }
        }
        for candidate in deletions {
            if await deletePod(candidate.podName, namespace: namespace, report: &report) {
                report.deletedPods.append((candidate.podName, .scaleDown, "agent \(candidate.podName) idle above the standby; confirmed idle after disabling it"))
            }
        }
        for agentID in reEnable + unreadable.sorted() {
            do {
                _ = try await api.setAgentEnabled(poolID: poolID, agentID: agentID, enabled: true)
                report.reEnabled.append(agentID)
            } catch {
                report.failures.append(ActionFailure(action: "re-enable agent \(agentID)", error: error))
            }
        }
    }
}
