import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The listener's parsed command line, read the way the real agent reads it.
///
/// The real parser is peculiar, which is why this is hand-rolled: long flags only, names case-insensitive,
/// `--name value` pairs, bare `--flag` booleans, and every name also readable from `VSTS_AGENT_INPUT_<NAME>`
/// (command line wins). The `VSTS_AGENT_INPUT_*` variables are removed from the process environment once read
/// so neither the capability scan nor job processes ever see them (they may hold the PAT).
struct CommandSettings: Sendable {
    /// The verb: `configure`, `remove`, `run` or `warmup`; `nil` means the default (`run`).
    let command: String?
    /// Names and arguments that are not valid for `command`, in the order they appeared.
    let unrecognized: [String]

    private let arguments: [String: String]
    private let flags: Set<String>
    private let inputs: [String: String]

    /// The environment-variable prefix the real agent reads every input from.
    static let environmentPrefix = "VSTS_AGENT_INPUT_"

    /// Boolean flags the real agent knows (lower-cased long names).
    static let knownFlags: Set<String> = [
        "acceptteeeula", "addvirtualmachineresourcetags", "adddeploymentgrouptags", "alwaysextracttask", "commit",
        "deploymentgroup", "deploymentpool", "diagnostics", "disableloguploads", "enableservicesidtypeunrestricted",
        "environment", "gitusesschannel", "help", "launchbrowser", "norestart", "once", "overwriteautologon",
        "preventservicestart", "replace", "restreamlogstofiles", "runasautologon", "runasservice",
        "sslskipcertvalidation", "unattended", "usebasicauthforproxy", "version",
    ]

    /// Valued arguments the real agent knows (lower-cased long names).
    static let knownArguments: Set<String> = [
        "agent", "auth", "clientid", "clientsecret", "collectionname", "deploymentgroupname", "deploymentgrouptags",
        "deploymentpoolname", "environmentname", "monitorsocketaddress", "notificationpipename",
        "notificationsocketaddress", "password", "pool", "projectname", "proxypassword", "proxyurl", "proxyusername",
        "sslcacert", "sslclientcert", "sslclientcertarchive", "sslclientcertkey", "sslclientcertpassword",
        "startuptype", "tenantid", "token", "url", "username", "virtualmachineresourcetags", "windowslogonaccount",
        "windowslogonpassword", "work",
    ]

    /// Names valid for `remove` and `run`; `configure` accepts every known name.
    private static let removeNames: Set<String> = [
        "url", "auth", "token", "username", "password", "clientid", "tenantid", "clientsecret", "unattended",
        "launchbrowser", "help", "version", "commit",
    ]
    private static let runNames: Set<String> = ["once", "help", "version", "commit", "diagnostics", "startuptype"]

    /// Parses `argv` (without the executable) and the `VSTS_AGENT_INPUT_*` snapshot in `environment`.
    init(arguments argv: [String], environment: [String: String]) {
        var command: String?
        var arguments: [String: String] = [:]
        var flags: Set<String> = []
        var unrecognized: [String] = []
        var index = argv.startIndex
        while index < argv.endIndex {
            let token = argv[index]
            index += 1
            guard token.hasPrefix("--"), token.count > 2 else {
                if command == nil, arguments.isEmpty, flags.isEmpty,
                    ["configure", "remove", "run", "warmup"].contains(token.lowercased())
                {
                    command = token.lowercased()
                } else {
                    unrecognized.append(token)
                }
                continue
            }
            let name = String(token.dropFirst(2)).lowercased()
            if Self.knownFlags.contains(name) {
                flags.insert(name)
            } else if index < argv.endIndex, !argv[index].hasPrefix("--") {
                arguments[name] = argv[index]
                index += 1
            } else {
                flags.insert(name)
            }
        }

        let valid: Set<String>
        switch command {
        case "remove": valid = Self.removeNames
        case "run", nil: valid = Self.runNames
        default: valid = Self.knownFlags.union(Self.knownArguments)
        }
        for name in flags.union(arguments.keys).sorted() where !valid.contains(name) {
            unrecognized.append(name)
        }

        var inputs: [String: String] = [:]
        for (key, value) in environment where key.uppercased().hasPrefix(Self.environmentPrefix) {
            inputs[String(key.dropFirst(Self.environmentPrefix.count)).lowercased()] = value
        }

        self.command = command
        self.arguments = arguments
        self.flags = flags
        self.unrecognized = unrecognized
        self.inputs = inputs
    }

    /// The value of a valued argument: command line first, then `VSTS_AGENT_INPUT_<NAME>`; empty counts as absent.
    func value(_ name: String) -> String? {
        let key = name.lowercased()
        if let value = arguments[key], !value.isEmpty { return value }
        if let value = inputs[key], !value.isEmpty { return value }
        return nil
    }

    /// A boolean flag: present on the command line, or `VSTS_AGENT_INPUT_<NAME>` parsing as `true`.
    func flag(_ name: String) -> Bool {
        let key = name.lowercased()
        if flags.contains(key) { return true }
        if let value = inputs[key] {
            return value.trimmingCharacters(in: .whitespaces).lowercased() == "true"
        }
        return false
    }

    /// Removes every `VSTS_AGENT_INPUT_*` variable (any case) from this process's environment.
    static func scrubEnvironment() {
        for name in ProcessEnvironment.current().keys where name.uppercased().hasPrefix(environmentPrefix) {
            unsetenv(name)
        }
    }
}

/// Reads the live process environment straight from `environ`.
///
/// `ProcessInfo` may cache; the listener mutates its environment (`unsetenv`) and must read what is really there.
enum ProcessEnvironment {
    /// The current environment as a dictionary (first occurrence wins).
    static func current() -> [String: String] {
        var result: [String: String] = [:]
        guard var pointer = environ as UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? else { return result }
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                let name = String(text[..<equals])
                if result[name] == nil {
                    result[name] = String(text[text.index(after: equals)...])
                }
            }
            pointer += 1
        }
        return result
    }
}
