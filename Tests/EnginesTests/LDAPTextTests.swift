import CofferSDK
@testable import LDAPAuth
import Testing

/// The LDAP-injection guards: RFC 4515 filter escaping, RFC 4514 DN escaping, Vault's
/// filter templates, and how a group's name is read from its DN.
@Suite struct LDAPTextTests {
    @Test func filterMetacharactersAreEscaped() {
        #expect(LDAPText.escapeFilter("alice") == "alice")
        #expect(LDAPText.escapeFilter("*") == "\\2a")
        #expect(LDAPText.escapeFilter("a)(uid=*") == "a\\29\\28uid=\\2a")
        #expect(LDAPText.escapeFilter("back\\slash") == "back\\5cslash")
        #expect(LDAPText.escapeFilter("nul\u{0}") == "nul\\00")
        #expect(LDAPText.escapeFilter("é") == "\\c3\\a9")
    }

    @Test func dnValuesAreEscaped() {
        #expect(LDAPText.escapeDNValue("a,b") == "a\\,b")
        #expect(LDAPText.escapeDNValue(" lead") == "\\ lead")
        #expect(LDAPText.escapeDNValue("#x") == "\\#x")
        #expect(LDAPText.escapeDNValue("trail ") == "trail\\ ")
        #expect(LDAPText.escapeDNValue("a+b=c<d>;\"") == "a\\+b=c\\<d\\>\\;\\\"")
    }

    @Test func templatesRenderOnlyTheirFields() throws {
        let f = try LDAPText.render("(&(objectClass=person)({{.UserAttr}}={{ .Username }}))", ["UserAttr": "uid", "Username": LDAPText.escapeFilter("x*")])
        #expect(f == "(&(objectClass=person)(uid=x\\2a))")
        #expect(throws: CofferError.self) { try LDAPText.render("({{.Password}})", ["Username": "x"]) }
        #expect(throws: CofferError.self) { try LDAPText.render("({{.Username}", ["Username": "x"]) }
        #expect(throws: CofferError.self) { try LDAPText.check("(uid={{.UserDN}})", field: "userfilter", allowed: ["UserAttr", "Username"]) }
    }

    @Test func groupNamesComeFromTheFirstCN() {
        #expect(LDAPText.commonName("cn=engineers,ou=groups,dc=example,dc=com") == "engineers")
        #expect(LDAPText.commonName("ou=x,CN=Domain Admins,dc=corp") == "Domain Admins")
        #expect(LDAPText.commonName("cn=a\\,b,dc=x") == "a,b")
        #expect(LDAPText.commonName("cn=caf\\c3\\a9,dc=x") == "café")
        #expect(LDAPText.commonName("plain-name") == "plain-name")
        #expect(LDAPText.commonName("uid=bob,dc=x") == "uid=bob,dc=x")
    }
}
