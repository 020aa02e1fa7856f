import Kubernetes
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What the reconciler reports to metrics; ``ControllerMetrics`` is the real one, tests record calls.
protocol PoolMetricsSink: Sendable {
    /// The counts of one reconcile, and live pods by phase (`Terminating` for pods being deleted).
    func poolObserved(pool: String, counts: PoolCounts, podsByPhase: [String: Int])
    /// A pod was created.
    func podCreated(pool: String)
    /// A pod was deleted.
    func podDeleted(pool: String, reason: String)
    /// A registration was deleted.
    func registrationDeleted(pool: String, reason: String)
    /// The placeholder was registered or removed.
    func placeholderChanged(pool: String, action: String)
    /// A reconcile ended; `errorReason` is set when it failed.
    func reconciled(pool: String, duration: Duration, errorReason: String?)
    /// A job we saw queued was assigned after `seconds`.
    func queueToAssign(pool: String, seconds: Double)
    /// The organization's rate-limit headroom as last seen.
    func rateLimitRemaining(pool: String, value: Double)
    /// The pool is gone: drop its series.
    func forget(pool: String)
}

/// Reconciles one AgentPool at a time: validate, observe, decide, execute, report.
///
/// Never throws: every failure becomes a status condition, an Event, a metric and a retry delay, so one bad pool
/// cannot stop the others. Per-pool memory (orphans first seen, surplus since, cached ids) lives here.
actor PoolReconciler {
    /// What the reconciler needs from outside.
    struct Dependencies: Sendable {
        /// Kubernetes API (pods, secrets, AgentPools, Events).
        var kube: any KubernetesAPI
        /// Azure DevOps clients.
        var connector: any AzureDevOpsConnector
        /// The pod cache.
        var pods: PodCache
        /// Events.
        var events: EventRecorder
        /// Metrics.
        var metrics: any PoolMetricsSink
        /// Time.
        var clock: any ShoalClock
        /// Logger.
        var logger: Logger
        /// Which organizations AgentPools may name (the controller's setting, never the AgentPool's).
        var organizationPolicy = OrganizationPolicy()
    }

    /// Per-pool memory.
    private struct PoolState {
        var memory = PoolMemory()
        var observer: PoolObserver
        var poolID: (organization: String, name: String, id: Int)?
        var consecutiveFailures = 0
        var queuedSeen: [Int64: Date] = [:]
    }

    /// How the reconcile of one pool ended.
    struct Outcome: Sendable, Equatable {
        /// When to reconcile the pool again at the latest.
        var requeueAfter: Duration
        /// The Ready condition's reason.
        var reason: String
    }

    private let dependencies: Dependencies
    private var states: [PoolKey: PoolState] = [:]

    /// A reconciler over `dependencies`.
    init(_ dependencies: Dependencies) { self.dependencies = dependencies }

    /// Forgets a deleted pool's memory and metrics.
    func forget(_ key: PoolKey) {
        states[key] = nil
        dependencies.metrics.forget(pool: key.description)
    }

    /// Reconciles one AgentPool. `token` replaces the Secret in legacy mode (the original project's env variables).
    func reconcile(_ object: AgentPoolObject, token override: String? = nil) async -> Outcome {
        let started = dependencies.clock.monotonicNow()
        let key = object.key
        let reference = PoolReference(key: key, uid: object.metadata.uid)
        var logger = dependencies.logger
        logger[metadataKey: "pool"] = "\(key)"
        var state = states[key] ?? PoolState(observer: PoolObserver(clock: dependencies.clock))
        defer { states[key] = state }

        let outcome = await reconcile(object, reference: reference, tokenOverride: override, state: &state, logger: logger)
        let duration = dependencies.clock.monotonicNow() - started
        let failed = outcome.reason == "Reconciled" || outcome.reason == "Deleted" ? nil : outcome.reason
        dependencies.metrics.reconciled(pool: key.description, duration: duration, errorReason: failed)
        return outcome
    }

    // MARK: - The steps

    private func reconcile(
        _ object: AgentPoolObject, reference: PoolReference, tokenOverride: String?, state: inout PoolState, logger: Logger
    ) async -> Outcome {
        let deleting = object.metadata.deletionTimestamp != nil
        let hasFinalizer = object.metadata.finalizers?.contains(AgentPoolResource.finalizer) ?? false
        if deleting && !hasFinalizer { return Outcome(requeueAfter: .seconds(3600), reason: "Deleted") }

        let spec: PoolSpec
        do {
            spec = try PoolSpec.resolve(object.spec, name: object.key.name)
        } catch {
            if deleting {
                await removeFinalizer(object, logger: logger)
                return Outcome(requeueAfter: .seconds(3600), reason: "Deleted")
            }
            return await fail(object, reference: reference, state: &state, reason: "InvalidSpec", message: "\(error)", retryAfter: .seconds(60), logger: logger)
        }

        if !deleting {
            do {
                try dependencies.organizationPolicy.check(spec.organization)
            } catch {
                return await fail(
                    object, reference: reference, state: &state, reason: "OrganizationNotAllowed", message: "\(error)", retryAfter: .seconds(60),
                    logger: logger)
            }
        }

        if !deleting && !hasFinalizer && object.metadata.uid != nil {
            do {
                _ = try await dependencies.kube.setFinalizers(
                    (object.metadata.finalizers ?? []) + [AgentPoolResource.finalizer], on: object, AgentPoolResource.resource)
            } catch .conflict {
                // The AgentPool changed since the watch delivered it; the next reconcile sees the new version.
                return Outcome(requeueAfter: .seconds(1), reason: "Conflict")
            } catch {
                return await fail(object, reference: reference, state: &state, reason: reason(of: error), message: "adding the finalizer: \(error)", retryAfter: nil, logger: logger)
            }
        }

        guard await dependencies.pods.isSynced(object.key.namespace) else {
            if let failure = await dependencies.pods.failure(in: object.key.namespace) {
                return await fail(
                    object, reference: reference, state: &state, reason: failure.forbidden ? "KubernetesForbidden" : "KubernetesUnavailable",
                    message: "cannot list and watch pods in namespace \(object.key.namespace): \(failure.message)", retryAfter: .seconds(30), logger: logger)
            }
            return Outcome(requeueAfter: .milliseconds(500), reason: "WaitingForCache")
        }

        // The token: from the Secret (rotation is picked up on the next reconcile), or the legacy environment.
        let token: String
        if let tokenOverride {
            token = tokenOverride
        } else {
            do {
                token = try await readToken(spec: spec, namespace: object.key.namespace)
            } catch {
                if deleting { return await finalizeWithoutAzureDevOps(object, reference: reference, spec: spec, why: error.message, logger: logger) }
                return await fail(object, reference: reference, state: &state, reason: error.reason, message: error.message, retryAfter: nil, logger: logger)
            }
        }

        do {
            let api = try dependencies.connector.api(organization: spec.organization, token: token)
            let poolID = try await resolvePoolID(spec: spec, api: api, state: &state)
            let pods = await dependencies.pods.pods(of: object.key)
            let (observation, _, jobs) = try await state.observer.observe(spec: spec, poolID: poolID, api: api, pods: pods, deleting: deleting)
            recordQueueToAssign(jobs: jobs, pool: object.key, state: &state)
            if let client = api as? AzureDevOpsClient, let remaining = client.rateLimit.remaining {
                dependencies.metrics.rateLimitRemaining(pool: object.key.description, value: remaining)
            }

            let decision = PoolDecision.decide(spec: spec, observation: observation, memory: state.memory)
            state.memory = decision.memory
            let executor = PoolExecutor(kube: dependencies.kube, cache: dependencies.pods, logger: logger)
            let report = await executor.execute(
                decision.actions, spec: spec, pool: reference, poolID: poolID, api: api, agentVersion: observation.agentVersion)
            await publish(decision: decision, report: report, observation: observation, pool: reference, logger: logger)

            if deleting {
                let placeholderLeft = observation.agents.contains { $0.name == PoolDecision.placeholderName(prefix: spec.prefix) } && !report.placeholderRemoved
                if !placeholderLeft && report.failures.isEmpty {
                    await removeFinalizer(object, logger: logger)
                    return Outcome(requeueAfter: .seconds(3600), reason: "Deleted")
                }
                return Outcome(requeueAfter: .seconds(2), reason: "Finalizing")
            }

            if let forbidden = report.failures.first(where: \.isForbidden) {
                return await fail(object, reference: reference, state: &state, reason: "KubernetesForbidden", message: forbidden.description, retryAfter: nil, logger: logger, counts: decision.counts, placeholder: placeholderID(decision, report, observation, spec))
            }
            state.consecutiveFailures = 0
            let degraded = report.failures.first.map { "some actions failed and will be retried: \($0)" }
            await writeStatus(
                object, counts: decision.counts, poolID: poolID, placeholder: placeholderID(decision, report, observation, spec),
                ready: PoolCondition(type: "Ready", status: true, reason: "Reconciled", message: readyMessage(decision.counts, spec: spec), observedGeneration: object.metadata.generation),
                degraded: degraded, logger: logger)
            let soon = report.creationsDeferred > 0 || !report.failures.isEmpty
            return Outcome(requeueAfter: soon ? min(spec.timing.pollInterval, .seconds(2)) : spec.timing.pollInterval, reason: "Reconciled")
        } catch {
            if deleting, !error.isRetryable {
                return await finalizeWithoutAzureDevOps(object, reference: reference, spec: spec, why: "\(error)", logger: logger)
            }
            var retryAfter: Duration?
            if case .throttled(_, let after) = error { retryAfter = after }
            if case .poolNotFound = error { state.poolID = nil }
            if case .notFound = error { state.poolID = nil }
            return await fail(object, reference: reference, state: &state, reason: error.reason, message: actionable(error), retryAfter: retryAfter, logger: logger)
        }
    }

    private func placeholderID(_ decision: PoolDecisionResult, _ report: ExecutionReport, _ observation: PoolObservation, _ spec: PoolSpec) -> Int? {
        if report.placeholderRemoved { return nil }
        return report.placeholderRegistered ?? observation.agents.first { $0.name == PoolDecision.placeholderName(prefix: spec.prefix) }?.id
    }

    private func readyMessage(_ counts: PoolCounts, spec: PoolSpec) -> String {
        "\(counts.busy) busy, \(counts.idle) idle, \(counts.starting) starting for \(counts.queued) queued jobs (standby \(spec.standby), max \(spec.maxAgents))"
    }

    /// Why a token could not be read.
    private struct TokenError: Error {
        var reason: String
        var message: String
    }

    private func readToken(spec: PoolSpec, namespace: String) async throws(TokenError) -> String {
        let secret: Secret
        do {
            secret = try await dependencies.kube.secret(named: spec.tokenSecretName, namespace: namespace)
        } catch .notFound {
            throw TokenError(reason: "SecretNotFound", message: "Secret \(namespace)/\(spec.tokenSecretName) (spec.tokenSecretRef.name) does not exist; create it with the PAT under key '\(spec.tokenSecretKey)'")
        } catch {
            throw TokenError(reason: reason(of: error), message: "reading Secret \(namespace)/\(spec.tokenSecretName): \(error)")
        }
        // Only Secrets labelled for Shoal: an AgentPool author must not be able to send any Secret of the namespace
        // to Azure DevOps (or read it back through a pod) just by naming it.
        guard secret.metadata.labels?[AgentPodLabels.tokenSecret] == "true" else {
            throw TokenError(
                reason: "TokenSecretNotAllowed",
                message: "Secret \(namespace)/\(spec.tokenSecretName) (spec.tokenSecretRef.name) lacks the label \(AgentPodLabels.tokenSecret)=true "
                    + "that allows AgentPools to use it as their token; add it with: kubectl label secret -n \(namespace) \(spec.tokenSecretName) \(AgentPodLabels.tokenSecret)=true")
        }
        guard let value = secret.string(forKey: spec.tokenSecretKey) else {
            let keys = (secret.data ?? [:]).keys.sorted().joined(separator: ", ")
            throw TokenError(reason: "SecretKeyMissing", message: "Secret \(namespace)/\(spec.tokenSecretName) has no key '\(spec.tokenSecretKey)' (spec.tokenSecretRef.key); it has: \(keys.isEmpty ? "none" : keys)")
        }
        let token = value.filter { !$0.isWhitespace }
        guard !token.isEmpty else {
            throw TokenError(reason: "SecretKeyMissing", message: "Secret \(namespace)/\(spec.tokenSecretName) key '\(spec.tokenSecretKey)' is empty")
        }
        return token
    }

    private func resolvePoolID(spec: PoolSpec, api: any AzureDevOpsAPI, state: inout PoolState) async throws(AzureDevOpsError) -> Int {
        let organization = spec.organization.description
        if let cached = state.poolID, cached.organization == organization, cached.name == spec.poolName { return cached.id }
        let pool = try await api.resolvePool(named: spec.poolName)
        state.poolID = (organization, spec.poolName, pool.id)
        return pool.id
    }

    private func recordQueueToAssign(jobs: [JobRequest], pool: PoolKey, state: inout PoolState) {
        var stillQueued: [Int64: Date] = [:]
        for job in jobs {
            if job.phase == .queued {
                stillQueued[job.requestId] = state.queuedSeen[job.requestId] ?? job.queueTime ?? dependencies.clock.wallNow()
            } else if let queued = state.queuedSeen[job.requestId] {
                let assigned = job.assignTime ?? dependencies.clock.wallNow()
                dependencies.metrics.queueToAssign(pool: pool.description, seconds: max(0, assigned.timeIntervalSince(queued)))
            }
        }
        state.queuedSeen = stillQueued
    }

    // MARK: - Reporting

    private func publish(decision: PoolDecisionResult, report: ExecutionReport, observation: PoolObservation, pool: PoolReference, logger: Logger) async {
        let name = pool.key.description
        var phases: [String: Int] = ["Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0, "Terminating": 0]
        for pod in observation.pods { phases[pod.terminating ? "Terminating" : pod.phase.rawValue, default: 0] += 1 }
        dependencies.metrics.poolObserved(pool: name, counts: decision.counts, podsByPhase: phases)
        let counts = decision.counts
        let countsMetadata: Logger.Metadata = [
            "queued": "\(counts.queued)", "busy": "\(counts.busy)", "idle": "\(counts.idle)", "starting": "\(counts.starting)",
            "pods": "\(counts.pods)", "desired": "\(counts.desired)",
        ]
        if !report.createdPods.isEmpty {
            report.createdPods.forEach { _ in dependencies.metrics.podCreated(pool: name) }
            logger.info("created pods", metadata: countsMetadata.merging(["created": "\(report.createdPods.joined(separator: ","))"]) { $1 })
            await dependencies.events.record(
                pool, reason: "ScaledUp",
                message: "Created \(report.createdPods.count) pod(s): \(counts.queued) queued, \(counts.busy) busy, \(counts.idle) idle, \(counts.starting) starting, desired \(counts.desired)")
        }
        for deletion in report.deletedPods {
            dependencies.metrics.podDeleted(pool: name, reason: deletion.reason.rawValue)
            logger.info("deleted pod", metadata: countsMetadata.merging(["pod": "\(deletion.name)", "reason": "\(deletion.reason.rawValue)", "detail": "\(deletion.detail)"]) { $1 })
            switch deletion.reason {
            case .stuck: await dependencies.events.record(pool, reason: "PodStuck", message: deletion.detail, warning: true)
            case .scaleDown: await dependencies.events.record(pool, reason: "ScaledDown", message: deletion.detail)
            case .disabled: await dependencies.events.record(pool, reason: "AgentDisabled", message: deletion.detail)
            case .completed: break
            }
        }
        for deletion in report.deletedRegistrations {
            dependencies.metrics.registrationDeleted(pool: name, reason: deletion.reason.rawValue)
            logger.info("deleted registration", metadata: ["agent": "\(deletion.name)", "reason": "\(deletion.reason.rawValue)"])
            await dependencies.events.record(
                pool, reason: deletion.reason == .orphan ? "OrphanRegistrationDeleted" : "RegistrationDeleted",
                message: "Deleted registration \(deletion.name) (\(deletion.reason.rawValue))")
        }
        if !report.reEnabled.isEmpty {
            logger.info("scale-down lost to an assignment; agents enabled again", metadata: ["agents": "\(report.reEnabled)"])
        }
        if let id = report.placeholderRegistered {
            dependencies.metrics.placeholderChanged(pool: name, action: "registered")
            logger.info("registered placeholder", metadata: ["agent.id": "\(id)"])
            await dependencies.events.record(pool, reason: "PlaceholderRegistered", message: "Registered the offline placeholder agent \(id) so jobs queue while the pool has no agent")
        }
        if report.placeholderRemoved {
            dependencies.metrics.placeholderChanged(pool: name, action: "removed")
            logger.info("removed placeholder")
            await dependencies.events.record(pool, reason: "PlaceholderRemoved", message: "Removed the placeholder agent")
        }
        for failure in report.failures {
            logger.warning("action failed", metadata: ["error": "\(failure)"])
        }
        if report.createdPods.isEmpty && report.deletedPods.isEmpty && report.deletedRegistrations.isEmpty {
            logger.debug("reconciled", metadata: countsMetadata)
        }
    }

    private func fail(
        _ object: AgentPoolObject, reference: PoolReference, state: inout PoolState, reason: String, message: String, retryAfter: Duration?,
        logger: Logger, counts: PoolCounts? = nil, placeholder: Int? = nil
    ) async -> Outcome {
        state.consecutiveFailures += 1
        let backoff = retryAfter ?? min(.seconds(300), .seconds(5) * (1 << min(state.consecutiveFailures - 1, 6)))
        logger.error("reconcile failed", metadata: ["reason": "\(reason)", "error": "\(message)", "retry_in_s": "\(Int(backoff.seconds))"])
        await dependencies.events.record(reference, reason: reason, message: message, warning: true)
        await writeStatus(
            object, counts: counts, poolID: state.poolID?.id, placeholder: placeholder,
            ready: PoolCondition(type: "Ready", status: false, reason: reason, message: message, observedGeneration: object.metadata.generation),
            degraded: message, logger: logger)
        return Outcome(requeueAfter: backoff, reason: reason)
    }

    private func writeStatus(
        _ object: AgentPoolObject, counts: PoolCounts?, poolID: Int?, placeholder: Int?, ready: PoolCondition, degraded: String?, logger: Logger
    ) async {
        guard object.metadata.uid != nil, object.metadata.deletionTimestamp == nil else { return }
        let now = dependencies.clock.wallNow()
        var status = object.status ?? AgentPoolStatus()
        status.observedGeneration = object.metadata.generation
        status.poolId = poolID ?? status.poolId
        if let counts {
            status.queued = counts.queued
            status.busy = counts.busy
            status.idle = counts.idle
            status.starting = counts.starting
            status.pods = counts.pods
            status.desired = counts.desired
        }
        status.placeholderAgentId = placeholder
        var conditions = status.conditions ?? []
        conditions.set(ready, now: now)
        conditions.set(
            PoolCondition(
                type: "Degraded", status: degraded != nil, reason: degraded == nil ? "AsExpected" : ready.status == "True" ? "ActionsFailed" : ready.reason,
                message: degraded ?? "All actions succeeded", observedGeneration: object.metadata.generation), now: now)
        status.conditions = conditions
        var previous = object.status ?? AgentPoolStatus()
        previous.lastReconcileTime = nil
        var comparable = status
        comparable.lastReconcileTime = nil
        guard comparable != previous else { return }
        status.lastReconcileTime = now
        do {
            let body = try KubeJSON(encoding: status)
            _ = try await dependencies.kube.patchStatus(
                AgentPoolObject.self, AgentPoolResource.resource, namespace: object.key.namespace, name: object.key.name, patch: .merge(["status": body]))
        } catch {
            logger.warning("could not write status", metadata: ["error": "\(error)"])
        }
    }

    private func removeFinalizer(_ object: AgentPoolObject, logger: Logger) async {
        guard object.metadata.uid != nil else { return }
        do {
            _ = try await dependencies.kube.setFinalizers(
                (object.metadata.finalizers ?? []).filter { $0 != AgentPoolResource.finalizer }, on: object, AgentPoolResource.resource)
            logger.info("finalizer removed; AgentPool may go")
        } catch {
            logger.warning("could not remove finalizer", metadata: ["error": "\(error)"])
        }
    }

    /// Deletion when Azure DevOps cannot be reached for good (bad token, pool gone): let the AgentPool go, but say
    /// that a placeholder may be left behind.
    private func finalizeWithoutAzureDevOps(_ object: AgentPoolObject, reference: PoolReference, spec: PoolSpec, why: String, logger: Logger) async -> Outcome {
        await dependencies.events.record(
            reference, reason: "PlaceholderNotRemoved",
            message: "Could not remove placeholder \(PoolDecision.placeholderName(prefix: spec.prefix)) from pool \(spec.poolName): \(why); delete it in Azure DevOps if it is still there",
            warning: true)
        await removeFinalizer(object, logger: logger)
        return Outcome(requeueAfter: .seconds(3600), reason: "Deleted")
    }

    private func reason(of error: KubernetesError) -> String {
        switch error {
        case .forbidden: "KubernetesForbidden"
        case .unauthorized: "KubernetesUnauthorized"
        case .conflict: "Conflict"
        default: "KubernetesError"
        }
    }

    /// The error's message with what to do about it.
    private func actionable(_ error: AzureDevOpsError) -> String {
        switch error {
        case .authentication:
            "\(error). Check the token in spec.tokenSecretRef: a PAT with the Agent Pools (read & manage) scope that has not expired."
        case .poolNotFound(let name):
            "Azure DevOps has no agent pool named '\(name)' (spec.poolName). Create it under Organization settings > Agent pools, or fix the name."
        case .forbidden:
            "\(error). The token's user needs the Administrator role on the agent pool (or the organization's agent pools)."
        case .throttled:
            "\(error). Azure DevOps is rate-limiting this organization; the pool backs off. Raise spec.timing.pollIntervalSeconds if this persists."
        default:
            "\(error)"
        }
    }
}
