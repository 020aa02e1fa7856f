import Shared

/// Where the PAT comes from. The value itself is never logged and never put on a command line.
package enum TokenSource: Sendable, Equatable {
    /// `AZP_TOKEN`: read once at start, then removed from the environment.
    case value(String)
    /// `AZP_TOKEN_FILE`: re-read for every use, so a rotated Secret is picked up.
    case file(String)
}

/// A configuration problem; printed as one line and the process exits 2.
package struct SettingsError: Error, CustomStringConvertible, Equatable {
    /// The line printed, naming the variable (and flag) and the bad value.
    package let description: String

    /// An error with this line.
    package init(description: String) {
        self.description = description
    }
}

/// Who registers the agent and with which credential: `AZP_REGISTRATION`, `AZP_REGISTRATION_DIR` and the token.
///
/// In `entrypoint` mode a token is required (`AZP_TOKEN` or `AZP_TOKEN_FILE`). In `controller` mode the pod must
/// hold no token at all: the controller registered the agent and mounted its identity files, so a token
/// variable there is a mistake that would hand a PAT to every job.
package struct RegistrationSettings: Sendable, Equatable {
    /// `AZP_REGISTRATION` / `--registration` (default `entrypoint`).
    package var mode: RegistrationMode
    /// `AZP_REGISTRATION_DIR` / `--registration-dir` (default `/azp/registration`); used in controller mode.
    package var directory: String
    /// The PAT's source; nil exactly in controller mode.
    package var token: TokenSource?

    /// Settings with these values (tests; ``init(modeFlag:directoryFlag:tokenFileFlag:environment:)`` validates).
    package init(mode: RegistrationMode, directory: String, token: TokenSource?) {
        self.mode = mode
        self.directory = directory
        self.token = token
    }

    /// Reads the mode, the directory and the token; flags win over the environment. Throws a line naming the
    /// variable and the bad value.
    package init(
        modeFlag: String?, directoryFlag: String?, tokenFileFlag: String?, environment: [String: String]
    ) throws(SettingsError) {
        let names = EntrypointEnvironment.self
        func pick(_ flag: String?, _ variable: String) -> String? {
            if let flag, !flag.trimmingWhitespace().isEmpty { return flag.trimmingWhitespace() }
            if let value = environment[variable], !value.trimmingWhitespace().isEmpty { return value.trimmingWhitespace() }
            return nil
        }

        let modeText = pick(modeFlag, names.registration) ?? RegistrationMode.entrypoint.rawValue
        guard let mode = RegistrationMode(rawValue: modeText.lowercased()) else {
            throw SettingsError(
                description: "\(names.registration) must be \(RegistrationMode.entrypoint.rawValue) or "
                    + "\(RegistrationMode.controller.rawValue), got \"\(modeText)\"")
        }
        self.mode = mode
        self.directory = pick(directoryFlag, names.registrationDirectory) ?? RegistrationMode.defaultRegistrationDirectory

        let tokenFile = pick(tokenFileFlag, names.tokenFile)
        let token = pick(nil, names.token)
        switch mode {
        case .controller:
            if token != nil {
                throw Self.tokenInControllerMode(names.token)
            }
            if tokenFile != nil {
                throw Self.tokenInControllerMode("\(names.tokenFile) (--token-file)")
            }
            self.token = nil
        case .entrypoint:
            if let tokenFile {
                self.token = .file(tokenFile)
            } else if let token {
                self.token = .value(token)
            } else {
                throw SettingsError(
                    description: "\(names.token) or \(names.tokenFile) (--token-file) is required: a personal access token "
                        + "with Agent Pools (Read & manage) scope (or set \(names.registration)=controller)")
            }
        }
    }

    private static func tokenInControllerMode(_ variable: String) -> SettingsError {
        SettingsError(
            description: "\(variable) must not be set with \(EntrypointEnvironment.registration)=controller: the controller "
                + "registered the agent, and a pod in controller mode must hold no PAT (every job could read it); "
                + "remove the variable from the pod")
    }
}
