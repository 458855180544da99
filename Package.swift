// swift-tools-version:6.1
import PackageDescription

/// One settings list, applied to every target: Swift 6 language mode with strict concurrency.
let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "coffer",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "coffer", targets: ["coffer"]),
        .library(name: "CofferSDK", targets: ["CofferSDK"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CMariaDB", pkgConfig: "libmariadb", providers: [.apt(["libmariadb-dev"])]),
        .systemLibrary(name: "CSQLite3", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CLDAP", pkgConfig: "ldap", providers: [.apt(["libldap-dev"])]),
        // The PKCS#11 header only (no .pc, nothing linked): the module is dlopen()ed at run time.
        .systemLibrary(name: "CPKCS11", providers: [.apt(["libsofthsm2-dev"])]),
        .target(
            name: "CofferSDK",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: settings
        ),
        // The audit broker, its entries, hash chain and devices (file, syslog, socket).
        .target(
            name: "Audit",
            dependencies: [
                "CofferSDK",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // JWS: compact tokens, public keys from JWKs and PEM, signature checks (identity tokens, JWT auth).
        .target(
            name: "JOSE",
            dependencies: [
                "CofferSDK",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: settings
        ),
        // Each namespace's identity store: entities, aliases, groups (the `identity/` mount).
        .target(
            name: "Identity",
            dependencies: [
                "CofferSDK", "JOSE",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "TenantCore",
            dependencies: [
                "CofferSDK", "Audit", "Identity",
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Crypto", package: "swift-crypto"),
                "CSQLite3",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: settings
        ),
        // Engines in pure Swift (KV, userpass, AppRole); an engine that links a C library has its own target, so
        // a change to one does not rebuild or relink the others.
        .target(
            name: "Engines",
            dependencies: [
                "CofferSDK", "JOSE",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: settings
        ),
        // The LDAP / Active Directory auth method, on OpenLDAP's libldap.
        .target(
            name: "LDAPAuth",
            dependencies: [
                "CofferSDK", "CLDAP",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // AWS: the SigV4 signer and a small signed-request client (KMS seal, later the AWS engine).
        .target(
            name: "AWSClient",
            dependencies: [
                "CofferSDK",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: settings
        ),
        // Auto seals: the root key wrapped by a PKCS#11 HSM or by AWS KMS.
        .target(
            name: "Seals",
            dependencies: [
                "CofferSDK", "TenantCore", "CPKCS11", "AWSClient",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // The database secret engine and its drivers (libpq, MariaDB Connector/C).
        .target(
            name: "DatabaseSecrets",
            dependencies: [
                "CofferSDK", "CLibPQ", "CMariaDB",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // Everything that spans nodes: the etcd storage tier and the HA campaign (which
        // drives a core).
        .target(
            name: "Replication",
            dependencies: [
                "CofferSDK", "TenantCore", "Audit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "Gateway",
            dependencies: [
                "CofferSDK", "TenantCore", "Audit", "Replication", "CHiredis",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "coffer",
            dependencies: [
                "CofferSDK", "TenantCore", "Audit", "Engines", "DatabaseSecrets", "LDAPAuth", "Gateway", "Replication", "Seals",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "coffer-ceiling",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")],
            path: "Ops/bench/ceiling",
            swiftSettings: settings
        ),
        .testTarget(name: "CofferSDKTests", dependencies: ["CofferSDK"], swiftSettings: settings),
        .testTarget(name: "AWSClientTests", dependencies: ["AWSClient"], swiftSettings: settings),
        .testTarget(
            name: "TenantCoreTests",
            dependencies: ["TenantCore", "Audit", "Identity", "JOSE", "Engines", "CofferSDK", "Replication", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: settings
        ),
        .testTarget(
            name: "EnginesTests",
            dependencies: ["Engines", "LDAPAuth", "TenantCore", "CofferSDK", "JOSE",
                           .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: settings
        ),
        .testTarget(
            name: "DatabaseSecretsTests",
            dependencies: ["DatabaseSecrets", "TenantCore", "CofferSDK", "CLibPQ", "CMariaDB"],
            swiftSettings: settings
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "Engines", "TenantCore",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: settings
        ),
    ]
)
