import Foundation

/// The simulated token service's parts of the OAuth client-credentials flow with a JWT client assertion.
///
/// The agent posts `grant_type=client_credentials`, `client_assertion_type=` ``OAuthTokenRequest/jwtBearerType`` and
/// `client_assertion=<RS256 JWT>` to the `authorizationUrl` its registration returned; see
/// docs/azure-devops-simulator.md for the flow and the sources it follows.
package enum OAuthTokenRequest {
    /// The only grant the token endpoint serves to agents.
    package static let clientCredentialsGrant = "client_credentials"
    /// RFC 7523's client assertion type for a JWT.
    package static let jwtBearerType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    /// The `Content-Type` of a token request.
    package static let formContentType = "application/x-www-form-urlencoded"
}

/// An access token the simulator issued.
package struct IssuedAccessToken: Sendable, Equatable {
    /// The opaque bearer token.
    package let token: String
    /// The agent it stands for.
    package let agentId: Int
    /// When it stops being accepted.
    package let expiresOn: Date
    /// Lifetime in whole seconds (`expires_in`).
    package let expiresIn: Int
}

/// Why the token endpoint refused a request: the OAuth `error` code, its `errordescription` and the HTTP status.
///
/// The body keys follow `VssOAuthTokenResponse` (note `errordescription`, one word). Which code and status the
/// real service gives for each case is not documented; the simulator follows RFC 6749 §5.2 and RFC 7521 §4.2.
package struct TokenRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// `invalid_request`, `invalid_client`, `invalid_grant` or `unsupported_grant_type`.
    package let error: String
    /// Human-readable reason.
    package let errorDescription: String
    /// 400, or 401 for `invalid_client`.
    package let status: Int

    package var description: String { "\(status) \(error): \(errorDescription)" }

    /// 400 `invalid_request`: a parameter is missing or the body is not a form.
    package static func invalidRequest(_ description: String) -> TokenRefusal {
        TokenRefusal(error: "invalid_request", errorDescription: description, status: 400)
    }

    /// 400 `unsupported_grant_type`.
    package static func unsupportedGrantType(_ grantType: String) -> TokenRefusal {
        TokenRefusal(
            error: "unsupported_grant_type",
            errorDescription: "The grant type '\(grantType)' is not supported; use client_credentials.", status: 400)
    }

    /// 401 `invalid_client`: unknown, deleted or keyless client, or an assertion that does not verify.
    package static func invalidClient(_ description: String) -> TokenRefusal {
        TokenRefusal(error: "invalid_client", errorDescription: description, status: 401)
    }

    /// 400 `invalid_grant`: an assertion outside its validity window (the agent maps "Current server time is"
    /// to a clock-skew message, so the description carries the server's time).
    package static func invalidGrant(_ description: String) -> TokenRefusal {
        TokenRefusal(error: "invalid_grant", errorDescription: description, status: 400)
    }
}
