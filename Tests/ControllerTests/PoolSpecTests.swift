import Kubernetes
import Shared
import Testing

@testable import pool_controller

/// The smallest valid spec: everything else defaulted.
private let minimal: KubeJSON = [
    "organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "agent:1",
]

/// A template with an `agent` container that is not the first one.
private let sidecarTemplate: KubeJSON = [
    "spec": [
        "containers": [
            ["name": "docker", "image": "docker:dind", "env": [["name": "DOCKER_TLS_CERTDIR", "value": ""]]],
            [
                "name": "agent", "image": "agent:1",
                "env": [
                    ["name": "JAVA_HOME", "value": "/opt/java"], ["name": "Agent.OS", "value": "Plan9"],
                    ["name": "FROM_SECRET", "valueFrom": ["secretKeyRef": ["name": "s", "key": "k"]]],
                ],
            ],
        ]
    ]
]

/// `minimal` with a merge patch applied (`nil` removes a member).
private func patched(_ patch: KubeJSON) -> KubeJSON { minimal.merging(patch) }

/// A spec with the shorthand replaced by a template.
private func withTemplate(_ template: KubeJSON, _ more: KubeJSON = [:]) -> KubeJSON {
    patched(["image": nil, "template": template]).merging(more)
}

@Suite("AgentPool spec")
struct PoolSpecTests {
    @Test("defaults are applied to a minimal spec")
    func defaults() throws {
        let spec = try PoolSpec.resolve(minimal, name: "linux")
        #expect(spec.organization.description == "https://dev.azure.com/contoso")
        #expect(spec.poolName == "k8s")
        #expect(spec.tokenSecretName == "azdo")
        #expect(spec.tokenSecretKey == "token")
        #expect(spec.standby == 1)
        #expect(spec.maxAgents == 10)
        #expect(spec.prefix == "linux")
        #expect(spec.capabilities == [:])
        #expect(spec.timing == PoolTiming())
        #expect(spec.timing.pollInterval == .seconds(5))
        #expect(spec.timing.pendingTimeout == .seconds(600))
        #expect(spec.timing.orphanGracePeriod == .seconds(300))
        #expect(spec.timing.idleScaleDownDelay == .seconds(180))
        #expect(spec.template == PoolSpec.shorthandTemplate(image: "agent:1", pullSecret: nil))
        #expect(spec.agentContainer?["image"] == "agent:1")
    }

    @Test("every field given is used")
    func explicitValues() throws {
        let spec = try PoolSpec.resolve(
            patched([
                "tokenSecretRef": ["name": "pat", "key": "azdo-pat"], "standby": 0, "maxAgents": 1000, "prefix": "gpu",
                "capabilities": ["docker": "true", "gpu": "a100"],
                "timing": ["pollIntervalSeconds": 1, "pendingTimeoutSeconds": 10, "orphanGracePeriodSeconds": 0, "idleScaleDownDelaySeconds": 86_400],
            ]), name: "linux")
        #expect(spec.tokenSecretName == "pat")
        #expect(spec.tokenSecretKey == "azdo-pat")
        #expect(spec.standby == 0)
        #expect(spec.maxAgents == 1000)
        #expect(spec.prefix == "gpu")
        #expect(spec.capabilities == ["docker": "true", "gpu": "a100"])
        #expect(spec.timing == PoolTiming(pollInterval: .seconds(1), pendingTimeout: .seconds(10), orphanGracePeriod: .zero, idleScaleDownDelay: .seconds(86_400)))
    }

    @Test("the image shorthand stands for one agent container, the pull secret and a one-hour grace period")
    func shorthand() throws {
        let spec = try PoolSpec.resolve(patched(["imagePullSecretName": "regcred"]), name: "linux")
        let expected: KubeJSON = [
            "spec": [
                "containers": [["name": "agent", "image": "agent:1"]], "terminationGracePeriodSeconds": 3600,
                "imagePullSecrets": [["name": "regcred"]],
            ]
        ]
        #expect(spec.template == expected)
    }

    @Test("a template is passed through intact")
    func templateIntact() throws {
        var template = sidecarTemplate
        template["metadata"] = ["labels": ["team": "ci"]]
        template["spec"]?["nodeSelector"] = ["kubernetes.io/os": "linux"]
        template["spec"]?["restartPolicy"] = "Never"
        let spec = try PoolSpec.resolve(withTemplate(template), name: "linux")
        #expect(spec.template == template)
        #expect(spec.agentContainer?["name"] == "agent")
    }

    @Test(
        "values at the edges of their ranges are accepted",
        arguments: [
            (["standby": 3, "maxAgents": 3], "standby == maxAgents"),
            (["standby": 1000, "maxAgents": 1000], "both at their maximum"),
            (["prefix": .string(String(repeating: "a", count: 57))], "a 57-character prefix"),
            (["prefix": "a"], "a 1-character prefix"),
            (["prefix": "gpu-2"], "a prefix with a dash and a digit"),
            (["standby": 2.0], "an integral number written as a double"),
            (["standby": nil, "maxAgents": nil, "prefix": nil, "capabilities": nil], "nulls read as absent"),
            (["timing": ["pendingTimeoutSeconds": 86_400, "pollIntervalSeconds": 3600]], "timing at its maximum"),
        ] as [(KubeJSON, String)])
    func accepted(_ patch: KubeJSON, _ what: String) throws {
        let spec = try PoolSpec.resolve(patched(patch), name: "linux")
        #expect(spec.standby <= spec.maxAgents, "\(what)")
    }

    @Test("a null member reads as absent, not as a value")
    func nullsAreDefaults() throws {
        let spec = try PoolSpec.resolve(patched(["standby": .null, "prefix": .null]), name: "linux")
        #expect(spec.standby == 1)
        #expect(spec.prefix == "linux")
    }

    @Test(
        "an invalid spec is rejected with an error naming the field",
        arguments: [
            (patched(["organizationUrl": nil]), "spec.organizationUrl"),
            (patched(["organizationUrl": "ftp://dev.azure.com/contoso"]), "spec.organizationUrl"),
            (patched(["organizationUrl": "https://dev.azure.com/contoso/project/extra"]), "spec.organizationUrl"),
            (patched(["organizationUrl": 42]), "spec.organizationUrl"),
            (patched(["organizationUrl": "   "]), "spec.organizationUrl"),
            (patched(["poolName": nil]), "spec.poolName"),
            (patched(["poolName": 7]), "spec.poolName"),
            (patched(["tokenSecretRef": nil]), "spec.tokenSecretRef"),
            (patched(["tokenSecretRef": ["name": nil]]), "spec.tokenSecretRef.name"),
            (patched(["tokenSecretRef": ["key": ""]]), "spec.tokenSecretRef.key"),
            (patched(["standby": -1]), "spec.standby"),
            (patched(["capabilities": ["has space": "1"]]), "spec.capabilities.has space"),
            (patched(["capabilities": ["1docker": "true"]]), "spec.capabilities.1docker"),
            (patched(["standby": "2"]), "spec.standby"),
            (patched(["standby": 2.5]), "spec.standby"),
            (patched(["standby": 5, "maxAgents": 3]), "spec.standby"),
            (patched(["maxAgents": 0]), "spec.maxAgents"),
            (patched(["maxAgents": 1001]), "spec.maxAgents"),
            (patched(["prefix": "Linux"]), "spec.prefix"),
            (patched(["prefix": "-linux"]), "spec.prefix"),
            (patched(["prefix": "linux-"]), "spec.prefix"),
            (patched(["prefix": "linux_gpu"]), "spec.prefix"),
            (patched(["prefix": .string(String(repeating: "a", count: 58))]), "spec.prefix"),
            (patched(["image": ""]), "spec.image"),
            (patched(["template": sidecarTemplate]), "spec.image"),
            (patched(["image": nil]), "spec.template"),
            (withTemplate("pod"), "spec.template"),
            (withTemplate(sidecarTemplate, ["imagePullSecretName": "regcred"]), "spec.imagePullSecretName"),
            (withTemplate(["spec": [:]]), "spec.template.spec.containers"),
            (withTemplate(["spec": ["containers": []]]), "spec.template.spec.containers"),
            (withTemplate(["spec": ["containers": [["name": "agent"], ["image": "busybox"]]]]), "spec.template.spec.containers[1].name"),
            (withTemplate(["spec": ["containers": [["name": "agent"]], "restartPolicy": "Always"]]), "spec.template.spec.restartPolicy"),
            (withTemplate(["spec": ["containers": [["name": "agent"]], "restartPolicy": "OnFailure"]]), "spec.template.spec.restartPolicy"),
            (
                withTemplate(["spec": ["containers": [["name": "docker"], ["name": "agent", "env": [["name": "AZP_TOKEN", "value": "pat"]]]]]]),
                "spec.template.spec.containers[1].env"
            ),
            (
                withTemplate(["spec": ["containers": [["name": "main", "env": [["name": "AZP_TOKEN_FILE", "value": "/pat"]]]]]]),
                "spec.template.spec.containers[0].env"
            ),
            (patched(["capabilities": ["docker", "java"]]), "spec.capabilities"),
            (patched(["capabilities": ["docker": true]]), "spec.capabilities.docker"),
            (patched(["capabilities": ["cores": 8]]), "spec.capabilities.cores"),
            (patched(["timing": ["pollIntervalSeconds": 0]]), "spec.timing.pollIntervalSeconds"),
            (patched(["timing": ["pendingTimeoutSeconds": 5]]), "spec.timing.pendingTimeoutSeconds"),
            (patched(["timing": ["orphanGracePeriodSeconds": -1]]), "spec.timing.orphanGracePeriodSeconds"),
            (patched(["timing": ["idleScaleDownDelaySeconds": "60"]]), "spec.timing.idleScaleDownDelaySeconds"),
        ] as [(KubeJSON, String)])
    func rejected(_ json: KubeJSON, field: String) {
        do {
            let spec = try PoolSpec.resolve(json, name: "linux")
            Issue.record("accepted \(json.jsonText) as \(spec)")
        } catch {
            #expect(error.field == field)
            #expect(error.description.hasPrefix("\(field): "))
            #expect(!error.problem.isEmpty)
        }
    }

    @Test("a missing or non-object spec is rejected as spec", arguments: [nil, KubeJSON.string("x"), KubeJSON.array([])])
    func missingSpec(_ json: KubeJSON?) {
        #expect(throws: SpecError(field: "spec", problem: "is missing")) { try PoolSpec.resolve(json, name: "linux") }
    }

    @Test("a default prefix from a bad AgentPool name blames metadata.name")
    func badNameAsPrefix() {
        let error = #expect(throws: SpecError.self) { try PoolSpec.resolve(minimal, name: String(repeating: "n", count: 58)) }
        #expect(error?.field == "metadata.name")
        let upper = #expect(throws: SpecError.self) { try PoolSpec.resolve(minimal, name: "Linux") }
        #expect(upper?.field == "metadata.name")
    }

    @Test("error messages say what was wrong and what is expected")
    func messages() {
        #expect(throws: SpecError(field: "spec.standby", problem: "5 is more than spec.maxAgents (3)")) {
            try PoolSpec.resolve(patched(["standby": 5, "maxAgents": 3]), name: "linux")
        }
        #expect(throws: SpecError(field: "spec.maxAgents", problem: "0 is out of range 1...1000")) {
            try PoolSpec.resolve(patched(["maxAgents": 0]), name: "linux")
        }
        #expect(throws: SpecError(field: "spec.standby", problem: "must be an integer, got \"2\"")) {
            try PoolSpec.resolve(patched(["standby": "2"]), name: "linux")
        }
        let url = #expect(throws: SpecError.self) { try PoolSpec.resolve(patched(["organizationUrl": "ftp://x"]), name: "linux") }
        #expect(url?.field == "spec.organizationUrl")
        #expect(url?.problem.contains("(got 'ftp://x')") == true)
    }

    @Test(
        "templateCapabilities: the OS, the agent container's literal environment, then spec.capabilities",
        arguments: [
            (minimal, ["Agent.OS": "Linux", "Agent.OSArchitecture": "X64"]),
            (withTemplate(sidecarTemplate), ["Agent.OS": "Plan9", "Agent.OSArchitecture": "X64", "JAVA_HOME": "/opt/java"]),
            (
                withTemplate(sidecarTemplate, ["capabilities": ["JAVA_HOME": "/usr/lib/jvm", "docker": "true", "Agent.OS": "Linux"]]),
                ["Agent.OS": "Linux", "Agent.OSArchitecture": "X64", "JAVA_HOME": "/usr/lib/jvm", "docker": "true"]
            ),
            (
                withTemplate(["spec": ["containers": [["name": "main", "env": [["name": "MAVEN", "value": "3"]]], ["name": "cache", "env": [["name": "X", "value": "1"]]]]]]),
                ["Agent.OS": "Linux", "Agent.OSArchitecture": "X64", "MAVEN": "3"]
            ),
            (
                withTemplate(["spec": ["nodeSelector": ["kubernetes.io/arch": "arm64"], "containers": [["name": "agent", "image": "a"]]]]),
                ["Agent.OS": "Linux", "Agent.OSArchitecture": "ARM64"]
            ),
        ] as [(KubeJSON, [String: String])])
    func templateCapabilities(_ json: KubeJSON, expected: [String: String]) throws {
        let spec = try PoolSpec.resolve(json, name: "linux")
        #expect(spec.templateCapabilities == expected)
    }

    @Test(
        "isDNSLabel",
        arguments: [
            ("a", true), ("linux-gpu-2", true), ("0abc", true), ("", false), ("-a", false), ("a-", false), ("A", false), ("a_b", false),
            ("a.b", false), (String(repeating: "a", count: 63), true), (String(repeating: "a", count: 64), false),
        ])
    func dnsLabel(_ text: String, expected: Bool) {
        #expect(PoolSpec.isDNSLabel(text) == expected)
    }
}
