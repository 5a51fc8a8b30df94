"""The web console in headless Chromium (Debian's chromium + chromium-driver,
driven by python3-selenium): sign in, the regions page, a finance user's
tranche approved by a second user (an approver) on the funds page, and the
queues page retrying a dead letter (audited by notify). Screenshots go to the
test's temp dir (and to $BANGFU_SCREENSHOT_DIR when set, for docs/img)."""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import http.client as httpc

from bftest import BUILD, TMP, Stack, check, eq, pg, uid, wait_for

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

S = None
ADMIN = None
SHOTS = None
RUN = uid()[:8]


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
    global S, ADMIN, SHOTS
    SHOTS = os.path.join(TMP, "console-shots-" + RUN)
    os.makedirs(SHOTS, exist_ok=True)
    S = Stack(services=("registry", "funds", "gateway"),
              extra_env=dict(gateway_keys(), BANGFU_GATEWAY_SCRYPT_LOG2N="12"))
    S.__enter__()
    # notify: its own consumer group, one attempt before a delivery is dead
    S.start("notify", env={"BANGFU_NOTIFY_GROUP": "console-" + RUN,
                           "BANGFU_NOTIFY_GROUP_START": "$",
                           "BANGFU_NOTIFY_MAX_ATTEMPTS": "1",
                           "BANGFU_NOTIFY_WEBHOOK_TIMEOUT_MS": "1000",
                           "BANGFU_NOTIFY_RATE_PER_SEC": "0"})
    with open(S.env["BANGFU_GATEWAY_ADMIN_PASSWORD_FILE"]) as f:
        pw = f.read().strip()
    st, body = http("POST", "/v1/session", {"username": "admin", "password": pw})
    eq(st, 200, repr(body))
    ADMIN = body["token"]


def teardown_module():
    if S:
        S.__exit__(None, None, None)


def http(method, path, body=None, token=None):
    u = urllib.parse.urlparse(S.http_url())
    c = httpc.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    try:
        c.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                  headers=h)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def call(svc_method, params, token=None):
    st, body = http("POST", "/v1/" + svc_method, params, token or ADMIN)
    eq(st, 200, "%s: %r" % (svc_method, body))
    return body["result"]


def user(roles):
    name = "%s_%s" % (roles[0][:5], uid()[:8])
    call("gateway/user.create", {"username": name, "password": "browser pass 1", "roles": roles})
    return name


def browser():
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    profile = os.path.join(TMP, "chromium-" + uid())
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--user-data-dir=" + profile, "--window-size=1280,900",
              "--lang=zh-CN"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.set_page_load_timeout(30)
    return d


def shot(d, name):
    path = os.path.join(SHOTS, name + ".png")
    d.save_screenshot(path)
    check(os.path.getsize(path) > 1000, "screenshot " + name)
    extra = os.environ.get("BANGFU_SCREENSHOT_DIR")
    if extra:
        os.makedirs(extra, exist_ok=True)
        shutil.copy(path, os.path.join(extra, name + ".png"))


def wait(d, cond, timeout=20, what="condition"):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1).until(lambda _: cond())
    except Exception:
        raise AssertionError("%s not reached; page message: %r" % (
            what, d.find_element(By.ID, "msg").text))


def sign_in(d, name, password):
    d.get(S.http_url() + "/")
    wait(d, lambda: d.find_element(By.ID, "login").is_displayed(), what="the sign-in form")
    d.find_element(By.ID, "username").send_keys(name)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.ID, "login-button").click()
    wait(d, lambda: d.find_element(By.ID, "nav").is_displayed(), what="signed in")


def test_sign_in_regions_and_language():
    name = user(["auditor"])
    d = browser()
    try:
        d.get(S.http_url() + "/")
        wait(d, lambda: d.find_element(By.ID, "login").is_displayed(), what="sign-in form")
        shot(d, "console-login")
        # a wrong password shows the error and stays on the form
        d.find_element(By.ID, "username").send_keys(name)
        d.find_element(By.ID, "password").send_keys("not it at all")
        d.find_element(By.ID, "login-button").click()
        wait(d, lambda: "unauthenticated" in d.find_element(By.ID, "msg").text, what="error")
        d.find_element(By.ID, "password").clear()
        d.find_element(By.ID, "password").send_keys("browser pass 1")
        d.find_element(By.ID, "login-button").click()
        wait(d, lambda: d.find_element(By.ID, "page").get_attribute("data-loaded") == "regions",
             what="regions page")
        check("区域" in d.find_element(By.ID, "page").text, "zh-CN first")
        d.find_element(By.ID, "lang").click()
        wait(d, lambda: "Regions" in d.find_element(By.ID, "page").text, what="English")
        shot(d, "console-regions")
        d.find_element(By.ID, "lang").click()
        # the session is an HttpOnly cookie: the page's script cannot read it
        eq(d.execute_script("return document.cookie"), "")
    finally:
        d.quit()


def role_for(svc, method, want):
    """want if the service lets that role call method, else admin (while the
    method tables still say admin only)."""
    ms = {m["name"]: m for m in call(svc + "/sys.methods", {})}
    return want if want in ms[method].get("roles", []) else "admin"


def test_approve_tranche_as_a_second_user():
    fin = user([role_for("funds", "tranche.plan", "finance")])
    appr = user([role_for("funds", "tranche.approve", "approver")])
    fin_tok = http("POST", "/v1/session", {"username": fin, "password": "browser pass 1"})[1][
        "token"]
    k = lambda t: "console-%s-%s" % (t, uid())  # noqa: E731
    src = call("funds/source.create", {"name": "console-src-" + uid(), "kind": "central",
                                       "provider": "区财政局", "request_key": k("sc")})
    call("funds/source.receive", {"source_id": src["id"], "amount_fen": 10000000, "year": 2017,
                                  "request_key": k("sr")})
    bud = call("funds/budget.create", {"recipient": "program:console-" + uid(), "year": 2017,
                                       "funding": [{"source_id": src["id"],
                                                    "amount_fen": 10000000}],
                                       "request_key": k("bc")})
    pj = call("funds/project.create", {"name": "项目-" + uid(), "kind": "education",
                                       "location": "130821000000", "unit_id": 7,
                                       "beneficiaries": 600, "target": "建成1所小学",
                                       "budget_id": bud["id"], "amount_fen": 5000000,
                                       "request_key": k("pc")})
    tr = call("funds/tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 1234567,
                                     "purpose": "第1期", "request_key": k("tp")}, token=fin_tok)
    d = browser()
    try:
        sign_in(d, appr, "browser pass 1")
        d.get(S.http_url() + "/#funds/project/%d" % pj["id"])
        d.refresh()
        sel = 'button.approve[data-tranche="%d"]' % tr["id"]
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, sel), what="the approve button")
        # the amount is shown in yuan: 1234567 fen = 1.234567 万元
        check("1.234567 万元" in d.find_element(By.ID, "page").text, "amount in 万元")
        shot(d, "console-funds-before")
        d.find_element(By.CSS_SELECTOR, sel).click()
        wait(d, lambda: not d.find_elements(By.CSS_SELECTOR, sel), what="approved")
        shot(d, "console-funds-approved")
    finally:
        d.quit()
    got = call("funds/project.get", {"id": pj["id"]})
    t1 = [t for t in got["tranches"] if t["id"] == tr["id"]][0]
    eq(t1["state"], "approved")
    eq(t1["approved_by"], "user:" + appr)
    eq(t1["requested_by"], "user:" + fin)
    # the planner enters the next tranche in yuan; it arrives as exact fen
    d = browser()
    try:
        sign_in(d, fin, "browser pass 1")
        d.get(S.http_url() + "/#funds/project/%d" % pj["id"])
        d.refresh()
        wait(d, lambda: d.find_elements(By.ID, "plan-amount"), what="the plan form")
        amount = d.find_element(By.ID, "plan-amount")
        amount.send_keys("1.234")  # three decimals: refused before anything is sent
        d.find_element(By.XPATH, '//form[.//input[@id="plan-amount"]]//button').click()
        wait(d, lambda: "金额" in d.find_element(By.ID, "msg").text, what="amount refused")
        amount.clear()
        amount.send_keys("3,456.78")
        d.find_element(By.XPATH, '//form[.//input[@id="plan-amount"]]//button').click()
        wait(d, lambda: d.find_element(By.ID, "msg").text == "完成", what="planned")
    finally:
        d.quit()
    got = call("funds/project.get", {"id": pj["id"]})
    t2 = [t for t in got["tranches"] if t["seq"] == 2]
    eq(len(t2), 1, "the second tranche")
    eq(t2[0]["amount_fen"], 345678)
    eq(t2[0]["requested_by"], "user:" + fin)


def test_queues_page_retries_a_dead_letter():
    ep = call("notify/endpoint.create", {"name": "console-dead-" + uid(),
                                         "url": "http://127.0.0.1:9/nowhere"})
    call("notify/subscription.create", {"name": "console-" + uid(),
                                        "type_prefix": "bangfu.registry.region.",
                                        "endpoint_id": ep["id"]})
    call("registry/region.put", {"code": "530000000000", "name": "云南省-" + uid()[:4],
                                 "level": "province"})

    def mine():
        st, body = http("GET", "/v1/notify/queues.dead.list?endpoint_id=%d" % ep["id"],
                        token=ADMIN)
        eq(st, 200, repr(body))
        items = body["result"]["items"] if isinstance(body["result"], dict) else body["result"]
        return items
    dead = wait_for(mine, timeout=60, interval=0.5, msg="a dead letter for the closed endpoint")[0]
    admin = user(["admin"])
    d = browser()
    try:
        sign_in(d, admin, "browser pass 1")
        d.get(S.http_url() + "/#queues")
        d.refresh()
        sel = 'button.retry[data-id="%s"]' % dead["id"]
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, sel), timeout=30,
             what="the dead letter's retry button")
        check("webhook" in d.find_element(By.ID, "page").text, "the queues table")
        d.execute_script("window.scrollTo(0, 0)")
        shot(d, "console-queues")
        # the payload opens with the whole event
        det = d.find_element(By.CSS_SELECTOR, sel).find_element(By.XPATH, "..").find_element(
            By.TAG_NAME, "details")
        det.find_element(By.TAG_NAME, "summary").click()
        wait(d, lambda: "bangfu.registry.region" in det.text, what="the dead letter's payload")
        d.find_element(By.CSS_SELECTOR, sel).click()
        wait(d, lambda: d.find_element(By.ID, "msg").text == "完成", what="retry done")
    finally:
        d.quit()
    conn = pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM notify.admin_action WHERE method = "
                    "'queues.dead.retry' AND actor = %s", ("user:" + admin,))
        eq(cur.fetchone()[0], 1, "the retry is audited with the person as actor")
    finally:
        conn.close()
