"""The HTTP gateway (docs/http.md) over real services, PostgreSQL and Redis:
sign-in (good and bad passwords, the failure limit), reads and writes through
/v1/{service}/{method}, the HTTP status of every error code the gateway can
be made to return, GET on a writer, oversized and too deep bodies, roles
travelling to the services, CSRF for cookie sessions, OpenAPI structure and
/metrics counters. stdlib http.client only."""
import http.client as httpc
import json
import os
import random
import shutil
import subprocess
import urllib.parse

from bftest import BUILD, TMP, Stack, TestFailure, check, eq, uid

S = None
ADMIN = None  # the bootstrap admin's token
PW_FILE = None


def gateway_keys():
    """A copy of the run's keys directory in which the `gateway` principal
    also holds admin (as `make run` and compose set it up), so admins keep
    admin through the gateway; the deployment's own set (service + act_for)
    stays as test_security expects it. The key pairs are the same."""
    src = os.environ.get("BANGFU_KEYS_DIR")
    if not src:
        return {}
    dst = os.path.join(TMP, "keys-gateway-" + uid())
    shutil.copytree(src, dst)
    subprocess.run([os.path.join(BUILD, "bin", "bangfu"), "keygen", "gateway", "--dir", dst,
                    "--roles", "service,admin", "--act-for"], check=True, capture_output=True)
    return {"BANGFU_KEYS_DIR": dst}


def setup_module():
    global S, ADMIN, PW_FILE
    # tasks is left out on purpose: calls to it show 503 unavailable
    S = Stack(services=("registry", "funds", "notify", "gateway"),
              # a cheaper scrypt (2^12) keeps sign-ins quick on a loaded test box
              extra_env=dict(gateway_keys(),
                             BANGFU_GATEWAY_RPC_TIMEOUT_MS="3000",
                             BANGFU_GATEWAY_SCRYPT_LOG2N="12",
                             BANGFU_GATEWAY_LOGIN_MAX_FAILURES="3"))
    S.__enter__()
    PW_FILE = S.env["BANGFU_GATEWAY_ADMIN_PASSWORD_FILE"]
    with open(PW_FILE) as f:
        pw = f.read().strip()
    st, _, body = http("POST", "/v1/session", {"username": "admin", "password": pw})
    eq(st, 200, "admin sign-in: %r" % body)
    ADMIN = body["token"]


def teardown_module():
    if S:
        S.__exit__(None, None, None)


def http(method, path, body=None, token=None, headers=None, raw=None):
    """(status, headers dict (lower-case names), parsed JSON or text)."""
    u = urllib.parse.urlparse(S.http_url())
    c = httpc.HTTPConnection(u.hostname, u.port, timeout=30)
    h = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode("utf-8")
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if "json" in hdrs.get("content-type", ""):
            return r.status, hdrs, json.loads(text)
        return r.status, hdrs, text
    finally:
        c.close()


def api(method, svc_method, params=None, token=None, query=None):
    path = "/v1/" + svc_method
    if query:
        path += "?" + urllib.parse.urlencode(query)
    return http(method, path, params if method == "POST" else None, token or ADMIN)


def expect(st, body, status, code, field=None):
    eq(st, status, "status (body %r)" % (body,))
    check(isinstance(body, dict) and "error" in body, "error body: %r" % (body,))
    eq(body["error"]["code"], code)
    check(body["error"]["message"], "an error message")
    if field is not None:
        eq(body["error"]["field"], field)


def make_user(roles, password="correct horse 1", **extra):
    name = "u_" + uid()[:10]
    params = {"username": name, "password": password, "roles": roles}
    params.update(extra)
    st, _, body = api("POST", "gateway/user.create", params)
    eq(st, 200, "user.create: %r" % (body,))
    return name


def sign_in(name, password="correct horse 1"):
    st, hdrs, body = http("POST", "/v1/session", {"username": name, "password": password})
    eq(st, 200, "sign-in %s: %r" % (name, body))
    return body["token"], hdrs


# ------------------------------------------------------------------ tests

def test_healthz_needs_no_session():
    st, _, body = http("GET", "/healthz")
    eq(st, 200)
    eq(body["status"], "ok")
    eq(body["db"], "ok")


def test_bootstrap_password_file_is_private():
    eq(os.stat(PW_FILE).st_mode & 0o777, 0o600)


def test_sign_in_good_and_bad_password():
    name = make_user(["auditor"], region="120110000000", cadre_id=7)
    tok, hdrs = sign_in(name)
    eq(len(tok), 64)
    cookie = hdrs.get("set-cookie", "")
    check(cookie.startswith("bf_session=" + tok), cookie)
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        check(attr in cookie, "cookie lacks " + attr)
    st, _, body = http("GET", "/v1/session", token=tok)
    eq(st, 200)
    eq(body["user"], {"username": name, "roles": ["auditor"], "region": "120110000000",
                      "cadre_id": 7})
    st, _, body = http("POST", "/v1/session", {"username": name, "password": "wrong pass"})
    expect(st, body, 401, "unauthenticated")
    st, _, body = http("POST", "/v1/session", {"username": "nobody_" + uid()[:8],
                                                "password": "whatever1"})
    expect(st, body, 401, "unauthenticated")
    st, _, body = http("POST", "/v1/session", {"username": "bad name!", "password": "x"})
    expect(st, body, 400, "invalid_argument", "username")
    st, _, body = http("POST", "/v1/session", {"username": name})
    expect(st, body, 400, "invalid_argument", "password")


def test_failed_sign_ins_are_limited_per_username():
    name = make_user(["auditor"])
    other = make_user(["auditor"])
    for _ in range(3):  # gateway.login_max_failures = 3 in this stack
        st, _, body = http("POST", "/v1/session", {"username": name, "password": "nope nope"})
        expect(st, body, 401, "unauthenticated")
    # now even the right password is refused, for this username only
    st, _, body = http("POST", "/v1/session", {"username": name, "password": "correct horse 1"})
    expect(st, body, 429, "resource_exhausted", "username")
    sign_in(other)
    # an admin resetting the password lifts the limit
    st, _, body = api("POST", "gateway/user.set_password",
                      {"username": name, "password": "another horse 2"})
    eq(st, 200, repr(body))
    sign_in(name, "another horse 2")


def test_sign_out_ends_the_session():
    name = make_user(["auditor"])
    tok, _ = sign_in(name)
    eq(http("GET", "/v1/session", token=tok)[0], 200)
    st, hdrs, body = http("DELETE", "/v1/session", token=tok)
    eq(st, 200, repr(body))
    check("Max-Age=0" in hdrs.get("set-cookie", ""), "cookie cleared")
    st, _, body = http("GET", "/v1/session", token=tok)
    expect(st, body, 401, "unauthenticated")


def test_write_then_read_through_the_gateway():
    prov = str(random.choice([50, 51, 52, 53, 54, 61, 62, 63, 64, 65]))
    code = prov + "0" * 10
    st, _, body = api("POST", "registry/region.put",
                      {"code": code, "name": "省" + prov, "level": "province"})
    eq(st, 200, repr(body))
    st, _, body = api("GET", "registry/region.get", query={"code": code})
    eq(st, 200, repr(body))
    eq(body["result"]["code"], code)
    eq(body["result"]["name"], "省" + prov)
    # POST works for reads too
    st, _, body = api("POST", "registry/region.get", {"code": code})
    eq(st, 200)
    eq(body["result"]["name"], "省" + prov)


def test_integers_stay_exact_above_2_pow_53():
    big = 9007199254740993  # 2^53 + 1: a double would make it ...992
    name = make_user(["cadre"], cadre_id=big)
    tok, _ = sign_in(name)
    u = urllib.parse.urlparse(S.http_url())
    c = httpc.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", "/v1/session", headers={"Authorization": "Bearer " + tok})
    text = c.getresponse().read().decode()
    c.close()
    check('"cadre_id":9007199254740993' in text, text)
    st, _, body = api("GET", "gateway/user.list")
    eq(st, 200)
    check(any(x["cadre_id"] == big for x in body["result"]), "user.list has the exact id")


def test_get_on_a_writer_is_405():
    st, hdrs, body = api("GET", "registry/region.put", query={"code": "120000000000"})
    expect(st, body, 405, "invalid_argument", "method")
    eq(hdrs.get("allow"), "POST")
    st, _, body = http("PUT", "/v1/registry/region.get", token=ADMIN)
    eq(st, 405)


def test_error_codes_map_to_http_statuses():
    # 400: unknown parameter, wrong type (the service's dispatcher), bad JSON
    st, _, body = api("POST", "registry/region.get", {"code": "120000000000", "bogus": 1})
    expect(st, body, 400, "invalid_argument", "bogus")
    st, _, body = api("GET", "gateway/user.list", query={"x": "1"})
    expect(st, body, 400, "invalid_argument", "x")
    st, _, body = http("POST", "/v1/registry/region.get", raw=b"{nope", token=ADMIN)
    expect(st, body, 400, "invalid_argument", "body")
    st, _, body = http("POST", "/v1/registry/region.get", raw=b"[1,2]", token=ADMIN)
    expect(st, body, 400, "invalid_argument", "body")
    # 401: no session, unknown token
    st, _, body = http("GET", "/v1/registry/region.get?code=120000000000")
    expect(st, body, 401, "unauthenticated", "Authorization")
    st, _, body = http("GET", "/v1/registry/region.get?code=120000000000", token="0" * 64)
    expect(st, body, 401, "unauthenticated")
    # 404: no such region, method, service
    st, _, body = api("GET", "registry/region.get", query={"code": "820000000000"})
    expect(st, body, 404, "not_found")
    st, _, body = api("POST", "registry/nosuch.method", {})
    expect(st, body, 404, "not_found", "method")
    st, _, body = api("POST", "nosuch/region.get", {})
    expect(st, body, 404, "not_found", "service")
    # 409: already_exists
    name = make_user(["auditor"])
    st, _, body = api("POST", "gateway/user.create",
                      {"username": name, "password": "whatever12", "roles": []})
    expect(st, body, 409, "already_exists", "username")
    # 503: tasks is not running in this stack
    st, _, body = api("GET", "tasks/sys.health")
    expect(st, body, 503, "unavailable")


def test_roles_travel_to_the_services():
    name = make_user(["auditor"])
    tok, _ = sign_in(name)
    prov = str(random.choice([50, 51, 52, 53, 54, 61, 62, 63, 64, 65]))
    st, _, body = api("POST", "registry/region.put",
                      {"code": prov + "0" * 10, "name": "x", "level": "province"}, token=tok)
    expect(st, body, 403, "permission_denied", "method")
    # the auditor may read
    st, _, body = api("GET", "registry/region.list", token=tok)
    eq(st, 200, repr(body))
    # and user administration is for admins only
    st, _, body = api("GET", "gateway/user.list", token=tok)
    expect(st, body, 403, "permission_denied")
    # a person with no roles may call nothing
    nobody = make_user([])
    tok2, _ = sign_in(nobody)
    st, _, body = api("GET", "registry/region.list", token=tok2)
    expect(st, body, 403, "permission_denied")


def test_disabled_user_loses_the_session():
    name = make_user(["auditor"])
    tok, _ = sign_in(name)
    st, _, body = api("POST", "gateway/user.disable", {"username": name})
    eq(st, 200, repr(body))
    st, _, body = http("GET", "/v1/session", token=tok)
    expect(st, body, 401, "unauthenticated")
    st, _, body = http("POST", "/v1/session", {"username": name, "password": "correct horse 1"})
    expect(st, body, 401, "unauthenticated")


def test_oversized_body_is_413_and_deep_json_400():
    u = urllib.parse.urlparse(S.http_url())
    # announced too big: refused on the headers, before any body is read
    c = httpc.HTTPConnection(u.hostname, u.port, timeout=30)
    c.putrequest("POST", "/v1/registry/region.get")
    c.putheader("Authorization", "Bearer " + ADMIN)
    c.putheader("Content-Type", "application/json")
    c.putheader("Content-Length", str(2 * 1024 * 1024))
    c.endheaders()
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    expect(r.status, body, 413, "resource_exhausted", "body")
    # chunked (no length): counted while it arrives
    c = httpc.HTTPConnection(u.hostname, u.port, timeout=30)
    chunks = [b'{"code":"'] + [b"1" * 65536] * 20 + [b'"}']
    c.request("POST", "/v1/registry/region.get", body=iter(chunks), encode_chunked=True,
              headers={"Authorization": "Bearer " + ADMIN, "Transfer-Encoding": "chunked"})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    expect(r.status, body, 413, "resource_exhausted", "body")
    deep = "[" * 40 + "]" * 40
    st, _, body = http("POST", "/v1/registry/region.get",
                       raw=('{"code": %s}' % deep).encode(), token=ADMIN)
    expect(st, body, 400, "invalid_argument", "body")
    # a query value is typed by the method's table
    st, _, body = api("GET", "registry/region.list", query={"limit": "ten"})
    expect(st, body, 400, "invalid_argument", "limit")
    # the gateway keeps serving
    eq(http("GET", "/healthz")[0], 200)


def test_cookie_session_writes_need_the_csrf_header():
    name = make_user(["admin"])
    tok, _ = sign_in(name)
    cookie = {"Cookie": "bf_session=" + tok}
    st, _, body = http("GET", "/v1/gateway/user.list", headers=cookie)
    eq(st, 200, "cookie reads need no header: %r" % (body,))
    prov = str(random.choice([50, 51, 52, 53, 54, 61, 62, 63, 64, 65]))
    params = {"code": prov + "0" * 10, "name": "c", "level": "province"}
    st, _, body = http("POST", "/v1/registry/region.put", params, headers=cookie)
    expect(st, body, 403, "permission_denied", "X-Bangfu-CSRF")
    h = dict(cookie)
    h["X-Bangfu-CSRF"] = "1"
    st, _, body = http("POST", "/v1/registry/region.put", params, headers=h)
    eq(st, 200, repr(body))


def test_console_is_served_and_paths_are_plain_names():
    st, hdrs, text = http("GET", "/")
    eq(st, 200)
    check(hdrs["content-type"].startswith("text/html"), hdrs["content-type"])
    check("default-src 'self'" in hdrs.get("content-security-policy", ""), "CSP")
    st, _, _ = http("GET", "/../../etc/passwd")
    eq(st, 404)
    st, _, _ = http("GET", "/%2e%2e%2fMakefile")
    eq(st, 404)


def test_openapi_document_is_valid():
    st, _, doc = http("GET", "/v1/openapi.json")
    eq(st, 200)
    check(doc["openapi"].startswith("3.0."), doc["openapi"])
    check(doc["info"]["title"] and doc["info"]["version"], "info")
    eq(set(doc["components"]["securitySchemes"]), {"bearer", "cookie"})
    paths = doc["paths"]
    for p in ("/v1/session", "/healthz", "/metrics", "/v1/registry/region.get",
              "/v1/registry/region.put", "/v1/gateway/user.create", "/v1/notify/queues.stats",
              "/v1/funds/sys.health"):
        check(p in paths, p + " missing")
    op_ids = set()
    types = {"string", "integer", "boolean", "object", "array", "number"}

    def check_schema(s, where):
        check(isinstance(s, dict), where)
        if "type" in s:
            check(s["type"] in types, "%s: type %r" % (where, s["type"]))
        if s.get("type") == "array":
            check("items" in s, where + ": array without items")
        for k, v in s.get("properties", {}).items():
            check_schema(v, where + "." + k)

    for path, item in paths.items():
        check(path.startswith("/"), path)
        ops = {k: v for k, v in item.items() if k in ("get", "post", "put", "delete", "patch")}
        check(ops, path + " has no operations")
        for verb, op in ops.items():
            check(op.get("responses"), "%s %s has no responses" % (verb, path))
            for code, resp in op["responses"].items():
                check(code == "default" or (code.isdigit() and len(code) == 3), code)
                check("description" in resp, "%s %s %s: description" % (verb, path, code))
            oid = op.get("operationId")
            check(oid and oid not in op_ids, "operationId %r unique" % oid)
            op_ids.add(oid)
            for prm in op.get("parameters", []):
                check(prm["in"] in ("query", "header", "path", "cookie"), prm)
                check(("schema" in prm) != ("content" in prm), "%s: schema xor content" % prm)
                if "schema" in prm:
                    check_schema(prm["schema"], "%s %s %s" % (verb, path, prm["name"]))
            if "requestBody" in op:
                check_schema(op["requestBody"]["content"]["application/json"]["schema"],
                             "%s %s body" % (verb, path))
    # writers are POST only, readers GET and POST; params typed; roles shown
    eq(set(paths["/v1/registry/region.put"]), {"post"})
    eq(set(paths["/v1/registry/region.get"]), {"get", "post"})
    body = paths["/v1/registry/region.put"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    eq(body["properties"]["code"]["type"], "string")
    eq(body["properties"]["code"]["maxLength"], 12)
    check("code" in body["required"], "code required")
    check("admin" in paths["/v1/registry/region.put"]["post"]["description"], "roles shown")
    q = {p["name"]: p for p in paths["/v1/registry/region.get"]["get"]["parameters"]}
    eq(q["code"]["required"], True)
    eq(q["code"]["schema"]["type"], "string")
    # every $ref resolves
    text = json.dumps(doc)
    for ref in set(x.split('"')[0] for x in text.split('"$ref": "')[1:]):
        node = doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]


def test_metrics_count_requests():
    for _ in range(3):
        api("GET", "registry/region.list")
    api("GET", "registry/region.get", query={"code": "820000000000"})
    api("GET", "tasks/sys.health")  # not running: an upstream error
    st, hdrs, text = http("GET", "/metrics")
    eq(st, 200)
    check(hdrs["content-type"].startswith("text/plain"), hdrs["content-type"])
    lines = text.splitlines()

    def value(prefix):
        for ln in lines:
            if ln.startswith(prefix + " "):
                return float(ln.split()[-1])
        raise TestFailure("no metric line " + prefix)

    check(value('bangfu_gateway_requests_total{service="registry",method="region.list",'
                'code="200"}') >= 3, "region.list counted")
    check(value('bangfu_gateway_requests_total{service="registry",method="region.get",'
                'code="404"}') >= 1, "404 counted")
    check(value('bangfu_gateway_request_seconds_count{service="registry"}') >= 4, "histogram")
    check(value('bangfu_gateway_request_seconds_bucket{service="registry",le="+Inf"}') >= 4,
          "+Inf bucket")
    check(value('bangfu_gateway_upstream_errors_total{service="tasks",code="unavailable"}') >= 1,
          "the unanswered call to tasks counted")
    eq(value('bangfu_service_up{service="registry"}'), 1.0)
    eq(value('bangfu_service_up{service="tasks"}'), 0.0)
    check(value('bangfu_service_calls_total{service="registry"}') > 0, "sys.stats figures")
    eq(value("bangfu_notify_queues_up"), 1.0)
    check(any(ln.startswith('bangfu_notify_queue_length{queue="webhook"}') for ln in lines),
          "queue depth")
