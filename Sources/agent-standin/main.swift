import Foundation

// The agent stand-in: `bin/Agent.Listener` of a fake agent directory with the real agent's command-line surface.
// `agent-standin install DIR` lays out such a directory instead.

let arguments = Array(CommandLine.arguments.dropFirst())

if arguments.first == "install" {
    exit(Installer.main(arguments: Array(arguments.dropFirst())))
}

let settings = CommandSettings(arguments: arguments, environment: ProcessEnvironment.current())
CommandSettings.scrubEnvironment()
let directory = AgentDirectory.locate(
    invokedAs: CommandLine.arguments.first ?? "bin/Agent.Listener",
    currentDirectory: FileManager.default.currentDirectoryPath
)

if !settings.unrecognized.isEmpty {
    Console.error(
        "Unrecognized command-line input arguments: '\(settings.unrecognized.joined(separator: ", "))'. "
            + "For usage refer to: .\\config.cmd --help or ./config.sh --help"
    )
}

let exitCode: ExitCode
if settings.flag("version") {
    Console.line(directory.version)
    exitCode = .success
} else if settings.flag("commit") {
    Console.line("standin")
    exitCode = .success
} else if settings.flag("help") {
    Console.line(Usage.text)
    exitCode = .success
} else {
    switch settings.command {
    case "configure":
        exitCode = await ConfigureCommand(settings: settings, directory: directory).run()
    case "remove":
        exitCode = await RemoveCommand(settings: settings, directory: directory).run()
    case "warmup":
        exitCode = .success
    default:
        exitCode = await RunCommand(settings: settings, directory: directory).run()
    }
}
exit(exitCode.rawValue)
