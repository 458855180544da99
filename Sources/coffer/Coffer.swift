import ArgumentParser
import CofferSDK
import DatabaseSecrets
import Engines
import Foundation
import Gateway
import LDAPAuth
import Logging
import ServiceLifecycle
import TenantCore
import UnixSignals
import Audit

@main
struct Coffer: AsyncParsableCommand {
    static let version = "0.1.0"
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "Coffer: a multi-tenant, Vault-compatible secrets server.",
        version: version,
        subcommands: [
            ServerCommand.self, StatusCommand.self, OperatorCommand.self, LoginCommand.self, UnwrapCommand.self,
            ReadCommand.self, WriteCommand.self, ListCommand.self, DeleteCommand.self, PatchCommand.self,
            KVCommand.self, PolicyCommand.self, TokenCommand.self, SecretsCommand.self, AuthCommand.self,
            PathHelpCommand.self, AuditCommand.self, NamespaceCommand.self, TenantCommand.self,
        ])

    /// Vault's single-dash long flags are rewritten to `--` first; usage errors exit 2 (Vault's
    /// code) instead of ArgumentParser's 64; `ExitCode`s thrown by commands are kept.
    static func main() async {
        let args = VaultArguments.rewrite(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(args)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// The engines this build ships: the catalog the core mounts from.
enum Catalog {
    static let engines = EngineCatalog(secrets: ["kv": KVEngine.factory, "database": DatabaseEngine.factory, "transit": TransitBackend.factory, "pki": PKIBackend.factory], auth: ["userpass": UserpassBackend.factory, "approle": AppRoleBackend.factory, "jwt": JWTBackend.factory, "oidc": JWTBackend.factory, "ldap": LDAPBackend.factory, "kubernetes": KubernetesBackend.factory])
}

