/// Why an agent identity operation failed: a file that does not parse, a key that is unusable, or a client
/// assertion that does not verify.
///
/// `description` names the file, field or claim at fault; `kind` lets a token service pick its OAuth error code
/// without parsing the text.
package struct AgentIdentityError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The broad class of failure.
    package enum Kind: String, Sendable, Equatable {
        /// A file (`.agent`, `.credentials`, `.credentials_rsaparams`) is not the JSON the agent writes.
        case invalidFile
        /// An RSA key (or one of its fields) is malformed, too small or inconsistent.
        case invalidKey
        /// The key could not be generated or could not sign.
        case cryptoFailure
        /// The token is not a compact JWS, or a segment is not base64url JSON.
        case malformedToken
        /// The header names an algorithm other than RS256 (`none`, `HS256`, ...).
        case unsupportedAlgorithm
        /// The RS256 signature does not verify with the registered public key.
        case invalidSignature
        /// `aud` is not the token endpoint the assertion is presented to.
        case wrongAudience
        /// `exp` (plus leeway) is in the past.
        case expired
        /// `nbf` (minus leeway) is in the future.
        case notYetValid
        /// `sub` and `iss` are missing, empty or differ.
        case invalidSubject
    }

    /// The broad class of failure.
    package var kind: Kind
    /// What is wrong, naming the file, field or claim.
    package var description: String

    /// An error of `kind` saying `description`.
    package init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
