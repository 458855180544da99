import CofferSDK
import TenantCore

/// Builds the OpenAPI 3 document of every mounted path from the route declarations
/// (`GET /v1/sys/internal/specs/openapi`), the way Vault derives it from its framework.
enum OpenAPIDocument {
    static func build(_ ns: NamespaceCore, version: String) -> JSONValue {
        var paths: [String: JSONValue] = [:]
        let mounts = (ns.mounts(kind: .secret) + ns.mounts(kind: .auth)).sorted { $0.routePath < $1.routePath }
        var seen = Set<String>()
        for m in mounts where seen.insert(m.routePath).inserted {
            for route in m.backend.routes {
                let (template, params) = pathTemplate(mount: m.routePath, pattern: route.pattern)
                var item = paths[template]?.objectValue ?? [:]
                let captureNames = Set(params)
                let bodyFields = route.fields.filter { !captureNames.contains($0.name) }
                item["parameters"] = .array(params.map { p in
                    ["name": .string(p), "in": "path", "required": true, "schema": ["type": "string"],
                     "description": .string(route.fields.first { $0.name == p }?.description ?? p)]
                })
                let tag: JSONValue = .array([.string(m.entry.type == "system" ? "system" : m.kind == .auth ? "auth" : "secrets")])
                let summary = route.summary.isEmpty ? "\(m.entry.type) \(route.pattern)" : route.summary
                func op(_ id: String, body: Bool, query: [JSONValue] = []) -> JSONValue {
                    var o: [String: JSONValue] = [
                        "summary": .string(summary),
                        "operationId": .string(operationID(id, template)),
                        "tags": tag,
                        "responses": [
                            "200": ["description": "OK"], "204": ["description": "empty body"],
                            "400": ["description": "invalid request"], "403": ["description": "permission denied"],
                            "404": ["description": "not found"],
                        ],
                    ]
                    if !query.isEmpty { o["parameters"] = .array(query) }
                    if body && !bodyFields.isEmpty {
                        o["requestBody"] = ["required": false, "content": ["application/json": ["schema": schema(bodyFields)]]]
                    }
                    return .object(o)
                }
                for operation in route.operations.sorted(by: { $0.rawValue < $1.rawValue }) {
                    switch operation {
                    case .read:
                        item["get"] = op("read", body: false)
                    case .list:
                        let listParam: JSONValue = ["name": "list", "in": "query", "required": true, "schema": ["type": "string", "enum": ["true"]]]
                        if item["get"] == nil { item["get"] = op("list", body: false, query: [listParam]) }
                    case .create, .update:
                        item["post"] = op("write", body: true)
                    case .patch:
                        item["patch"] = op("patch", body: true)
                    case .delete:
                        item["delete"] = op("delete", body: false)
                    case .help:
                        break
                    }
                }
                paths[template] = .object(item)
            }
        }
        for (path, methods, summary) in nodePaths {
            var item: [String: JSONValue] = [:]
            for m in methods {
                item[m] = [
                    "summary": .string(summary), "operationId": .string(operationID(m, path)), "tags": ["system"],
                    "responses": ["200": ["description": "OK"], "400": ["description": "invalid request"], "503": ["description": "sealed"]],
                ]
            }
            paths[path] = .object(item)
        }
        return [
            "openapi": "3.0.2",
            "info": ["title": "Coffer API", "description": "HTTP API of Coffer, compatible with Vault's.", "version": .string(version),
                     "license": ["name": "MPL-2.0", "url": "https://www.mozilla.org/en-US/MPL/2.0"]],
            "paths": .object(paths),
            "components": ["securitySchemes": ["vaultToken": ["type": "apiKey", "in": "header", "name": "X-Vault-Token"]]],
            "security": [["vaultToken": []]],
        ]
    }

    /// Endpoints the gateway answers itself (they work while sealed, or are not routes of a backend).
    static let nodePaths: [(String, [String], String)] = [
        ("/sys/init", ["get", "post"], "Initialization status; initialize a new server."),
        ("/sys/seal-status", ["get"], "Seal status."),
        ("/sys/unseal", ["post"], "Submit an unseal key share."),
        ("/sys/health", ["get"], "Health, with Vault's status codes."),
        ("/sys/leader", ["get"], "HA leader."),
        ("/sys/ha-status", ["get"], "HA nodes: the active node and the standbys heard from recently."),
        ("/sys/step-down", ["post"], "The active node steps down (sudo)."),
        ("/sys/metrics", ["get"], "Metrics (format=prometheus for the text format)."),
        ("/sys/internal/specs/openapi", ["get"], "This document."),
        ("/sys/storage/snapshot", ["get", "post"], "Download a storage snapshot (binary); upload one to restore it (root token)."),
        ("/sys/storage/snapshot-force", ["post"], "Restore a storage snapshot taken from another cluster (root token)."),
        ("/sys/rekey/init", ["get", "post", "delete"], "Rekey progress; start a rekey of the unseal keys; cancel it."),
        ("/sys/rekey/update", ["post"], "Submit a current unseal key share to the rekey."),
        ("/sys/rekey/verify", ["get", "post", "delete"], "Verification progress; submit a new share; restart verification."),
        ("/sys/rekey/backup", ["get", "delete"], "PGP-encrypted backup of new shares (none without PGP)."),
        ("/sys/rekey-recovery-key/init", ["get", "post", "delete"], "The same for recovery keys (auto seals)."),
        ("/sys/rekey-recovery-key/update", ["post"], "Submit a current recovery key share to the rekey."),
        ("/sys/rekey-recovery-key/verify", ["get", "post", "delete"], "Verification of new recovery shares."),
        ("/sys/generate-root/attempt", ["get", "post", "delete"], "Root token generation progress; start one (otp); cancel it."),
        ("/sys/generate-root/update", ["post"], "Submit a key share to the root token generation."),
    ]

    /// `/secret/data/{path}` and its parameters from a route pattern.
    static func pathTemplate(mount: String, pattern: String) -> (String, [String]) {
        var p = pattern
        if p.hasSuffix("/?") { p.removeLast(2) }
        var params: [String] = []
        let segments = p.split(separator: "/", omittingEmptySubsequences: false).map { seg -> String in
            if seg.hasPrefix(":") || seg.hasPrefix("*") {
                let name = String(seg.dropFirst())
                params.append(name)
                return "{\(name)}"
            }
            return String(seg)
        }
        var path = "/" + mount + segments.joined(separator: "/")
        if path.hasSuffix("/") && path.count > 1 { path.removeLast() }
        return (path, params)
    }

    static func operationID(_ verb: String, _ template: String) -> String {
        let cleaned = template.map { $0.isLetter || $0.isNumber ? $0 : "-" }
        return verb + "-" + String(cleaned).split(separator: "-").joined(separator: "-")
    }

    static func schema(_ fields: [Field]) -> JSONValue {
        var props: [String: JSONValue] = [:]
        for f in fields {
            var s: [String: JSONValue]
            switch f.type {
            case .string: s = ["type": "string"]
            case .int: s = ["type": "integer"]
            case .bool: s = ["type": "boolean"]
            case .duration: s = ["type": "string", "format": "duration"]
            case .commaStringSlice: s = ["type": "array", "items": ["type": "string"]]
            case .map: s = ["type": "object"]
            case .keyValuePairs: s = ["type": "object", "additionalProperties": ["type": "string"]]
            case .any: s = [:]
            }
            if !f.description.isEmpty { s["description"] = .string(f.description) }
            if let d = f.defaultValue, !d.isNull { s["default"] = d }
            props[f.name] = .object(s)
        }
        var o: [String: JSONValue] = ["type": "object", "properties": .object(props)]
        let required = fields.filter(\.required).map { JSONValue.string($0.name) }
        if !required.isEmpty { o["required"] = .array(required) }
        return .object(o)
    }
}
