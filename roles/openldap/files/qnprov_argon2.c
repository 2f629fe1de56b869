/*
 * qnprov_argon2: slapd password scheme {ARGON2}, hashing with argon2id.
 *
 * A thin wrapper over libargon2 (Debian's libargon2-1, which slapd already
 * depends on); it replaces Debian 12's /usr/lib/ldap/argon2.so, which hashes
 * with argon2i whatever it is told and stores the encoded length computed for
 * argon2id plus the C terminator, so every value it writes ends in a NUL and one
 * stray byte (docs/ldap-schema.md, "Passwords").
 *
 * Hashing: argon2id_hash_encoded() into a buffer of argon2_encodedlen() bytes;
 * what is stored is "{ARGON2}" and strlen() of the result, nothing after it.
 * Verifying: by the variant the stored value names, $argon2id$ or $argon2i$, so
 * hashes written earlier (by qnprov or by Debian's module, junk and all: the
 * value is read as a C string) still verify. argon2d is refused.
 *
 * Module arguments (olcModuleLoad: /path/qnprov_argon2.so m=19456 t=2 p=1):
 * m memory in KiB, t passes, p lanes. Values below OWASP's argon2id floor
 * (m >= 19456, t >= 2, p = 1) make init_module fail, so slapd and slaptest
 * refuse the configuration instead of hashing weakly.
 *
 * Built by roles/openldap/files/build-qnprov-argon2.sh against lber.h
 * (libldap-dev) and argon2.h (libargon2-dev). slapd's private liblutil has no
 * public header, so the three declarations it needs are written out below,
 * exactly as in OpenLDAP 2.5's include/lutil.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <argon2.h>
#include <lber.h>

#define QN_SCHEME "{ARGON2}"
#define QN_SALT_LENGTH 16
#define QN_HASH_LENGTH 32
#define QN_MIN_MEMORY_KIB 19456u
#define QN_MIN_PASSES 2u
#define QN_LANES 1u

#define LUTIL_PASSWD_OK 0
#define LUTIL_PASSWD_ERR (-1)

typedef int(LUTIL_PASSWD_CHK_FUNC)(const struct berval *scheme, const struct berval *passwd,
                                   const struct berval *cred, const char **text);
typedef int(LUTIL_PASSWD_HASH_FUNC)(const struct berval *scheme, const struct berval *passwd,
                                    struct berval *hash, const char **text);
extern int lutil_passwd_add(struct berval *scheme, LUTIL_PASSWD_CHK_FUNC *chk_fn,
                            LUTIL_PASSWD_HASH_FUNC *hash_fn);

int init_module(int argc, char *argv[]);

static struct berval qn_scheme = {sizeof(QN_SCHEME) - 1, QN_SCHEME};
static uint32_t qn_memory = QN_MIN_MEMORY_KIB;
static uint32_t qn_passes = QN_MIN_PASSES;
static uint32_t qn_lanes = QN_LANES;

static int qn_hash(const struct berval *scheme, const struct berval *passwd, struct berval *hash,
                   const char **text)
{
    unsigned char salt[QN_SALT_LENGTH];
    size_t encoded_len, size = 0;
    char *out;
    int rc;

    (void)text;
    while (size < sizeof(salt)) {
        ssize_t got = getrandom(salt + size, sizeof(salt) - size, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return LUTIL_PASSWD_ERR;
        }
        size += (size_t)got;
    }
    /* argon2_encodedlen counts the terminating NUL; it is never stored. */
    encoded_len = argon2_encodedlen(qn_passes, qn_memory, qn_lanes, QN_SALT_LENGTH, QN_HASH_LENGTH,
                                    Argon2_id);
    out = ber_memalloc(scheme->bv_len + encoded_len);
    if (out == NULL)
        return LUTIL_PASSWD_ERR;
    memcpy(out, scheme->bv_val, scheme->bv_len);
    rc = argon2id_hash_encoded(qn_passes, qn_memory, qn_lanes, passwd->bv_val, passwd->bv_len, salt,
                               QN_SALT_LENGTH, QN_HASH_LENGTH, out + scheme->bv_len, encoded_len);
    memset(salt, 0, sizeof(salt));
    if (rc != ARGON2_OK) {
        ber_memfree(out);
        return LUTIL_PASSWD_ERR;
    }
    hash->bv_val = out;
    hash->bv_len = scheme->bv_len + strlen(out + scheme->bv_len);
    return LUTIL_PASSWD_OK;
}

static int qn_check(const struct berval *scheme, const struct berval *passwd, const struct berval *cred,
                    const char **text)
{
    argon2_type type;
    char *encoded;
    int rc;

    (void)scheme;
    (void)text;
    /* passwd is the stored value after "{ARGON2}"; read it as a C string. */
    encoded = ber_memalloc(passwd->bv_len + 1);
    if (encoded == NULL)
        return LUTIL_PASSWD_ERR;
    memcpy(encoded, passwd->bv_val, passwd->bv_len);
    encoded[passwd->bv_len] = '\0';
    if (strncmp(encoded, "$argon2id$", 10) == 0) {
        type = Argon2_id;
    } else if (strncmp(encoded, "$argon2i$", 9) == 0) {
        type = Argon2_i;
    } else {
        ber_memfree(encoded);
        return LUTIL_PASSWD_ERR;
    }
    rc = argon2_verify(encoded, cred->bv_val, cred->bv_len, type);
    ber_memfree(encoded);
    return rc == ARGON2_OK ? LUTIL_PASSWD_OK : LUTIL_PASSWD_ERR;
}

static int qn_parse(const char *arg, const char *key, uint32_t *value)
{
    size_t key_len = strlen(key);
    unsigned long parsed;
    char *end;

    if (strncmp(arg, key, key_len) != 0)
        return 0;
    errno = 0;
    parsed = strtoul(arg + key_len, &end, 10);
    if (errno != 0 || end == arg + key_len || *end != '\0' || parsed > UINT32_MAX)
        return -1;
    *value = (uint32_t)parsed;
    return 1;
}

int init_module(int argc, char *argv[])
{
    int i, found;

    for (i = 0; i < argc; i++) {
        found = qn_parse(argv[i], "m=", &qn_memory);
        if (found == 0)
            found = qn_parse(argv[i], "t=", &qn_passes);
        if (found == 0)
            found = qn_parse(argv[i], "p=", &qn_lanes);
        if (found != 1) {
            fprintf(stderr, "qnprov_argon2: bad argument \"%s\" (m=KiB t=passes p=lanes)\n", argv[i]);
            return -1;
        }
    }
    if (qn_memory < QN_MIN_MEMORY_KIB || qn_passes < QN_MIN_PASSES || qn_lanes != QN_LANES) {
        fprintf(stderr, "qnprov_argon2: m=%u t=%u p=%u is below m>=%u t>=%u p=%u\n", qn_memory, qn_passes,
                qn_lanes, QN_MIN_MEMORY_KIB, QN_MIN_PASSES, QN_LANES);
        return -1;
    }
    return lutil_passwd_add(&qn_scheme, qn_check, qn_hash);
}
