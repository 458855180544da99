#ifndef COFFER_CMARIADB_SHIM_H
#define COFFER_CMARIADB_SHIM_H

// MariaDB Connector/C 3.3 (Debian 12's libmariadb-dev, header <mysql.h>). Swift cannot call
// macros or variadic functions: these wrappers stand in for the ones the driver needs.

#include <stddef.h>
#include <mysql.h>
#include <errmsg.h>

/// `mysql_library_init` is a macro for `mysql_server_init`. Not thread-safe: call it once,
/// before any other client call (`mysql_init` would otherwise run it unsynchronised).
static inline int coffer_mysql_library_init(void) {
    return mysql_server_init(0, NULL, NULL);
}

/// Sets an unsigned-int option (the connect/read/write timeouts, the protocol).
static inline int coffer_mysql_set_uint_option(MYSQL *mysql, enum mysql_option option, unsigned int value) {
    return mysql_options(mysql, option, &value);
}

/// Sets a my_bool option (TLS enforcement and verification, reconnect).
static inline int coffer_mysql_set_bool_option(MYSQL *mysql, enum mysql_option option, int value) {
    my_bool flag = value ? 1 : 0;
    return mysql_options(mysql, option, &flag);
}

#endif
