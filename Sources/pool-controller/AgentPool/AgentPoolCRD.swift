import Kubernetes

/// The `agentpools.shoal.dev` CustomResourceDefinition, defined once here.
///
/// `pool-controller crd` prints it; `deploy/crds/agentpools.shoal.dev.yaml`, `deploy/install.yaml` and the Helm
/// chart carry the printed copy, and a test fails when any of them drifts from this definition. The schema rejects
/// what the API server can check (types, ranges, required fields, either `template` or `image`);
/// ``PoolSpec/resolve(_:name:)`` checks the rest and reports it in status.
enum AgentPoolCRD {
    /// The CRD object, ready to apply.
    static var definition: KubeJSON {
        [
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": [
                "name": "agentpools.shoal.dev",
                "labels": ["app.kubernetes.io/name": "shoal", "app.kubernetes.io/component": "crd"],
            ],
            "spec": [
                "group": .string(AgentPoolResource.group),
                "scope": "Namespaced",
                "names": [
                    "kind": "AgentPool", "listKind": "AgentPoolList", "plural": "agentpools", "singular": "agentpool",
                    "shortNames": ["ap"], "categories": ["shoal"],
                ],
                "versions": [
                    [
                        "name": .string(AgentPoolResource.version),
                        "served": true,
                        "storage": true,
                        "subresources": ["status": [:]],
                        "additionalPrinterColumns": printerColumns,
                        "schema": ["openAPIV3Schema": schema],
                    ]
                ],
            ],
        ]
    }

    /// `kubectl get agentpools` columns.
    static var printerColumns: KubeJSON {
        func column(_ name: String, _ type: String, _ path: String, priority: Int64 = 0) -> KubeJSON {
            var result: KubeJSON = ["name": .string(name), "type": .string(type), "jsonPath": .string(path)]
            if priority > 0 { result["priority"] = .int(priority) }
            return result
        }
        return [
            column("Pool", "string", ".spec.poolName"),
            column("Standby", "integer", ".spec.standby"),
            column("Max", "integer", ".spec.maxAgents"),
            column("Queued", "integer", ".status.queued"),
            column("Busy", "integer", ".status.busy"),
            column("Idle", "integer", ".status.idle"),
            column("Starting", "integer", ".status.starting"),
            column("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status"),
            column("Reason", "string", ".status.conditions[?(@.type==\"Ready\")].reason", priority: 1),
            column("Age", "date", ".metadata.creationTimestamp"),
        ]
    }

    /// The structural schema of the whole object.
    static var schema: KubeJSON {
        [
            "type": "object",
            "description": "An elastic pool of Azure Pipelines agents: pods are created for queued jobs and a standby of idle agents.",
            "required": ["spec"],
            "properties": [
                "apiVersion": ["type": "string"],
                "kind": ["type": "string"],
                "metadata": ["type": "object"],
                "spec": specSchema,
                "status": statusSchema,
            ],
        ]
    }

    private static func string(_ description: String, minLength: Int64? = nil, maxLength: Int64? = nil, pattern: String? = nil, defaultValue: String? = nil) -> KubeJSON {
        var result: KubeJSON = ["type": "string", "description": .string(description)]
        if let minLength { result["minLength"] = .int(minLength) }
        if let maxLength { result["maxLength"] = .int(maxLength) }
        if let pattern { result["pattern"] = .string(pattern) }
        if let defaultValue { result["default"] = .string(defaultValue) }
        return result
    }

    private static func integer(_ description: String, minimum: Int64, maximum: Int64, defaultValue: Int64? = nil) -> KubeJSON {
        var result: KubeJSON = ["type": "integer", "format": "int32", "description": .string(description), "minimum": .int(minimum), "maximum": .int(maximum)]
        if let defaultValue { result["default"] = .int(defaultValue) }
        return result
    }

    static var specSchema: KubeJSON {
        [
            "type": "object",
            "required": ["organizationUrl", "poolName", "tokenSecretRef"],
            "oneOf": [["required": ["template"]], ["required": ["image"]]],
            "properties": [
                "organizationUrl": string(
                    "The Azure DevOps organization, e.g. https://dev.azure.com/contoso.", minLength: 8, maxLength: 2048, pattern: "^https?://[^\\s]+$"),
                "poolName": string("The agent pool in Azure DevOps (Organization settings > Agent pools).", minLength: 1, maxLength: 256),
                "tokenSecretRef": [
                    "type": "object",
                    "description": "The Secret (in this namespace) holding a PAT with Agent Pools (read & manage) scope.",
                    "required": ["name"],
                    "properties": [
                        "name": string("Name of the Secret.", minLength: 1, maxLength: 253),
                        "key": string("Key of the token in the Secret.", minLength: 1, maxLength: 253, defaultValue: "token"),
                    ],
                ],
                "standby": integer("Idle agents to keep ready for the next job; 0 scales to zero (a placeholder keeps jobs queued).", minimum: 0, maximum: 1000, defaultValue: 1),
                "maxAgents": integer("Never more agent pods than this.", minimum: 1, maximum: 1000, defaultValue: 10),
                "registration": [
                    "type": "string",
                    "description": "Who registers each pod's agent: 'entrypoint' (the pod gets the token and runs config.sh before its job) or 'controller' (recommended: the controller registers the agent with a key pair it makes and mounts only that agent's identity; the pod holds no PAT).",
                    "enum": ["entrypoint", "controller"],
                    "default": "entrypoint",
                ],
                "template": [
                    "type": "object",
                    "description": "The agent pod (a PodTemplateSpec), passed through intact. The container named 'agent' (else the first) gets AZP_URL, AZP_POOL, AZP_AGENT_NAME and, with entrypoint registration, AZP_TOKEN.",
                    "x-kubernetes-preserve-unknown-fields": true,
                ],
                "image": string("Shorthand for a template with one 'agent' container running this image.", minLength: 1, maxLength: 1024),
                "prefix": string(
                    "Pod and agent names are '<prefix>-xxxxx'; defaults to the AgentPool's name.", minLength: 1, maxLength: 57,
                    pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
                "imagePullSecretName": string("With 'image': the Secret to pull it with.", minLength: 1, maxLength: 253),
                "capabilities": [
                    "type": "object",
                    "description": "Capabilities the agents advertise: set as environment variables of the agent container (the agent reports its environment), matched against job demands and given to the scale-to-zero placeholder.",
                    "additionalProperties": ["type": "string"],
                ],
                "timing": [
                    "type": "object",
                    "description": "How long the controller waits for things.",
                    "properties": [
                        "pollIntervalSeconds": integer("How often Azure DevOps is polled for this pool.", minimum: 1, maximum: 3600, defaultValue: 5),
                        "pendingTimeoutSeconds": integer("A pod Pending longer than this is deleted (unschedulable, image pull errors).", minimum: 10, maximum: 86_400, defaultValue: 600),
                        "orphanGracePeriodSeconds": integer("An offline registration named like our pods and without a pod this long is deleted.", minimum: 0, maximum: 86_400, defaultValue: 300),
                        "idleScaleDownDelaySeconds": integer("Idle agents above the standby this long are removed.", minimum: 0, maximum: 86_400, defaultValue: 180),
                    ],
                ],
            ],
        ]
    }

    static var statusSchema: KubeJSON {
        let count: KubeJSON = ["type": "integer", "format": "int32", "minimum": 0]
        return [
            "type": "object",
            "properties": [
                "observedGeneration": ["type": "integer", "format": "int64"],
                "poolId": ["type": "integer", "format": "int32"],
                "queued": count, "busy": count, "idle": count, "starting": count, "pods": count, "desired": count,
                "placeholderAgentId": ["type": "integer", "format": "int32"],
                "lastReconcileTime": ["type": "string", "format": "date-time"],
                "conditions": [
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                    "items": [
                        "type": "object",
                        "required": ["type", "status", "reason", "message"],
                        "properties": [
                            "type": ["type": "string"],
                            "status": ["type": "string", "enum": ["True", "False", "Unknown"]],
                            "reason": ["type": "string"],
                            "message": ["type": "string"],
                            "lastTransitionTime": ["type": "string", "format": "date-time"],
                            "observedGeneration": ["type": "integer", "format": "int64"],
                        ],
                    ],
                ],
            ],
        ]
    }
}
