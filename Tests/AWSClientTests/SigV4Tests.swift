import Foundation
import XCTest

@testable import AWSClient

/// AWS Signature Version 4, checked against AWS's published SigV4 test suite
/// (https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html, as vendored in
/// bazelbuild/bazel under third_party/aws-sig-v4-test-suite).
///
/// Each vector holds the suite's `.req` verbatim and the expected `.creq`, `.sts` (its last line; the
/// first three are the same for every vector) and `.authz`. `.req` and `.authz` are the published files
/// (for get-vanilla, get-vanilla-query, get-relative, get-relative-relative, get-slash and
/// post-sts-header-after the `.authz` value is the one in the published `.sreq`); `.creq`/`.sts` are the
/// published files where the vendored copy has them and otherwise the canonical request that reproduces the
/// published signature (a signature commits to the string to sign, which commits to the canonical request).
/// post-header-key-case and post-vanilla-query are the same requests as post-vanilla and
/// post-vanilla-empty-query-value.
final class SigV4Tests: XCTestCase {
    static let credentials = AWSCredentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    )
    static let sessionToken =
        "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
    /// 20150830T123600Z
    static let date = Date(timeIntervalSince1970: 1_440_938_160)
    static let signer = SigV4Signer(credentials: credentials, region: "us-east-1", service: "service")
    static let stsSigner = SigV4Signer(
        credentials: AWSCredentials(
            accessKeyID: credentials.accessKeyID, secretAccessKey: credentials.secretAccessKey, sessionToken: sessionToken
        ),
        region: "us-east-1", service: "service"
    )
    static let stsPrefix = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"

    struct Vector: Sendable {
        var name: String
        var req: String
        var creq: String
        var sts: String
        var authz: String

        init(_ name: String, req: String, creq: String, sts: String, authz: String) {
            self.name = name
            self.req = req
            self.creq = creq
            self.sts = sts
            self.authz = authz
        }
    }

    static let vectors: [Vector] = [
        Vector(
            "get-header-key-duplicate",
            req: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value2\nMy-Header1:value2\nMy-Header1:value1\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
        ),
        Vector(
            "get-header-value-multiline",
            req: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\n  value2\n     value3\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1,value2,value3\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "b7b6cbfd8a0430b78891e986784da2630c8a135a8595cec25b26ea94f926ee55",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=ba17b383a53190154eb5fa66a1b836cc297cc0a3d70a5d00705980573d8ff790"
        ),
        Vector(
            "get-header-value-order",
            req: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value4\nMy-Header1:value1\nMy-Header1:value3\nMy-Header1:value2\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value4,value1,value3,value2\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"
        ),
        Vector(
            "get-header-value-trim",
            req: "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1: value1\nMy-Header2: \"a   b   c\"\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
        ),
        Vector(
            "get-unreserved",
            req: "GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"
        ),
        Vector(
            "get-utf8",
            req: "GET /\u{1234} HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
        ),
        Vector(
            "get-vanilla",
            req: "GET / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
        Vector(
            "get-vanilla-empty-query-key",
            req: "GET /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "1e24db194ed7d0eec2de28d7369675a243488e08526e8c1c73571282f7c517ab",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"
        ),
        Vector(
            "get-vanilla-query",
            req: "GET / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
        Vector(
            "get-vanilla-query-order-key",
            req: "GET /?Param1=value2&Param1=Value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"
        ),
        Vector(
            "get-vanilla-query-order-key-case",
            req: "GET /?Param2=value2&Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ),
        Vector(
            "get-vanilla-query-order-value",
            req: "GET /?Param1=value2&Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\nParam1=value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "c968629d70850097a2d8781c9bf7edcb988b04cac14cca9be4acc3595f884606",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"
        ),
        Vector(
            "get-vanilla-query-unreserved",
            req: "GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "c30d4703d9f799439be92736156d47ccfb2d879ddf56f5befa6d1d6aab979177",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"
        ),
        Vector(
            "get-vanilla-utf8-query",
            req: "GET /?\u{1234}=bar HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n%E1%88%B4=bar\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"
        ),
        Vector(
            "normalize-path/get-relative",
            req: "GET /example/.. HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
        Vector(
            "normalize-path/get-relative-relative",
            req: "GET /example1/example2/../.. HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
        Vector(
            "normalize-path/get-slash",
            req: "GET // HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
        Vector(
            "normalize-path/get-slash-dot-slash",
            req: "GET /./ HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
        Vector(
            "normalize-path/get-slash-pointless-dot",
            req: "GET /./example HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/example\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "214d50c111a8edc4819da6a636336472c916b5240f51e9a51b5c3305180cf702",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"
        ),
        Vector(
            "normalize-path/get-slashes",
            req: "GET //example// HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/example/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "cb96b4ac96d501f7c5c15bc6d67b3035061cfced4af6585ad927f7e6c985c015",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"
        ),
        Vector(
            "normalize-path/get-space",
            req: "GET /example space/ HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "GET\n/example%20space/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"
        ),
        Vector(
            "post-header-key-sort",
            req: "POST / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\nX-Amz-Date:20150830T123600Z",
            creq: "POST\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "9368318c2967cf6de74404b30c65a91e8f6253e0a8659d6d5319f1a812f87d65",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
        ),
        Vector(
            "post-header-value-case",
            req: "POST / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:VALUE1\nX-Amz-Date:20150830T123600Z",
            creq: "POST\n/\n\nhost:example.amazonaws.com\nmy-header1:VALUE1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "d51ced243e649e3de6ef63afbbdcbca03131a21a7103a1583706a64618606a93",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"
        ),
        Vector(
            "post-sts-token/post-sts-header-before",
            req: "POST / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\nX-Amz-Security-Token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==",
            creq: "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\nx-amz-security-token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==\n\nhost;x-amz-date;x-amz-security-token\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        ),
        Vector(
            "post-vanilla",
            req: "POST / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ),
        Vector(
            "post-vanilla-empty-query-value",
            req: "POST /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "POST\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
        ),
        Vector(
            "post-x-www-form-urlencoded",
            req: "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\nParam1=value1",
            creq: "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            sts: "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        ),
        Vector(
            "post-x-www-form-urlencoded-parameters",
            req: "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded; charset=utf8\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\nParam1=value1",
            creq: "POST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf8\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            sts: "2e1cf7ed91881a30569e46552437e4156c823447bf1781b921b5d486c568dd1c",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"
        ),
        Vector(
            "post-header-key-case",
            req: "POST / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ),
        Vector(
            "post-vanilla-query",
            req: "POST /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            creq: "POST\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            sts: "9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd",
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
        ),
    ]

    // MARK: The published vectors, by group

    func testHeaderVectors() { run(Self.headerNames) }

    func testQueryVectors() { run(Self.queryNames) }

    func testPathVectors() { run(Self.pathNames) }

    func testVanillaAndBodyVectors() { run(Self.bodyNames) }

    /// post-sts-header-before: the session token is sent as X-Amz-Security-Token and signed.
    func testSessionTokenSignedVector() {
        run(["post-sts-token/post-sts-header-before"], signer: Self.stsSigner)
    }

    /// post-sts-header-after: the token is added after signing, so the signature is post-vanilla's.
    func testSessionTokenAddedAfterVector() {
        let sent = Self.signer.sign(
            method: "POST", path: "/", query: "", headers: [("Host", "example.amazonaws.com")], body: [], date: Self.date
        ) + [("X-Amz-Security-Token", Self.sessionToken)]
        XCTAssertEqual(
            values(sent, "authorization"),
            ["AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"],
            "post-sts-header-after: Authorization"
        )
        XCTAssertEqual(values(sent, "x-amz-security-token"), [Self.sessionToken])
    }

    func testEveryVectorIsInAGroup() {
        let grouped = Set(Self.headerNames + Self.queryNames + Self.pathNames + Self.bodyNames
            + ["post-sts-token/post-sts-header-before"])
        XCTAssertEqual(Set(Self.vectors.map(\.name)), grouped)
        XCTAssertEqual(Self.vectors.count, 30)
    }

    static let headerNames = ["get-header-key-duplicate", "get-header-value-multiline", "get-header-value-order",
                              "get-header-value-trim", "post-header-key-case", "post-header-key-sort", "post-header-value-case"]
    static let queryNames = ["get-vanilla-query", "get-vanilla-empty-query-key", "get-vanilla-query-order-key",
                             "get-vanilla-query-order-key-case", "get-vanilla-query-order-value", "get-vanilla-query-unreserved",
                             "get-vanilla-utf8-query", "post-vanilla-query", "post-vanilla-empty-query-value"]
    static let pathNames = ["get-unreserved", "get-utf8", "normalize-path/get-relative", "normalize-path/get-relative-relative",
                            "normalize-path/get-slash", "normalize-path/get-slash-dot-slash", "normalize-path/get-slash-pointless-dot",
                            "normalize-path/get-slashes", "normalize-path/get-space"]
    static let bodyNames = ["get-vanilla", "post-vanilla", "post-x-www-form-urlencoded", "post-x-www-form-urlencoded-parameters"]

    /// Checks the named vectors: canonical request, string to sign, and `sign`'s Authorization and headers.
    private func run(_ names: [String], signer: SigV4Signer = SigV4Tests.signer, file: StaticString = #filePath, line: UInt = #line) {
        for name in names {
            guard let vector = Self.vectors.first(where: { $0.name == name }) else {
                XCTFail("\(name): no such vector", file: file, line: line)
                continue
            }
            guard let req = ParsedRequest(vector.req) else {
                XCTFail("\(name): the .req did not parse", file: file, line: line)
                continue
            }
            let creq = signer.canonicalRequest(
                method: req.method, path: req.path, query: req.query, headers: req.headers,
                payloadHash: SigV4Signer.hexSHA256(req.body)
            )
            XCTAssertEqual(creq, vector.creq, "\(name): canonical request (.creq)", file: file, line: line)
            let sts = signer.stringToSign(canonicalRequest: creq, date: Self.date)
            XCTAssertEqual(sts, Self.stsPrefix + vector.sts, "\(name): string to sign (.sts)", file: file, line: line)

            // `sign` adds X-Amz-Date (and the token) itself, so it gets the request without them.
            let input = req.headers.filter { header in
                let lower = header.0.lowercased()
                return lower != "x-amz-date" && lower != "x-amz-security-token"
            }
            let result = signer.signDetailed(
                method: req.method, path: req.path, query: req.query, headers: input,
                payloadHash: SigV4Signer.hexSHA256(req.body), date: Self.date
            )
            XCTAssertEqual(result.canonicalRequest, vector.creq, "\(name): sign's canonical request", file: file, line: line)
            XCTAssertEqual(result.authorization, vector.authz, "\(name): Authorization (.authz)", file: file, line: line)
            let sent = signer.sign(
                method: req.method, path: req.path, query: req.query, headers: input, body: req.body, date: Self.date
            )
            XCTAssertEqual(values(sent, "authorization"), [vector.authz], "\(name): sign's Authorization", file: file, line: line)
            XCTAssertEqual(values(sent, "x-amz-date"), ["20150830T123600Z"], "\(name): X-Amz-Date", file: file, line: line)
            // What is sent is the .sreq: the .req's headers plus Authorization.
            XCTAssertEqual(
                grouped(sent), grouped(req.headers + [("Authorization", vector.authz)]),
                "\(name): headers sent (.sreq)", file: file, line: line
            )
        }
    }

    // MARK: Robustness

    func testNonASCIIHeaderValueAndPath() {
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Meta-Name", "  Zo\u{EB}   \u{DC}n\u{EF}c\u{F8}d\u{E9}\t\t\u{1234} "),
        ]
        let result = Self.signer.signDetailed(
            method: "PUT", path: "/docs/r\u{E9}sum\u{E9}.txt", query: "", headers: headers,
            payloadHash: SigV4Signer.hexSHA256(Array("h\u{E9}llo".utf8)), date: Self.date
        )
        XCTAssertEqual(
            result.canonicalRequest,
            "PUT\n/docs/r%C3%A9sum%C3%A9.txt\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n"
                + "x-amz-meta-name:Zo\u{EB} \u{DC}n\u{EF}c\u{F8}d\u{E9} \u{1234}\n\nhost;x-amz-date;x-amz-meta-name\n"
                + "3c48591d8d098a4538f5e013dfcf406e948eac4d3277b10bf614e295d6068179"
        )
        XCTAssertEqual(result.signature, "762daa8da97ee6a1c1b4c768ae003a41a069570476365951cc6a5038da1f745a")
    }

    func testEmptyBody() {
        XCTAssertEqual(SigV4Signer.hexSHA256([]), SigV4Signer.emptyPayloadHash)
        let headers = [("Host", "example.amazonaws.com")]
        let sent = Self.signer.sign(method: "POST", path: "/", query: "", headers: headers, body: [], date: Self.date)
        let detailed = Self.signer.signDetailed(
            method: "POST", path: "/", query: "", headers: headers, payloadHash: SigV4Signer.emptyPayloadHash, date: Self.date
        )
        XCTAssertEqual(values(sent, "authorization"), [detailed.authorization])
        XCTAssertTrue(detailed.canonicalRequest.hasSuffix("\n" + SigV4Signer.emptyPayloadHash))
        XCTAssertEqual(detailed.signature, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")  // post-vanilla
    }

    func testQueryWithPlusEqualsAndPercent() {
        // `+` is a literal plus (not a space); `=` after the first belongs to the value; a `%` that does
        // not start an escape is a literal percent; escapes are re-encoded with upper-case hex.
        let query = "b=2&a=x+y&c=d=e&pct=100%&enc=%2b%7e&flag&&z="
        XCTAssertEqual(SigV4Signer.canonicalQuery(query), "a=x%2By&b=2&c=d%3De&enc=%2B~&flag=&pct=100%25&z=")
        XCTAssertEqual(SigV4Signer.canonicalQuery("q=a%20b&r=a b&s=%zz&t=%"), "q=a%20b&r=a%20b&s=%25zz&t=%25")
        XCTAssertEqual(SigV4Signer.canonicalQuery(""), "")
        let result = Self.signer.signDetailed(
            method: "GET", path: "/", query: query, headers: [("Host", "example.amazonaws.com")],
            payloadHash: SigV4Signer.emptyPayloadHash, date: Self.date
        )
        XCTAssertEqual(result.signature, "b656a07195b94bb3c420b387f97828319517ad46a11a5380ad33f27b5b1a5d14")
    }

    func testPathRules() {
        let signer = Self.signer
        XCTAssertEqual(signer.canonicalURI(""), "/")
        XCTAssertEqual(signer.canonicalURI("/a%20b/c"), "/a%2520b/c")  // the path as sent is encoded again
        XCTAssertEqual(signer.canonicalURI("/a/."), "/a/")
        XCTAssertEqual(signer.canonicalURI("/a/b/../c/./d"), "/a/c/d")
        XCTAssertEqual(signer.canonicalURI("/../a"), "/a")
        let s3 = SigV4Signer(credentials: Self.credentials, region: "us-east-1", service: "s3")
        XCTAssertTrue(s3.s3PathRules)
        XCTAssertEqual(s3.canonicalURI("/my-object//example//photo.user"), "/my-object//example//photo.user")
        XCTAssertEqual(s3.canonicalURI("/a%20b/\u{1234}"), "/a%20b/%E1%88%B4")
    }

    func testSignReplacesStaleDateAuthorizationAndToken() {
        let headers = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "19990101T000000Z"),
            ("AUTHORIZATION", "stale"),
            ("x-amz-security-token", "stale"),
        ]
        let sent = Self.stsSigner.sign(method: "POST", path: "/", query: "", headers: headers, body: [], date: Self.date)
        XCTAssertEqual(values(sent, "x-amz-date"), ["20150830T123600Z"])
        XCTAssertEqual(values(sent, "x-amz-security-token"), [Self.sessionToken])
        XCTAssertEqual(
            values(sent, "authorization"),
            ["AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"]
        )
    }

    func testDescriptionsDoNotRevealSecrets() {
        let secret = Self.credentials.secretAccessKey
        for signer in [Self.signer, Self.stsSigner] {
            var dumped = ""
            dump(signer, to: &dumped)
            var dumpedCredentials = ""
            dump(signer.credentials, to: &dumpedCredentials)
            let texts = [
                String(describing: signer), String(reflecting: signer), "\(signer)", dumped,
                String(describing: signer.credentials), String(reflecting: signer.credentials), dumpedCredentials,
            ]
            for text in texts {
                XCTAssertFalse(text.contains(secret), "secret in: \(text)")
                XCTAssertFalse(text.contains(Self.sessionToken), "session token in: \(text)")
                XCTAssertTrue(text.contains("AKIDEXAMPLE"), "no access key ID in: \(text)")
            }
        }
    }

    func testDates() {
        func amz(_ t: TimeInterval) -> String { SigV4Signer.amzDate(Date(timeIntervalSince1970: t)) }
        XCTAssertEqual(amz(1_440_938_160), "20150830T123600Z")
        XCTAssertEqual(amz(951_782_400), "20000229T000000Z")
        XCTAssertEqual(amz(1_709_251_199.999), "20240229T235959Z")
        XCTAssertEqual(amz(0), "19700101T000000Z")
        XCTAssertEqual(amz(-1), "19691231T235959Z")
        XCTAssertEqual(amz(4_102_444_800), "21000101T000000Z")
        XCTAssertEqual(SigV4Signer.dateStamp(Self.date), "20150830")
        XCTAssertEqual(Self.signer.credentialScope(date: Self.date), "20150830/us-east-1/service/aws4_request")
    }

    /// The signing-key and IAM ListUsers examples from the AWS SigV4 documentation.
    func testDocumentationExample() {
        let iam = SigV4Signer(credentials: Self.credentials, region: "us-east-1", service: "iam")
        XCTAssertEqual(
            SigV4Signer.hex(iam.signingKeyBytes(dateStamp: "20150830")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        )
        let headers = [
            ("Host", "iam.amazonaws.com"),
            ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ]
        let result = iam.signDetailed(
            method: "GET", path: "/", query: "Action=ListUsers&Version=2010-05-08", headers: headers,
            payloadHash: SigV4Signer.emptyPayloadHash, date: Self.date
        )
        XCTAssertEqual(result.signature, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    }

    // MARK: Helpers

    /// The values sent under a header name (case-insensitive), in order.
    private func values(_ headers: [(String, String)], _ name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name }.map { $0.1 }
    }

    /// Header values by lower-cased name, in order.
    private func grouped(_ headers: [(String, String)]) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for (name, value) in headers { out[name.lowercased(), default: []].append(value) }
        return out
    }
}

/// A test-suite `.req`: `METHOD target HTTP/1.1`, header lines, a blank line, the body. The target may hold a
/// raw space (get-space), so the method ends at the first space and the version starts at the last ` HTTP/`.
/// A line starting with whitespace continues the previous header (get-header-value-multiline); it is passed
/// on as another value of that header, which the signer trims and joins with `,` as the suite expects.
struct ParsedRequest {
    var method: String
    var path: String
    var query: String
    var headers: [(String, String)] = []
    var body: [UInt8] = []

    init?(_ raw: String) {
        var lines = raw.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard !lines.isEmpty else { return nil }
        let requestLine = lines.removeFirst()
        guard let firstSpace = requestLine.firstIndex(of: " "),
              let version = requestLine.range(of: " HTTP/", options: .backwards),
              firstSpace < version.lowerBound
        else { return nil }
        method = String(requestLine[..<firstSpace])
        let target = requestLine[requestLine.index(after: firstSpace)..<version.lowerBound]
        if let mark = target.firstIndex(of: "?") {
            path = String(target[..<mark])
            query = String(target[target.index(after: mark)...])
        } else {
            path = String(target)
            query = ""
        }
        var index = 0
        while index < lines.count, !lines[index].isEmpty {
            let line = lines[index]
            if line.hasPrefix(" ") || line.hasPrefix("\t") {
                guard let previous = headers.last else { return nil }
                headers.append((previous.0, line))
            } else {
                guard let colon = line.firstIndex(of: ":") else { return nil }
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
            index += 1
        }
        if index < lines.count {
            body = Array(lines[(index + 1)...].joined(separator: "\n").utf8)
        }
    }
}
