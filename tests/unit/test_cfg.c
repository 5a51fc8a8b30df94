/* test_cfg.c: unit tests for bf_cfg (typed config from defaults, an INI file
 * and BANGFU_* environment variables).
 *
 * A test table owns sections [tcfg] and [tcfg2]; temp INI files are written
 * per test, and every BANGFU_TCFG_* variable is cleared between tests (the
 * variables tests/run.sh exports for pg/redis are left alone and only read
 * through keys this file does not assert defaults for). Checks: defaults and
 * their types, the file overriding defaults, the environment overriding the
 * file, integer syntax and bounds and booleans refused with the key and the
 * origin named, an unknown key in an owned section refused, other services'
 * sections skipped, a missing file or a syntax error refused, the first table
 * winning a duplicate key, the shipped configs/bangfu.conf loading, the env
 * name mapping, and a getter on an undeclared key aborting.
 */
#include "bf_cfg.h"
#include "bf_test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const bf_cfg_def_t s_test_defs[] = {
    {"tcfg.name", BF_CFG_STR, "village", 0, 0, "a string"},
    {"tcfg.port", BF_CFG_INT, "7101", 1, 65535, "an integer with bounds"},
    {"tcfg.neg", BF_CFG_INT, "-5", -10, 10, "negative bounds"},
    {"tcfg.big", BF_CFG_INT, "9223372036854775807", 0, 9223372036854775807LL, "int64 max"},
    {"tcfg.enabled", BF_CFG_BOOL, "true", 0, 0, "a boolean"},
    {"tcfg.empty", BF_CFG_STR, "", 0, 0, "an empty default"},
    {"tcfg2.max-items", BF_CFG_INT, "10", 0, 100, "a dash in the name"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static const bf_cfg_def_t *const s_tables[] = {s_test_defs, NULL};
static const bf_cfg_def_t *const s_tables_common[] = {bf_cfg_common, s_test_defs, NULL};

static const char *const s_env_vars[] = {
    "BANGFU_TCFG_NAME",    "BANGFU_TCFG_PORT",  "BANGFU_TCFG_NEG",
    "BANGFU_TCFG_BIG",     "BANGFU_TCFG_ENABLED", "BANGFU_TCFG_EMPTY",
    "BANGFU_TCFG2_MAX_ITEMS", "BANGFU_CONFIG",  "BANGFU_RPC_WORKERS",
    "BANGFU_LOG_LEVEL",    "BANGFU_RELAY_ENABLED", "BANGFU_RELAY_STREAM",
    "BANGFU_RPC_MAX_STRING_BYTES", NULL,
};

static void s_clear_env(void)
{
    for (int i = 0; s_env_vars[i]; i++) unsetenv(s_env_vars[i]);
}

static char s_path[64];

/* Writes text to a fresh temp file; its path is in s_path. */
static const char *s_write_ini(const char *text)
{
    snprintf(s_path, sizeof s_path, "/tmp/bf_test_cfg_XXXXXX");
    int fd = mkstemp(s_path);
    if (fd < 0) return NULL;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    close(fd);
    return w == (ssize_t)n ? s_path : NULL;
}

static void s_unlink(void)
{
    if (s_path[0]) unlink(s_path);
    s_path[0] = '\0';
}

/* Loads text as a file and expects failure; returns the message (static). */
static const char *s_load_fails(const char *text)
{
    static char err[256];
    err[0] = '\0';
    const char *path = s_write_ini(text);
    if (!path) return "(could not write temp file)";
    bf_cfg_t *cfg = bf_cfg_load(s_tables, path, err, sizeof err);
    s_unlink();
    if (cfg) {
        bf_cfg_destroy(&cfg);
        return NULL;
    }
    return err;
}

/* ------------------------------------------------------------- tests */

static void test_defaults(void)
{
    s_clear_env();
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(s_tables_common, NULL, err, sizeof err);
    ASSERT(cfg != NULL);
    if (!cfg) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.name"), "village");
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 7101);
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg.neg"), -5);
    ASSERT(bf_cfg_int(cfg, "tcfg.big") == INT64_MAX);
    ASSERT(bf_cfg_bool(cfg, "tcfg.enabled") == true);
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.empty"), "");
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg2.max-items"), 10);
    /* common keys with the documented defaults */
    ASSERT_EQ(bf_cfg_int(cfg, "rpc.workers"), 4);
    ASSERT_STR_EQ(bf_cfg_str(cfg, "log.level"), "info");
    ASSERT(bf_cfg_bool(cfg, "relay.enabled") == true);
    ASSERT_STR_EQ(bf_cfg_str(cfg, "relay.stream"), "bangfu:events");
    ASSERT_EQ(bf_cfg_int(cfg, "rpc.max_string_bytes"), 65536);
    bf_cfg_destroy(&cfg);
    ASSERT(cfg == NULL);
    bf_cfg_destroy(&cfg);
    bf_cfg_destroy(NULL);
}

static void test_bad_default_is_refused(void)
{
    s_clear_env();
    static const bf_cfg_def_t bad[] = {
        {"tbad.limit", BF_CFG_INT, "500", 1, 100, "default out of its bounds"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    const bf_cfg_def_t *const tables[] = {bad, NULL};
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    ASSERT(cfg == NULL);
    bf_cfg_destroy(&cfg);
    ASSERT(strstr(err, "tbad.limit") != NULL);
    ASSERT(strstr(err, "default") != NULL);
}

static void test_file_overrides_defaults(void)
{
    s_clear_env();
    const char *path = s_write_ini("# a comment\n"
                                   "; another comment\n"
                                   "[tcfg]\n"
                                   "name = 扶贫村 east\n"
                                   "port = 9000 ; inline comment\n"
                                   "neg = -10\n"
                                   "enabled = off\n"
                                   "\n"
                                   "[tcfg2]\n"
                                   "max-items = 0\n"
                                   "[rpc]\n"
                                   "workers = 2\n");
    ASSERT(path != NULL);
    if (!path) return;
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(s_tables_common, path, err, sizeof err);
    s_unlink();
    ASSERT(cfg != NULL);
    if (!cfg) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.name"), "扶贫村 east");
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 9000);
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg.neg"), -10);
    ASSERT(bf_cfg_bool(cfg, "tcfg.enabled") == false);
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg2.max-items"), 0);
    ASSERT_EQ(bf_cfg_int(cfg, "rpc.workers"), 2);
    /* keys the file does not mention keep their defaults */
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.empty"), "");
    ASSERT(bf_cfg_int(cfg, "tcfg.big") == INT64_MAX);
    bf_cfg_destroy(&cfg);
}

static void test_config_env_names_the_file(void)
{
    s_clear_env();
    const char *path = s_write_ini("[tcfg]\nport = 1234\n");
    ASSERT(path != NULL);
    if (!path) return;
    setenv("BANGFU_CONFIG", path, 1);
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
    ASSERT(cfg != NULL);
    if (cfg) ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 1234);
    bf_cfg_destroy(&cfg);
    /* an explicit path wins over $BANGFU_CONFIG */
    const char *second = "/tmp/bf_test_cfg_second.ini";
    FILE *f = fopen(second, "w");
    ASSERT(f != NULL);
    if (f) {
        fputs("[tcfg]\nport = 4321\n", f);
        fclose(f);
        cfg = bf_cfg_load(s_tables, second, err, sizeof err);
        ASSERT(cfg != NULL);
        if (cfg) ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 4321);
        bf_cfg_destroy(&cfg);
        unlink(second);
    }
    s_unlink();
    unsetenv("BANGFU_CONFIG");
}

static void test_env_overrides_file(void)
{
    s_clear_env();
    const char *path = s_write_ini("[tcfg]\nname = from-file\nport = 9000\nenabled = no\n"
                                   "[tcfg2]\nmax-items = 50\n");
    ASSERT(path != NULL);
    if (!path) return;
    setenv("BANGFU_TCFG_NAME", "from-env", 1);
    setenv("BANGFU_TCFG_PORT", "65535", 1);
    setenv("BANGFU_TCFG_ENABLED", "YES", 1);
    setenv("BANGFU_TCFG2_MAX_ITEMS", "100", 1); /* '-' maps to '_' */
    setenv("BANGFU_TCFG_EMPTY", "", 1);          /* set but empty: empty string */
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(s_tables, path, err, sizeof err);
    s_unlink();
    ASSERT(cfg != NULL);
    if (!cfg) {
        fprintf(stderr, "  %s\n", err);
        s_clear_env();
        return;
    }
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.name"), "from-env");
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 65535);
    ASSERT(bf_cfg_bool(cfg, "tcfg.enabled") == true);
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg2.max-items"), 100);
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.empty"), "");
    bf_cfg_destroy(&cfg);

    /* the environment alone (no file) overrides defaults */
    cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
    ASSERT(cfg != NULL);
    if (cfg) ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.name"), "from-env");
    bf_cfg_destroy(&cfg);
    s_clear_env();
}

static void test_integer_errors_name_the_key(void)
{
    s_clear_env();
    const char *bad_values[] = {"0", "65536", "-1", "12abc", "0x10", "1.5", "",
                                "99999999999999999999", "seven"};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[tcfg]\nport = %s\n", bad_values[i]);
        const char *err = s_load_fails(text);
        if (!err) {
            BF_FAIL_AT("port = \"%s\" was accepted", bad_values[i]);
            continue;
        }
        if (!strstr(err, "tcfg.port")) BF_FAIL_AT("message lacks the key: %s", err);
        if (!strstr(err, "line 2")) BF_FAIL_AT("message lacks the line: %s", err);
    }
    /* the bounds themselves are accepted */
    const char *ok_values[] = {"1", "65535", "+80"};
    for (size_t i = 0; i < sizeof ok_values / sizeof ok_values[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[tcfg]\nport = %s\n", ok_values[i]);
        const char *err = s_load_fails(text);
        if (err) BF_FAIL_AT("port = \"%s\" was refused: %s", ok_values[i], err);
    }
    /* int64 extremes: bound checks do not overflow */
    const char *err = s_load_fails("[tcfg]\nbig = 9223372036854775808\n");
    ASSERT(err != NULL && strstr(err, "tcfg.big"));
    err = s_load_fails("[tcfg]\nneg = -11\n");
    ASSERT(err != NULL && strstr(err, "tcfg.neg"));
    ASSERT(err != NULL && strstr(err, "[-10, 10]"));

    /* from the environment: the message names the variable */
    char msg[256] = "";
    setenv("BANGFU_TCFG_PORT", "70000", 1);
    bf_cfg_t *cfg = bf_cfg_load(s_tables, NULL, msg, sizeof msg);
    ASSERT(cfg == NULL);
    bf_cfg_destroy(&cfg);
    ASSERT(strstr(msg, "tcfg.port") != NULL);
    ASSERT(strstr(msg, "BANGFU_TCFG_PORT") != NULL);
    ASSERT(strstr(msg, "70000") != NULL);
    setenv("BANGFU_TCFG_PORT", "80 ", 1);
    cfg = bf_cfg_load(s_tables, NULL, msg, sizeof msg);
    ASSERT(cfg == NULL);
    bf_cfg_destroy(&cfg);
    s_clear_env();
}

static void test_booleans(void)
{
    s_clear_env();
    const char *truthy[] = {"true", "TRUE", "1", "yes", "Yes", "on", "ON"};
    const char *falsy[] = {"false", "False", "0", "no", "NO", "off", "Off"};
    char err[256];
    for (size_t i = 0; i < 7; i++) {
        for (int which = 0; which < 2; which++) {
            const char *v = which ? falsy[i] : truthy[i];
            setenv("BANGFU_TCFG_ENABLED", v, 1);
            bf_cfg_t *cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
            if (!cfg) {
                BF_FAIL_AT("\"%s\" refused: %s", v, err);
                continue;
            }
            if (bf_cfg_bool(cfg, "tcfg.enabled") != !which)
                BF_FAIL_AT("\"%s\" read as %d", v, bf_cfg_bool(cfg, "tcfg.enabled"));
            bf_cfg_destroy(&cfg);
        }
    }
    const char *bad[] = {"maybe", "2", "", "t", "enabled", "true "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("BANGFU_TCFG_ENABLED", bad[i], 1);
        bf_cfg_t *cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
        if (cfg) {
            BF_FAIL_AT("\"%s\" accepted as a boolean", bad[i]);
            bf_cfg_destroy(&cfg);
            continue;
        }
        ASSERT(strstr(err, "tcfg.enabled") != NULL);
        ASSERT(strstr(err, "boolean") != NULL);
    }
    s_clear_env();
    const char *ferr = s_load_fails("[tcfg]\nenabled = sometimes\n");
    ASSERT(ferr != NULL && strstr(ferr, "tcfg.enabled"));
}

static void test_unknown_key_in_owned_section(void)
{
    s_clear_env();
    const char *err = s_load_fails("[tcfg]\nname = x\nprot = 80\n");
    ASSERT(err != NULL);
    if (err) {
        ASSERT(strstr(err, "tcfg.prot") != NULL);
        ASSERT(strstr(err, "line 3") != NULL);
    }
    /* also in a common section when common is loaded */
    const char *path = s_write_ini("[rpc]\nworkers = 3\nworker = 3\n");
    ASSERT(path != NULL);
    char msg[256] = "";
    bf_cfg_t *cfg = path ? bf_cfg_load(s_tables_common, path, msg, sizeof msg) : NULL;
    s_unlink();
    ASSERT(cfg == NULL);
    bf_cfg_destroy(&cfg);
    ASSERT(strstr(msg, "rpc.worker") != NULL);
}

static void test_other_sections_ignored(void)
{
    s_clear_env();
    const char *path = s_write_ini("[registry]\nbind = tcp://127.0.0.1:7101\nanything = at all\n"
                                   "[funds]\nwhatever = 12abc\n"
                                   "[tcfg]\nport = 1\n"
                                   "[tasks]\nport = not a number\n");
    ASSERT(path != NULL);
    if (!path) return;
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(s_tables, path, err, sizeof err);
    s_unlink();
    ASSERT(cfg != NULL);
    if (!cfg) fprintf(stderr, "  %s\n", err);
    if (cfg) ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 1);
    bf_cfg_destroy(&cfg);
    /* a section whose name only starts like an owned one is not owned */
    path = s_write_ini("[tcf]\nport = x\n[tcfg.port]\nx = 1\n");
    cfg = path ? bf_cfg_load(s_tables, path, err, sizeof err) : NULL;
    s_unlink();
    ASSERT(cfg != NULL);
    if (!cfg) fprintf(stderr, "  %s\n", err);
    bf_cfg_destroy(&cfg);
}

static void test_over_long_line_is_named(void)
{
    char text[600];
    snprintf(text, sizeof text, "[tcfg]\nport = 80\n# %0300d\nname = x\n", 0);
    const char *err = s_load_fails(text);
    ASSERT(err && strstr(err, "line 3") && strstr(err, "longer than"));
    if (err && !strstr(err, "longer than")) fprintf(stderr, "  got: %s\n", err);
}

static void test_missing_file_and_syntax_error(void)
{
    s_clear_env();
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(s_tables, "/nonexistent/dir/bangfu.conf", err, sizeof err);
    ASSERT(cfg == NULL);
    ASSERT(strstr(err, "/nonexistent/dir/bangfu.conf") != NULL);
    /* the same through $BANGFU_CONFIG */
    setenv("BANGFU_CONFIG", "/nonexistent/other.conf", 1);
    err[0] = '\0';
    cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
    ASSERT(cfg == NULL);
    ASSERT(strstr(err, "/nonexistent/other.conf") != NULL);
    unsetenv("BANGFU_CONFIG");
    /* an empty $BANGFU_CONFIG means no file */
    setenv("BANGFU_CONFIG", "", 1);
    cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
    ASSERT(cfg != NULL);
    bf_cfg_destroy(&cfg);
    unsetenv("BANGFU_CONFIG");

    const char *msg = s_load_fails("[tcfg]\nport = 80\nthis line has no equals sign\n");
    ASSERT(msg != NULL);
    if (msg) ASSERT(strstr(msg, "line 3") != NULL);
    msg = s_load_fails("[tcfg\nport = 80\n");
    ASSERT(msg != NULL);
}

static void test_first_table_wins(void)
{
    s_clear_env();
    static const bf_cfg_def_t dup[] = {
        {"tcfg.port", BF_CFG_INT, "1", 1, 2, "redeclared"},
        {"tdup.only", BF_CFG_STR, "here", 0, 0, "only in the second table"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    const bf_cfg_def_t *const tables[] = {s_test_defs, dup, NULL};
    char err[256] = "";
    bf_cfg_t *cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    ASSERT(cfg != NULL);
    if (!cfg) return;
    ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 7101);
    ASSERT_STR_EQ(bf_cfg_str(cfg, "tdup.only"), "here");
    bf_cfg_destroy(&cfg);
    /* and the first table's bounds apply to the file */
    const char *path = s_write_ini("[tcfg]\nport = 500\n");
    cfg = path ? bf_cfg_load(tables, path, err, sizeof err) : NULL;
    s_unlink();
    ASSERT(cfg != NULL);
    if (cfg) ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 500);
    bf_cfg_destroy(&cfg);
}

static void test_shipped_config_loads(void)
{
    s_clear_env();
    /* tests run from the repository root (tests/run.sh cds there) */
    if (access("configs/bangfu.conf", R_OK) != 0) {
        BF_FAIL_AT("configs/bangfu.conf not found from the current directory");
        return;
    }
    char err[256] = "";
    const bf_cfg_def_t *const tables[] = {bf_cfg_common, NULL};
    bf_cfg_t *cfg = bf_cfg_load(tables, "configs/bangfu.conf", err, sizeof err);
    ASSERT(cfg != NULL);
    if (!cfg) fprintf(stderr, "  %s\n", err);
    if (cfg) ASSERT_EQ(bf_cfg_int(cfg, "rpc.workers"), 4);
    bf_cfg_destroy(&cfg);
}

static void test_env_name(void)
{
    char buf[64];
    bf_cfg_env_name("pg.dsn", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "BANGFU_PG_DSN");
    bf_cfg_env_name("registry.bind", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "BANGFU_REGISTRY_BIND");
    bf_cfg_env_name("rpc.max_msg_bytes", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "BANGFU_RPC_MAX_MSG_BYTES");
    bf_cfg_env_name("tcfg2.max-items", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "BANGFU_TCFG2_MAX_ITEMS");
    bf_cfg_env_name("", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "BANGFU_");
    /* a small buffer truncates but stays terminated and in bounds */
    char small[10];
    memset(small, 'X', sizeof small);
    bf_cfg_env_name("registry.bind", small, 8);
    ASSERT_STR_EQ(small, "BANGFU_");
    ASSERT_EQ(small[8], 'X');
    bf_cfg_env_name("registry.bind", small, 4);
    ASSERT_STR_EQ(small, "BAN");
    bf_cfg_env_name("registry.bind", small, 1);
    ASSERT_STR_EQ(small, "");
    small[0] = 'Q';
    bf_cfg_env_name("registry.bind", small, 0); /* writes nothing */
    ASSERT_EQ(small[0], 'Q');
}

/* Runs bf_cfg_print_help(tables) with stdout in a temp file; returns the
 * text (caller frees) or NULL. */
static char *s_help_text(const bf_cfg_def_t *const *tables)
{
    fflush(stdout);
    FILE *f = tmpfile();
    if (!f) return NULL;
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(f), STDOUT_FILENO);
    bf_cfg_print_help(tables);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    off_t size = lseek(fileno(f), 0, SEEK_END);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    ssize_t n = buf ? pread(fileno(f), buf, (size_t)size, 0) : -1;
    fclose(f);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void test_print_help(void)
{
    s_clear_env();
    char *text = s_help_text(s_tables);
    ASSERT(text != NULL);
    if (!text) return;
    /* a commented INI template: sections, docs, variables, bounds, defaults */
    ASSERT(strstr(text, "[tcfg]\n") != NULL);
    ASSERT(strstr(text, "[tcfg2]\n") != NULL);
    ASSERT(strstr(text, "# an integer with bounds\n") != NULL);
    ASSERT(strstr(text, "BANGFU_TCFG_PORT, integer 1..65535") != NULL);
    ASSERT(strstr(text, "BANGFU_TCFG2_MAX_ITEMS") != NULL);
    ASSERT(strstr(text, ";port = 7101\n") != NULL);
    ASSERT(strstr(text, ";max-items = 10\n") != NULL);
    /* [tcfg] is printed once although its keys are spread over entries */
    const char *first = strstr(text, "[tcfg]");
    ASSERT(first && !strstr(first + 1, "[tcfg]"));

    /* as a file it loads (everything commented out) ... */
    const char *path = s_write_ini(text);
    char err[256] = "";
    bf_cfg_t *cfg = path ? bf_cfg_load(s_tables, path, err, sizeof err) : NULL;
    s_unlink();
    ASSERT(cfg != NULL);
    if (!cfg) fprintf(stderr, "  %s\n", err);
    bf_cfg_destroy(&cfg);
    /* ... and uncommented it loads too and gives the defaults back */
    size_t n = strlen(text);
    char *uncommented = malloc(n + 1);
    ASSERT(uncommented != NULL);
    if (uncommented) {
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (text[i] == ';' && (i == 0 || text[i - 1] == '\n')) continue;
            uncommented[j++] = text[i];
        }
        uncommented[j] = '\0';
        path = s_write_ini(uncommented);
        cfg = path ? bf_cfg_load(s_tables, path, err, sizeof err) : NULL;
        s_unlink();
        ASSERT(cfg != NULL);
        if (!cfg) fprintf(stderr, "  %s\n", err);
        if (cfg) {
            ASSERT_EQ(bf_cfg_int(cfg, "tcfg.port"), 7101);
            ASSERT_EQ(bf_cfg_int(cfg, "tcfg.neg"), -5);
            ASSERT_STR_EQ(bf_cfg_str(cfg, "tcfg.name"), "village");
            ASSERT(bf_cfg_bool(cfg, "tcfg.enabled"));
            ASSERT_EQ(bf_cfg_int(cfg, "tcfg2.max-items"), 10);
        }
        bf_cfg_destroy(&cfg);
        free(uncommented);
    }
    free(text);
}

/* Runs fn in a child; returns the signal that killed it (0 if it exited). */
static int s_child_signal(void (*fn)(void))
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* keep the expected abort message out of the test log */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, STDERR_FILENO);
        fn();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void s_get_undeclared(void)
{
    char err[256];
    bf_cfg_t *cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
    if (!cfg) _exit(3);
    (void)bf_cfg_str(cfg, "tcfg.nosuchkey");
    _exit(0);
}

static void s_get_wrong_type(void)
{
    char err[256];
    bf_cfg_t *cfg = bf_cfg_load(s_tables, NULL, err, sizeof err);
    if (!cfg) _exit(3);
    (void)bf_cfg_int(cfg, "tcfg.name"); /* a string, read as an int */
    _exit(0);
}

static void test_getter_misuse_aborts(void)
{
    s_clear_env();
    ASSERT_EQ(s_child_signal(s_get_undeclared), SIGABRT);
    ASSERT_EQ(s_child_signal(s_get_wrong_type), SIGABRT);
}

int main(void)
{
    RUN(defaults);
    RUN(bad_default_is_refused);
    RUN(file_overrides_defaults);
    RUN(config_env_names_the_file);
    RUN(env_overrides_file);
    RUN(integer_errors_name_the_key);
    RUN(booleans);
    RUN(unknown_key_in_owned_section);
    RUN(other_sections_ignored);
    RUN(missing_file_and_syntax_error);
    RUN(over_long_line_is_named);
    RUN(first_table_wins);
    RUN(shipped_config_loads);
    RUN(env_name);
    RUN(print_help);
    RUN(getter_misuse_aborts);
    return TEST_REPORT();
}
