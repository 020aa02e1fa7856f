import Kubernetes
import Shared
import Testing

@testable import pool_controller

/// A spec whose template has metadata, pod-level fields and a sidecar before the agent container.
private func templateSpec(restartPolicy: KubeJSON? = nil) throws -> PoolSpec {
    var podSpec: KubeJSON = [
        "nodeSelector": ["kubernetes.io/os": "linux"],
        "volumes": [["name": "work", "emptyDir": [:]]],
        "containers": [
            ["name": "docker", "image": "docker:dind", "env": [["name": "AZP_URL", "value": "sidecar-keeps-its-own"]]],
            [
                "name": "agent", "image": "agent:1",
                "env": [
                    ["name": "JAVA_HOME", "value": "/opt/java"], ["name": "AZP_URL", "value": "https://dev.azure.com/old"],
                    ["name": "AZP_AGENT_NAME", "value": "fixed-name"], ["name": "AZP_WORK", "value": "/work"],
                ],
                "volumeMounts": [["name": "work", "mountPath": "/work"]],
            ],
        ],
    ]
    if let restartPolicy { podSpec["restartPolicy"] = restartPolicy }
    return try PoolSpec.resolve(
        [
            "organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo", "key": "pat"], "prefix": "gpu",
            "template": [
                "metadata": [
                    "name": "ignored", "generateName": "ignored-", "namespace": "elsewhere",
                    "labels": ["team": "ci", "shoal.dev/pool": "someone-else"], "annotations": ["note": "kept"],
                ],
                "spec": podSpec,
            ],
        ], name: "linux-gpu")
}

/// The environment the controller appends to the agent container, in order.
private let controllerEnvironment: [KubeJSON] = [
    ["name": "AZP_URL", "value": "https://dev.azure.com/contoso"],
    ["name": "AZP_POOL", "value": "k8s"],
    ["name": "AZP_AGENT_NAME", "valueFrom": ["fieldRef": ["fieldPath": "metadata.name"]]],
    ["name": "AZP_TOKEN", "valueFrom": ["secretKeyRef": ["name": "azdo", "key": "pat"]]],
]

@Suite("Pod factory")
struct PodFactoryTests {
    private let pool = PoolKey(namespace: "ci", name: "linux-gpu")

    @Test("the pod is the template plus exactly what the entrypoint contract needs")
    func exactPod() throws {
        let pod = PodFactory.makePod(spec: try templateSpec(), pool: pool, poolUID: "uid-1")
        let expected: KubeJSON = [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": [
                "generateName": "gpu-", "namespace": "ci",
                "labels": ["team": "ci", "shoal.dev/pool": "linux-gpu", "app.kubernetes.io/managed-by": "shoal"],
                "annotations": ["note": "kept"],
                "ownerReferences": [[
                    "apiVersion": "shoal.dev/v1alpha1", "kind": "AgentPool", "name": "linux-gpu", "uid": "uid-1", "controller": true,
                    "blockOwnerDeletion": true,
                ]],
            ],
            "spec": [
                "nodeSelector": ["kubernetes.io/os": "linux"],
                "volumes": [["name": "work", "emptyDir": [:]]],
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": ["runAsNonRoot": true, "seccompProfile": ["type": "RuntimeDefault"]],
                "containers": [
                    ["name": "docker", "image": "docker:dind", "env": [["name": "AZP_URL", "value": "sidecar-keeps-its-own"]]],
                    [
                        "name": "agent", "image": "agent:1",
                        "env": .array([["name": "JAVA_HOME", "value": "/opt/java"], ["name": "AZP_WORK", "value": "/work"]] + controllerEnvironment),
                        "volumeMounts": [["name": "work", "mountPath": "/work"]],
                        "securityContext": ["allowPrivilegeEscalation": false, "capabilities": ["drop": ["ALL"]]],
                    ],
                ],
            ],
        ]
        #expect(pod == expected, "\(pod.jsonText)")
        #expect(pod["metadata"]?["name"] == nil)
    }

    @Test("declared capabilities become environment variables of the agent container, unless the template sets them")
    func capabilitiesBecomeEnvironment() throws {
        var json = try #require(try templateSpec().template["spec"])
        json = ["spec": json]
        let spec = try PoolSpec.resolve(
            [
                "organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"],
                "capabilities": ["docker": "true", "JAVA_HOME": "/declared"], "template": json,
            ], name: "linux")
        let pod = PodFactory.makePod(spec: spec, pool: pool, poolUID: nil)
        let containers = pod["spec"]?["containers"]?.arrayValue ?? []
        let agentEnv = containers.first { $0["name"] == "agent" }?["env"]?.arrayValue ?? []
        #expect(agentEnv.filter { $0["name"] == "docker" } == [["name": "docker", "value": "true"]])
        #expect(agentEnv.filter { $0["name"] == "JAVA_HOME" } == [["name": "JAVA_HOME", "value": "/opt/java"]], "the template's value wins")
        let sidecarEnv = containers.first { $0["name"] == "docker" }?["env"]?.arrayValue ?? []
        #expect(!sidecarEnv.contains { $0["name"] == "docker" }, "only the agent container gets them")
    }

    @Test("without the AgentPool's uid there is no owner reference")
    func noOwnerWithoutUID() throws {
        let pod = PodFactory.makePod(spec: try templateSpec(), pool: pool, poolUID: nil)
        #expect(pod["metadata"]?["ownerReferences"] == nil)
        #expect(pod["metadata"]?["generateName"] == "gpu-")
    }

    @Test("the image shorthand becomes a one-container pod with the pull secret and the long grace period")
    func shorthandPod() throws {
        let spec = try PoolSpec.resolve(
            [
                "organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "agent:1",
                "imagePullSecretName": "regcred",
            ], name: "linux")
        let pod = PodFactory.makePod(spec: spec, pool: PoolKey(namespace: "ci", name: "linux"), poolUID: "uid-2")
        let expectedEnvironment: [KubeJSON] = [
            ["name": "AZP_URL", "value": "https://dev.azure.com/contoso"],
            ["name": "AZP_POOL", "value": "k8s"],
            ["name": "AZP_AGENT_NAME", "valueFrom": ["fieldRef": ["fieldPath": "metadata.name"]]],
            ["name": "AZP_TOKEN", "valueFrom": ["secretKeyRef": ["name": "azdo", "key": "token"]]],
        ]
        let expectedSpec: KubeJSON = [
            "containers": [[
                "name": "agent", "image": "agent:1", "env": .array(expectedEnvironment),
                "securityContext": ["allowPrivilegeEscalation": false, "capabilities": ["drop": ["ALL"]]],
            ]],
            "terminationGracePeriodSeconds": 3600,
            "imagePullSecrets": [["name": "regcred"]],
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": ["runAsNonRoot": true, "seccompProfile": ["type": "RuntimeDefault"]],
        ]
        #expect(pod["spec"] == expectedSpec, "\(pod.jsonText)")
        #expect(pod["metadata"]?["generateName"] == "linux-")
        #expect(pod["metadata"]?["labels"] == ["shoal.dev/pool": "linux", "app.kubernetes.io/managed-by": "shoal"])
    }

    @Test("restartPolicy is always Never", arguments: [nil, KubeJSON.string("Never")])
    func restartPolicy(_ given: KubeJSON?) throws {
        let pod = PodFactory.makePod(spec: try templateSpec(restartPolicy: given), pool: pool, poolUID: nil)
        #expect(pod["spec"]?["restartPolicy"] == "Never")
    }

    @Test("the token is never a literal: only a secretKeyRef, once, in the agent container")
    func tokenOnlyFromSecret() throws {
        let pod = PodFactory.makePod(spec: try templateSpec(), pool: pool, poolUID: "uid-1")
        let containers = try #require(pod["spec"]?["containers"]?.arrayValue)
        var tokenEntries: [KubeJSON] = []
        for container in containers {
            for variable in container["env"]?.arrayValue ?? [] where EntrypointEnvironment.secretVariables.contains(variable["name"]?.stringValue ?? "") {
                tokenEntries.append(variable)
            }
        }
        #expect(tokenEntries == [["name": "AZP_TOKEN", "valueFrom": ["secretKeyRef": ["name": "azdo", "key": "pat"]]]])
        #expect(tokenEntries.allSatisfy { $0["value"] == nil })
    }

    @Test("the spec's template is not changed by building pods from it")
    func templateUnchanged() throws {
        let spec = try templateSpec()
        let before = spec.template
        _ = PodFactory.makePod(spec: spec, pool: pool, poolUID: "uid-1")
        #expect(spec.template == before)
        #expect(spec.template["metadata"]?["name"] == "ignored")
    }
}
