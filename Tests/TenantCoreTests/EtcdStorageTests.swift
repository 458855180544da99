import CofferSDK
import Foundation
import Replication
import Testing

/// `EtcdStorage` against a real etcd: the shared conformance suite on the etcd started by
/// `Ops/test` (`COFFER_TEST_ETCD_ADDR`), plus a private member (`Ops/etcd`) for what would
/// disturb other suites: compaction, auth, a hung and a stopped etcd.
@Suite(.enabled(if: EtcdTestSupport.address != nil, "set COFFER_TEST_ETCD_ADDR (Ops/etcd start DIR)"))
struct EtcdStorageTests {
    /// A store on the shared etcd under a prefix of its own: every test starts empty.
    func store(_ address: String? = EtcdTestSupport.address, timeout: Duration = .seconds(5), pageSize: Int = 1000) throws -> EtcdStorage {
        try EtcdStorage(
            configuration: EtcdStorageConfiguration(
                addresses: [address ?? ""], prefix: "coffer-test-\(UUID().uuidString)/", requestTimeout: timeout,
                listPageSize: pageSize))
    }

    @Test func conformance() async throws {
        let s = try store()
        try await exerciseStorage(s)
        try await s.shutdown()
    }

    /// The same suite against all three members of the cluster `Ops/test` starts.
    @Test(.enabled(if: EtcdTestSupport.clusterAddresses != nil, "set COFFER_TEST_ETCD_ADDRS (Ops/etcd start-cluster DIR)"))
    func clusterConformance() async throws {
        let s = try EtcdStorage(
            configuration: EtcdStorageConfiguration(addresses: EtcdTestSupport.clusterAddresses ?? [], prefix: "coffer-test-\(UUID().uuidString)/"))
        try await exerciseStorage(s)
        try await s.shutdown()
    }

    /// The HA lock: one holder; a holder's lease ends with it; a deposed holder's writes are
    /// refused by etcd itself (the fence), never applied.
    @Test func haLockHasOneHolderAndFencesTheDeposed() async throws {
        let prefix = "coffer-test-\(UUID().uuidString)/"
        func node() throws -> EtcdStorage {
            try EtcdStorage(configuration: EtcdStorageConfiguration(addresses: [EtcdTestSupport.address ?? ""], prefix: prefix))
        }
        let a = try node(), b = try node()
        #expect(try await a.holder() == nil)
        guard case .acquired(let leaseA) = try await a.acquire(value: Array("a".utf8), ttlSeconds: 5) else {
            Issue.record("the free lock was not taken")
            return
        }
        #expect(try await b.acquire(value: Array("b".utf8), ttlSeconds: 5) == .held(by: Array("a".utf8)))
        #expect(try await a.keepAlive(lease: leaseA))
        a.fence(Array("a".utf8))
        try await a.put("k", [1])
        #expect(try await a.compareAndSet("k", expected: [1], new: [2]))
        #expect(try await a.compareAndSet("k", expected: [1], new: [3]) == false)

        // A hands over; B takes the lock; A's writes now fail and change nothing.
        try await a.release(lease: leaseA)
        #expect(try await a.keepAlive(lease: leaseA) == false)
        guard case .acquired(let leaseB) = try await b.acquire(value: Array("b".utf8), ttlSeconds: 5) else {
            Issue.record("the released lock was not taken")
            return
        }
        b.fence(Array("b".utf8))
        for write in [{ try await a.put("k", [9]) }, { try await a.delete("k") }, { _ = try await a.compareAndSet("k", expected: [2], new: [9]) }] as [@Sendable () async throws -> Void] {
            let error = await #expect(throws: CofferError.self) { try await write() }
            #expect(error?.code == .notActive)
        }
        #expect(try await b.get("k") == [2])
        try await b.put("k", [4])
        try await b.delete("gone")  // deleting an absent key under a valid fence is fine
        #expect(try await b.get("k") == [4])

        // A holder that stops renewing loses the lock when its lease runs out.
        try await b.release(lease: leaseB)
        guard case .acquired = try await a.acquire(value: Array("c".utf8), ttlSeconds: 2) else {
            Issue.record("the lock was not free")
            return
        }
        #expect(try await b.holder() == Array("c".utf8))
        var gone = false
        for _ in 0..<80 where !gone {
            try await Task.sleep(for: .milliseconds(100))
            gone = try await b.holder() == nil
        }
        #expect(gone)
        try await a.shutdown()
        try await b.shutdown()
    }

    /// The HA lock holder answers "absent" for keys it has never seen without asking etcd,
    /// finds every key that existed before it took the lock and every key it wrote since,
    /// and stops trusting its filter when it gives the lock up.
    @Test func lockHolderAnswersAbsentKeysWithoutEtcd() async throws {
        let prefix = "coffer-test-\(UUID().uuidString)/"
        func node() throws -> EtcdStorage {
            try EtcdStorage(configuration: EtcdStorageConfiguration(addresses: [EtcdTestSupport.address ?? ""], prefix: prefix, listPageSize: 7))
        }
        let a = try node(), other = try node()
        for i in 0..<25_000 where i % 1000 == 0 || i < 30 { try await a.put("before/\(i)", [1]) }
        try await a.putAll((0..<20).map { StorageEntry(key: "group/\($0)", value: [2]) })
        #expect(a.knownKeys.isReady == false)
        #expect(try await a.get("missing") == nil)
        #expect(a.knownKeys.answered == 0)

        guard case .acquired(let lease) = try await a.acquire(value: Array("a".utf8), ttlSeconds: 5) else {
            Issue.record("the free lock was not taken")
            return
        }
        a.fence(Array("a".utf8))
        try await a.put("during", [3])
        for _ in 0..<100 where !a.knownKeys.isReady { try await Task.sleep(for: .milliseconds(20)) }
        #expect(a.knownKeys.isReady)
        // No false negatives: everything written before the lock, and since.
        for i in 0..<25_000 where i % 1000 == 0 || i < 30 { #expect(try await a.get("before/\(i)") == [1]) }
        for i in 0..<20 { #expect(try await a.get("group/\(i)") == [2]) }
        #expect(try await a.get("during") == [3])
        let answeredBefore = a.knownKeys.answered
        for i in 0..<200 { #expect(try await a.get("never/\(i)") == nil) }
        // ~1% false positives: almost all of these were answered without etcd.
        #expect(a.knownKeys.answered - answeredBefore > 180)
        try await a.put("after", [4])
        _ = try await a.compareAndSet("cas", expected: nil, new: [5])
        #expect(try await a.get("after") == [4])
        #expect(try await a.get("cas") == [5])
        // What the filter trusts: nobody else writes while the lock is held. A key written
        // behind the holder's back (no Coffer node does this) is not seen until release.
        try await other.put("behind", [6])
        #expect(try await a.get("behind") == nil)
        #expect(try await a.keepAlive(lease: lease))
        try await a.release(lease: lease)
        #expect(a.knownKeys.isReady == false)
        #expect(try await a.get("behind") == [6])
        try await a.shutdown()
        try await other.shutdown()
    }

    /// Concurrent puts share transactions (group commit); the feed still names every key,
    /// and a page of the feed never ends inside a revision.
    @Test func concurrentPutsAreGroupCommittedAndFed() async throws {
        let s = try store()
        let start: UInt64
        switch try await s.changes(since: UInt64.max - 1, limit: 0) {
        case .changes(_, let head), .compacted(let head): start = head
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<400 {
                group.addTask { try await s.put("k\(i % 300)", [UInt8(i % 256), UInt8(i / 256)]) }
            }
            try await group.waitForAll()
        }
        for i in 0..<300 { #expect(try await s.get("k\(i)") != nil) }
        var seen: [String] = []
        var revisions = Set<UInt64>()
        var since = start
        while true {
            guard case .changes(let page, _) = try await s.changes(since: since, limit: 7) else {
                Issue.record("compacted")
                return
            }
            guard let last = page.last else { break }
            // The next page starts after the last revision of this one: nothing is skipped.
            seen += page.map(\.key)
            revisions.formUnion(page.map(\.revision))
            since = last.revision
        }
        #expect(seen.count == 400)
        #expect(Set(seen) == Set((0..<300).map { "k\($0)" }))
        #expect(revisions.count < 400)
        print("400 concurrent puts in \(revisions.count) transactions")
        try await s.shutdown()
    }

    @Test func listPagesAndSkipsFolders() async throws {
        let s = try store(pageSize: 2)
        for key in ["a", "b/1", "b/2", "b/3", "b/4", "b/5", "c", "d/x/y", "d/z", "e"] { try await s.put(key, [1]) }
        #expect(try await s.list(prefix: "") == ["a", "b/", "c", "d/", "e"])
        #expect(try await s.list(prefix: "b/") == ["1", "2", "3", "4", "5"])
        #expect(try await s.list(prefix: "d/") == ["x/", "z"])
        #expect(try await s.list(prefix: "b") == ["/"])
        try await s.shutdown()
    }

    /// Short backlogs are read through the marker's history, long ones through a watch: both
    /// give the same entries, from any revision, with any limit.
    @Test func feedAgreesAcrossBacklogLengths() async throws {
        let s = try store()
        for i in 0..<30 {
            if i % 4 == 3 { try await s.delete("k\(i - 1)") } else { try await s.put("k\(i)", [1]) }
        }
        try await s.delete("never-existed")
        #expect(try await s.compareAndSet("k0", expected: [1], new: nil))
        guard case .changes(let all, let head) = try await s.changes(since: 0, limit: 1000) else {
            Issue.record("compacted unexpectedly")
            return
        }
        #expect(all.count == 31 && all.last?.revision == head)
        #expect(all.filter(\.deleted).map(\.key) == ["k2", "k6", "k10", "k14", "k18", "k22", "k26", "k0"])
        for i in all.indices {
            for limit in [3, 100] {
                let got = try await s.changes(since: all[i].revision - 1, limit: limit)
                #expect(got == .changes(Array(all[i...].prefix(limit)), head: head), "from entry \(i), limit \(limit)")
            }
        }
        try await s.shutdown()
    }

    @Test func valuesOverTheRequestLimitAreRefusedBeforeSending() async throws {
        let s = try store()
        let limit = s.maxValueBytes(forKey: "big")
        #expect(limit > 1_500_000 && limit < 1_572_864)
        try await s.put("big", [UInt8](repeating: 7, count: limit))  // the estimate is not too tight for etcd
        #expect(try await s.get("big")?.count == limit)
        for attempt in 0..<2 {
            let error = await #expect(throws: CofferError.self) {
                let tooBig = [UInt8](repeating: 1, count: limit + 1)
                if attempt == 0 { try await s.put("big", tooBig) } else { _ = try await s.compareAndSet("big", expected: nil, new: tooBig) }
            }
            #expect(error?.code == .invalidRequest)
            #expect(error?.message.contains("value too large for etcd: \(limit + 1) bytes") == true)
        }
        #expect(try await s.get("big")?.count == limit)
        try await s.shutdown()
    }

    @Test func concurrentCompareAndSetHasOneWinnerPerRound() async throws {
        let s = try store()
        for round in 0..<10 {
            let expected: [UInt8]? = round == 0 ? nil : [UInt8(round)]
            let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
                for contender in 0..<20 {
                    group.addTask { try await s.compareAndSet("cas", expected: expected, new: [UInt8(round + 1), UInt8(contender)]) }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(wins == 1, "round \(round)")
            let winner = try #require(try await s.get("cas"))
            #expect(winner.first == UInt8(round + 1))
            // The next round compares against one known value.
            #expect(try await s.compareAndSet("cas", expected: winner, new: [UInt8(round + 1)]))
        }
        try await s.shutdown()
    }

    @Test func unreachableMembersAreSkippedAndReported() async throws {
        let live = try #require(EtcdTestSupport.address)
        // Port 1 refuses: the store moves on to the live member.
        let failover = try EtcdStorage(configuration: EtcdStorageConfiguration(addresses: ["127.0.0.1:1", live], prefix: "coffer-test-\(UUID().uuidString)/"))
        // Compare-and-set is not retried after a sent request, but a refused connection sent nothing.
        #expect(try await failover.compareAndSet("k", expected: nil, new: [1]))
        #expect(try await failover.get("k") == [1])
        try await failover.shutdown()

        let dead = try store("127.0.0.1:1", timeout: .seconds(2))
        let start = ContinuousClock.now
        let error = await #expect(throws: CofferError.self) { try await dead.get("k") }
        #expect(error?.code == .unavailable)
        #expect(error?.message.hasPrefix("etcd: ") == true)
        #expect(ContinuousClock.now - start < .seconds(2.5))
        try await dead.shutdown()
    }

    @Test func configurationNeverShowsThePassword() throws {
        let configuration = EtcdStorageConfiguration(addresses: ["127.0.0.1:2379"], username: "root", password: "pa55-w0rd-never-shown")
        #expect(!"\(configuration)".contains("pa55"))
        // TLS for one member means TLS for all: a plain-HTTP address beside it is refused.
        #expect(throws: CofferError.self) { try EtcdStorage(configuration: EtcdStorageConfiguration(addresses: ["https://127.0.0.1:2379", "http://127.0.0.1:2380"])) }
        #expect(throws: CofferError.self) { try EtcdStorage(configuration: EtcdStorageConfiguration(addresses: ["127.0.0.1:2379/path"])) }
        #expect(throws: CofferError.self) { try EtcdStorage(configuration: EtcdStorageConfiguration(addresses: [])) }
    }

    /// A member of its own: compaction, auth with a 1 s token TTL, then SIGSTOP and stop.
    @Test func privateMemberCompactionAuthHangAndStop() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-etcd-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let line = try await EtcdTestSupport.run("COFFER_ETCD_ARGS=--auth-token-ttl=1", EtcdTestSupport.ops, "start", dir)
        let address = try #require(line.split(separator: "=").last.map(String.init))
        let pid = try String(contentsOfFile: dir + "/etcd.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            // The conformance suite on a single-member cluster.
            let single = try store(address)
            try await exerciseStorage(single)
            try await single.shutdown()

            // Compaction past the reader's revision is reported, later revisions still read.
            let s = try store(address)
            for i in 0..<5 { try await s.put("k\(i)", [UInt8(i)]) }
            try await s.delete("k0")
            guard case .changes(let all, let head) = try await s.changes(since: 0, limit: 100) else {
                Issue.record("compacted before any compaction")
                return
            }
            #expect(all.map(\.key) == ["k0", "k1", "k2", "k3", "k4", "k0"] && all.last?.deleted == true)
            _ = try await EtcdTestSupport.run("etcdctl", "--endpoints=\(address)", "compact", "\(head)")
            #expect(try await s.changes(since: 0, limit: 100) == .compacted(head: head))
            #expect(try await s.changes(since: head - 2, limit: 100) == .compacted(head: head))
            #expect(try await s.changes(since: head, limit: 100) == .changes([], head: head))
            try await s.put("after", [1])
            guard case .changes(let tail, let head2) = try await s.changes(since: head, limit: 100) else {
                Issue.record("compacted after the compaction point")
                return
            }
            #expect(tail.map(\.key) == ["after"] && tail.first?.revision == head2)
            try await s.shutdown()

            // Auth: no user or a wrong password is refused (the password never shows); the
            // right one works, also after its token expired (TTL 1 s).
            _ = try await EtcdTestSupport.run("etcdctl", "--endpoints=\(address)", "user", "add", "root:r00t-pw")
            _ = try await EtcdTestSupport.run("etcdctl", "--endpoints=\(address)", "auth", "enable")
            let prefix = "coffer-test-\(UUID().uuidString)/"
            func authenticated(_ password: String?) throws -> EtcdStorage {
                try EtcdStorage(
                    configuration: EtcdStorageConfiguration(
                        addresses: [address], prefix: prefix, requestTimeout: .seconds(2), username: password == nil ? nil : "root", password: password))
            }
            for password in [nil, "wr0ng-pw"] {
                let refused = try authenticated(password)
                let error = await #expect(throws: CofferError.self) { try await refused.put("x", [1]) }
                #expect(error?.code == .unavailable)
                #expect(error.map { !$0.message.contains("pw") } == true)
                try await refused.shutdown()
            }
            let authed = try authenticated("r00t-pw")
            try await authed.put("x", [1])
            try await Task.sleep(for: .seconds(2.5))
            #expect(try await authed.get("x") == [1])
            guard case .changes(let authedFeed, _) = try await authed.changes(since: head2, limit: 10) else {
                Issue.record("compacted unexpectedly")
                return
            }
            #expect(authedFeed.map(\.key) == ["x"])

            // A hung etcd (SIGSTOP): bounded by the 2 s request timeout.
            _ = try await EtcdTestSupport.run("kill", "-STOP", pid)
            var start = ContinuousClock.now
            var error = await #expect(throws: CofferError.self) { try await authed.get("x") }
            #expect(error?.code == .unavailable)
            #expect(ContinuousClock.now - start < .seconds(4))
            _ = try await EtcdTestSupport.run("kill", "-CONT", pid)
            #expect(try await authed.get("x") == [1])

            // A stopped etcd: refused at once.
            _ = try await EtcdTestSupport.run(EtcdTestSupport.ops, "stop", dir)
            start = ContinuousClock.now
            error = await #expect(throws: CofferError.self) { _ = try await authed.changes(since: head2, limit: 10) }
            #expect(error?.code == .unavailable)
            #expect(ContinuousClock.now - start < .seconds(2))
            try await authed.shutdown()
        } catch {
            _ = try? await EtcdTestSupport.run("kill", "-CONT", pid)
            _ = try? await EtcdTestSupport.run(EtcdTestSupport.ops, "stop", dir)
            throw error
        }
    }

    /// TLS to etcd with client certificates (`--client-cert-auth`): the conformance suite
    /// over TLS; no client certificate, an untrusted server and a plain-HTTP address are
    /// refused with clear errors.
    @Test func tlsMemberWithClientCertificates() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-etcd-tls-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certs = dir + "/certs"
        _ = try await EtcdTestSupport.run(EtcdTestSupport.repo + "/Ops/tls-selfsigned", certs)
        let line = try await EtcdTestSupport.run("COFFER_ETCD_TLS_DIR=\(certs)", EtcdTestSupport.ops, "start", dir + "/etcd")
        defer { _ = try? EtcdTestSupport.shell(EtcdTestSupport.ops, "stop", dir + "/etcd") }
        let address = try #require(line.split(separator: "=").last.map(String.init))
        func store(ca: String?, cert: Bool, scheme: String = "https://") throws -> EtcdStorage {
            var c = EtcdStorageConfiguration(addresses: [scheme + address], prefix: "coffer-test-\(UUID().uuidString)/", requestTimeout: .seconds(3))
            c.tlsCAFile = ca
            if cert {
                c.tlsCertFile = certs + "/server.pem"
                c.tlsKeyFile = certs + "/server-key.pem"
            }
            return try EtcdStorage(configuration: c)
        }
        let good = try store(ca: certs + "/ca.pem", cert: true)
        try await exerciseStorage(good)
        try await good.shutdown()
        for bad in [try store(ca: certs + "/ca.pem", cert: false), try store(ca: nil, cert: true)] {
            let error = await #expect(throws: CofferError.self) { try await bad.put("x", [1]) }
            #expect(error?.code == .unavailable)
            try await bad.shutdown()
        }
        #expect(throws: CofferError.self) { try store(ca: certs + "/ca.pem", cert: true, scheme: "http://") }
        #expect(throws: CofferError.self) { try store(ca: certs + "/nope.pem", cert: true) }
    }

    /// Sequential latency, one connection: `COFFER_BENCH_ETCD=1` prints it.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["COFFER_BENCH_ETCD"] == "1"))
    func sequentialLatency() async throws {
        let s = try store()
        let value = [UInt8](repeating: 0xAB, count: 256)
        var head: UInt64 = 0
        if case .changes(_, let h) = try await s.changes(since: 0, limit: 1) { head = h }
        for (name, op, rounds) in [("put", 0, 1000), ("get", 1, 1000), ("list", 2, 1000), ("put + changes(1 new)", 3, 1000), ("changes(100 new, watch)", 4, 20)] {
            let start = ContinuousClock.now
            for i in 0..<rounds {
                switch op {
                case 0: try await s.put("bench/\(i)", value)
                case 1: _ = try await s.get("bench/\(i)")
                case 2: _ = try await s.list(prefix: "bench/\(i)")
                case 3:
                    try await s.put("bench/\(i)", value)
                    if case .changes(_, let h) = try await s.changes(since: head, limit: 100) { head = h }
                default: _ = try await s.changes(since: head - 100, limit: 100)
                }
            }
            print("etcd sequential \(name): \((ContinuousClock.now - start) / rounds) per operation")
        }
        try await s.shutdown()
    }
}

enum EtcdTestSupport {
    static let address = ProcessInfo.processInfo.environment["COFFER_TEST_ETCD_ADDR"].flatMap { $0.isEmpty ? nil : $0 }
    static let clusterAddresses = ProcessInfo.processInfo.environment["COFFER_TEST_ETCD_ADDRS"].flatMap {
        $0.isEmpty ? nil : $0.split(separator: ",").map(String.init)
    }

    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let ops = repo + "/Ops/etcd"

    /// Runs a shell command line (words single-quoted, a leading `NAME=value` kept as an
    /// assignment) through popen and returns its trimmed stdout; fails on a non-zero exit.
    /// `shell` on a thread of its own: a command that takes seconds (starting etcd, making
    /// certificates) must not hold one of the few cooperative threads every suite's tasks
    /// run on (with two cores, two such calls stalled the Redis bucket suite for seconds).
    static func run(_ words: String...) async throws -> String {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<String, any Error>) in
            Thread.detachNewThread {
                do { done.resume(returning: try shellLine(words)) } catch { done.resume(throwing: error) }
            }
        }
    }

    static func shell(_ words: String...) throws -> String { try shellLine(words) }

    static func shellLine(_ words: [String]) throws -> String {
        let line = words.map { word in
            word.contains("=") && !word.hasPrefix("-") ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
        // Plain errors, not #require: this may run on a thread outside the test's task.
        guard let pipe = popen(line + " 2>/dev/null", "r") else { throw CofferError.internalError("popen \(line) failed") }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while case let n = fread(&chunk, 1, chunk.count, pipe), n > 0 { output += chunk[..<n] }
        let status = pclose(pipe)
        guard status == 0 else { throw CofferError.internalError("\(line) exited with \(status)") }
        return String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
