import Logging
import Shared
import Yams

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A manifest that cannot be applied: names the document and the problem.
package struct ManifestError: Error, Sendable, CustomStringConvertible {
    /// What is wrong, naming the document (`Deployment shoal-system/shoal-pool-controller`) or its position.
    package var description: String

    /// An error with this description.
    package init(_ description: String) { self.description = description }
}

/// Applies multi-document YAML manifests (`deploy/install.yaml`, the examples) the way `kubectl apply` creates
/// objects: create, or replace an existing object's content (keeping its resourceVersion and what other writers
/// own: finalizers, owner references, a ServiceAccount's token Secrets, a Service's cluster IPs).
///
/// Only the kinds Shoal ships are known (``resource(for:)``); an unknown kind is an error naming it. CRDs are waited
/// for until Established before the next object is applied, so a CRD and its custom resources can share a file.
package struct ManifestApplier: Sendable {
    /// One applied object.
    package struct Applied: Sendable, Hashable, CustomStringConvertible {
        /// `kind`.
        package var kind: String
        /// `namespace/name` or `name`.
        package var name: String
        /// Whether it existed and was replaced.
        package var updated: Bool
        package var description: String { "\(kind) \(name) \(updated ? "configured" : "created")" }
    }

    private let api: any KubernetesAPI
    private let logger: Logger

    /// An applier writing through `api`.
    package init(api: any KubernetesAPI, logger: Logger = Logger(label: "shoal.kubernetes.apply")) {
        self.api = api
        self.logger = logger
    }

    /// Parses every non-empty YAML document of `text`; each must be a mapping (an object).
    ///
    /// Scalars resolve as `kubectl` reads them (YAML 1.1 core schema): plain `true`/`yes`/`on`, integers (`0755` is
    /// octal), floats and `null`/`~`/empty; anything quoted, a block scalar or a `!!str` stays a string. Merge keys
    /// (`<<: *anchor`) are applied; a key given twice in one mapping is an error, as it is for `kubectl`.
    package static func documents(_ text: String) throws(ManifestError) -> [KubeJSON] {
        var result: [KubeJSON] = []
        var index = 0
        do {
            // `YamlSequence` stops at a parse error and keeps it in `error` instead of throwing: check it after the
            // loop, or a broken later document silently truncates the manifest.
            var sequence = try Yams.compose_all(yaml: text)
            while let node = sequence.next() {
                index += 1
                let json = try KubeJSON(yamlNode: node)
                if json == .null { continue }
                guard json.objectValue != nil else { throw ManifestError("document \(index) is not a mapping (an object)") }
                result.append(json)
            }
            if let error = sequence.error { throw ManifestError("not valid YAML after document \(index): \(error)") }
            return result
        } catch let error as ManifestError {
            throw error
        } catch {
            throw ManifestError("not valid YAML: \(error)")
        }
    }

    /// The API resource of a kind (`apiVersion` + `kind`), for the kinds Shoal's manifests use; nil for another kind,
    /// or a known kind in the wrong API group (`v1` `Deployment`).
    package static func resource(apiVersion: String, kind: String) -> KubernetesResource? {
        let parts = apiVersion.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let (group, version) = parts.count == 2 ? (parts[0], parts[1]) : ("", parts[0])
        let known: [String: (group: String, plural: String, namespaced: Bool)] = [
            "Namespace": ("", "namespaces", false), "ServiceAccount": ("", "serviceaccounts", true), "Service": ("", "services", true),
            "Secret": ("", "secrets", true), "ConfigMap": ("", "configmaps", true), "Pod": ("", "pods", true),
            "CustomResourceDefinition": ("apiextensions.k8s.io", "customresourcedefinitions", false),
            "ClusterRole": ("rbac.authorization.k8s.io", "clusterroles", false),
            "ClusterRoleBinding": ("rbac.authorization.k8s.io", "clusterrolebindings", false),
            "Role": ("rbac.authorization.k8s.io", "roles", true), "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings", true),
            "Deployment": ("apps", "deployments", true), "PodDisruptionBudget": ("policy", "poddisruptionbudgets", true),
            "AgentPool": ("shoal.dev", "agentpools", true),
        ]
        guard let entry = known[kind], entry.group == group, !version.isEmpty else { return nil }
        return KubernetesResource(group: group, version: version, plural: entry.plural, namespaced: entry.namespaced)
    }

    /// Applies `objects` in order, skipping kinds in `skipKinds`; `namespace` is used for namespaced objects without one.
    @discardableResult
    package func apply(_ objects: [KubeJSON], namespace: String? = nil, skipKinds: Set<String> = []) async throws -> [Applied] {
        var applied: [Applied] = []
        for (index, object) in objects.enumerated() {
            guard let kind = object["kind"]?.stringValue, let apiVersion = object["apiVersion"]?.stringValue,
                let name = object["metadata"]?["name"]?.stringValue
            else { throw ManifestError("document \(index + 1): apiVersion, kind and metadata.name are required") }
            if skipKinds.contains(kind) { continue }
            guard let resource = Self.resource(apiVersion: apiVersion, kind: kind) else {
                throw ManifestError("\(kind) \(name) (document \(index + 1)): kind \(apiVersion)/\(kind) is not one Shoal's manifests use")
            }
            var body = object
            let objectNamespace = resource.namespaced ? (object["metadata"]?["namespace"]?.stringValue ?? namespace ?? api.defaultNamespace) : nil
            if let objectNamespace { body["metadata"]?["namespace"] = .string(objectNamespace) }
            let label = objectNamespace.map { "\($0)/\(name)" } ?? name
            do {
                _ = try await api.create(DynamicObject(body), resource, namespace: objectNamespace)
                applied.append(Applied(kind: kind, name: label, updated: false))
            } catch let error where error.isAlreadyExists {
                do {
                    try await replace(body, kind: kind, resource: resource, namespace: objectNamespace, name: name)
                } catch {
                    throw ManifestError("\(kind) \(label): \(error)")
                }
                applied.append(Applied(kind: kind, name: label, updated: true))
            } catch {
                throw ManifestError("\(kind) \(label): \(error)")
            }
            logger.debug("applied", metadata: ["object": "\(applied.last!)"])
            if kind == "CustomResourceDefinition" { try await waitEstablished(name) }
        }
        return applied
    }

    /// Replaces an existing object with `manifest`, keeping what other writers own and the manifest leaves out:
    /// finalizers and owner references, a ServiceAccount's token `secrets` (dropping them makes the token
    /// controller mint another token Secret on every apply), a Service's allocated cluster IPs. Retries a
    /// resourceVersion conflict (someone wrote in between) a few times.
    private func replace(_ manifest: KubeJSON, kind: String, resource: KubernetesResource, namespace: String?, name: String) async throws(KubernetesError) {
        var attempt = 0
        while true {
            attempt += 1
            let existing = try await api.get(DynamicObject.self, resource, namespace: namespace, name: name).json
            var body = manifest
            body["metadata"]?["resourceVersion"] = existing["metadata"]?["resourceVersion"]
            for key in ["finalizers", "ownerReferences"] where manifest["metadata"]?[key] == nil {
                body["metadata"]?[key] = existing["metadata"]?[key]
            }
            switch kind {
            case "ServiceAccount":
                if manifest["secrets"] == nil { body["secrets"] = existing["secrets"] }
            case "Service":
                for key in ["clusterIP", "clusterIPs"] where manifest["spec"]?[key] == nil { body["spec"]?[key] = existing["spec"]?[key] }
            default:
                break
            }
            do {
                _ = try await api.update(DynamicObject(body), resource, namespace: namespace, subresource: nil)
                return
            } catch let error where error.code == 409 && !error.isAlreadyExists && attempt < 3 {
                continue
            }
        }
    }

    private func waitEstablished(_ name: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let crd = try await api.get(DynamicObject.self, .customResourceDefinitions, namespace: nil, name: name)
            let conditions = crd.json["status"]?["conditions"]?.arrayValue ?? []
            if conditions.contains(where: { $0["type"] == "Established" && $0["status"] == "True" }) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ManifestError("CustomResourceDefinition \(name) was not Established within 30 s")
    }
}

extension KubeJSON {
    /// Converts a composed YAML node into JSON, resolving scalars by their tags (null, bool, int, float, string).
    ///
    /// `node.tag` is the resolved tag: plain scalars get the default resolver's (`tag:yaml.org,2002:int`...),
    /// quoted ones `tag:yaml.org,2002:str`, explicit tags stay as written.
    init(yamlNode node: Yams.Node) throws(ManifestError) {
        switch node {
        case .mapping(let mapping):
            var members: [String: KubeJSON] = [:]
            var merged: [String: KubeJSON] = [:]
            for (key, value) in mapping {
                let line = (key.mark?.line).map { " at line \($0)" } ?? ""
                if key.tag.description == Tag.Name.merge.rawValue {
                    // `<<: *base` or `<<: [*a, *b]`: keys given explicitly win, earlier merged mappings over later ones.
                    let sources = value.sequence.map(Array.init) ?? [value]
                    for source in sources.reversed() {
                        guard case .object(let entries) = try KubeJSON(yamlNode: source) else {
                            throw ManifestError("a merge key (<<) needs a mapping or a list of mappings\(line)")
                        }
                        merged.merge(entries) { _, new in new }
                    }
                    continue
                }
                guard case .scalar(let scalar) = key else { throw ManifestError("a mapping key is not a string\(line)") }
                guard members[scalar.string] == nil else { throw ManifestError("mapping key \"\(scalar.string)\" is given twice\(line)") }
                members[scalar.string] = try KubeJSON(yamlNode: value)
            }
            self = .object(merged.merging(members) { _, explicit in explicit })
        case .sequence(let sequence):
            self = .array(try sequence.map { item throws(ManifestError) in try KubeJSON(yamlNode: item) })
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.description) {
            case .null: self = .null
            case .bool: self = node.bool.map(KubeJSON.bool) ?? .string(scalar.string)
            case .int: self = node.int.map { .int(Int64($0)) } ?? .string(scalar.string)
            case .float:
                guard let value = node.float else { self = .string(scalar.string); break }
                guard value.isFinite else { throw ManifestError("\(scalar.string) is not a number JSON can carry (line \(scalar.mark?.line ?? 0))") }
                self = .double(value)
            default: self = .string(scalar.string)
            }
        }
    }
}
