import os, subprocess, time, json, random, datetime
import bftest
from bftest import Stack
S=None
def setup_module():
    global S
    S = Stack(["registry"]).__enter__()
def teardown_module():
    S.__exit__(None,None,None)
def _id(idp, n):
    born = datetime.date(1940, 1, 1) + datetime.timedelta(days=n // 1000)
    f = "%s%s%03d" % (idp, born.strftime("%Y%m%d"), n % 1000)
    return f + bftest.id_check_digit(f)
def test_bench():
    C = S.client("registry", 120000)
    C.call("region.put", {"code": "510000000000", "name": "p", "level": "province"})
    C.call("region.put", {"code": "510100000000", "name": "c", "level": "city", "parent_code": "510000000000"})
    C.call("region.put", {"code": "510101000000", "name": "c", "level": "county", "parent_code": "510100000000"})
    C.call("region.put", {"code": "510101001000", "name": "t", "level": "township", "parent_code": "510101000000"})
    v = C.call("village.create", {"region_code": "510101001000", "name": "v", "category": "poor"})["id"]
    env = dict(S.env); env["BANGFU_REDIS_URL"] = bftest.REDIS_URL
    files = []
    for part, idp in enumerate(["510101", "510102", "510103", "510104"]):
        path = os.path.join(bftest.TMP, "b%d.csv" % part)
        with open(path, "w") as f:
            f.write("household_ref,village_id,categories,cause_main,route,income_yuan,name,id_number,relation\n")
            p = 0
            for h in range(25000):
                for k in range(2):
                    p += 1
                    f.write("R%d-%d,%d,dibao,illness,industry,1.00,n,%s,%s\n" % (part, h, v, _id(idp, p), "head" if k == 0 else "child"))
        files.append(path)
    for batch in (500, 2000, 5000):
        pass
    t0 = time.time()
    r = subprocess.run([os.path.join(bftest.BUILD, "bin", "bangfu"), "import", "households", files[0], "--json"], env=env, capture_output=True)
    print("  one 25k:", time.time() - t0, r.stdout.decode()[:200])
    t0 = time.time()
    ps = [subprocess.Popen([os.path.join(bftest.BUILD, "bin", "bangfu"), "import", "households", f, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files[1:4]]
    for p in ps: p.wait()
    print("  three 25k in parallel:", time.time() - t0)
