// pool-controller: the composition root of the controller. The reconcile loop arrives with issue 5; until then
// the binary only answers --help and --version, and refuses to run so nobody deploys it by mistake.
import ArgumentParser

/// `pool-controller`: scales AgentPools to queued Azure Pipelines jobs (not implemented yet).
@main
struct PoolController: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-controller",
        abstract: "Scale Azure Pipelines agent pods to queued jobs (arrives with the controller issue).",
        version: "0.1.0-dev")

    func run() throws {
        print("pool-controller: the controller is not implemented yet; see README.md (Status).")
        throw ExitCode(2)
    }
}
