import ArgumentParser
import CofferSDK
import Foundation
import TenantCore

/// `operator generate-root`: Vault's flags. `-generate-otp` prints an OTP, `-init` starts
/// an attempt (with `-otp`, or one is generated and printed), a key argument submits one
/// share (`-nonce`), `-status`, `-cancel`, and `-decode=ENCODED -otp=OTP` prints the token.
struct OperatorGenerateRoot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate-root", abstract: "Generate a new root token from a quorum of unseal (or recovery) key shares.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("generate-otp"), help: "Print a one-time password for -init.") var generateOTP = false
    @Flag(name: .customLong("init"), help: "Start a root token generation.") var start = false
    @Flag(name: .customLong("status"), help: "Print the progress of the current attempt.") var status = false
    @Flag(name: .customLong("cancel"), help: "Cancel the current attempt.") var cancel = false
    @Option(name: .customLong("otp"), help: "The one-time password (for -init and -decode).") var otp: String?
    @Option(name: .customLong("decode"), help: "Decode an encoded root token with -otp (\"-\": read it from stdin).") var decode: String?
    @Option(name: .customLong("nonce"), help: "The nonce of the attempt (when submitting a key).") var nonce: String?
    @Argument(help: "An unseal (or recovery) key share; \"-\" reads it from stdin.") var key: String?

    func run() async throws {
        if generateOTP {
            Out.print(TokenID.random(rootTokenOTPLength))
            return
        }
        if var encoded = decode {
            guard let otp, !otp.isEmpty else {
                Out.err("Error decoding: -otp is required with -decode")
                throw ExitCode(1)
            }
            if encoded == "-" { encoded = String(decoding: Input.readStdin(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
            do {
                let token = try Core.decodeRootToken(encoded, otp: otp)
                if output.json { Out.print(Out.prettyJSON(["token": .string(token)])) } else { Out.print(token) }
            } catch let e as CofferError {
                Out.err("Error decoding root token: \(e.message)")
                throw ExitCode(1)
            }
            return
        }
        try await API.with(client) { api in
            let r: APIResponse
            if cancel {
                _ = try await api.call(.DELETE, "sys/generate-root/attempt", doing: "canceling root token generation")
                Out.print("Success! Root token generation canceled (if there was one)")
                return
            } else if start {
                var body: [String: JSONValue] = [:]
                if let otp, !otp.isEmpty { body["otp"] = .string(otp) }
                r = try await api.call(.PUT, "sys/generate-root/attempt", body: .object(body), doing: "initializing root generation")
            } else if status || key == nil {
                r = try await api.call(.GET, "sys/generate-root/attempt", doing: "getting root generation status")
            } else {
                var key = self.key ?? ""
                if key == "-" { key = String(decoding: Input.readStdin(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
                var n = nonce ?? ""
                if n.isEmpty {
                    let s = try await api.call(.GET, "sys/generate-root/attempt", doing: "getting root generation status")
                    n = s.json?["nonce"]?.stringValue ?? ""
                }
                r = try await api.call(.PUT, "sys/generate-root/update", body: ["key": .string(key), "nonce": .string(n)], doing: "submitting the key share")
            }
            let j = r.json ?? .null
            if output.json {
                Out.print(Out.prettyJSON(j))
                return
            }
            var rows: [[String]] = [
                ["Nonce", Out.display(j["nonce"] ?? "")],
                ["Started", Out.display(j["started"] ?? false)],
                ["Progress", "\(Out.display(j["progress"] ?? 0))/\(Out.display(j["required"] ?? 0))"],
                ["Complete", Out.display(j["complete"] ?? false)],
            ]
            if let e = j["encoded_token"]?.stringValue, !e.isEmpty { rows.append(["Encoded Token", e]) }
            if let o = j["otp"]?.stringValue, !o.isEmpty { rows.append(["OTP", o]) }
            rows.append(["OTP Length", Out.display(j["otp_length"] ?? 0)])
            Out.print(Out.columns(rows))
        }
    }
}
