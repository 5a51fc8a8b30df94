/* netguard.c: where webhooks may connect (SSRF protection, docs/notify.md
 * "Webhook destinations").
 *
 * A webhook URL is chosen by whoever creates the endpoint, so notify must
 * not become a way into the networks it can reach. Every socket libcurl
 * opens for a webhook passes through notify_guard_opensocket (installed as
 * CURLOPT_OPENSOCKETFUNCTION), which sees the address actually about to be
 * connected (after DNS, so a name resolving to 127.0.0.1 is caught) and
 * refuses loopback, private (RFC 1918, fc00::/7), link-local (169.254/16,
 * fe80::/10), carrier-grade NAT (100.64/10), multicast, unspecified,
 * reserved and broadcast addresses, also when embedded in IPv6
 * (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible, NAT64 64:ff9b::/96, 6to4
 * 2002::/16), unless the operator's allow-list (notify.webhook_allow) names
 * it. Redirects are never followed (CURLOPT_FOLLOWLOCATION 0), proxies
 * from the environment are ignored, so the address checked is the address
 * used.
 *
 * Allow-list entries, comma-separated: a CIDR ("10.1.0.0/16", "::1/128"),
 * an address ("127.0.0.1", "[::1]"), either with a port ("127.0.0.1:8080",
 * "[::1]:8080", "10.0.0.0/8:443"), or a host name with a port
 * ("hooks.internal:8443", matched against the URL's host and port, case
 * insensitive, before any connection).
 */
#include "notify.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    int family;              /* AF_INET, AF_INET6, or 0 for a host name */
    unsigned char addr[16];  /* network byte order */
    int prefix;              /* bits */
    int port;                /* 0 = any */
    char host[256];          /* host-name entries, lower case */
} s_rule_t;

struct notify_allow {
    s_rule_t *rules;
    int n;
};

static bool s_prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (full && memcmp(a, net, (size_t)full) != 0) return false;
    if (rest) {
        unsigned char mask = (unsigned char)(0xFF << (8 - rest));
        if ((a[full] & mask) != (net[full] & mask)) return false;
    }
    return true;
}

/* Parses "a.b.c.d", "v6", "[v6]" with an optional "/bits"; fills the rule. */
static int s_parse_addr(const char *s, s_rule_t *r)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    int bits = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || slash[1] == '\0' || b < 0 || b > 128) return -1;
        bits = (int)b;
    }
    char *a = buf;
    size_t len = strlen(a);
    if (len >= 2 && a[0] == '[' && a[len - 1] == ']') {
        a[len - 1] = '\0';
        a++;
    }
    if (inet_pton(AF_INET, a, r->addr) == 1) {
        r->family = AF_INET;
        if (bits > 32) return -1;
        r->prefix = bits < 0 ? 32 : bits;
        return 0;
    }
    if (inet_pton(AF_INET6, a, r->addr) == 1) {
        r->family = AF_INET6;
        r->prefix = bits < 0 ? 128 : bits;
        return 0;
    }
    return -1;
}

static int s_parse_rule(const char *e, s_rule_t *r)
{
    memset(r, 0, sizeof *r);
    if (s_parse_addr(e, r) == 0) return 0; /* a bare address, v6 or CIDR */
    /* "<addr or [v6] or cidr or host>:<port>" */
    const char *colon = strrchr(e, ':');
    if (!colon || !colon[1]) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    char head[300];
    size_t hl = (size_t)(colon - e);
    if (hl == 0 || hl >= sizeof head) return -1;
    memcpy(head, e, hl);
    head[hl] = '\0';
    if (s_parse_addr(head, r) == 0) {
        r->port = (int)port;
        return 0;
    }
    for (const char *c = head; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.') return -1;
    if (hl >= sizeof r->host) return -1;
    r->family = 0;
    r->port = (int)port;
    for (size_t i = 0; i <= hl; i++) r->host[i] = (char)tolower((unsigned char)head[i]);
    return 0;
}

notify_allow_t *notify_allow_parse(const char *spec, char *err, size_t errlen)
{
    notify_allow_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!spec || !*spec) return a;
    char *copy = strdup(spec);
    size_t cap = 1;
    for (const char *c = spec; *c; c++) cap += *c == ',';
    a->rules = calloc(cap, sizeof *a->rules);
    if (!copy || !a->rules) {
        free(copy);
        notify_allow_free(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        size_t l = strlen(tok);
        while (l && isspace((unsigned char)tok[l - 1])) tok[--l] = '\0';
        if (!l) continue;
        if (s_parse_rule(tok, &a->rules[a->n]) != 0) {
            snprintf(err, errlen,
                     "notify.webhook_allow: %.100s is not a CIDR, an address[:port] or host:port",
                     tok);
            free(copy);
            notify_allow_free(a);
            return NULL;
        }
        a->n++;
    }
    free(copy);
    return a;
}

void notify_allow_free(notify_allow_t *a)
{
    if (!a) return;
    free(a->rules);
    free(a);
}

int notify_allow_count(const notify_allow_t *a) { return a ? a->n : 0; }

/* IPv4 ranges a webhook may not reach unless allowed. */
static bool s_v4_blocked(const unsigned char *v4)
{
    static const struct {
        unsigned char net[4];
        int bits;
    } blocked[] = {
        {{0, 0, 0, 0}, 8},        /* "this network", unspecified */
        {{10, 0, 0, 0}, 8},       /* RFC 1918 */
        {{100, 64, 0, 0}, 10},    /* carrier-grade NAT */
        {{127, 0, 0, 0}, 8},      /* loopback */
        {{169, 254, 0, 0}, 16},   /* link-local, cloud metadata 169.254.169.254 */
        {{172, 16, 0, 0}, 12},    /* RFC 1918 */
        {{192, 0, 0, 0}, 24},     /* IETF protocol assignments */
        {{192, 168, 0, 0}, 16},   /* RFC 1918 */
        {{198, 18, 0, 0}, 15},    /* benchmarking */
        {{224, 0, 0, 0}, 4},      /* multicast */
        {{240, 0, 0, 0}, 4},      /* reserved, and 255.255.255.255 broadcast */
    };
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
        if (s_prefix_match(v4, blocked[i].net, blocked[i].bits)) return true;
    return false;
}

static bool s_v6_blocked(const unsigned char *a)
{
    static const unsigned char zero[16] = {0};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    static const unsigned char nat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12)) return s_v4_blocked(a + 12);
    if (!memcmp(a, zero, 12)) return true; /* ::, ::1 and IPv4-compatible ::a.b.c.d */
    if (a[0] == 0x20 && a[1] == 0x02) return s_v4_blocked(a + 2); /* 6to4 */
    if ((a[0] & 0xFE) == 0xFC) return true;                       /* fc00::/7 unique local */
    if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) return true;       /* fe80::/10 link-local */
    if (a[0] == 0xFE && (a[1] & 0xC0) == 0xC0) return true;       /* fec0::/10 site-local */
    if (a[0] == 0xFF) return true;                                /* multicast */
    return false;
}

bool notify_addr_blocked(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return s_v4_blocked((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return s_v6_blocked(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
    return true; /* unix sockets and anything else */
}

/* Whether an allow-list address rule names sa (family, prefix, port). An
 * IPv4 rule also matches the IPv4-mapped IPv6 form. */
static bool s_rule_matches(const s_rule_t *r, const struct sockaddr *sa)
{
    const unsigned char *a;
    int family = sa->sa_family, port;
    if (family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        a = (const unsigned char *)&s4->sin_addr;
        port = ntohs(s4->sin_port);
    } else if (family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        a = s6->sin6_addr.s6_addr;
        port = ntohs(s6->sin6_port);
        if (r->family == AF_INET && !memcmp(a, mapped, 12)) {
            a += 12;
            family = AF_INET;
        }
    } else {
        return false;
    }
    if (r->family != family) return false;
    if (r->port && r->port != port) return false;
    return s_prefix_match(a, r->addr, r->prefix);
}

bool notify_allow_addr(const notify_allow_t *al, const struct sockaddr *sa)
{
    if (!notify_addr_blocked(sa)) return true;
    for (int i = 0; al && i < al->n; i++)
        if (al->rules[i].family && s_rule_matches(&al->rules[i], sa)) return true;
    return false;
}

bool notify_allow_host(const notify_allow_t *al, const char *host, int port)
{
    for (int i = 0; al && host && i < al->n; i++)
        if (!al->rules[i].family && al->rules[i].port == port &&
            !strcasecmp(al->rules[i].host, host))
            return true;
    return false;
}

/* --------------------------------------------------------------- URLs */

int notify_url_check(const char *url, const char **why)
{
    CURLU *u = curl_url();
    if (!u) {
        *why = "out of memory";
        return -1;
    }
    int rc = -1;
    char *scheme = NULL, *host = NULL, *user = NULL, *pass = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        *why = "url is not a valid http:// or https:// URL";
    } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        *why = "url must be an http:// or https:// URL";
    } else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
               curl_url_get(u, CURLUPART_PASSWORD, &pass, 0) == CURLUE_OK) {
        *why = "url must not carry user info (user:password@): authenticate with the "
               "webhook signature";
    } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
        *why = "url has no host";
    } else {
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(pass);
    curl_url_cleanup(u);
    return rc;
}

/* ------------------------------------------------------------- sockets */

static curl_socket_t s_opensocket(void *clientp, curlsocktype purpose,
                                  struct curl_sockaddr *address)
{
    notify_guard_t *g = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN || !address) {
        g->refused = true;
        return CURL_SOCKET_BAD;
    }
    if (!g->host_allowed && !notify_allow_addr(g->allow, &address->addr)) {
        g->refused = true;
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype, address->protocol);
}

int notify_guard_setup(void *curl, notify_guard_t *g, const char *url)
{
    g->refused = false;
    g->host_allowed = false;
    const char *why;
    if (notify_url_check(url, &why) != 0) return -1;
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
        g->host_allowed = notify_allow_host(g->allow, host, atoi(port));
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    CURL *c = curl;
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, s_opensocket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, g);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");            /* no proxy from the environment */
    return 0;
}
