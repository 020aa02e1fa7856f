import Kubernetes
import Testing

/// `ManifestApplier`'s YAML reading and kind table, without a cluster.
@Suite("ManifestApplier documents")
struct ManifestApplierTests {
    @Test("documents split on ---, skipping comments and empty documents, in order")
    func multiDocument() throws {
        let yaml = """
            # leading comment, then an empty document
            ---
            ---
            apiVersion: v1   # trailing comment
            kind: Namespace
            metadata:
              name: a
            ---
            # only a comment
            ---
            apiVersion: v1
            kind: Namespace
            metadata: {name: b}
            ...
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: c
            """
        let documents = try ManifestApplier.documents(yaml)
        #expect(documents.map { $0["metadata"]?["name"]?.stringValue } == ["a", "b", "c"])
        #expect(documents[0] == ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": "a"]])
        #expect(try ManifestApplier.documents("") == [])
        #expect(try ManifestApplier.documents("# nothing\n---\n---\n") == [])
    }

    @Test("plain scalars resolve like kubectl reads them; quoted ones stay strings")
    func scalars() throws {
        let yaml = """
            plainInt: 3
            negative: -42
            octal: 0755
            hex: 0x1F
            float: 0.5
            exponent: 1e3
            yes: true
            no: false
            legacyOn: on
            tilde: ~
            nullWord: null
            empty:
            quotedTrue: "true"
            quotedOctal: "0755"
            singleQuotedInt: '8080'
            quotedNull: "null"
            quotedEmpty: ""
            explicitString: !!str 12
            version: 1.20
            date: 2024-01-02
            word: shoal
            cpu: 500m
            """
        let object = try #require(ManifestApplier.documents(yaml).first)
        let expected: [String: KubeJSON] = [
            "plainInt": 3, "negative": -42, "octal": 493, "hex": 31, "float": 0.5, "exponent": 1000.0,
            "yes": true, "no": false, "legacyOn": true, "tilde": nil, "nullWord": nil, "empty": nil,
            "quotedTrue": "true", "quotedOctal": "0755", "singleQuotedInt": "8080", "quotedNull": "null", "quotedEmpty": "",
            "explicitString": "12", "version": 1.2, "date": "2024-01-02", "word": "shoal", "cpu": "500m",
        ]
        for (key, value) in expected {
            #expect(object[key] == value, "\(key): \(String(describing: object[key]))")
        }
        #expect(object.objectValue?.count == expected.count)
    }

    @Test("block scalars keep their text: literal keeps newlines, folded joins lines, chomping indicators apply")
    func blockScalars() throws {
        let yaml = """
            literal: |
              #!/bin/sh
              echo "a: b"

              exit 0
            folded: >
              one
              two
            stripped: |-
              no newline
            kept: |+
              two newlines

            number: |
              42
            last: x
            """
        let object = try #require(ManifestApplier.documents(yaml).first)
        #expect(object["literal"] == "#!/bin/sh\necho \"a: b\"\n\nexit 0\n")
        #expect(object["folded"] == "one two\n")
        #expect(object["stripped"] == "no newline")
        #expect(object["kept"] == "two newlines\n\n")
        #expect(object["number"] == "42\n")
        #expect(object["last"] == "x")
    }

    @Test("sequences, nesting, flow style, anchors and merge keys")
    func structure() throws {
        let yaml = """
            base: &base {cpu: 100m, memory: 64Mi}
            list:
              - name: a
                args: ["--x", 1, true]
              - []
            merged:
              <<: *base
              memory: 128Mi
            quotedMergeKey:
              "<<": literal
            alias: *base
            """
        let object = try #require(ManifestApplier.documents(yaml).first)
        #expect(object["list"] == [["name": "a", "args": ["--x", 1, true]], []])
        #expect(object["merged"] == ["cpu": "100m", "memory": "128Mi"])
        #expect(object["quotedMergeKey"] == ["<<": "literal"])
        #expect(object["alias"] == ["cpu": "100m", "memory": "64Mi"])
    }

    @Test("bad input is an error naming the problem", arguments: [
        ("a: b\n---\nkey: [unclosed\n", "not valid YAML"),
        ("a: [\n", "not valid YAML"),
        ("a: 1\na: 2\n", "given twice"),
        ("? [a, b]\n: c\n", "not a string"),
        ("- just\n- a list\n", "not a mapping"),
        ("plain scalar\n", "not a mapping"),
        ("x: .inf\n", "not a number"),
    ])
    func invalid(yaml: String, expected: String) {
        #expect {
            _ = try ManifestApplier.documents(yaml)
        } throws: { error in
            "\(error)".contains(expected)
        }
    }

    @Test("a parse error in a later document is reported, not a truncated manifest")
    func laterDocumentError() {
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nmetadata: {name: [b}\n"
        #expect(throws: ManifestError.self) { try ManifestApplier.documents(yaml) }
    }

    @Test("the kinds Shoal's manifests use map to their resources", arguments: [
        ("v1", "Namespace", KubernetesResource(group: "", version: "v1", plural: "namespaces", namespaced: false)),
        ("v1", "ServiceAccount", KubernetesResource(group: "", version: "v1", plural: "serviceaccounts", namespaced: true)),
        ("v1", "Secret", KubernetesResource(group: "", version: "v1", plural: "secrets", namespaced: true)),
        ("v1", "Service", KubernetesResource(group: "", version: "v1", plural: "services", namespaced: true)),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition",
         KubernetesResource(group: "apiextensions.k8s.io", version: "v1", plural: "customresourcedefinitions", namespaced: false)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole",
         KubernetesResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterroles", namespaced: false)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding",
         KubernetesResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterrolebindings", namespaced: false)),
        ("rbac.authorization.k8s.io/v1", "Role", KubernetesResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "roles", namespaced: true)),
        ("rbac.authorization.k8s.io/v1", "RoleBinding",
         KubernetesResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "rolebindings", namespaced: true)),
        ("apps/v1", "Deployment", KubernetesResource(group: "apps", version: "v1", plural: "deployments", namespaced: true)),
        ("policy/v1", "PodDisruptionBudget", KubernetesResource(group: "policy", version: "v1", plural: "poddisruptionbudgets", namespaced: true)),
        ("shoal.dev/v1alpha1", "AgentPool", KubernetesResource(group: "shoal.dev", version: "v1alpha1", plural: "agentpools", namespaced: true)),
    ])
    func resources(apiVersion: String, kind: String, expected: KubernetesResource) {
        #expect(ManifestApplier.resource(apiVersion: apiVersion, kind: kind) == expected)
    }

    @Test("unknown kinds and a missing version have no resource")
    func unknownResources() {
        #expect(ManifestApplier.resource(apiVersion: "apps/v1", kind: "StatefulSet") == nil)
        #expect(ManifestApplier.resource(apiVersion: "", kind: "Namespace") == nil)
        #expect(ManifestApplier.resource(apiVersion: "apps/", kind: "Deployment") == nil)
        #expect(ManifestApplier.resource(apiVersion: "v1", kind: "Deployment") == nil, "a known kind in the wrong group")
        #expect(ManifestApplier.resource(apiVersion: "apps/v1beta1", kind: "Deployment")?.version == "v1beta1")
    }
}
