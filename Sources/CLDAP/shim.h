#ifndef COFFER_CLDAP_SHIM_H
#define COFFER_CLDAP_SHIM_H

// OpenLDAP's libldap (Debian's libldap-dev, 2.5). The shim wraps what Swift cannot pass
// cleanly: option values behind void pointers, struct timeval, struct berval, and
// LDAP_SASL_SIMPLE / LDAP_OPT_OFF, which are pointer macros that do not import.

#include <stddef.h>
#include <sys/time.h>
#include <ldap.h>

static inline int coffer_ldap_set_int(LDAP *ld, int option, int value) {
    return ldap_set_option(ld, option, &value);
}

static inline int coffer_ldap_set_string(LDAP *ld, int option, const char *value) {
    return ldap_set_option(ld, option, value);
}

static inline int coffer_ldap_set_seconds(LDAP *ld, int option, long seconds) {
    struct timeval tv;
    tv.tv_sec = seconds;
    tv.tv_usec = 0;
    return ldap_set_option(ld, option, &tv);
}

static inline int coffer_ldap_referrals_off(LDAP *ld) {
    return ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
}

/// A simple bind (RFC 4513 §5.1) with `len` bytes of password (0: an unauthenticated bind).
static inline int coffer_ldap_simple_bind(LDAP *ld, const char *dn, const char *password, size_t len) {
    struct berval cred;
    cred.bv_len = len;
    cred.bv_val = (char *)password;
    return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/// A subtree search bounded in time and in entries.
static inline int coffer_ldap_search(LDAP *ld, const char *base, const char *filter, char **attrs,
                                     long seconds, int sizelimit, LDAPMessage **res) {
    struct timeval tv;
    tv.tv_sec = seconds;
    tv.tv_usec = 0;
    return ldap_search_ext_s(ld, base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL, &tv, sizelimit, res);
}

#endif
