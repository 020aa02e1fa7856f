#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `.credentials_rsaparams`: the agent's RSA private key as `RSAFileKeyManager` saves it on Linux (plain JSON).
///
/// The agent serializes `RSAParametersSerializable` through `ISerializable`, so the entries keep their names
/// verbatim: `ContainerName`, `UseCng`, then the eight `RSAParameters` fields. Every number is standard base64
/// (with padding) of a big-endian unsigned integer, left-padded to the width .NET's import demands: `modulus`
/// and `d` as wide as the modulus (256 bytes, 344 characters for RSA-2048), `p`, `q`, `dp`, `dq`, `inverseQ`
/// half as wide (128 bytes, 172 characters); `exponent` has no padding (`AQAB` for 65537).
package struct RSAParametersFile: Codable, Sendable, Equatable {
    /// Private exponent.
    package var d: String
    /// `d mod (p-1)`.
    package var dp: String
    /// `d mod (q-1)`.
    package var dq: String
    /// Public exponent.
    package var exponent: String
    /// `q⁻¹ mod p`.
    package var inverseQ: String
    /// Modulus `n = p·q`.
    package var modulus: String
    /// First prime.
    package var p: String
    /// Second prime.
    package var q: String
    /// CSP container name; the agent writes `""`, agents before v3.237.0 omit it.
    package var containerName: String?
    /// Whether the key lives in CNG; the agent writes `false`, agents before v3.237.0 omit it.
    package var useCng: Bool?

    /// The keys exactly as the agent writes them (`ContainerName`/`UseCng` stay PascalCase).
    enum CodingKeys: String, CodingKey, CaseIterable {
        case containerName = "ContainerName"
        case useCng = "UseCng"
        case d, dp, dq, exponent, inverseQ, modulus, p, q
    }

    /// A parameters file with these fields (base64 strings, already padded).
    package init(
        d: String, dp: String, dq: String, exponent: String, inverseQ: String, modulus: String, p: String,
        q: String, containerName: String? = "", useCng: Bool? = false
    ) {
        self.d = d
        self.dp = dp
        self.dq = dq
        self.exponent = exponent
        self.inverseQ = inverseQ
        self.modulus = modulus
        self.p = p
        self.q = q
        self.containerName = containerName
        self.useCng = useCng
    }

    /// The file's bytes: UTF-8 BOM, 2-space indented JSON in the agent's entry order, no trailing newline.
    package func encoded() -> Data {
        var members: [(String, IndentedJSON)] = []
        if let containerName { members.append((CodingKeys.containerName.rawValue, .string(containerName))) }
        if let useCng { members.append((CodingKeys.useCng.rawValue, .bool(useCng))) }
        members += [
            ("d", .string(d)), ("dp", .string(dp)), ("dq", .string(dq)), ("exponent", .string(exponent)),
            ("inverseQ", .string(inverseQ)), ("modulus", .string(modulus)), ("p", .string(p)), ("q", .string(q)),
        ]
        return IndentedJSON.object(members).fileContents()
    }

    /// The file name used in error messages.
    private static let fileName = ".credentials_rsaparams"

    /// Reads the file (with or without BOM); member names match exactly first, then ignoring case.
    ///
    /// Only checks that every field is present and a string; `AgentKey(parameters:)` checks the numbers.
    package static func decode(_ data: Data) throws(AgentIdentityError) -> RSAParametersFile {
        let object = try LooseJSON.parseObject(data, file: fileName)
        func field(_ key: CodingKeys) throws(AgentIdentityError) -> String {
            guard let value = LooseJSON.member(key.rawValue, of: object) else {
                throw AgentIdentityError(.invalidFile, "\(fileName) has no '\(key.rawValue)'")
            }
            guard case .string(let text) = value else {
                throw AgentIdentityError(.invalidFile, "\(fileName): '\(key.rawValue)' is not a base64 string")
            }
            return text
        }
        let containerName = LooseJSON.member(CodingKeys.containerName.rawValue, of: object)
        let useCng = LooseJSON.member(CodingKeys.useCng.rawValue, of: object)
        if let useCng, useCng != .null, useCng.boolValue == nil {
            throw AgentIdentityError(.invalidFile, "\(fileName): 'UseCng' is not a boolean")
        }
        return RSAParametersFile(
            d: try field(.d), dp: try field(.dp), dq: try field(.dq), exponent: try field(.exponent),
            inverseQ: try field(.inverseQ), modulus: try field(.modulus), p: try field(.p), q: try field(.q),
            containerName: containerName?.stringValue, useCng: useCng?.boolValue)
    }
}
