import CofferSDK
import Foundation
import Testing
import TenantCore

@Suite struct BarrierTests {
    func openBarrier() -> (Barrier, MemoryStorage) {
        let physical = MemoryStorage()
        let b = Barrier(physical: physical)
        b.install(Keyring.generate())
        return (b, physical)
    }

    @Test func roundTripAndCiphertextBelow() async throws {
        let (b, physical) = openBarrier()
        try await b.put("secret/x", Array("plaintext-value".utf8))
        #expect(try await b.get("secret/x") == Array("plaintext-value".utf8))
        let raw = try #require(try await physical.get("secret/x"))
        #expect(raw != Array("plaintext-value".utf8))
        #expect(String(decoding: raw, as: UTF8.self).contains("plaintext-value") == false)
        #expect(raw.count == "plaintext-value".utf8.count + 33)
    }

    @Test func tamperedValueIsRejected() async throws {
        let (b, physical) = openBarrier()
        try await b.put("a", [1, 2, 3, 4])
        var raw = try #require(try await physical.get("a"))
        raw[raw.count - 20] ^= 0x01
        try await physical.put("a", raw)
        await #expect(throws: CofferError.self) { try await b.get("a") }
    }

    @Test func valueMovedToAnotherPathIsRejected() async throws {
        let (b, physical) = openBarrier()
        try await b.put("a", [1, 2, 3])
        try await physical.put("b", try #require(try await physical.get("a")))
        await #expect(throws: CofferError.self) { try await b.get("b") }
    }

    @Test func truncatedAndForeignValuesAreRejected() async throws {
        let (b, physical) = openBarrier()
        try await physical.put("short", [1, 0, 0, 0, 1])
        try await physical.put("plain", Array("not ciphertext at all, just some text....".utf8))
        await #expect(throws: CofferError.self) { try await b.get("short") }
        await #expect(throws: CofferError.self) { try await b.get("plain") }
    }

    @Test func rotationKeepsOldDataReadable() async throws {
        let (b, physical) = openBarrier()
        try await b.put("old", [1])
        let ring = try #require(b.keyring)
        b.install(ring.rotated())
        try await b.put("new", [2])
        #expect(try await b.get("old") == [1])
        #expect(try await b.get("new") == [2])
        #expect(Sealer.term(of: try #require(try await physical.get("old"))) == 1)
        #expect(Sealer.term(of: try #require(try await physical.get("new"))) == 2)
    }

    @Test func sealedBarrierRefuses() async throws {
        let (b, _) = openBarrier()
        try await b.put("a", [1])
        b.clear()
        await #expect(throws: CofferError(.sealed, "")) { try await b.get("a") }
        await #expect(throws: CofferError(.sealed, "")) { try await b.put("a", [2]) }
    }
}
