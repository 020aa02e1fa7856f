import Foundation

/// `agent-standin install DIR [--version X.Y.Z] [--listener PATH]`: lays out a fake agent directory.
///
/// The layout mirrors the real agent's (fact sheet §4): `config.sh`, `run.sh`, `env.sh`, `bin/Agent.Listener`
/// (a symlink to this binary) and a version marker in `bin/`. `Simulators.AgentStandIn.install` calls this, so
/// the scripts are defined in exactly one place.
enum Installer {
    /// Parses the install arguments, writes the layout and returns the process exit code.
    static func main(arguments: [String]) -> Int32 {
        var directory: String?
        var version = AgentDirectory.defaultVersion
        var listener: String?
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "--version", "--listener":
                guard index + 1 < arguments.count else {
                    Console.error("install: \(argument) needs a value")
                    return 2
                }
                if argument == "--version" { version = arguments[index + 1] } else { listener = arguments[index + 1] }
                index += 2
            default:
                guard directory == nil, !argument.hasPrefix("--") else {
                    Console.error("install: unexpected argument '\(argument)'")
                    return 2
                }
                directory = argument
                index += 1
            }
        }
        guard let directory else {
            Console.error("usage: agent-standin install <directory> [--version <x.y.z>] [--listener <path>]")
            return 2
        }
        let executable = listener ?? ownExecutablePath()
        do {
            try install(at: URL(fileURLWithPath: directory), listenerExecutable: executable, version: version)
            return 0
        } catch {
            Console.error("install: \(error)")
            return 1
        }
    }

    /// Writes the layout into `root` (created if needed); existing scripts and the symlink are replaced.
    static func install(at root: URL, listenerExecutable: String, version: String) throws {
        let fileManager = FileManager.default
        let bin = root.appendingPathComponent("bin")
        try fileManager.createDirectory(at: bin, withIntermediateDirectories: true)

        for (name, text) in [("config.sh", Scripts.config), ("run.sh", Scripts.run), ("env.sh", Scripts.env)] {
            let file = root.appendingPathComponent(name)
            try Data(text.utf8).write(to: file, options: .atomic)
            try fileManager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: file.path)
        }

        let link = bin.appendingPathComponent("Agent.Listener")
        if (try? fileManager.destinationOfSymbolicLink(atPath: link.path)) != nil || fileManager.fileExists(atPath: link.path) {
            try fileManager.removeItem(at: link)
        }
        try fileManager.createSymbolicLink(atPath: link.path, withDestinationPath: listenerExecutable)

        let marker = bin.appendingPathComponent(AgentDirectory.versionMarker)
        try Data((version + "\n").utf8).write(to: marker, options: .atomic)
    }

    private static func ownExecutablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments.first ?? "agent-standin"
    }
}

/// The agent directory's shell scripts (same contract as the real agent's layoutroot scripts).
enum Scripts {
    /// `config.sh`: root check, cd to its own directory, `source env.sh`, then configure or remove.
    static let config = """
        #!/bin/bash
        # Agent stand-in config.sh: same contract as the Azure Pipelines agent's script.

        if [ "$(id -u)" -eq 0 ] && [ -z "$AGENT_ALLOW_RUNASROOT" ]; then
            echo "Must not run with sudo"
            exit 1
        fi

        \(resolveDirectory)
        cd "$DIR" || exit 1

        source ./env.sh

        shopt -s nocasematch
        if [[ "$1" == "remove" ]]; then
            ./bin/Agent.Listener "$@"
        else
            ./bin/Agent.Listener configure "$@"
        fi

        """

    /// `run.sh`: root check, run the listener, relaunch once after exit code 4 (self-update under `--once`).
    static let run = """
        #!/bin/bash
        # Agent stand-in run.sh: same contract as the Azure Pipelines agent's script.

        if [ "$(id -u)" -eq 0 ] && [ -z "$AGENT_ALLOW_RUNASROOT" ]; then
            echo "Must not run interactively with sudo"
            exit 1
        fi

        \(resolveDirectory)

        "$DIR"/bin/Agent.Listener run "$@"
        returnCode=$?
        if [[ $returnCode != 4 ]]; then
            exit $returnCode
        fi

        # Exit code 4: the run-once agent received an update; wait, then run the (updated) listener again.
        sleep "${AGENT_STANDIN_RELAUNCH_DELAY:-5}"
        "$DIR"/bin/Agent.Listener run "$@"

        """

    /// `env.sh`: records PATH and a few well-known variables in `.path` and `.env`, like the real one.
    static let env = """
        #!/bin/bash
        # Agent stand-in env.sh: snapshot of the configuring user's environment (.path and .env).

        echo "$PATH" > .path
        : > .env
        for name in LANG JAVA_HOME ANT_HOME M2_HOME ANDROID_HOME GRADLE_HOME NVM_BIN NVM_PATH LD_LIBRARY_PATH PERL5LIB AGENT_TOOLSDIRECTORY; do
            value="${!name}"
            if [ -n "$value" ]; then
                echo "$name=$value" >> .env
            fi
        done

        """

    private static let resolveDirectory = """
        SOURCE="${BASH_SOURCE[0]}"
        while [ -h "$SOURCE" ]; do
            DIR="$(cd -P "$(dirname "$SOURCE")" && pwd)"
            SOURCE="$(readlink "$SOURCE")"
            [[ $SOURCE != /* ]] && SOURCE="$DIR/$SOURCE"
        done
        DIR="$(cd -P "$(dirname "$SOURCE")" && pwd)"
        """
}
