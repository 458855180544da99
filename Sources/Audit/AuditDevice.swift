#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferSDK
import Foundation
import Logging
import Synchronization

/// Somewhere audit lines go: a file, the local syslog socket, or a network socket.
///
/// Every implementation owns one dedicated thread that does all of its I/O, so a slow
/// disk or peer never blocks the cooperative pool; calls are carried out in the order
/// they were made. `write` takes one complete line (prefix, JSON, newline) and returns
/// once the bytes are handed to the kernel. The broker writes through the same thread
/// with the hash chain (`AuditChain`); lines given to `write` directly are not chained.
public protocol AuditDevice: Sendable {
    func write(_ line: [UInt8]) async throws
    /// Closes and opens the destination again (SIGHUP, log rotation), then writes a link
    /// record naming the chain head.
    func reopen() async throws
    /// Finishes the queued writes, then closes; later calls fail.
    func close() async
}

// MARK: configurations

/// The `file` device: `file_path` (or `stdout`, `discard`), `mode`, `fsync`.
///
/// Durability: each batch of entries (everything queued while the previous write ran) is
/// one `write(2)` on a descriptor opened with `O_APPEND`, without user-space buffering, so
/// an acknowledged entry survives a crash of the process; with `fsync` the batch is also
/// `fdatasync`ed before it is acknowledged, so it survives a crash of the machine. Before
/// each batch the device checks that `file_path` still names the file it has open; when
/// the file was moved or deleted (rotation without SIGHUP) it opens the path again, and
/// fails the batch when it cannot. Parent directories are never created.
public struct FileAuditDeviceConfiguration: Sendable, Hashable {
    public enum Destination: Sendable, Hashable {
        case file(String)
        case stdout
        case discard
    }

    public var destination: Destination
    /// Permission bits applied to the file at every open; nil leaves them alone (`mode=0000`).
    public var mode: UInt32?
    public var fsync: Bool

    /// `filePath` "stdout" and "discard" mean those destinations, as in Vault.
    public init(filePath: String, mode: UInt32? = 0o600, fsync: Bool = false) {
        switch filePath {
        case "stdout": destination = .stdout
        case "discard": destination = .discard
        default: destination = .file(filePath)
        }
        self.mode = mode
        self.fsync = fsync
    }
}

/// The `syslog` device: one datagram per entry to the local syslog socket, framed as
/// RFC 3164 (`<PRI>Mmm dd hh:mm:ss tag[pid]: …`, local time, like glibc's `syslog(3)`) or
/// RFC 5424, with severity `info`. No libc `openlog` state is touched.
public struct SyslogAuditDeviceConfiguration: Sendable, Hashable {
    public enum Framing: String, Sendable, Hashable {
        case rfc3164, rfc5424
    }

    public static let facilities: [String: Int] = [
        "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
        "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18,
        "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
    ]

    /// Facility code (0...23).
    public var facility: Int
    public var tag: String
    /// The syslog daemon's socket; `/dev/log` unless configured (tests, other systems).
    public var socketPath: String
    public var framing: Framing
    /// How long one send may wait for a full syslog queue.
    public var writeTimeout: Duration

    public init(facility: Int = 4, tag: String = "coffer", socketPath: String = "/dev/log", framing: Framing = .rfc3164, writeTimeout: Duration = .seconds(2)) {
        self.facility = facility
        self.tag = tag
        self.socketPath = socketPath
        self.framing = framing
        self.writeTimeout = writeTimeout
    }
}

/// The `socket` device: newline-delimited entries over TCP or a unix stream socket, or
/// one datagram per entry over UDP.
///
/// Connecting and each batch of writes are bounded by `writeTimeout`; a batch that cannot
/// be sent in time fails and the connection is dropped (a partly sent line must not be
/// continued). A closed peer is noticed before the next write; the device then connects
/// again, and writes a link record first.
public struct SocketAuditDeviceConfiguration: Sendable, Hashable {
    public enum SocketType: String, Sendable, Hashable {
        case tcp, udp, unix
    }

    /// `host:port` (`[v6]:port`) for tcp and udp, a path for unix.
    public var address: String
    public var socketType: SocketType
    public var writeTimeout: Duration

    public init(address: String, socketType: SocketType = .tcp, writeTimeout: Duration = .seconds(2)) {
        self.address = address
        self.socketType = socketType
        self.writeTimeout = writeTimeout
    }
}

// MARK: devices

/// Appends entries to a file, to stdout, or nowhere. See `FileAuditDeviceConfiguration`.
public final class FileAuditDevice: AuditDevice {
    public let configuration: FileAuditDeviceConfiguration
    let worker: AuditDeviceWorker

    /// A device not yet opened; `path` names it in link records and errors (`file/`).
    public convenience init(path: String, configuration: FileAuditDeviceConfiguration, prefix: String = "", logger: Logger = Logger(label: "coffer.audit")) {
        self.init(path: path, configuration: configuration, prefix: prefix, head: .genesis, retryInterval: .seconds(1), logger: logger)
    }

    init(path: String, configuration: FileAuditDeviceConfiguration, prefix: String, head: AuditChainHead, retryInterval: Duration, logger: Logger) {
        self.configuration = configuration
        worker = AuditDeviceWorker(path: path, transport: FileAuditTransport(configuration), prefix: prefix, head: head, retryInterval: retryInterval, logger: logger)
    }

    /// Opens the destination and writes the first link record; throws when it cannot.
    public func open() async throws { try await worker.open(reason: "enable") }
    public func write(_ line: [UInt8]) async throws { try await worker.write(line) }
    public func reopen() async throws { try await worker.reopen() }
    public func close() async { await worker.close() }
}

/// Sends entries to the local syslog daemon. See `SyslogAuditDeviceConfiguration`.
public final class SyslogAuditDevice: AuditDevice {
    public let configuration: SyslogAuditDeviceConfiguration
    let worker: AuditDeviceWorker

    public convenience init(path: String, configuration: SyslogAuditDeviceConfiguration, prefix: String = "", logger: Logger = Logger(label: "coffer.audit")) {
        self.init(path: path, configuration: configuration, prefix: prefix, head: .genesis, retryInterval: .seconds(1), logger: logger)
    }

    init(path: String, configuration: SyslogAuditDeviceConfiguration, prefix: String, head: AuditChainHead, retryInterval: Duration, logger: Logger) {
        self.configuration = configuration
        worker = AuditDeviceWorker(path: path, transport: SyslogAuditTransport(configuration), prefix: prefix, head: head, retryInterval: retryInterval, logger: logger)
    }

    /// Connects to the syslog socket and writes the first link record; throws when no
    /// syslog daemon listens there.
    public func open() async throws { try await worker.open(reason: "enable") }
    public func write(_ line: [UInt8]) async throws { try await worker.write(line) }
    public func reopen() async throws { try await worker.reopen() }
    public func close() async { await worker.close() }
}

/// Streams entries to a TCP, UDP or unix socket. See `SocketAuditDeviceConfiguration`.
public final class SocketAuditDevice: AuditDevice {
    public let configuration: SocketAuditDeviceConfiguration
    let worker: AuditDeviceWorker

    public convenience init(path: String, configuration: SocketAuditDeviceConfiguration, prefix: String = "", logger: Logger = Logger(label: "coffer.audit")) {
        self.init(path: path, configuration: configuration, prefix: prefix, head: .genesis, retryInterval: .seconds(1), logger: logger)
    }

    init(path: String, configuration: SocketAuditDeviceConfiguration, prefix: String, head: AuditChainHead, retryInterval: Duration, logger: Logger) {
        self.configuration = configuration
        worker = AuditDeviceWorker(path: path, transport: SocketAuditTransport(configuration), prefix: prefix, head: head, retryInterval: retryInterval, logger: logger)
    }

    /// Connects and writes the first link record; throws when the peer is unreachable.
    public func open() async throws { try await worker.open(reason: "enable") }
    public func write(_ line: [UInt8]) async throws { try await worker.write(line) }
    public func reopen() async throws { try await worker.reopen() }
    public func close() async { await worker.close() }
}

// MARK: the device thread

/// One device's thread: a FIFO of jobs, drained in batches.
///
/// Chained entries are rendered here, right before they are written, so their order in
/// the chain is their order at the destination, and the head advances only past entries
/// the transport accepted: a failed write leaves no gap. While the device is down (its
/// last open or write failed) a batch fails at once, except that one attempt to open it
/// again is made every `retryInterval`.
final class AuditDeviceWorker: @unchecked Sendable {
    typealias Completion = @Sendable (Result<Void, any Error>) -> Void

    enum Job {
        case entry(AuditBody, Completion)
        case line([UInt8], Completion)
        case open(String, Completion)
        case reopen(Completion)
        case close(Completion)

        var completion: Completion {
            switch self {
            case .entry(_, let c), .line(_, let c), .open(_, let c), .reopen(let c), .close(let c): c
            }
        }
    }

    let path: String
    let logger: Logger
    private let published: Mutex<AuditChainHead>

    // Shared with submitters, under `condition`.
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var closed = false
    /// The thread waits on the condition (submitters then signal it).
    private var sleeping = false

    // Owned by the worker thread.
    private let transport: any AuditTransport
    private let prefix: [UInt8]
    private let retryInterval: Duration
    private var head: AuditChainHead
    private var isOpen = false
    private var failure: (any Error)?
    private var retryAt = ContinuousClock.now
    private var nextReason = "reconnect"

    init(path: String, transport: any AuditTransport, prefix: String, head: AuditChainHead, retryInterval: Duration, logger: Logger) {
        self.path = path
        self.transport = transport
        self.prefix = Array(prefix.utf8)
        self.head = head
        self.retryInterval = retryInterval
        self.logger = logger
        self.published = Mutex(head)
        let thread = Thread { [self] in run() }
        thread.name = "coffer-audit-\(path)"
        thread.start()
    }

    /// The head of the chain as written so far.
    var chainHead: AuditChainHead { published.withLock { $0 } }

    func submit(_ job: Job) {
        condition.lock()
        if closed {
            condition.unlock()
            job.completion(.failure(CofferError(.unavailable, "audit device \"\(path)\" is closed")))
            return
        }
        if case .close = job { closed = true }
        queue.append(job)
        if sleeping { condition.signal() }
        condition.unlock()
    }

    func perform(_ make: (@escaping Completion) -> Job) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            submit(make { c.resume(with: $0) })
        }
    }

    func open(reason: String) async throws { try await perform { .open(reason, $0) } }
    func write(_ line: [UInt8]) async throws { try await perform { .line(line, $0) } }
    func reopen() async throws { try await perform { .reopen($0) } }
    func close() async { try? await perform { .close($0) } }

    /// How many times the thread yields the CPU, with an empty queue, before it sleeps.
    /// Under load the next entry is usually a few microseconds away: yielding first saves a
    /// futex wait and wake per batch; idle, it costs a few microseconds once.
    static let spinYields = 64

    private func run() {
        while true {
            condition.lock()
            var spins = 0
            while queue.isEmpty && spins < Self.spinYields {
                condition.unlock()
                sched_yield()
                spins += 1
                condition.lock()
            }
            while queue.isEmpty {
                sleeping = true
                condition.wait()
                sleeping = false
            }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            condition.unlock()
            if process(batch) { return }
        }
    }

    /// Writes a batch in order (runs of entries as one write); true after a `close`.
    private func process(_ batch: [Job]) -> Bool {
        var group: [Job] = []
        for job in batch {
            switch job {
            case .entry, .line:
                group.append(job)
            default:
                if !group.isEmpty {
                    write(group)
                    group.removeAll()
                }
                if control(job) { return true }
            }
        }
        if !group.isEmpty { write(group) }
        return false
    }

    /// Runs a control job; true when the thread must stop.
    private func control(_ job: Job) -> Bool {
        switch job {
        case .open(let reason, let done):
            if isOpen { done(.success(())); return false }
            do {
                try openAndLink(reason: reason)
                done(.success(()))
            } catch {
                markDown(error)
                done(.failure(error))
            }
        case .reopen(let done):
            if isOpen {
                transport.close()
                isOpen = false
            }
            do {
                try openAndLink(reason: "reopen")
                done(.success(()))
            } catch {
                markDown(error)
                done(.failure(error))
            }
        case .close(let done):
            if isOpen { transport.close() }
            isOpen = false
            done(.success(()))
            return true
        case .entry, .line:
            break
        }
        return false
    }

    private func write(_ jobs: [Job]) {
        if isOpen && !transport.isCurrent() {
            transport.close()
            isOpen = false
            nextReason = transport.staleReason
        }
        if !isOpen {
            if let failure, ContinuousClock.now < retryAt {
                for job in jobs { job.completion(.failure(failure)) }
                return
            }
            do {
                try openAndLink(reason: nextReason)
            } catch {
                markDown(error)
                for job in jobs { job.completion(.failure(error)) }
                return
            }
        }
        var lines: [[UInt8]] = []
        var heads: [AuditChainHead] = []
        lines.reserveCapacity(jobs.count)
        heads.reserveCapacity(jobs.count)
        var h = head
        for job in jobs {
            switch job {
            case .entry(let entry, _):
                let rendered = AuditChain.render(entry, after: h, prefix: prefix)
                lines.append(rendered.line)
                h = rendered.head
            case .line(let line, _):
                lines.append(line)
            default:
                break
            }
            heads.append(h)
        }
        var written = lines.count
        var writeError: (any Error)?
        do {
            try transport.write(lines)
        } catch let e as AuditIOError {
            written = e.written
            writeError = wrap(e)
        } catch {
            written = 0
            writeError = error
        }
        if written > 0 { commit(heads[written - 1]) }
        for (i, job) in jobs.enumerated() {
            job.completion(i < written ? .success(()) : .failure(writeError!))
        }
        if let writeError { markDown(writeError) }
    }

    private func openAndLink(reason: String) throws {
        do {
            try transport.open()
            let tail = transport.tail()
            if let line = tail.line, line.starts(with: prefix), let last = AuditChain.head(ofLine: line.dropFirst(prefix.count)), last.seq > head.seq {
                // The stored head lags behind the file (it is persisted periodically).
                commit(last)
            }
            var link = AuditChain.render(AuditChain.linkRecord(device: path, reason: reason), after: head, prefix: prefix)
            if tail.needsNewline { link.line.insert(0x0A, at: 0) }
            do {
                try transport.write([link.line])
            } catch {
                transport.close()
                throw error
            }
            commit(link.head)
        } catch let e as AuditIOError {
            throw wrap(e)
        }
        isOpen = true
        nextReason = "reconnect"
        if failure != nil {
            logger.notice("audit device recovered", metadata: ["audit.device": "\(path)"])
            failure = nil
        }
    }

    private func markDown(_ error: any Error) {
        if isOpen { transport.close() }
        isOpen = false
        if failure == nil {
            logger.warning("audit device failed", metadata: ["audit.device": "\(path)", "error": "\(error)"])
        }
        failure = error
        retryAt = ContinuousClock.now + retryInterval
    }

    private func commit(_ h: AuditChainHead) {
        head = h
        published.withLock { $0 = h }
    }

    private func wrap(_ e: AuditIOError) -> CofferError {
        CofferError(.unavailable, "audit device \"\(path)\": \(e.message)", cause: e)
    }
}

// MARK: transports

/// An I/O failure of a transport; `written` lines of the batch went out before it.
struct AuditIOError: Error, CustomStringConvertible {
    var message: String
    var written: Int
    /// The errno behind it, or 0.
    var code: Int32

    init(_ message: String, written: Int = 0, code: Int32 = 0) {
        self.message = message
        self.written = written
        self.code = code
    }

    /// `what: strerror(code)`, with the current errno unless given.
    static func posix(_ what: String, _ code: Int32 = AuditIO.lastError) -> AuditIOError {
        AuditIOError("\(what): \(String(cString: strerror(code)))", code: code)
    }

    var description: String { message }
}

/// What a device's thread drives. Confined to that thread.
protocol AuditTransport: AnyObject {
    func open() throws
    /// False when the open destination is no longer the right one (file moved, peer gone).
    func isCurrent() -> Bool
    /// The link record's reason when `isCurrent()` said false.
    var staleReason: String { get }
    /// Writes whole lines, in order; on failure throws `AuditIOError` with how many went out.
    func write(_ lines: [[UInt8]]) throws
    func close()
    /// The last complete line already at the destination, and whether it ends mid-line
    /// (files only).
    func tail() -> (line: ArraySlice<UInt8>?, needsNewline: Bool)
}

extension AuditTransport {
    func isCurrent() -> Bool { true }
    var staleReason: String { "reconnect" }
    func tail() -> (line: ArraySlice<UInt8>?, needsNewline: Bool) { (nil, false) }
}

final class FileAuditTransport: AuditTransport {
    let configuration: FileAuditDeviceConfiguration
    var fd: Int32 = -1
    var identity: (dev: UInt64, ino: UInt64)?

    init(_ configuration: FileAuditDeviceConfiguration) { self.configuration = configuration }

    var staleReason: String { "reopen" }

    func open() throws {
        guard case .file(let path) = configuration.destination else { return }
        let fd = AuditIO.openFile(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode: configuration.mode ?? 0o600)
        guard fd >= 0 else { throw AuditIOError.posix("cannot open \(path)") }
        if let mode = configuration.mode, mode != 0, fchmod(fd, mode_t(mode)) != 0 {
            let error = AuditIOError.posix("cannot set mode \(String(mode, radix: 8)) on \(path)")
            AuditIO.closeDescriptor(fd)
            throw error
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let error = AuditIOError.posix("cannot stat \(path)")
            AuditIO.closeDescriptor(fd)
            throw error
        }
        self.fd = fd
        identity = (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    func isCurrent() -> Bool {
        guard case .file(let path) = configuration.destination, let identity else { return true }
        var st = stat()
        return stat(path, &st) == 0 && UInt64(st.st_dev) == identity.dev && UInt64(st.st_ino) == identity.ino
    }

    func write(_ lines: [[UInt8]]) throws {
        let target: Int32
        switch configuration.destination {
        case .discard: return
        case .stdout: target = STDOUT_FILENO
        case .file: target = fd
        }
        guard target >= 0 else { throw AuditIOError("the file is not open") }
        let bytes = lines.count == 1 ? lines[0] : Array(lines.joined())
        try AuditIO.writeAll(target, bytes)
        if configuration.fsync, case .file = configuration.destination, fdatasync(target) != 0 {
            throw AuditIOError.posix("fdatasync failed")
        }
    }

    func close() {
        if fd >= 0 { AuditIO.closeDescriptor(fd) }
        fd = -1
        identity = nil
    }

    /// Reads back the end of the file (at most 16 MiB), for the chain head it holds.
    func tail() -> (line: ArraySlice<UInt8>?, needsNewline: Bool) {
        guard case .file(let path) = configuration.destination else { return (nil, false) }
        let rfd = AuditIO.openFile(path, O_RDONLY | O_CLOEXEC, mode: 0)
        guard rfd >= 0 else { return (nil, false) }
        defer { AuditIO.closeDescriptor(rfd) }
        var st = stat()
        guard fstat(rfd, &st) == 0, st.st_size > 0 else { return (nil, false) }
        var buffer: [UInt8] = []
        var offset = Int(st.st_size)
        repeat {
            let n = min(1 << 16, offset)
            offset -= n
            var part = [UInt8](repeating: 0, count: n)
            let got = part.withUnsafeMutableBytes { pread(rfd, $0.baseAddress, n, off_t(offset)) }
            guard got == n else { return (nil, false) }
            buffer.insert(contentsOf: part, at: 0)
            // A last line without its newline was cut: the next record must start a line.
            if buffer.last != 0x0A { return (nil, true) }
        } while offset > 0 && !buffer.dropLast().contains(0x0A) && buffer.count < 16 << 20
        let body = buffer.dropLast()
        if let newline = body.lastIndex(of: 0x0A) { return (body[(newline + 1)...], false) }
        return (offset == 0 ? body : nil, false)
    }
}

final class SyslogAuditTransport: AuditTransport {
    let configuration: SyslogAuditDeviceConfiguration
    var fd: Int32 = -1
    var stream = false
    let pid = getpid()
    let hostname: String = {
        var buf = [CChar](repeating: 0, count: 256)
        let capacity = buf.count - 1
        guard gethostname(&buf, capacity) == 0 else { return "-" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    init(_ configuration: SyslogAuditDeviceConfiguration) { self.configuration = configuration }

    func open() throws {
        let path = configuration.socketPath
        do {
            fd = try AuditIO.connectUnix(path, type: AuditIO.sockDgram, deadline: .now + configuration.writeTimeout)
            stream = false
        } catch let e as AuditIOError where e.code == EPROTOTYPE {
            // Some systems serve /dev/log as a stream socket.
            fd = try AuditIO.connectUnix(path, type: AuditIO.sockStream, deadline: .now + configuration.writeTimeout)
            stream = true
        } catch let e as AuditIOError {
            throw AuditIOError("no syslog daemon is listening on \(path) (\(e.message))")
        }
    }

    func write(_ lines: [[UInt8]]) throws {
        guard fd >= 0 else { throw AuditIOError("the syslog socket is not open") }
        let deadline = ContinuousClock.now + configuration.writeTimeout
        for (i, line) in lines.enumerated() {
            var message = frame(line.last == 0x0A ? line.dropLast() : line[...])
            do {
                if stream {
                    message.append(0x0A)
                    try AuditIO.sendAll(fd, message, deadline: deadline)
                } else {
                    try AuditIO.sendDatagram(fd, message, deadline: deadline)
                }
            } catch var e as AuditIOError {
                e.written = i
                throw e
            }
        }
    }

    func close() {
        if fd >= 0 { AuditIO.closeDescriptor(fd) }
        fd = -1
    }

    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    func frame(_ message: ArraySlice<UInt8>) -> [UInt8] {
        let pri = configuration.facility * 8 + 6
        var header: String
        switch configuration.framing {
        case .rfc3164:
            var now = time(nil)
            var t = tm()
            localtime_r(&now, &t)
            let day = t.tm_mday < 10 ? " \(t.tm_mday)" : "\(t.tm_mday)"
            header = "<\(pri)>\(Self.months[Int(t.tm_mon)]) \(day) \(AuditEntry.pad(Int(t.tm_hour), 2)):\(AuditEntry.pad(Int(t.tm_min), 2)):\(AuditEntry.pad(Int(t.tm_sec), 2)) \(configuration.tag)[\(pid)]: "
        case .rfc5424:
            header = "<\(pri)>1 \(AuditEntry.timestamp()) \(hostname) \(configuration.tag) \(pid) - - "
        }
        var out = Array(header.utf8)
        out.append(contentsOf: message)
        return out
    }
}

final class SocketAuditTransport: AuditTransport {
    let configuration: SocketAuditDeviceConfiguration
    var fd: Int32 = -1

    init(_ configuration: SocketAuditDeviceConfiguration) { self.configuration = configuration }

    func open() throws {
        let deadline = ContinuousClock.now + configuration.writeTimeout
        switch configuration.socketType {
        case .unix:
            fd = try AuditIO.connectUnix(configuration.address, type: AuditIO.sockStream, deadline: deadline)
        case .tcp:
            fd = try AuditIO.connectInet(configuration.address, type: AuditIO.sockStream, deadline: deadline)
        case .udp:
            fd = try AuditIO.connectInet(configuration.address, type: AuditIO.sockDgram, deadline: deadline)
        }
    }

    /// A stream peer that closed its end (or reset it) is noticed here, before writing.
    func isCurrent() -> Bool {
        guard fd >= 0 else { return false }
        guard configuration.socketType != .udp else { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 0) > 0 else { return true }
        if p.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { return false }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
        if n == 0 { return false }
        if n < 0 {
            let code = AuditIO.lastError
            if code != EAGAIN && code != EWOULDBLOCK && code != EINTR { return false }
        }
        return true
    }

    func write(_ lines: [[UInt8]]) throws {
        guard fd >= 0 else { throw AuditIOError("the socket is not connected") }
        let deadline = ContinuousClock.now + configuration.writeTimeout
        if configuration.socketType == .udp {
            for (i, line) in lines.enumerated() {
                do {
                    try AuditIO.sendDatagram(fd, line, deadline: deadline)
                } catch var e as AuditIOError {
                    e.written = i
                    throw e
                }
            }
        } else {
            try AuditIO.sendAll(fd, lines.count == 1 ? lines[0] : Array(lines.joined()), deadline: deadline)
        }
    }

    func close() {
        if fd >= 0 { AuditIO.closeDescriptor(fd) }
        fd = -1
    }
}

/// Blocking-with-deadline socket and file helpers for device threads.
enum AuditIO {
    #if os(Linux)
    static let sockStream = Int32(SOCK_STREAM.rawValue)
    static let sockDgram = Int32(SOCK_DGRAM.rawValue)
    static let sockFlags = Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
    #else
    static let sockStream = SOCK_STREAM
    static let sockDgram = SOCK_DGRAM
    static let sockFlags: Int32 = 0
    #endif
    static let sendFlags = Int32(MSG_NOSIGNAL)

    static var lastError: Int32 { errno }

    static func openFile(_ path: String, _ flags: Int32, mode: UInt32) -> Int32 {
        open(path, flags, mode_t(mode))
    }

    static func closeDescriptor(_ fd: Int32) { _ = close(fd) }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AuditIOError.posix("write failed")
            }
            offset += n
        }
    }

    static func milliseconds(until deadline: ContinuousClock.Instant) -> Int32 {
        let left = deadline - .now
        guard left > .zero else { return 0 }
        let (s, atto) = left.components
        return Int32(clamping: s * 1000 + atto / 1_000_000_000_000_000 + 1)
    }

    /// Waits until `fd` is ready for `events`; throws at the deadline.
    static func wait(_ fd: Int32, _ events: Int32, deadline: ContinuousClock.Instant, what: String) throws {
        while true {
            let ms = milliseconds(until: deadline)
            guard ms > 0 else { throw AuditIOError("\(what) timed out") }
            var p = pollfd(fd: fd, events: Int16(events), revents: 0)
            let rc = poll(&p, 1, ms)
            if rc > 0 { return }
            if rc < 0 && errno != EINTR { throw AuditIOError.posix("poll failed") }
        }
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8], deadline: ContinuousClock.Instant) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, sendFlags | Int32(MSG_DONTWAIT)) }
            if n >= 0 {
                offset += n
                continue
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try wait(fd, POLLOUT, deadline: deadline, what: "write")
            default: throw AuditIOError.posix("write failed")
            }
        }
    }

    static func sendDatagram(_ fd: Int32, _ bytes: [UInt8], deadline: ContinuousClock.Instant) throws {
        while true {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, sendFlags | Int32(MSG_DONTWAIT)) }
            if n >= 0 { return }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK, ENOBUFS: try wait(fd, POLLOUT, deadline: deadline, what: "write")
            case EMSGSIZE: throw AuditIOError("an entry of \(bytes.count) bytes is larger than a datagram can carry")
            default: throw AuditIOError.posix("send failed")
            }
        }
    }

    /// Finishes a non-blocking connect by the deadline; closes `fd` on failure.
    static func finishConnect(_ fd: Int32, rc: Int32, deadline: ContinuousClock.Instant, what: String) throws {
        try awaitConnect(fd, rc: rc, deadline: deadline, what: what)
        // With no listener on a local port in the ephemeral range, TCP can connect a socket
        // to itself (simultaneous open): writes would "succeed" into the void.
        if isConnectedToItself(fd) {
            closeDescriptor(fd)
            throw AuditIOError("cannot connect to \(what): nothing is listening (the socket connected to itself)")
        }
    }

    static func isConnectedToItself(_ fd: Int32) -> Bool {
        var local = sockaddr_storage()
        var peer = sockaddr_storage()
        var localLen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var peerLen = localLen
        let a = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &localLen) } }
        let b = withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &peerLen) } }
        guard a == 0, b == 0, localLen == peerLen,
            local.ss_family == sa_family_t(AF_INET) || local.ss_family == sa_family_t(AF_INET6)
        else { return false }
        return memcmp(&local, &peer, Int(localLen)) == 0
    }

    static func awaitConnect(_ fd: Int32, rc: Int32, deadline: ContinuousClock.Instant, what: String) throws {
        if rc == 0 { return }
        let code = errno
        guard code == EINPROGRESS || code == EAGAIN || code == EINTR else {
            closeDescriptor(fd)
            throw AuditIOError.posix("cannot connect to \(what)", code)
        }
        do {
            try wait(fd, POLLOUT, deadline: deadline, what: "connect to \(what)")
        } catch {
            closeDescriptor(fd)
            throw error
        }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            closeDescriptor(fd)
            throw AuditIOError.posix("cannot connect to \(what)", err)
        }
    }

    /// A connected unix socket.
    static func connectUnix(_ path: String, type: Int32, deadline: ContinuousClock.Instant) throws -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { throw AuditIOError("invalid unix socket path \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, type | sockFlags, 0)
        guard fd >= 0 else { throw AuditIOError.posix("cannot create a socket") }
        let len = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + 1)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } }
        try finishConnect(fd, rc: rc, deadline: deadline, what: path)
        return fd
    }

    /// Splits `host:port` or `[v6]:port`.
    static func hostAndPort(_ address: String) -> (host: String, port: String)? {
        if address.hasPrefix("[") {
            guard let close = address.firstIndex(of: "]") else { return nil }
            let host = String(address[address.index(after: address.startIndex)..<close])
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()), port > 0 else { return nil }
            return (host, String(port))
        }
        guard let colon = address.lastIndex(of: ":") else { return nil }
        let host = String(address[..<colon])
        guard !host.isEmpty, !host.contains(":"), let port = UInt16(address[address.index(after: colon)...]), port > 0 else { return nil }
        return (host, String(port))
    }

    static func connectInet(_ address: String, type: Int32, deadline: ContinuousClock.Instant) throws -> Int32 {
        guard let (host, port) = hostAndPort(address) else {
            throw AuditIOError("invalid address \(address): expected host:port")
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = type
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, port, &hints, &list)
        guard rc == 0, let first = list else {
            throw AuditIOError("cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        var lastError = AuditIOError("cannot connect to \(address)")
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let ai = node {
            node = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype | sockFlags, ai.pointee.ai_protocol)
            guard fd >= 0 else {
                lastError = AuditIOError.posix("cannot create a socket")
                continue
            }
            let rc = connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
            do {
                try finishConnect(fd, rc: rc, deadline: deadline, what: address)
                return fd
            } catch let e as AuditIOError {
                lastError = e
            }
        }
        throw lastError
    }
}
