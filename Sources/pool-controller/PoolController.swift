// pool-controller: the composition root of the controller. `run` builds the real clients and starts the services;
// `crd` prints the AgentPool CustomResourceDefinition that deploy/ carries.
import ArgumentParser
import Kubernetes
import Yams

/// `pool-controller`: scales AgentPools to queued Azure Pipelines jobs with a standby of idle agents.
@main
struct PoolController: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-controller",
        abstract: "Scale Azure Pipelines agent pods to queued jobs, keep a standby of idle agents, collect what is left over.",
        version: "0.1.0",
        subcommands: [RunCommand.self, CRDCommand.self],
        defaultSubcommand: RunCommand.self)
}

/// `pool-controller crd`: prints the AgentPool CRD as YAML (what deploy/ carries).
struct CRDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "crd", abstract: "Print the AgentPool CustomResourceDefinition as YAML.")

    func run() throws {
        print(try YAMLRendering.render(AgentPoolCRD.definition), terminator: "")
    }
}

/// Renders JSON values as YAML documents with sorted keys, so printed manifests are stable.
enum YAMLRendering {
    /// One YAML document (no leading `---`).
    static func render(_ value: KubeJSON) throws -> String {
        try Yams.dump(object: plain(value), width: -1, sortKeys: true)
    }

    /// The value as Foundation-free plain Swift values Yams can represent.
    static func plain(_ value: KubeJSON) -> Any {
        switch value {
        case .null: return NSNullPlaceholder.value
        case .bool(let bool): return bool
        case .int(let int): return Int(int)
        case .double(let double): return double
        case .string(let string): return string
        case .array(let items): return items.map(plain)
        case .object(let members): return members.mapValues(plain)
        }
    }

    /// Yams writes `null` for an optional that is nil.
    enum NSNullPlaceholder {
        static let value: String? = nil
    }
}
