import ArgumentParser
import Foundation
import Simulators

#if canImport(Glibc)
import Glibc
#endif

/// `shoal-sim agent-image`: what an agent image does at container start, for pods on a local node.
///
/// A real agent image has the agent baked in at `/azp/agent` and `agent-entrypoint` as its ENTRYPOINT. On a local
/// node there is no image, so this command plays the image: it installs the agent stand-in into `./agent` (the
/// pod's own working directory) and then *replaces itself* with `agent-entrypoint` (execve), so the entrypoint keeps
/// the pod's process id and receives its signals exactly as it would as PID 1 of a container.
struct AgentImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-image",
        abstract: "Play an agent image on a local node: install the agent stand-in into ./agent, then exec agent-entrypoint.")

    @Option(help: "The agent-entrypoint binary (default: next to this executable).")
    var entrypoint: String?

    @Option(help: "The agent stand-in binary installed as bin/Agent.Listener (default: agent-standin next to this executable).")
    var listener: String?

    func run() throws {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let entrypoint = entrypoint ?? here.appendingPathComponent("agent-entrypoint").path
        let listener = listener ?? here.appendingPathComponent("agent-standin").path
        for (what, path) in [("agent-entrypoint", entrypoint), ("agent-standin", listener)] where !FileManager.default.isExecutableFile(atPath: path) {
            throw ValidationError("\(what) not found at \(path); build the package first (swift build)")
        }
        let directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("agent")
        try AgentStandIn.install(at: directory, listenerExecutable: URL(fileURLWithPath: listener))
        setenv("AZP_AGENT_DIR", directory.path, 1)
        if getenv("AGENT_ALLOW_RUNASROOT") == nil { setenv("AGENT_ALLOW_RUNASROOT", "1", 1) }
        let arguments = [entrypoint]
        var cArguments = arguments.map { strdup($0) } + [nil]
        execv(entrypoint, &cArguments)
        throw ValidationError("cannot exec \(entrypoint): \(String(cString: strerror(errno)))")
    }
}
