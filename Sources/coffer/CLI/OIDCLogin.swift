#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import CofferSDK
import Foundation

/// `coffer login -method=oidc`, as Vault's CLI does it: listen on a loopback port
/// (`listenaddress`, default localhost, `port` 8250), ask the server for the provider's
/// authorization URL with that callback as the redirect URI, open it in a browser (or print
/// it with `skip_browser=true`), wait for the provider to send the browser back with a code,
/// and hand code and state to the server's `oidc/callback`. A random client nonce binds the
/// callback to this process.
enum OIDCLogin {
    struct Callback {
        var code: String
        var state: String
        var error: String
    }

    /// Runs the flow; returns what `oidc/callback` answered.
    static func run(api: API, mount: String, options: [String: JSONValue]) async throws -> APIResponse {
        let host = options["listenaddress"]?.stringValue ?? "localhost"
        let portText = options["port"]?.stringValue ?? "8250"
        guard let port = UInt16(portText) else {
            Out.err("Error authenticating: invalid port \"\(portText)\"")
            throw ExitCode(2)
        }
        let callbackHost = options["callbackhost"]?.stringValue ?? host
        let callbackPort = options["callbackport"]?.stringValue ?? portText
        let redirect = "http://\(callbackHost):\(callbackPort)/oidc/callback"
        let listener = try Listener(host: host == "localhost" ? "127.0.0.1" : host, port: port)
        let nonce = Base64URL.encode(SecureRandom.bytes(20))
        var body: [String: JSONValue] = ["redirect_uri": .string(redirect), "client_nonce": .string(nonce)]
        if let role = options["role"] { body["role"] = role }
        let started = try await api.call(.POST, "auth/\(mount)/oidc/auth_url", body: .object(body), token: "", doing: "authenticating")
        guard let url = started.data?["auth_url"]?.stringValue, !url.isEmpty else {
            Out.err("Error authenticating: the server gave no authorization URL (is \(redirect) among the role's allowed_redirect_uris?)")
            throw ExitCode(2)
        }
        let skip = ["true", "1", "t"].contains(options["skip_browser"]?.stringValue?.lowercased() ?? "")
        if skip {
            Out.err("Complete the login via your OIDC provider. Open this URL in your browser:\n\n    \(url)\n")
        } else {
            Out.err("Complete the login via your OIDC provider. Launching browser to:\n\n    \(url)\n")
            openBrowser(url)
        }
        Out.err("Waiting for OIDC authentication to complete...")
        let cb = try await listener.awaitCallback(timeout: 300)
        if !cb.error.isEmpty {
            Out.err("Error authenticating: the provider answered \(cb.error)")
            throw ExitCode(2)
        }
        return try await api.call(.GET, "auth/\(mount)/oidc/callback", query: [("code", cb.code), ("state", cb.state), ("client_nonce", nonce)],
                                  token: "", doing: "authenticating")
    }

    static func openBrowser(_ url: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["xdg-open", url]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try? p.run()
    }

    /// A one-shot HTTP listener on loopback for the provider's redirect.
    final class Listener: @unchecked Sendable {
        let fd: Int32

        init(host: String, port: UInt16) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw Self.fail("cannot open a socket") }
            var yes: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw Self.fail("invalid listen address \(host)") }
            let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard bound == 0, listen(fd, 4) == 0 else {
                close(fd)
                throw Self.fail("cannot listen on \(host):\(port) for the OIDC callback")
            }
        }

        deinit { close(fd) }

        static func fail(_ why: String) -> ExitCode {
            Out.err("Error authenticating: \(why)")
            return ExitCode(2)
        }

        /// The first request to /oidc/callback; the browser gets a page saying it may close.
        func awaitCallback(timeout: Int) async throws -> Callback {
            let fd = self.fd
            return try await withCheckedThrowingContinuation { (k: CheckedContinuation<Callback, any Error>) in
                Thread.detachNewThread {
                    let deadline = Date().addingTimeInterval(TimeInterval(timeout))
                    while Date() < deadline {
                        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                        guard poll(&p, 1, 1000) > 0 else { continue }
                        let conn = accept(fd, nil, nil)
                        guard conn >= 0 else { continue }
                        var buf = [UInt8](repeating: 0, count: 16384)
                        let n = read(conn, &buf, buf.count)
                        let head = n > 0 ? String(decoding: buf[..<n], as: UTF8.self) : ""
                        let line = head.split(separator: "\r\n").first.map(String.init) ?? ""
                        let parts = line.split(separator: " ")
                        guard parts.count >= 2, parts[1].hasPrefix("/oidc/callback") else {
                            Self.reply(conn, 404, "Not found.")
                            continue
                        }
                        var params: [String: String] = [:]
                        if let q = parts[1].split(separator: "?", maxSplits: 1).dropFirst().first {
                            for pair in q.split(separator: "&") {
                                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                                let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                                let value = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
                                params[key] = value
                            }
                        }
                        Self.reply(conn, 200, params["error"] == nil ? "Signed in to Coffer. You may close this window." : "Login failed.")
                        k.resume(returning: Callback(code: params["code"] ?? "", state: params["state"] ?? "", error: params["error"] ?? ""))
                        return
                    }
                    k.resume(throwing: Self.fail("timed out waiting for the OIDC callback"))
                }
            }
        }

        static func reply(_ conn: Int32, _ status: Int, _ text: String) {
            let html = "<!DOCTYPE html><html><body><p>\(text)</p></body></html>"
            let response = "HTTP/1.1 \(status) \(status == 200 ? "OK" : "Not Found")\r\nContent-Type: text/html\r\nContent-Length: \(html.utf8.count)\r\nConnection: close\r\n\r\n\(html)"
            _ = response.withCString { write(conn, $0, strlen($0)) }
            close(conn)
        }
    }
}
