import Foundation

/// Lays out a fake Azure Pipelines agent directory whose `bin/Agent.Listener` is the `agent-standin` binary.
///
/// The directory behaves like the real agent's for the entrypoint: `config.sh`, `run.sh --once` and
/// `config.sh remove` work against the simulator. The layout itself is written by `agent-standin install`, so the
/// scripts are defined once (in the stand-in executable) and this helper cannot drift from the CLI.
package enum AgentStandIn {
    /// Why installing the layout failed.
    package enum InstallError: Error, CustomStringConvertible {
        /// The listener executable does not exist or is not executable.
        case listenerMissing(URL)
        /// `agent-standin install` could not be started.
        case launchFailed(URL, underlying: String)
        /// `agent-standin install` exited non-zero.
        case installFailed(directory: URL, status: Int32, output: String)

        /// A message naming the path and the reason.
        package var description: String {
            switch self {
            case .listenerMissing(let url):
                "agent stand-in executable not found or not executable at \(url.path)"
            case .launchFailed(let url, let underlying):
                "cannot run \(url.path) install: \(underlying)"
            case .installFailed(let directory, let status, let output):
                "agent-standin install \(directory.path) exited with \(status): \(output)"
            }
        }
    }

    /// Creates `config.sh`, `run.sh`, `env.sh`, `bin/Agent.Listener` (a symlink to `listenerExecutable`) and the
    /// `bin/agent-version` marker in `directory` (created if needed).
    package static func install(at directory: URL, listenerExecutable: URL, version: String = "4.266.2") throws {
        guard FileManager.default.isExecutableFile(atPath: listenerExecutable.path) else {
            throw InstallError.listenerMissing(listenerExecutable)
        }
        let process = Process()
        process.executableURL = listenerExecutable
        process.arguments = [
            "install", directory.path, "--version", version, "--listener", listenerExecutable.path,
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw InstallError.launchFailed(listenerExecutable, underlying: String(describing: error))
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw InstallError.installFailed(
                directory: directory, status: process.terminationStatus, output: String(decoding: data, as: UTF8.self)
            )
        }
    }
}
