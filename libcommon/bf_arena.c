/* bf_arena: request-lifetime bump allocator; see bf_arena.h. */
#include "bf_arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BF_ARENA_CHUNK (16 * 1024)

typedef struct bf_chunk {
    struct bf_chunk *next;
    size_t size, used;
    max_align_t data[];
} bf_chunk_t;

struct bf_arena {
    bf_chunk_t *head; /* current chunk; older ones follow */
};

static bf_chunk_t *s_chunk_new(size_t min)
{
    size_t size = min > BF_ARENA_CHUNK ? min : BF_ARENA_CHUNK;
    bf_chunk_t *c = malloc(sizeof *c + size);
    if (!c) return NULL;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

bf_arena_t *bf_arena_new(void)
{
    bf_arena_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->head = s_chunk_new(0);
    if (!a->head) {
        free(a);
        return NULL;
    }
    return a;
}

void bf_arena_destroy(bf_arena_t **self_p)
{
    if (!self_p || !*self_p) return;
    bf_chunk_t *c = (*self_p)->head;
    while (c) {
        bf_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    free(*self_p);
    *self_p = NULL;
}

void *bf_arena_alloc(bf_arena_t *a, size_t size)
{
    const size_t align = sizeof(max_align_t);
    if (size > SIZE_MAX - align) return NULL;
    size = (size + align - 1) & ~(align - 1);
    if (size == 0) size = align;
    bf_chunk_t *c = a->head;
    if (c->size - c->used < size) {
        bf_chunk_t *n = s_chunk_new(size);
        if (!n) return NULL;
        n->next = c;
        a->head = n;
        c = n;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *bf_arena_strndup(bf_arena_t *a, const char *s, size_t len)
{
    if (len == SIZE_MAX) return NULL;
    char *p = bf_arena_alloc(a, len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *bf_arena_printf(bf_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = bf_arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void bf_arena_reset(bf_arena_t *a)
{
    /* keep the oldest chunk (the standard size one), free the rest */
    bf_chunk_t *c = a->head;
    while (c->next) {
        bf_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    c->used = 0;
    a->head = c;
}
