// The PKCS#11 calls the HSM seal makes, over the standard header (Debian's
// libsofthsm2-dev ships it as <softhsm/pkcs11.h>). The module itself is dlopen()ed at run
// time from the configured path, so no library is linked. Each helper is one PKCS#11 step
// with its attribute templates and mechanism parameters on the C stack, where their
// storage outlives the call (the function list's members are plain C function pointers).
#ifndef COFFER_PKCS11_SHIM_H
#define COFFER_PKCS11_SHIM_H

#include <dlfcn.h>
#include <string.h>
#include <softhsm/pkcs11.h>

static inline void *coffer_p11_dlopen(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static inline const char *coffer_p11_dlerror(void) { return dlerror(); }
static inline void coffer_p11_dlclose(void *handle) { if (handle) dlclose(handle); }

/// C_GetFunctionList of a loaded module; NULL when the symbol is missing.
static inline CK_FUNCTION_LIST_PTR coffer_p11_functions(void *handle, CK_RV *rv) {
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
    CK_FUNCTION_LIST_PTR list = NULL;
    if (!get) { *rv = CKR_FUNCTION_NOT_SUPPORTED; return NULL; }
    *rv = get(&list);
    return *rv == CKR_OK ? list : NULL;
}

/// C_Initialize with the OS locking primitives (the seal calls from several threads).
static inline CK_RV coffer_p11_initialize(CK_FUNCTION_LIST_PTR f) {
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    CK_RV rv = f->C_Initialize(&args);
    return rv == CKR_CRYPTOKI_ALREADY_INITIALIZED ? CKR_OK : rv;
}

static inline CK_RV coffer_p11_finalize(CK_FUNCTION_LIST_PTR f) { return f->C_Finalize(NULL); }

/// The slot whose token has `label` (space-padded to 32 bytes in the token info), or
/// `wanted` when label is NULL. CKR_TOKEN_NOT_PRESENT when none matches.
static inline CK_RV coffer_p11_find_slot(CK_FUNCTION_LIST_PTR f, const char *label, unsigned long wanted, int byLabel, CK_SLOT_ID *out) {
    CK_SLOT_ID slots[64];
    CK_ULONG count = 64;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &count);
    if (rv != CKR_OK) return rv;
    for (CK_ULONG i = 0; i < count; i++) {
        if (!byLabel) {
            if (slots[i] == wanted) { *out = slots[i]; return CKR_OK; }
            continue;
        }
        CK_TOKEN_INFO info;
        if (f->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
        char padded[32];
        size_t n = strlen(label);
        if (n > 32) continue;
        memset(padded, ' ', 32);
        memcpy(padded, label, n);
        if (memcmp(padded, info.label, 32) == 0) { *out = slots[i]; return CKR_OK; }
    }
    return CKR_TOKEN_NOT_PRESENT;
}

/// A read-write session on `slot`, logged in as the user.
static inline CK_RV coffer_p11_open(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot, const char *pin, unsigned long pinLen, CK_SESSION_HANDLE *out) {
    CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, out);
    if (rv != CKR_OK) return rv;
    rv = f->C_Login(*out, CKU_USER, (CK_UTF8CHAR_PTR)pin, pinLen);
    if (rv == CKR_USER_ALREADY_LOGGED_IN) rv = CKR_OK;
    if (rv != CKR_OK) { f->C_CloseSession(*out); *out = CK_INVALID_HANDLE; }
    return rv;
}

static inline void coffer_p11_close(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s) {
    if (s != CK_INVALID_HANDLE) f->C_CloseSession(s);
}

/// The first object of class `cls` labelled `label`; *found = 0 when there is none.
static inline CK_RV coffer_p11_find(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *out, int *found) {
    CK_ATTRIBUTE tmpl[2] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_LABEL, (void *)label, strlen(label) },
    };
    *found = 0;
    CK_RV rv = f->C_FindObjectsInit(s, tmpl, 2);
    if (rv != CKR_OK) return rv;
    CK_ULONG n = 0;
    rv = f->C_FindObjects(s, out, 1, &n);
    f->C_FindObjectsFinal(s);
    if (rv == CKR_OK && n == 1) *found = 1;
    return rv;
}

/// A 256-bit AES key on the token: sensitive, not extractable, for encrypt/decrypt only.
static inline CK_RV coffer_p11_generate_aes(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *out) {
    CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) }, { CKA_KEY_TYPE, &kt, sizeof(kt) },
        { CKA_VALUE_LEN, &len, sizeof(len) }, { CKA_LABEL, (void *)label, strlen(label) },
        { CKA_TOKEN, &yes, sizeof(yes) }, { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_SENSITIVE, &yes, sizeof(yes) }, { CKA_EXTRACTABLE, &no, sizeof(no) },
        { CKA_ENCRYPT, &yes, sizeof(yes) }, { CKA_DECRYPT, &yes, sizeof(yes) },
        { CKA_WRAP, &no, sizeof(no) }, { CKA_UNWRAP, &no, sizeof(no) },
    };
    return f->C_GenerateKey(s, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), out);
}

/// A 2048-bit RSA key pair on the token (public: encrypt; private: decrypt, sensitive).
static inline CK_RV coffer_p11_generate_rsa(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv) {
    CK_MECHANISM mech = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
    CK_ULONG bits = 2048;
    CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE pubTmpl[] = {
        { CKA_LABEL, (void *)label, strlen(label) }, { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_MODULUS_BITS, &bits, sizeof(bits) }, { CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent) },
        { CKA_ENCRYPT, &yes, sizeof(yes) }, { CKA_VERIFY, &no, sizeof(no) }, { CKA_WRAP, &no, sizeof(no) },
    };
    CK_ATTRIBUTE privTmpl[] = {
        { CKA_LABEL, (void *)label, strlen(label) }, { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) }, { CKA_SENSITIVE, &yes, sizeof(yes) },
        { CKA_EXTRACTABLE, &no, sizeof(no) }, { CKA_DECRYPT, &yes, sizeof(yes) },
        { CKA_SIGN, &no, sizeof(no) }, { CKA_UNWRAP, &no, sizeof(no) },
    };
    return f->C_GenerateKeyPair(s, &mech, pubTmpl, sizeof(pubTmpl) / sizeof(pubTmpl[0]),
                                privTmpl, sizeof(privTmpl) / sizeof(privTmpl[0]), pub, priv);
}

/// One C_EncryptInit+C_Encrypt (or the Decrypt pair) with `mech`; `*outLen` is the
/// capacity of `out` on entry and the length written on return.
static inline CK_RV coffer_p11_crypt(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key,
                                     int encrypt, const unsigned char *in, unsigned long inLen,
                                     unsigned char *out, unsigned long *outLen) {
    CK_ULONG n = *outLen;
    CK_RV rv;
    if (encrypt) {
        rv = f->C_EncryptInit(s, mech, key);
        if (rv != CKR_OK) return rv;
        rv = f->C_Encrypt(s, (CK_BYTE_PTR)in, inLen, out, &n);
    } else {
        rv = f->C_DecryptInit(s, mech, key);
        if (rv != CKR_OK) return rv;
        rv = f->C_Decrypt(s, (CK_BYTE_PTR)in, inLen, out, &n);
    }
    *outLen = n;
    return rv;
}

/// AES-GCM (96-bit IV, 128-bit tag, `aad` authenticated). Encrypt: out holds inLen + 16.
static inline CK_RV coffer_p11_aes_gcm(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, int encrypt,
                                       unsigned char *iv, unsigned long ivLen, const unsigned char *aad, unsigned long aadLen,
                                       const unsigned char *in, unsigned long inLen, unsigned char *out, unsigned long *outLen) {
    CK_GCM_PARAMS params;
    memset(&params, 0, sizeof(params));
    params.pIv = iv;
    params.ulIvLen = ivLen;
    params.ulIvBits = ivLen * 8;
    params.pAAD = (CK_BYTE_PTR)aad;
    params.ulAADLen = aadLen;
    params.ulTagBits = 128;
    CK_MECHANISM mech = { CKM_AES_GCM, &params, sizeof(params) };
    return coffer_p11_crypt(f, s, &mech, key, encrypt, in, inLen, out, outLen);
}

/// RSA-OAEP with `hash` (a CKM_SHA* mechanism) and MGF1 over the same hash (`mgf`, a
/// CKG_MGF1_* value). Encrypt with the public key, decrypt with the private.
static inline CK_RV coffer_p11_rsa_oaep(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, int encrypt,
                                        unsigned long hash, unsigned long mgf,
                                        const unsigned char *in, unsigned long inLen, unsigned char *out, unsigned long *outLen) {
    CK_RSA_PKCS_OAEP_PARAMS params;
    memset(&params, 0, sizeof(params));
    params.hashAlg = hash;
    params.mgf = mgf;
    params.source = CKZ_DATA_SPECIFIED;
    CK_MECHANISM mech = { CKM_RSA_PKCS_OAEP, &params, sizeof(params) };
    return coffer_p11_crypt(f, s, &mech, key, encrypt, in, inLen, out, outLen);
}

#endif
