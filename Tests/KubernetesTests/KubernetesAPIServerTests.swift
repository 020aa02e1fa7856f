import Foundation
import Kubernetes
import Simulators
import Shared
import Testing

/// A Pod with one container, named by the server from `prefix`.
func samplePod(prefix: String = "sample-", labels: [String: String]? = nil) -> Pod {
    Pod(
        metadata: ObjectMeta(generateName: prefix, labels: labels),
        spec: PodSpec(containers: [Container(name: "agent", image: "example.invalid/agent:1", env: [EnvVar(name: "A", value: "1")])], restartPolicy: "Never")
    )
}

@Suite("Kubernetes client against a real kube-apiserver", .timeLimit(.minutes(2)))
struct KubernetesAPIServerTests {
    @Test func podCreateGetPatchAndStatus() async throws {
        try await KubeTestContext.run { k in
            let created = try await k.admin.createPod(samplePod(prefix: "agent-"))
            let name = try #require(created.metadata.name)
            #expect(name.hasPrefix("agent-") && name.count == "agent-".count + 5)
            #expect(created.metadata.namespace == k.namespace)

            let fetched = try await k.admin.pod(named: name)
            #expect(fetched.metadata.uid == created.metadata.uid)
            #expect(fetched.spec?.containers.first?.env == [EnvVar(name: "A", value: "1")])

            // Strategic merge patch merges containers by name: only the named container changes, the other stays.
            var twoContainers = samplePod(prefix: "two-")
            twoContainers.spec?.containers.append(Container(name: "sidecar", image: "example.invalid/sidecar:1"))
            let pair = try await k.admin.createPod(twoContainers)
            let strategic = try await k.admin.patch(
                Pod.self, .pods, namespace: nil, name: try #require(pair.metadata.name),
                patch: .strategicMerge(["spec": ["containers": [["name": "sidecar", "image": "example.invalid/sidecar:2"]]]]), subresource: nil
            )
            #expect(strategic.spec?.containers.map(\.name) == ["agent", "sidecar"])
            #expect(strategic.spec?.containers.map(\.image) == ["example.invalid/agent:1", "example.invalid/sidecar:2"])
            #expect(strategic.spec?.containers.first?.env == [EnvVar(name: "A", value: "1")])
            // The same body as a merge patch replaces the whole list (and is refused: a Pod's containers are immutable).
            let replaced = await #expect(throws: KubernetesError.self) {
                try await k.admin.patch(
                    Pod.self, .pods, namespace: nil, name: try #require(pair.metadata.name),
                    patch: .merge(["spec": ["containers": [["name": "sidecar", "image": "example.invalid/sidecar:3"]]]]), subresource: nil
                )
            }
            #expect(replaced?.code == 422)

            let merged = try await k.admin.patch(Pod.self, .pods, namespace: nil, name: name, patch: .merge(["metadata": ["labels": ["pool": "p1"]]]), subresource: nil)
            #expect(merged.metadata.labels?["pool"] == "p1")
            let jsonPatched = try await k.admin.patch(
                Pod.self, .pods, namespace: nil, name: name,
                patch: .json([["op": "add", "path": "/metadata/annotations", "value": ["shoal.dev/x": "y"]]]), subresource: nil
            )
            #expect(jsonPatched.metadata.annotations?["shoal.dev/x"] == "y")

            // PUT status with the current resourceVersion, then again with the stale one.
            var withStatus = jsonPatched
            let started = Date(timeIntervalSince1970: 1_800_000_000)
            withStatus.status = PodStatus(
                phase: "Running", conditions: [PodCondition(type: "Ready", status: "True")],
                containerStatuses: [ContainerStatus(name: "agent", ready: true, image: "example.invalid/agent:1", state: ContainerState(running: .init(startedAt: started)))],
                startTime: started
            )
            let running = try await k.admin.updateStatus(withStatus, .pods)
            #expect(running.status?.phase == "Running")
            #expect(running.status?.containerStatuses?.first?.state?.running?.startedAt == started)
            #expect(running.metadata.resourceVersion != jsonPatched.metadata.resourceVersion)
            let stale = await #expect(throws: KubernetesError.self) { try await k.admin.updateStatus(withStatus, .pods) }
            #expect(stale?.code == 409)
            #expect(stale?.isRetryable == true)

            let finished = try await k.admin.patchStatus(
                Pod.self, .pods, name: name,
                patch: .merge(["status": ["phase": "Failed", "containerStatuses": [[
                    "name": "agent", "ready": false, "restartCount": 0, "image": "example.invalid/agent:1", "imageID": "",
                    "state": ["terminated": ["exitCode": 3, "reason": "Error", "message": "agent crashed"]],
                ]]]])
            )
            let terminated = try #require(finished.status?.containerStatuses?.first?.state?.terminated)
            #expect(finished.status?.phase == "Failed")
            #expect(terminated.exitCode == 3 && terminated.reason == "Error" && terminated.message == "agent crashed")
        }
    }

    @Test func podFromTemplateKeepsUnmodelledFields() async throws {
        try await KubeTestContext.run { k in
            // A pod template as a custom resource would carry it, with fields the typed models do not know.
            let template: KubeJSON = [
                "metadata": ["labels": ["app": "agent"]],
                "spec": [
                    "enableServiceLinks": false,
                    "volumes": [["name": "work", "emptyDir": ["sizeLimit": "1Gi"]]],
                    "containers": [["name": "agent", "image": "example.invalid/agent:1", "volumeMounts": [["name": "work", "mountPath": "/work"]],
                                    "startupProbe": ["exec": ["command": ["true"]], "periodSeconds": 7]]],
                ],
            ]
            var pod = DynamicObject(template)
            pod.json["apiVersion"] = "v1"
            pod.json["kind"] = "Pod"
            var metadata = pod.metadata
            metadata.generateName = "templated-"
            metadata.labels?["shoal.dev/pool"] = "p1"
            pod.metadata = metadata
            pod.json = pod.json.merging(["spec": ["restartPolicy": "Never", "terminationGracePeriodSeconds": 5]])
            let created = try await k.admin.create(pod, .pods, namespace: nil)
            let name = try #require(created.metadata.name)
            let fetched = try await k.admin.get(DynamicObject.self, .pods, namespace: nil, name: name)
            #expect(fetched.spec?["enableServiceLinks"] == false)
            #expect(fetched.spec?["volumes"]?.arrayValue?.first?["emptyDir"]?["sizeLimit"] == "1Gi")
            #expect(fetched.spec?["containers"]?.arrayValue?.first?["startupProbe"]?["periodSeconds"] == 7)
            #expect(fetched.spec?["terminationGracePeriodSeconds"] == 5)
            #expect(fetched.metadata.labels == ["app": "agent", "shoal.dev/pool": "p1"])
            let typed = try fetched.decode(as: Pod.self)
            #expect(typed.spec?.restartPolicy == "Never")
        }
    }

    @Test func deletePreconditionsAndGracePeriod() async throws {
        try await KubeTestContext.run { k in
            let pod = try await k.admin.createPod(samplePod())
            let name = try #require(pod.metadata.name)
            let error = await #expect(throws: KubernetesError.self) {
                try await k.admin.deletePod(named: name, options: DeleteOptions(preconditions: .init(uid: "00000000-0000-0000-0000-000000000000")))
            }
            #expect(error?.code == 409)
            _ = try await k.admin.pod(named: name)  // still there
            let result = try await k.admin.deletePod(named: name, options: DeleteOptions(gracePeriodSeconds: 0, preconditions: .init(uid: pod.metadata.uid)))
            #expect(result == .deleted)
            let gone = await #expect(throws: KubernetesError.self) { try await k.admin.pod(named: name) }
            guard case .notFound = gone else { Issue.record("expected notFound, got \(String(describing: gone))"); return }
        }
    }

    @Test func listPaginationAndSelectors() async throws {
        try await KubeTestContext.run { k in
            for index in 0..<5 {
                _ = try await k.admin.createPod(samplePod(prefix: "page-", labels: ["batch": "b1", "parity": index % 2 == 0 ? "even" : "odd"]))
            }
            _ = try await k.admin.createPod(samplePod(prefix: "other-"))
            let firstPage = try await k.admin.list(Pod.self, .pods, namespace: k.namespace, options: ListOptions(labelSelector: "batch=b1", limit: 2))
            #expect(firstPage.items.count == 2)
            #expect(firstPage.metadata.continue?.isEmpty == false)
            let all = try await k.admin.listAll(Pod.self, .pods, namespace: k.namespace, labelSelector: "batch=b1", pageSize: 2)
            #expect(all.items.count == 5)
            #expect(Set(all.items.compactMap(\.metadata.name)).count == 5)
            #expect(all.metadata.resourceVersion?.isEmpty == false)
            let setBased = try await k.admin.listAll(Pod.self, .pods, namespace: k.namespace, labelSelector: "batch in (b1),parity notin (odd)")
            #expect(setBased.items.count == 3)
            let one = try #require(all.items.first?.metadata.name)
            let byField = try await k.admin.listAll(Pod.self, .pods, namespace: k.namespace, fieldSelector: "metadata.name=\(one)")
            #expect(byField.items.map(\.metadata.name) == [one])
        }
    }

    @Test func invalidObjectGivesCauses() async throws {
        try await KubeTestContext.run { k in
            var pod = samplePod()
            pod.spec?.containers[0].name = "Not_A_DNS_Label"
            let error = await #expect(throws: KubernetesError.self) { try await k.admin.createPod(pod) }
            guard case .invalid(let failure) = error else { Issue.record("expected invalid, got \(String(describing: error))"); return }
            #expect(failure.code == 422)
            #expect(failure.causes.contains { $0.field == "spec.containers[0].name" })
            #expect(error?.isRetryable == false)
        }
    }

    @Test func duplicateNameIsAlreadyExists() async throws {
        try await KubeTestContext.run { k in
            var pod = samplePod()
            pod.metadata = ObjectMeta(name: "fixed")
            _ = try await k.admin.createPod(pod)
            let error = await #expect(throws: KubernetesError.self) { try await k.admin.createPod(pod) }
            #expect(error?.isAlreadyExists == true)
            #expect(error?.isRetryable == false)
        }
    }

    @Test func leaseCreateRenewAndConflict() async throws {
        try await KubeTestContext.run { k in
            let acquired = Date(timeIntervalSince1970: 1_800_000_000.123456)
            let lease = Lease(metadata: ObjectMeta(name: "shoal-controller"), spec: LeaseSpec(holderIdentity: "a", leaseDurationSeconds: 15, acquireTime: acquired, renewTime: acquired, leaseTransitions: 0))
            let created = try await k.admin.create(lease, .leases, namespace: nil)
            #expect(created.spec.renewTime.map(MicroTime.format) == "2027-01-15T08:00:00.123456Z")
            var renewed = created
            renewed.spec.renewTime = acquired.addingTimeInterval(5)
            let updated = try await k.admin.update(renewed, .leases, namespace: nil, subresource: nil)
            #expect(updated.spec.renewTime.map(MicroTime.format) == MicroTime.format(acquired.addingTimeInterval(5)))
            var competitor = created  // stale resourceVersion
            competitor.spec.holderIdentity = "b"
            let error = await #expect(throws: KubernetesError.self) { try await k.admin.update(competitor, .leases, namespace: nil, subresource: nil) }
            guard case .conflict = error else { Issue.record("expected conflict, got \(String(describing: error))"); return }
            let current = try await k.admin.get(Lease.self, .leases, namespace: nil, name: "shoal-controller")
            #expect(current.spec.holderIdentity == "a")
        }
    }

    @Test func eventsSecretsAndNodesWithBinding() async throws {
        try await KubeTestContext.run { k in
            _ = try await k.admin.create(Secret(metadata: ObjectMeta(name: "azdo"), stringData: ["token": "s3cret"]), .secrets, namespace: nil)
            let secret = try await k.admin.secret(named: "azdo")
            #expect(secret.string(forKey: "token") == "s3cret")

            let pod = try await k.admin.createPod(samplePod())
            let podName = try #require(pod.metadata.name)
            let event = Event(
                metadata: ObjectMeta(generateName: podName + "."),
                involvedObject: ObjectReference(apiVersion: "v1", kind: "Pod", name: podName, namespace: k.namespace, uid: pod.metadata.uid),
                reason: "AgentStarted", message: "agent started", source: EventSource(component: "shoal"), timestamp: Date()
            )
            let recorded = try await k.admin.createEvent(event)
            #expect(recorded.reason == "AgentStarted")
            let events = try await k.admin.listAll(Event.self, .events, namespace: k.namespace, fieldSelector: "involvedObject.name=\(podName)")
            #expect(events.items.map(\.message) == ["agent started"])

            let nodeName = "local-" + k.namespace
            _ = try await k.admin.create(Node(metadata: ObjectMeta(name: nodeName, labels: ["shoal.dev/local": "true"])), .nodes, namespace: nil)
            var node = try await k.admin.get(Node.self, .nodes, namespace: nil, name: nodeName)
            node.status = NodeStatus(capacity: ["cpu": "2", "pods": "10"], allocatable: ["cpu": "2", "pods": "10"], conditions: [NodeCondition(type: "Ready", status: "True", lastHeartbeatTime: Date(), reason: "ShoalLocal")])
            let ready = try await k.admin.updateStatus(node, .nodes)
            #expect(ready.status?.conditions?.first?.status == "True")
            #expect(ready.status?.capacity?["pods"] == "10")

            try await k.admin.bindPod(named: podName, toNode: nodeName)
            let bound = try await k.admin.pod(named: podName)
            #expect(bound.spec?.nodeName == nodeName)

            // A bound Pod stays until a kubelet confirms it with gracePeriodSeconds=0.
            let pending = try await k.admin.deletePod(named: podName)
            guard case .pending(let object) = pending else { Issue.record("expected pending, got \(pending)"); return }
            #expect(object.metadata.deletionTimestamp != nil)
            #expect(try await k.admin.deletePod(named: podName, options: DeleteOptions(gracePeriodSeconds: 0)) == .deleted)
            _ = try await k.admin.delete(.nodes, namespace: nil, name: nodeName, options: DeleteOptions())
        }
    }

    @Test func rbacDenialNamesVerbResourceAndNamespace() async throws {
        try await KubeTestContext.run { k in
            let error = await #expect(throws: KubernetesError.self) {
                try await k.controller.list(Pod.self, .pods, namespace: k.namespace, options: ListOptions())
            }
            guard case .forbidden(let failure) = error else { Issue.record("expected forbidden, got \(String(describing: error))"); return }
            let text = String(describing: try #require(error))
            #expect(failure.code == 403)
            #expect(text.contains("cannot list resource \"pods\""))
            #expect(text.contains(k.namespace))
            #expect(text.contains("system:serviceaccount:shoal-system:shoal-controller"))
            #expect(text.contains("deploy/"))
        }
    }

    @Test func wrongTokenIsUnauthorized() async throws {
        let cluster = try await TestCluster.shared.info()
        let client = try KubeTestContext.client(cluster, token: "not-a-token", namespace: "default")
        let error = await #expect(throws: KubernetesError.self) { try await client.pod(named: "x") }
        try await client.shutdown()
        guard case .unauthorized = error else { Issue.record("expected unauthorized, got \(String(describing: error))"); return }
    }

    @Test func kubeconfigFromLocalK8sWorks() async throws {
        let cluster = try await TestCluster.shared.info()
        let configuration = try KubernetesConfiguration.kubeconfig(path: cluster.controllerKubeconfig)
        #expect(configuration.namespace == "shoal-system")
        #expect(configuration.serverURL == cluster.apiServerURL)
        let client = try KubernetesClient(configuration: configuration)
        let error = await #expect(throws: KubernetesError.self) { try await client.list(Pod.self, .pods, namespace: nil, options: ListOptions()) }
        try await client.shutdown()
        // The token was accepted (403, not 401): authentication through the kubeconfig works.
        guard case .forbidden = error else { Issue.record("expected forbidden, got \(String(describing: error))"); return }

        let admin = try KubernetesClient(configuration: try KubernetesConfiguration.kubeconfig(path: cluster.adminKubeconfig))
        let namespaces = try await admin.listAll(Namespace.self, .namespaces, namespace: nil)
        try await admin.shutdown()
        #expect(namespaces.items.contains { $0.metadata.name == "default" })
    }
}
