/* bf_keys: CURVE key files, the process's identity and security mode, and
 * the two calls that turn a ZeroMQ socket into a CURVE client or server
 * (docs/security.md).
 *
 * Keys live in ONE directory (config keys.dir, env BANGFU_KEYS_DIR):
 *   <dir>/<name>.key   mode 0600: "public = <Z85>" and "secret = <Z85>"
 *   <dir>/<name>.pub   "public = <Z85>"
 *   <dir>/principals.conf   who each public key is (bf_principals.h)
 * A process has one identity, the name of its key pair: a service uses its
 * own name ("registry"), the CLI $BANGFU_PRINCIPAL (default "admin"). A
 * client learns a server's public key from <dir>/<server>.pub.
 *
 * Security mode (config security.mode, env BANGFU_SECURITY_MODE): "curve"
 * (default) or "plaintext" (no authentication; every caller holds every role;
 * for debugging only, logged as a warning at start).
 *
 * The settings are process-wide and set once at start (bf_security_init)
 * before any socket is made; the getters are then safe from any thread.
 */
#ifndef BF_KEYS_H
#define BF_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define BF_KEY_Z85 41        /* 40 Z85 characters + NUL */
#define BF_KEY_NAME_MAX 128  /* bytes of a principal / identity name */

/* Sets the mode ("curve" | "plaintext"), the keys directory and the identity
 * (all copied). In curve mode checks that libzmq has CURVE and that the
 * identity's key pair is readable. Logs the plaintext warning. Returns 0, or
 * -1 with a message in err. */
int bf_security_init(const char *mode, const char *keys_dir, const char *identity, char *err,
                     size_t errlen);
/* The same from the environment (BANGFU_SECURITY_MODE, BANGFU_KEYS_DIR,
 * BANGFU_PRINCIPAL, default identity def_identity): for the CLI and tools. */
int bf_security_init_env(const char *def_identity, char *err, size_t errlen);

bool bf_security_curve(void);      /* true unless security.mode=plaintext */
const char *bf_keys_dir(void);     /* "" until set */
const char *bf_keys_identity(void); /* "" until set */

/* True if name is a valid principal / key name (the actor syntax:
 * "admin", "cadre:42", "finance.zhang"). */
bool bf_keys_name_ok(const char *name);

/* Reads <dir>/<name>.key (pub and sec) or, with sec NULL, the public key from
 * <dir>/<name>.pub. Returns 0, or -1 with a message naming the file. */
int bf_keys_read(const char *dir, const char *name, char pub[BF_KEY_Z85], char sec[BF_KEY_Z85],
                 char *err, size_t errlen);

/* Makes <dir>/<name>.key and .pub with zmq_curve_keypair, unless the pair
 * exists (then it is kept and *created is false). The directory is created
 * (mode 0700) if missing. pub receives the public key. */
int bf_keys_generate(const char *dir, const char *name, char pub[BF_KEY_Z85], bool *created,
                     char *err, size_t errlen);

/* Makes sock a CURVE client of the server called server_name, with the
 * process identity's keys. In plaintext mode does nothing. Call before
 * zmq_connect. Returns 0, or -1 with a message in err. */
int bf_curve_client(void *sock, const char *server_name, char *err, size_t errlen);
/* The same with an explicit client identity. */
int bf_curve_client_as(void *sock, const char *server_name, const char *identity, char *err,
                       size_t errlen);

/* Makes sock a CURVE server with the process identity's keys and ZAP domain
 * `domain`, admitting principals that hold any of `roles` (BF_ROLE_*; admin
 * is not implied); starts the ZAP handler if needed. In plaintext mode does
 * nothing. Call before zmq_bind. Returns 0, or -1 with a message in err. */
int bf_curve_server(void *sock, const char *domain, unsigned roles, char *err, size_t errlen);

#endif
