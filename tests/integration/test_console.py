"""The web console in headless Chromium (Debian's chromium + chromium-driver,
driven by python3-selenium): sign in, the regions page, a finance user's
tranche approved by a second user (an approver) on the funds page, the
queues page retrying a dead letter (audited by notify), a small CSV of
households imported in the browser, and the helpers pages (units, cadres with
the per-rank cap, teams, pairings) down to a household whose ID numbers an
auditor reveals with a reason. Screenshots go to the test's temp dir (and to
$BANGFU_SCREENSHOT_DIR when set, for docs/img)."""
import json
import os
import shutil
import subprocess
import urllib.parse
import http.client as httpc

from bftest import BUILD, TMP, Stack, check, eq, fresh_id, fresh_town, pg, uid, wait_for

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

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
        raise AssertionError("%s not reached; page message: %r; at %s; page: %r" % (
            what, d.find_element(By.ID, "msg").text, d.current_url,
            d.find_element(By.ID, "page").text[:1500]))


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


def town():
    """A township of a county no other test uses (registry, as admin)."""
    reg = S.client("registry")
    try:
        return fresh_town(reg)
    finally:
        reg.close()


def test_import_a_small_csv():
    vid = call("registry/village.create", {"region_code": town(), "name": "导入村-" + uid()[:4],
                                           "category": "poor"})["id"]
    op = user(["county_operator"])
    good1, good2, bad = fresh_id(), fresh_id(), fresh_id()
    bad = bad[:17] + "0123456789X"[("0123456789X".index(bad[17]) + 1) % 11]  # wrong check digit
    ref = "C" + uid()[:6]
    lines = ["户编号,村ID,类别,主要致贫原因,帮扶路径,年收入(元),姓名,身份证号,与户主关系,备注",
             "%s-1,%d,低保;留守老人,因病,就业,3000.50,张一,%s,户主,无" % (ref, vid, good1),
             "%s-2,%d,建档立卡,因学,兜底,12345,李二,%s,户主," % (ref, vid, good2),
             "%s-3,%d,低保,缺劳力,产业,800,王三,%s,户主," % (ref, vid, bad)]
    path = os.path.join(SHOTS, "households-%s.csv" % RUN)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    d = browser()
    try:
        sign_in(d, op, "browser pass 1")
        d.get(S.http_url() + "/#import")
        d.refresh()
        wait(d, lambda: d.find_elements(By.ID, "import-file"), what="the import page")
        d.find_element(By.ID, "import-file").send_keys(path)
        wait(d, lambda: d.find_elements(By.ID, "import-summary"), what="the file read")
        page = d.find_element(By.ID, "page").text
        check("读取 3 户" in page, "3 households read: %r" % page)
        # the preview masks the ID numbers; the unknown column is ignored
        for idn in (good1, good2, bad):
            check(idn not in page, "a full ID number on the page")
        check(good1[:6] + "************" in page, "the masked ID number in the preview")
        sels = d.find_elements(By.CSS_SELECTOR, "#import-mapping select")
        eq(len(sels), 10)
        eq(sels[7].get_attribute("value"), "id_number")  # 身份证号, as the CLI maps it
        eq(sels[9].get_attribute("value"), "")  # 备注: ignored
        d.find_element(By.ID, "import-button").click()
        wait(d, lambda: d.find_elements(By.ID, "import-done"), what="the import done")
        done = d.find_element(By.ID, "import-done")
        eq(done.get_attribute("data-accepted"), "2")
        eq(done.get_attribute("data-rejected"), "1")
        check("已导入 2 户" in done.text, done.text)
        rows = d.find_elements(By.CSS_SELECTOR, "#import-rejects tbody tr")
        eq(len(rows), 1, "one reject")
        cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
        eq(cells[0], "4")  # the CSV line of the bad row
        eq(cells[1], ref + "-3")
        eq(cells[2], "身份证号")  # the column title as the file spells it
        check(bad not in d.find_element(By.ID, "page").text, "the bad number is not shown")
        d.execute_script("document.getElementById('import-preview').scrollIntoView()")
        shot(d, "console-import")
    finally:
        d.quit()
    st, body = http("GET", "/v1/registry/household.list?village_id=%d" % vid, token=ADMIN)
    eq(st, 200, repr(body))
    eq(len(body["result"]["items"]), 2, "two households imported")


def test_org_pages_and_household_reveal():
    code = town()
    vid = call("registry/village.create", {"region_code": code, "name": "结对村-" + uid()[:4],
                                           "category": "poor"})["id"]
    unit = call("registry/unit.create", {"name": "帮扶单位-" + uid(), "kind": "department"})
    cadre = call("registry/cadre.create", {"name": "干部" + uid()[:4], "rank": "general",
                                           "unit_id": unit["id"], "party_member": True})
    cap = cadre["cap"]
    check(cap >= 1, "the general rank has a cap")
    idn = fresh_id()
    hhs = []
    for i in range(cap + 1):
        hhs.append(call("registry/household.create", {
            "village_id": vid, "categories": ["dibao"], "causes": {"main": "illness"},
            "route": "safety_net", "income_fen": 100000,
            "members": [{"name": "户主%d" % i, "id_number": idn if i == 0 else fresh_id(),
                         "relation": "head"}]})["id"])
    for hid in hhs[:cap]:  # the cadre at the cap of the rank
        call("registry/pairing.create", {"kind": "cadre_household", "helper_id": cadre["id"],
                                         "target_id": hid, "starts_on": "2018-01-01"})
    call("registry/pairing.create", {"kind": "unit_village", "helper_id": unit["id"],
                                     "target_id": vid, "starts_on": "2018-01-01"})
    team = call("registry/team.create", {"name": "工作队-" + uid(), "unit_id": unit["id"],
                                         "leader_id": cadre["id"], "member_ids": [],
                                         "village_ids": [vid]})
    aud = user(["auditor"])
    d = browser()
    try:
        sign_in(d, aud, "browser pass 1")
        d.find_element(By.CSS_SELECTOR, 'a[href="#org"]').click()
        unit_link = 'a.unit[href="#org/unit/%d"]' % unit["id"]
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, unit_link), what="the units list")
        d.find_element(By.CSS_SELECTOR, unit_link).click()
        wait(d, lambda: "结对村" in d.find_element(By.ID, "page").text, what="the unit page")
        # the cadres tab: the per-rank cap and the cadre at it
        d.find_element(By.CSS_SELECTOR, 'a[data-tab="cadres"]').click()
        row = 'tr[data-id="%d"]' % cadre["id"]
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, row), what="the cadres list")
        caps = d.find_element(By.CSS_SELECTOR, '#caps span[data-rank="general"]').text
        check(caps.endswith("一般干部 %d" % cap), "the general rank's cap: %r" % caps)
        r = d.find_element(By.CSS_SELECTOR, row)
        eq(r.find_element(By.CSS_SELECTOR, "span.load").text, "%d / %d" % (cap, cap))
        check("full" in r.get_attribute("class"), "a cadre at the cap is marked")
        shot(d, "console-cadres")
        r.find_element(By.CSS_SELECTOR, "a.cadre").click()
        hh_link = 'a.household[href="#household/%d"]' % hhs[0]
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, hh_link), what="the cadre's households")
        # teams and pairings
        d.find_element(By.CSS_SELECTOR, 'a[data-tab="teams"]').click()
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, 'a.team[href="#org/team/%d"]' % team["id"]),
             what="the teams list")
        d.find_element(By.CSS_SELECTOR, 'a.team[href="#org/team/%d"]' % team["id"]).click()
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % cadre["id"]),
             what="the team's members")
        d.find_element(By.CSS_SELECTOR, 'a[data-tab="pairings"]').click()
        wait(d, lambda: d.find_elements(By.ID, "pairing-kind"), what="the pairings list")
        Select(d.find_element(By.ID, "pairing-kind")).select_by_value("cadre_household")
        wait(d, lambda: "干部包户" in d.find_element(By.ID, "page").text, what="cadre pairings")
        shot(d, "console-pairings")
        d.find_element(By.ID, "lang").click()  # the same page in English
        wait(d, lambda: "cadre → household" in d.find_element(By.ID, "page").text, what="English")
        check("Work teams" in d.find_element(By.ID, "page").text, "the tabs in English")
        d.find_element(By.ID, "lang").click()
        wait(d, lambda: "驻村工作队" in d.find_element(By.ID, "page").text, what="zh-CN again")
        # back to the cadre, then the household: masked, and revealed with a reason
        d.get(S.http_url() + "/#org/cadre/%d" % cadre["id"])
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, hh_link), what="the cadre page")
        d.find_element(By.CSS_SELECTOR, hh_link).click()
        wait(d, lambda: d.find_elements(By.ID, "reveal-button"), what="the household page")
        members = d.find_element(By.ID, "members").text
        check(idn not in members and idn[:6] + "************" in members, "masked: %r" % members)
        check("低保" in d.find_element(By.ID, "page").text, "the category in Chinese")
        check(d.find_element(By.CSS_SELECTOR, 'a[href="#org/cadre/%d"]' % cadre["id"]),
              "the responsible cadre")
        shot(d, "console-household")
        d.find_element(By.ID, "reveal-reason").send_keys("年度审计核对")
        d.find_element(By.ID, "reveal-button").click()
        wait(d, lambda: idn in d.find_element(By.ID, "members").text, what="revealed")
    finally:
        d.quit()
    conn = pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT actor, reason FROM registry.id_reveal r JOIN registry.person p "
                    "ON p.id = r.person_id WHERE p.household_id = %s", (hhs[0],))
        eq(cur.fetchall(), [("user:" + aud, "年度审计核对")], "the reveal is recorded")
    finally:
        conn.close()
    # an operator asking for one more household for the cadre is refused by the cap
    op = user(["county_operator"])
    d = browser()
    try:
        sign_in(d, op, "browser pass 1")
        d.get(S.http_url() + "/#org/pairings")
        d.refresh()
        wait(d, lambda: d.find_elements(By.ID, "new-pairing"), what="the new pairing form")
        Select(d.find_element(By.ID, "new-kind")).select_by_value("cadre_household")
        d.find_element(By.ID, "new-helper").send_keys(str(cadre["id"]))
        d.find_element(By.ID, "new-target").send_keys(str(hhs[cap]))
        d.find_element(By.ID, "new-pairing").click()
        wait(d, lambda: "failed_precondition" in d.find_element(By.ID, "msg").text,
             what="the cap refusal")
        check("helper_id" in d.find_element(By.ID, "msg").text, "names the field")
    finally:
        d.quit()


def test_funds_amounts_in_yuan():
    """Finance records money received and splits a budget, typing yuan; the
    preview shows yuan and 万元; the services get exact fen."""
    fin = user([role_for("funds", "allocation.apply", "finance")])
    k = lambda t: "console-%s-%s" % (t, uid())  # noqa: E731
    src = call("funds/source.create", {"name": "console-yuan-" + uid(), "kind": "county",
                                       "provider": "县财政局", "request_key": k("sc")})
    call("funds/source.receive", {"source_id": src["id"], "amount_fen": 5000000, "year": 2018,
                                  "request_key": k("sr")})
    bud = call("funds/budget.create", {"recipient": "program:yuan-" + uid(), "year": 2018,
                                       "funding": [{"source_id": src["id"],
                                                    "amount_fen": 5000000}],
                                       "request_key": k("bc")})
    r1, r2 = "village:%d" % (900000 + int(uid()[:4], 16)), "village:%d" % (990000 + int(uid()[:4], 16))
    d = browser()
    try:
        sign_in(d, fin, "browser pass 1")
        # money received, typed in yuan with a thousands separator
        d.get(S.http_url() + "/#funds")
        d.refresh()
        wait(d, lambda: d.find_elements(By.ID, "receive-button"), what="the receive form")
        Select(d.find_element(By.ID, "receive-source")).select_by_value(str(src["id"]))
        d.find_element(By.ID, "receive-amount").send_keys("20,000.05")
        d.find_element(By.ID, "receive-button").click()
        wait(d, lambda: d.find_element(By.ID, "msg").text == "完成", what="received")
        # the budget: an allocation preview in yuan, then applied
        d.get(S.http_url() + "/#funds/budget/%d" % bud["id"])
        d.refresh()
        wait(d, lambda: d.find_elements(By.ID, "alloc-preview"), what="the allocation form")
        check("5 万元" in d.find_element(By.ID, "payer").text, "the budget's 50000 yuan in 万元")
        d.find_element(By.ID, "alloc-lines").send_keys("%s,1500.25\n%s,12000" % (r1, r2))
        d.find_element(By.ID, "alloc-preview").click()
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#alloc-result table"), what="the preview")
        text = d.find_element(By.ID, "alloc-result").text
        check("1,500.25 元" in text and "1.2 万元" in text and "1.350025 万元" in text,
              "the parts and the total in yuan: %r" % text)
        shot(d, "console-allocation")
        d.find_element(By.ID, "alloc-apply").click()
        wait(d, lambda: d.find_element(By.ID, "msg").text == "完成", what="applied")
    finally:
        d.quit()
    got = call("funds/source.get", {"id": src["id"]})
    eq(got["received_fen"], 5000000 + 2000005)
    st, body = http("GET", "/v1/funds/budget.list?parent_id=%d" % bud["id"], token=ADMIN)
    eq(st, 200, repr(body))
    parts = sorted((b["recipient"], b["balance_fen"]) for b in body["result"]["items"])
    eq(parts, sorted([(r1, 150025), (r2, 1200000)]))


def test_import_js_mirrors_the_cli():
    """www/import.js keeps the console's copy of cli/import.c's column titles
    and value aliases: the two must say the same."""
    import re
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(root, "cli", "import.c"), encoding="utf-8") as f:
        c = f.read()
    with open(os.path.join(root, "services", "gateway", "www", "import.js"), encoding="utf-8") as f:
        js = f.read()
    block = c[c.index("s_cols[C_COUNT] = {"):]
    block = block[:block.index("\n};")]
    c_cols = {m.group(1): ([a for a in re.findall(r'"([^"]+)"', m.group(2))], m.group(3) == "true")
              for m in re.finditer(r'\[C_\w+\] = \{"(\w+)", \{([^}]*)\}, (true|false)\}', block, re.S)}
    js_cols = {m.group(1): (re.findall(r'"([^"]+)"', m.group(2)), m.group(3) == "true")
               for m in re.finditer(r'key: "(\w+)", aliases: \[([^\]]*)\], household: (true|false)', js)}
    eq(len(c_cols), 16, "the CLI's columns parsed")
    eq(js_cols, c_cols, "import.js COLUMNS vs cli/import.c s_cols")
    for c_name, js_name in (("s_routes", "ROUTES"), ("s_relations", "RELATIONS"),
                            ("s_labour", "LABOUR"), ("s_yesno", "YESNO"),
                            ("s_genders", "GENDERS"), ("s_categories", "CATEGORIES"),
                            ("s_causes", "CAUSES")):
        cb = c[c.index("static const s_alias_t %s[] = {" % c_name):]
        cb = cb[:cb.index("\n};")]
        c_map = dict(re.findall(r'\{"([^"]+)", "([^"]+)"\}', cb))
        jb = js[js.index("const %s = {" % js_name):]
        jb = jb[:jb.index("};")]
        js_map = {(a or b): v for a, b, v in re.findall(r'(?:"([^"]+)"|(\w+)): "([^"]+)"', jb)}
        check(len(c_map) > 1, c_name + " parsed")
        eq(js_map, c_map, "import.js %s vs cli/import.c %s" % (js_name, c_name))
