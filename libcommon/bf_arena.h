/* bf_arena: a bump allocator for the life of one request.
 *
 * An RPC handler copies strings out of the msgpack zone (NUL-terminated, for
 * libpq) and builds small temporary arrays; all of it dies together when the
 * request ends, so the handler never frees piece by piece and no error path
 * can leak. Memory is taken from the system in chunks (at least 16 KiB) and
 * kept across requests by bf_arena_reset() so a busy worker stops allocating.
 * Not thread-safe: one arena per worker thread.
 */
#ifndef BF_ARENA_H
#define BF_ARENA_H

#include <stddef.h>

typedef struct bf_arena bf_arena_t;

/* Returns a new empty arena, or NULL if out of memory. */
bf_arena_t *bf_arena_new(void);

/* Frees the arena and everything in it; NULLs *self_p; safe on NULL. */
void bf_arena_destroy(bf_arena_t **self_p);

/* Returns size bytes aligned for any type, or NULL if out of memory. The
 * memory is zeroed. */
void *bf_arena_alloc(bf_arena_t *a, size_t size);

/* Returns a NUL-terminated copy of len bytes of s, or NULL if out of memory. */
char *bf_arena_strndup(bf_arena_t *a, const char *s, size_t len);

/* printf into the arena; returns the string or NULL. */
char *bf_arena_printf(bf_arena_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Forgets every allocation; keeps the first chunk for reuse, frees the rest. */
void bf_arena_reset(bf_arena_t *a);

#endif
