import CofferSDK
import TenantCore
import Testing

@Suite("HCL parser")
struct HCLTests {
    static let policy = #"""
        # Admin-ish policy
        path "secret/data/*" {
          capabilities = ["create", "read", "update", "delete", "list",]
        }

        // Restricted write with parameter constraints
        path "secret/data/restricted" {
          capabilities = [
            "create",   # trailing comment inside a list
            "update"
          ]
          allowed_parameters = {
            "key" = ["a", "b"]
            "*"   = []
          }
          denied_parameters = { "password" = [] }
          min_wrapping_ttl = "1s"
          max_wrapping_ttl = 90
        }

        /* a block comment
           spanning lines */
        path "sys/policies/acl/*" { capabilities = ["read"] }

        path "auth/token/lookup-self" {
          capabilities = ["read"]
        }
        """#

    @Test func vaultPolicy() throws {
        let json = try HCL.parse(Self.policy)
        let paths = try #require(json["path"]?.objectValue)
        #expect(paths.keys.sorted() == [
            "auth/token/lookup-self", "secret/data/*", "secret/data/restricted", "sys/policies/acl/*",
        ])
        #expect(json["path"]?["secret/data/*"]?["capabilities"] == ["create", "read", "update", "delete", "list"])
        let restricted = try #require(json["path"]?["secret/data/restricted"])
        #expect(restricted["capabilities"] == ["create", "update"])
        #expect(restricted["allowed_parameters"] == ["key": ["a", "b"], "*": []])
        #expect(restricted["denied_parameters"] == ["password": []])
        #expect(restricted["min_wrapping_ttl"] == "1s")
        #expect(restricted["max_wrapping_ttl"] == 90)
        #expect(json["path"]?["sys/policies/acl/*"]?["capabilities"] == ["read"])
    }

    @Test func serverConfig() throws {
        let text = """
            storage "sqlite" {
              path = "/x"
            }

            listener "tcp" {
              address = "127.0.0.1:8200"
              tls_disable = true
            }
            listener "tcp" { address = "0.0.0.0:8201" tls_disable = false }

            default_lease_ttl = "768h"
            disable_mlock = true
            ui = true
            """
        let json = try HCL.parse(text)
        #expect(json["storage"] == ["sqlite": ["path": "/x"]])
        #expect(json["default_lease_ttl"] == "768h")
        #expect(json["disable_mlock"] == true)
        #expect(json["ui"] == true)
        // Same type and label twice: the bodies merge key by key, later wins.
        #expect(json["listener"]?["tcp"] == ["address": "0.0.0.0:8201", "tls_disable": false])

        // The raw form keeps both listeners, in order.
        let body = try HCL.parseBody(text)
        let listeners = body.blocks(ofType: "listener")
        #expect(listeners.count == 2)
        #expect(listeners.map(\.labels) == [["tcp"], ["tcp"]])
        #expect(listeners.first?.body.attribute("address") == "127.0.0.1:8200")
        #expect(listeners.last?.body.attribute("address") == "0.0.0.0:8201")
        #expect(body.attribute("ui") == true)
        #expect(body.attributes.map(\.name) == ["default_lease_ttl", "disable_mlock", "ui"])
        #expect(body.blocks.map(\.type) == ["storage", "listener", "listener"])
    }

    @Test func blocksMapping() throws {
        let json = try HCL.parse("""
            a "l1" "l2" { x = 1 }
            a "l1" "l3" { y = 2 }
            a "l1" "l2" { z = 3, x = 4 }
            b { k = "v" }
            listener tcp { address = "x" }
            """)
        #expect(json["a"] == ["l1": ["l2": ["x": 4, "z": 3], "l3": ["y": 2]]])
        #expect(json["b"] == ["k": "v"])
        #expect(json["listener"] == ["tcp": ["address": "x"]])
    }

    @Test func repeatedAttributes() throws {
        let json = try HCL.parse("""
            a = 1
            a = 2
            o = { x = 1, y = 1 }
            o = { y = 2 }
            s = { x = 1 }
            s = "scalar"
            """)
        #expect(json["a"] == 2)
        #expect(json["o"] == ["x": 1, "y": 2])
        #expect(json["s"] == "scalar")
    }

    @Test func values() throws {
        let json = try HCL.parse(#"""
            s = "q\"b\\n\n\t\u00e9\U0001F600/"
            i = 42
            n = -7
            f = 1.5
            nf = -0.25
            e = 1e3
            h = 0x1F
            t = true
            ff = false
            empty = []
            nested = [[1, 2], {a = "b"}, "x"]
            "quoted key" = "v"
            dotted.key-name_1 = "ok"
            one_line = { a = 1, b = 2 }
            multi = {
              a = 1
              b = [
                "x",
                "y",
              ]
            }
            """#)
        #expect(json["s"] == "q\"b\\n\n\t\u{e9}\u{1F600}/")
        #expect(json["i"] == .int(42))
        #expect(json["n"] == .int(-7))
        #expect(json["f"] == .double(1.5))
        #expect(json["nf"] == .double(-0.25))
        #expect(json["e"] == .double(1000))
        #expect(json["h"] == .int(31))
        #expect(json["t"] == true)
        #expect(json["ff"] == false)
        #expect(json["empty"] == [])
        #expect(json["nested"] == [[1, 2], ["a": "b"], "x"])
        #expect(json["quoted key"] == "v")
        #expect(json["dotted.key-name_1"] == "ok")
        #expect(json["one_line"] == ["a": 1, "b": 2])
        #expect(json["multi"] == ["a": 1, "b": ["x", "y"]])
    }

    @Test func heredocs() throws {
        let json = try HCL.parse("""
            plain = <<EOF
            line one
              line two
            EOF
            indented = <<-EOT
                alpha
                  beta
                EOT
            empty = <<EOF
            EOF
            policy "p" {
              rules = <<RULES
            path "x" { capabilities = ["read"] }
            RULES
            }
            after = 1
            """)
        #expect(json["plain"] == "line one\n  line two\n")
        #expect(json["indented"] == "alpha\n  beta\n")
        #expect(json["empty"] == "")
        #expect(json["policy"]?["p"]?["rules"] == "path \"x\" { capabilities = [\"read\"] }\n")
        #expect(json["after"] == 1)
    }

    @Test func commentsEverywhere() throws {
        let json = try HCL.parse("""
            # hash
            // slashes
            /* block */ a = /* inline */ 1 # trailing
            b = "not # a comment // nor this /* */"
            /*
             multi-line
            */
            """)
        #expect(json == ["a": 1, "b": "not # a comment // nor this /* */"])
    }

    @Test func emptyAndCRLF() throws {
        #expect(try HCL.parse("") == [:])
        #expect(try HCL.parse("  \n# only a comment\n") == [:])
        #expect(try HCL.parse("a = 1\r\nb = \"x\"\r\nc = <<E\r\nhi\r\nE\r\n") == ["a": 1, "b": "x", "c": "hi\n"])
    }

    @Test func jsonInput() throws {
        let json = try HCL.parseHCLOrJSON(#"""
              {"path": {"secret/*": {"capabilities": ["read", "list"]}}}
            """#)
        #expect(json["path"]?["secret/*"]?["capabilities"] == ["read", "list"])
        // HCL still goes through the HCL parser.
        let hcl = try HCL.parseHCLOrJSON(#"path "secret/*" { capabilities = ["read", "list"] }"#)
        #expect(hcl == json)
        #expect(throws: CofferError.self) { try HCL.parseHCLOrJSON("{ \"a\": ") }
    }

    @Test func errorMessageHasPosition() throws {
        do {
            _ = try HCL.parse("a = 1\nb = 2\npath \"x\" \"y\"\n  [1]")
            Issue.record("expected an error")
        } catch let error as CofferError {
            #expect(error.code == .invalidRequest)
            #expect(error.message.hasPrefix("HCL parse error at line 4, column 3:"))
        }
        do {
            _ = try HCL.parse("a = 1\n  bad 7")
            Issue.record("expected an error")
        } catch let error as CofferError {
            #expect(error.message == "HCL parse error at line 2, column 7: expected '=' or '{' after key, found number")
        }
    }

    @Test func manyBlocksStayFast() throws {
        var text = ""
        for i in 0..<5000 { text += "path \"p/\(i)\" { capabilities = [\"read\"] }\n" }
        let json = try HCL.parse(text)
        #expect(json["path"]?.objectValue?.count == 5000)
    }

    @Test func nestingLimit() throws {
        func nested(_ depth: Int) -> String {
            "a = " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        }
        #expect(try HCL.parse(nested(HCL.maxDepth))["a"] != nil)
        #expect(throws: CofferError.self) { try HCL.parse(nested(HCL.maxDepth + 1)) }
    }

    /// A malformed input, named briefly so 10 000-character cases don't flood the test log.
    struct Malformed: CustomTestStringConvertible, Sendable {
        let text: String
        var testDescription: String {
            text.count <= 40 ? String(reflecting: text) : String(reflecting: String(text.prefix(30))) + "… (\(text.count) chars)"
        }
    }

    static let malformed: [Malformed] = [String]([
        #"a = "unterminated"#,
        "a = \"line\nbreak\"",
        #"a = "bad escape \q""#,
        #"a = "\u12""#,
        #"a = "\uD800""#,
        "a 1",
        "a b c = 1",
        "a = 1 }",
        "path \"x\" { a = 1 } }",
        "path \"x\" { a = 1",
        "path \"x\" {",
        "path \"x\"",
        "\u{1}\u{2}\u{ff}garbage",
        "a = @",
        "\u{00e9}t\u{00e9} = 1",
        "a = [1, 2",
        "a = [1 2]",
        "a = [,]",
        "a = ",
        "a =",
        "=",
        "}",
        "]",
        "a = }",
        "a = bare",
        "a = 1x",
        "a = 1.2.3",
        "a = 1e",
        "a = -",
        "a = 1e999",
        "a = 0xZZ",
        "a = <<EOF\nno end\n",
        "a = <<EOF",
        "a = <<\nx\n",
        "a = <<-EOF x\nEOF\n",
        "/* unterminated comment",
        "a = { b = 1",
        "a = { b }",
        String(repeating: "{", count: 10_000),
        "a = " + String(repeating: "{", count: 10_000),
        "a = " + String(repeating: "[", count: 10_000),
        "a = " + String(repeating: "{ b = ", count: 10_000),
        String(repeating: "a { ", count: 10_000),
        "a " + String(repeating: "\"l\" ", count: 10_000) + "{ }",
        String(repeating: "}", count: 10_000),
    ]).map(Malformed.init)

    @Test(arguments: malformed)
    func malformedInputThrows(_ input: Malformed) {
        let text = input.text
        #expect(throws: CofferError.self) { try HCL.parse(text) }
        #expect(throws: CofferError.self) { try HCL.parseBody(text) }
    }
}
