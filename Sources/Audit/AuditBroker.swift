import CofferSDK
import Foundation
import Logging
import Synchronization

/// Node-level settings of the audit broker (not per device).
public struct AuditConfiguration: Sendable {
    /// Where the device table is kept in the broker's storage.
    public var storageKey: String
    /// While a device is down, how often a write may try to open it again; other writes in
    /// between fail at once, so a dead peer costs one attempt per interval, not per request.
    public var retryInterval: Duration
    /// The syslog socket used when a `syslog` device has no `socket_path` option.
    public var syslogSocketPath: String

    public init(storageKey: String = "core/audit", retryInterval: Duration = .seconds(1), syslogSocketPath: String = "/dev/log") {
        self.storageKey = storageKey
        self.retryInterval = retryInterval
        self.syslogSocketPath = syslogSocketPath
    }
}

/// The audit devices of a node and the one place requests are audited through.
///
/// Devices are enabled in the root namespace (`sys/audit`) and see every namespace's
/// requests, subject to their `filter`. The table — path, type, description, options,
/// local, the device's HMAC salt (32 random bytes) and its chain head — is one record in
/// the storage given at init (the root barrier), so salts never leave the barrier.
///
/// Blocking semantics: with no device enabled, `logRequest`/`logResponse` do nothing.
/// Otherwise the entry goes to every device whose filter matches, all at once, and the
/// call returns when each has answered; it succeeds when at least one device wrote the
/// entry, and otherwise throws `CofferError(.auditFailed)` (a 500): the caller must then
/// not run the request (request entry) or must not return the response (response entry).
/// When no device's filter matches, nothing is written and the call succeeds.
///
/// Chain heads advance in memory as devices write; `flushHeads()` (every second from
/// `run()`, and at enable, disable, reopen and `close()`) stores them. After a crash a
/// file device reads its head back from the file itself.
public final class AuditBroker: Sendable {
    let storage: any LogicalStorage
    let configuration: AuditConfiguration
    let logger: Logger
    let devices = Mutex<[ActiveDevice]>([])
    /// Serializes changes of the table and every write of its record.
    let tableLock = AsyncMutex()
    /// The heads last written to storage, by device id.
    let storedHeads = Mutex<[String: AuditChainHead]>([:])

    public init(storage: any LogicalStorage, configuration: AuditConfiguration = AuditConfiguration(), logger: Logger = Logger(label: "coffer.audit")) {
        self.storage = storage
        self.configuration = configuration
        self.logger = logger
    }

    /// One enabled device.
    final class ActiveDevice: Sendable {
        let record: AuditDeviceRecord
        let salt: AuditSalt
        let format: AuditFormat
        let filter: AuditFilter?
        let device: any AuditDevice
        let worker: AuditDeviceWorker

        var path: String { record.path }

        init(record: AuditDeviceRecord, options: AuditDeviceOptions, salt: [UInt8], configuration: AuditConfiguration, logger: Logger) {
            self.record = record
            self.salt = AuditSalt(salt)
            format = options.format
            filter = options.filter
            let retry = configuration.retryInterval
            switch options.transport {
            case .file(let c):
                let d = FileAuditDevice(path: record.path, configuration: c, prefix: options.prefix, head: record.chain, retryInterval: retry, logger: logger)
                device = d
                worker = d.worker
            case .syslog(let c):
                let d = SyslogAuditDevice(path: record.path, configuration: c, prefix: options.prefix, head: record.chain, retryInterval: retry, logger: logger)
                device = d
                worker = d.worker
            case .socket(let c):
                let d = SocketAuditDevice(path: record.path, configuration: c, prefix: options.prefix, head: record.chain, retryInterval: retry, logger: logger)
                device = d
                worker = d.worker
            }
        }
    }

    // MARK: sys/audit

    /// Whether any device is enabled (the request path can skip building audit input).
    public var hasDevices: Bool { devices.withLock { !$0.isEmpty } }

    /// Enables a device: validates the options, opens the destination and writes its first
    /// (link) record, then stores it. Anything wrong — bad options, a path in use, a file
    /// that cannot be opened, a peer that does not answer — is a 400 and nothing is stored.
    public func enable(path rawPath: String, type: String, description: String = "", options: [String: String] = [:], local: Bool = false) async throws {
        let path = try Self.normalize(rawPath)
        let parsed = try AuditDeviceOptions(type: type, options: options, configuration: configuration)
        try await tableLock.withLock {
            let current = self.devices.withLock { $0 }
            if let clash = current.first(where: { $0.path.hasPrefix(path) || path.hasPrefix($0.path) }) {
                throw CofferError.invalid("path already in use at \"\(clash.path)\"")
            }
            let salt = SecureRandom.bytes(32)
            let record = AuditDeviceRecord(
                path: path, type: type, description: description, options: options, local: local,
                id: RandomID.secureUUID(), salt: Hex.encode(salt), chain: .genesis)
            let device = ActiveDevice(record: record, options: parsed, salt: salt, configuration: self.configuration, logger: self.logger)
            do {
                try await device.worker.open(reason: "enable")
            } catch {
                await device.worker.close()
                throw CofferError.invalid("cannot enable audit device \"\(path)\": \(Self.detail(error))")
            }
            do {
                try await self.store(current + [device])
            } catch {
                await device.worker.close()
                throw error
            }
            self.devices.withLock { $0 = (current + [device]).sorted { $0.path < $1.path } }
            self.logger.info("audit device enabled", metadata: ["audit.device": "\(path)", "audit.type": "\(type)"])
        }
    }

    /// Disables a device (no error when none is at `path`, as Vault answers). Entries
    /// already queued for it are written before it closes.
    public func disable(path rawPath: String) async throws {
        let path = try Self.normalize(rawPath)
        try await tableLock.withLock {
            let current = self.devices.withLock { $0 }
            guard let device = current.first(where: { $0.path == path }) else { return }
            let remaining = current.filter { $0 !== device }
            try await self.store(remaining)
            self.devices.withLock { $0.removeAll { $0 === device } }
            await device.worker.close()
            self.logger.info("audit device disabled", metadata: ["audit.device": "\(path)"])
        }
    }

    /// `sys/audit` (LIST and GET): `"file/": {type, description, options, local, path}`.
    public func list() -> [String: JSONValue] {
        let current = devices.withLock { $0 }
        var out: [String: JSONValue] = [:]
        for d in current {
            let r = d.record
            out[r.path] = [
                "type": .string(r.type),
                "description": .string(r.description),
                "options": .object(r.options.mapValues { .string($0) }),
                "local": .bool(r.local),
                "path": .string(r.path),
            ]
        }
        return out
    }

    /// `sys/audit-hash/:path`: `hmac-sha256:<hex>` of `input` with that device's salt, the
    /// value its entries carry in place of `input`.
    public func hash(path rawPath: String, input: String) throws -> String {
        let path = try Self.normalize(rawPath)
        guard let device = devices.withLock({ $0.first { $0.path == path } }) else {
            throw CofferError.invalid("unknown audit device \"\(path)\"")
        }
        return device.salt.hmac(input)
    }

    /// The chain head a device has reached (for `coffer audit verify --head`).
    public func chainHead(path rawPath: String) -> AuditChainHead? {
        guard let path = try? Self.normalize(rawPath) else { return nil }
        return devices.withLock { $0.first { $0.path == path } }?.worker.chainHead
    }

    // MARK: lifecycle

    /// After unseal: reads the table and opens every device, each starting with a link
    /// record to its stored head. A device that cannot be opened stays enabled and down
    /// (its writes fail and retry) so a dead peer cannot stop an unseal; the answer maps
    /// such paths to the reason. Throws on storage errors and on a stored device whose
    /// options no longer validate (fail closed).
    @discardableResult
    public func load() async throws -> [String: String] {
        try await tableLock.withLock {
            let old = self.devices.withLock { d in
                defer { d = [] }
                return d
            }
            for d in old { await d.worker.close() }
            guard let table = try await self.storage.getCodable(AuditTable.self, self.configuration.storageKey) else {
                return [:]
            }
            var loaded: [ActiveDevice] = []
            for record in table.devices {
                let options: AuditDeviceOptions
                do {
                    options = try AuditDeviceOptions(type: record.type, options: record.options, configuration: self.configuration)
                } catch {
                    for d in loaded { await d.worker.close() }
                    throw CofferError.internalError("stored audit device \"\(record.path)\" is invalid: \(Self.detail(error))")
                }
                guard let salt = Hex.decode(record.salt), salt.count == 32 else {
                    for d in loaded { await d.worker.close() }
                    throw CofferError.internalError("stored audit device \"\(record.path)\" has a corrupt salt")
                }
                loaded.append(ActiveDevice(record: record, options: options, salt: salt, configuration: self.configuration, logger: self.logger))
            }
            let failures = await Self.each(loaded) { try await $0.worker.open(reason: "load") }
            self.devices.withLock { $0 = loaded.sorted { $0.path < $1.path } }
            do {
                try await self.store(loaded)
            } catch let e as CofferError where e.code == .standbyWrite {
                // An HA standby keeps its chain heads in its own files only.
            }
            for (path, reason) in failures {
                self.logger.error("audit device failed to open", metadata: ["audit.device": "\(path)", "error": "\(reason)"])
            }
            return failures
        }
    }

    /// SIGHUP: every device closes and opens its destination again (log rotation), with a
    /// link record first. Answers the devices that failed, with the reason.
    @discardableResult
    public func reopenAll() async -> [String: String] {
        let failures = await Self.each(devices.withLock { $0 }) { try await $0.worker.reopen() }
        do {
            try await flushHeads()
        } catch {
            logger.warning("cannot store audit chain heads", metadata: ["error": "\(error)"])
        }
        return failures
    }

    /// HA standby: the table changed in storage (another node wrote it). Reloads the devices
    /// only when the set of devices changed, not when just the other node's heads moved.
    public func reloadIfDevicesChanged() async throws {
        let stored = try await storage.getCodable(AuditTable.self, configuration.storageKey)
        let storedIDs = Set(stored?.devices.map(\.id) ?? [])
        let loadedIDs = Set(devices.withLock { $0.map(\.record.id) })
        guard storedIDs != loadedIDs else { return }
        for (path, reason) in try await load() {
            logger.error("audit device failed to open; it retries on each entry", metadata: ["audit.path": "\(path)", "error": "\(reason)"])
        }
    }

    /// Stores the chain heads that moved since they were last stored.
    public func flushHeads() async throws {
        try await tableLock.withLock {
            let current = self.devices.withLock { $0 }
            if self.headsMoved(current) { try await self.store(current) }
        }
    }

    /// Runs until cancelled, storing moved chain heads every `flushInterval`, and once more
    /// at the end. The integrator runs it as a `Service` of the server's `ServiceGroup`.
    public func run(flushInterval: Duration = .seconds(1)) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: flushInterval)
            } catch {
                break
            }
            do {
                try await flushHeads()
            } catch let e as CofferError where e.code == .standbyWrite {
                // An HA standby: its heads live in its files; the active node stores its own.
            } catch {
                logger.warning("cannot store audit chain heads", metadata: ["error": "\(error)"])
            }
        }
        try? await flushHeads()
    }

    /// Seal or shutdown: finishes queued writes, stores the final heads, closes every
    /// device. Call it while the barrier is still unsealed; `load()` opens them again.
    public func close() async {
        _ = try? await tableLock.withLock {
            let current = self.devices.withLock { d in
                defer { d = [] }
                return d
            }
            for d in current { await d.worker.close() }
            // Nothing moved since the last flush (a node that handed over flushed first): no write.
            guard self.headsMoved(current) else { return }
            do {
                try await self.store(current)
            } catch {
                self.logger.warning("cannot store audit chain heads", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: the request path

    /// Audits a request before it runs. Throws `CofferError(.auditFailed)` when no device
    /// accepted the entry: the request must then not run.
    public func logRequest(_ request: AuditRequestInfo) async throws {
        try await log(request.filterFields, failure: "audit: no audit device accepted the entry; the request was not processed") { d, time in
            AuditEntry.entry(
                request, error: request.error, time: time, type: "request", format: d.format, salt: d.salt,
                memo: request.renderMemo, memoKey: d.record.id, response: nil)
        }
    }

    /// Audits a response (or a failed operation) before it is returned. Throws
    /// `CofferError(.auditFailed)` when no device accepted the entry: the response must then
    /// be withheld and the error returned instead.
    public func logResponse(_ response: AuditResponseInfo) async throws {
        let request = response.request
        try await log(request.filterFields, failure: "audit: no audit device accepted the response entry; the response was withheld") { d, time in
            AuditEntry.entry(
                request, error: response.error ?? request.error, time: time, type: "response", format: d.format, salt: d.salt,
                memo: request.renderMemo, memoKey: d.record.id, response: response)
        }
    }

    func log(_ fields: AuditFilter.Fields, failure: String, entry: (ActiveDevice, String) -> AuditBody) async throws {
        let current = devices.withLock { $0 }
        guard !current.isEmpty else { return }
        let time = AuditEntry.timestamp()
        var jobs: [(ActiveDevice, AuditBody)] = []
        jobs.reserveCapacity(current.count)
        for d in current where d.filter?.matches(fields) ?? true {
            jobs.append((d, entry(d, time)))
        }
        guard !jobs.isEmpty else { return }
        let outcome = await withCheckedContinuation { (c: CheckedContinuation<FanOut.Outcome, Never>) in
            let fan = FanOut(count: jobs.count, continuation: c)
            for (d, e) in jobs {
                d.worker.submit(.entry(e) { fan.done(d.path, $0) })
            }
        }
        if outcome.accepted == 0 {
            logger.error("audit failed on every device", metadata: ["audit.errors": "\(outcome.errors.joined(separator: "; "))"])
            throw CofferError(.auditFailed, failure)
        }
    }

    /// Waits for every device's answer to one entry.
    final class FanOut: Sendable {
        struct Outcome: Sendable {
            var remaining: Int
            var accepted = 0
            var errors: [String] = []
        }

        let state: Mutex<Outcome>
        let continuation: CheckedContinuation<Outcome, Never>

        init(count: Int, continuation: CheckedContinuation<Outcome, Never>) {
            state = Mutex(Outcome(remaining: count))
            self.continuation = continuation
        }

        func done(_ path: String, _ result: Result<Void, any Error>) {
            let finished: Outcome? = state.withLock { s in
                switch result {
                case .success: s.accepted += 1
                case .failure(let e): s.errors.append("\(path): \(e)")
                }
                s.remaining -= 1
                return s.remaining == 0 ? s : nil
            }
            if let finished { continuation.resume(returning: finished) }
        }
    }

    // MARK: helpers

    /// Writes the table record. Called with `tableLock` held.
    /// Whether a device's chain head differs from the stored one.
    func headsMoved(_ devices: [ActiveDevice]) -> Bool {
        storedHeads.withLock { stored in devices.contains { stored[$0.record.id] != $0.worker.chainHead } }
    }

    func store(_ devices: [ActiveDevice]) async throws {
        var records: [AuditDeviceRecord] = []
        var heads: [String: AuditChainHead] = [:]
        for d in devices {
            var r = d.record
            r.chain = d.worker.chainHead
            records.append(r)
            heads[r.id] = r.chain
        }
        try await storage.putCodable(configuration.storageKey, AuditTable(devices: records))
        storedHeads.withLock { $0 = heads }
    }

    /// Runs `operation` on every device at once; answers the failures by path.
    static func each(_ devices: [ActiveDevice], _ operation: @escaping @Sendable (ActiveDevice) async throws -> Void) async -> [String: String] {
        await withTaskGroup(of: (String, String?).self) { group in
            for d in devices {
                group.addTask {
                    do {
                        try await operation(d)
                        return (d.path, nil)
                    } catch {
                        return (d.path, detail(error))
                    }
                }
            }
            var out: [String: String] = [:]
            for await (path, failure) in group { out[path] = failure }
            return out
        }
    }

    /// `file` → `file/`; refuses empty paths and `..`.
    package static func normalize(_ raw: String) throws -> String {
        let trimmed = raw.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !trimmed.isEmpty else { throw CofferError.invalid("audit device path cannot be empty") }
        guard !trimmed.contains(".."), !trimmed.contains("//"), trimmed.utf8.count <= 256,
            trimmed.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else {
            throw CofferError.invalid("invalid audit device path")
        }
        return trimmed + "/"
    }

    /// The client-safe reason of a device error, without repeating the device path.
    static func detail(_ error: any Error) -> String {
        guard let e = error as? CofferError else { return "\(error)" }
        // A transport failure names the device in its message; its cause is the bare reason.
        if let io = e.cause as? AuditIOError { return io.message }
        return e.message
    }
}

/// The stored table: one record for every device.
struct AuditTable: Codable, Sendable {
    var devices: [AuditDeviceRecord]
}

/// One device as stored behind the barrier.
struct AuditDeviceRecord: Codable, Sendable {
    var path: String
    var type: String
    var description: String
    var options: [String: String]
    var local: Bool
    /// Fresh at every enable: a device enabled again at the same path is a new device.
    var id: String
    /// Hex of the 32-byte HMAC key.
    var salt: String
    var chain: AuditChainHead
}

/// A device's options, validated: Vault's option names, plus Coffer's `fsync` (file),
/// `socket_path` and `syslog_format` (syslog).
struct AuditDeviceOptions: Sendable {
    enum Transport: Sendable {
        case file(FileAuditDeviceConfiguration)
        case syslog(SyslogAuditDeviceConfiguration)
        case socket(SocketAuditDeviceConfiguration)
    }

    var transport: Transport
    var format: AuditFormat
    var prefix: String
    var filter: AuditFilter?

    static let common: Set<String> = ["format", "prefix", "log_raw", "hmac_accessor", "elide_list_responses", "filter"]
    static let specific: [String: Set<String>] = [
        "file": ["file_path", "path", "mode", "fsync"],
        "syslog": ["facility", "tag", "socket_path", "syslog_format"],
        "socket": ["address", "socket_type", "write_timeout"],
    ]

    init(type: String, options: [String: String], configuration: AuditConfiguration) throws {
        guard let allowed = Self.specific[type] else {
            throw CofferError.invalid("unknown audit device type \"\(type)\" (expected file, syslog or socket)")
        }
        for key in options.keys.sorted() where !Self.common.contains(key) && !allowed.contains(key) {
            throw CofferError.invalid("unknown option \"\(key)\" for a \(type) audit device")
        }
        if let f = options["format"], f != "json" {
            throw CofferError.invalid("unsupported audit format \"\(f)\": only json is supported")
        }
        format = AuditFormat(
            logRaw: try Self.bool(options, "log_raw", default: false),
            hmacAccessor: try Self.bool(options, "hmac_accessor", default: true),
            elideListResponses: try Self.bool(options, "elide_list_responses", default: false))
        prefix = options["prefix"] ?? ""
        guard !prefix.contains(where: { $0 == "\n" || $0 == "\r" }) else {
            throw CofferError.invalid("the prefix option cannot contain a line break")
        }
        if let text = options["filter"], !text.trimmingCharacters(in: .whitespaces).isEmpty {
            filter = try AuditFilter(parsing: text)
        } else {
            filter = nil
        }
        switch type {
        case "file":
            guard let path = options["file_path"] ?? options["path"], !path.isEmpty else {
                throw CofferError.invalid("file_path is required")
            }
            if path != "stdout" && path != "discard" && !path.hasPrefix("/") {
                throw CofferError.invalid("file_path must be an absolute path, \"stdout\" or \"discard\"")
            }
            var mode: UInt32? = 0o600
            if let text = options["mode"] {
                guard let m = UInt32(text, radix: 8), m <= 0o777 else {
                    throw CofferError.invalid("invalid mode \"\(text)\": expected octal permission bits such as 0600")
                }
                mode = m == 0 ? nil : m
            }
            transport = .file(FileAuditDeviceConfiguration(filePath: path, mode: mode, fsync: try Self.bool(options, "fsync", default: false)))
        case "syslog":
            let name = (options["facility"] ?? "AUTH").lowercased()
            guard let facility = SyslogAuditDeviceConfiguration.facilities[name] else {
                throw CofferError.invalid("unknown syslog facility \"\(options["facility"] ?? "")\"")
            }
            let tag = options["tag"] ?? "coffer"
            guard !tag.isEmpty, tag.utf8.count <= 48, tag.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && $0 != ":" && $0 != "[" }) else {
                throw CofferError.invalid("invalid syslog tag \"\(tag)\": use up to 48 printable characters without spaces, ':' or '['")
            }
            let socketPath = options["socket_path"] ?? configuration.syslogSocketPath
            guard socketPath.hasPrefix("/") else { throw CofferError.invalid("socket_path must be an absolute path") }
            let framingName = options["syslog_format"] ?? "rfc3164"
            guard let framing = SyslogAuditDeviceConfiguration.Framing(rawValue: framingName) else {
                throw CofferError.invalid("invalid syslog_format \"\(framingName)\": expected rfc3164 or rfc5424")
            }
            transport = .syslog(SyslogAuditDeviceConfiguration(facility: facility, tag: tag, socketPath: socketPath, framing: framing))
        default:
            guard let address = options["address"], !address.isEmpty else {
                throw CofferError.invalid("address is required")
            }
            let typeName = options["socket_type"] ?? "tcp"
            guard let socketType = SocketAuditDeviceConfiguration.SocketType(rawValue: typeName) else {
                throw CofferError.invalid("invalid socket_type \"\(typeName)\": expected tcp, udp or unix")
            }
            if socketType == .unix {
                guard address.hasPrefix("/") else { throw CofferError.invalid("a unix socket address must be an absolute path") }
            } else if AuditIO.hostAndPort(address) == nil {
                throw CofferError.invalid("invalid address \"\(address)\": expected host:port")
            }
            var timeout = Duration.seconds(2)
            if let text = options["write_timeout"] {
                guard let d = Self.duration(text), d > .zero, d <= .seconds(300) else {
                    throw CofferError.invalid("invalid write_timeout \"\(text)\": expected a duration such as 2s or 500ms (at most 5m)")
                }
                timeout = d
            }
            transport = .socket(SocketAuditDeviceConfiguration(address: address, socketType: socketType, writeTimeout: timeout))
        }
    }

    /// Go's `strconv.ParseBool`, as Vault reads these options.
    static func bool(_ options: [String: String], _ key: String, default value: Bool) throws -> Bool {
        guard let text = options[key] else { return value }
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": return true
        case "0", "f", "F", "false", "FALSE", "False": return false
        default: throw CofferError.invalid("invalid \(key) \"\(text)\": expected true or false")
        }
    }

    /// A Go duration (`2s`, `1.5s`, `500ms`, `1m30s`) or a number of seconds.
    static func duration(_ text: String) -> Duration? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(t) { return seconds.isFinite ? .milliseconds(Int64(seconds * 1000)) : nil }
        let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        var rest = Substring(t)
        var total = 0.0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let (unit, scale) = units.first(where: { rest.hasPrefix($0.0) && !(($0.0 == "m") && rest.hasPrefix("ms")) }) else { return nil }
            rest = rest.dropFirst(unit.count)
            total += value * scale
        }
        return .nanoseconds(Int64(total * 1e9))
    }
}
