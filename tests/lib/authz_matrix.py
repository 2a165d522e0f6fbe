#!/usr/bin/env python3
"""The authorization matrix of the api-gateway, generated from docs/api/openapi.yaml.

Run by tests/integration/test_gateway_authz.sh (which tests/run starts with
PostgreSQL and Redis up, TEST_* set). Starts the Google and Stripe fakes and
the real api-gateway, signs in three users through the real OAuth flow (A, B,
and an administrator), gives A real objects (private and public presets, jobs,
a watched Drive folder, a Stripe customer), then for EVERY operation of the
spec:

  1. no session (and a forged cookie)      -> 401, unless the operation allows
     anonymous callers (security: [] or a {} alternative);
  2. B's session with A's ids in every path parameter -> 404 (or 403 where the
     operation lists 403), with a same-origin Origin so that CSRF passes and
     authorization is what is tested; body/query fields marked x-authz-ref get
     A's object (must not succeed: nothing of A's in the answer) after a
     control with B's own object (must succeed, so the refusal is real);
     whatever B does, no answer carries anything of A's;
  3. /api/admin/* with B's session -> 403, with the administrator's -> 2xx.

Afterwards A's rows (every table with user_id, A's presets and what points at
them, A's user row) are compared with a snapshot taken before, A's session
still works, and A's objects read through the API are unchanged.

An operation the matrix cannot fill (a path parameter under an unknown prefix,
a body field it cannot make up, an unknown x-authz-ref) is a failure that says
how to teach it: PATH_IDS, FIELD_VALUES and REFS below.

Prints "ok   - ..." / "FAIL - ..." per check and "N passed, N failed".
"""
import http.client as httpclient
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

ROOT = os.environ["CA_ROOT"]
BIN = os.environ["CA_BIN"]
SPEC = os.environ.get("AUTHZ_SPEC", os.path.join(ROOT, "docs/api/openapi.yaml"))
DB_ADMIN = os.environ["TEST_DATABASE_URL"]
PG_PORT = os.environ["TEST_PG_PORT"]
DB_NAME = os.environ["TEST_DATABASE_NAME"]
REDIS_URL = os.environ["TEST_REDIS_URL"]

# Path templates whose parameters name an object, by prefix (the template up
# to and including the parameter): the kind of object (a key of the `objects`
# dict built in main). A new route under a known prefix needs nothing; a new
# kind of id needs a line here and the object made for A in make_objects().
PATH_IDS = {
    "/api/presets/{id}": "preset",
    "/api/jobs/{id}": "job",
    "/api/notifications/{id}": "notice",
    "/api/previews/{id}": "preview",
}

# Values for body fields the schema alone does not give (free-form objects,
# strings with a pattern that the default does not match).
CPU_GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}
FIELD_VALUES = {
    "workflow_json": CPU_GRAPH,
    "email_opt_out": ["usage"],
    "graph": CPU_GRAPH,
    "source": "sample",
}

# x-authz-ref kinds: which of a user's objects a marked field names.
REFS = {
    "preset_name": "preset_name",
    "drive_folder": "drive_folder",
    "preset": "preset",
}

ADMIN_EMAIL = "authz-admin@example.com"
METHODS = ("get", "put", "post", "patch", "delete")

passed = 0
failed = 0


def ok(desc):
    global passed
    passed += 1
    print("ok   - " + desc, flush=True)


def fail(desc):
    global failed
    failed += 1
    print("FAIL - " + desc, flush=True)


def check(cond, desc):
    (ok if cond else fail)(desc)
    return cond


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_cookie(self, name):
        for k, v in self.headers:
            if k.lower() == "set-cookie" and v.startswith(name + "="):
                return v.split(";", 1)[0]
        return None

    def error_code(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"].get("code")
        return None


def http(method, url, headers=None, body=None):
    u = urllib.parse.urlsplit(url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=15)
    path = u.path + ("?" + u.query if u.query else "")
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    out = Resp(r.status, r.getheaders(), r.read().decode("utf-8", "replace"))
    conn.close()
    return out


def psql(sql, *params, url=DB_ADMIN):
    """One statement with psql variables :'p1'... (quoted by psql), -At output."""
    args = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url]
    for i, p in enumerate(params, 1):
        args += ["-v", "p%d=%s" % (i, p)]
    r = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("psql: %s: %s" % (sql, r.stderr))
    return r.stdout.strip()


class Proc:
    def __init__(self, name, argv, env, log, port=None):
        self.name = name
        self.log = log
        self.port = port
        self.p = subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def wait_port_line(self, secs=15):
        deadline = time.time() + secs
        while time.time() < deadline:
            for line in open(self.log):
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m and not line.startswith("admin "):
                    self.port = int(m.group(1))
                    return True
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGTERM, secs=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(secs)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class User:
    def __init__(self, gw, email):
        self.gw = gw
        self.email = email
        self.cookie = None
        self.csrf = None
        self.id = None

    def sign_in(self):
        r = http("GET", self.gw + "/auth/google/login?login_hint=" + urllib.parse.quote(self.email))
        binding = r.set_cookie("ca_oauth")
        if r.status != 302 or binding is None:
            raise RuntimeError("login answered %d" % r.status)
        r = http("GET", r.header("Location"))
        if r.status != 302:
            raise RuntimeError("the fake's consent answered %d: %s" % (r.status, r.body))
        r = http("GET", r.header("Location"), {"Cookie": binding})
        self.cookie = r.set_cookie("ca_session")
        if r.status != 302 or self.cookie is None:
            raise RuntimeError("callback answered %d: %s" % (r.status, r.body))
        me = self.call("GET", "/api/me")
        if me.status != 200:
            raise RuntimeError("GET /api/me answered %d" % me.status)
        self.csrf = me.json["csrf_token"]
        self.id = me.json["id"]

    def alive(self):
        return self.cookie is not None and self.call("GET", "/api/me").status == 200

    def call(self, method, path, body=None, csrf=True):
        h = {"Cookie": self.cookie}
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        return http(method, self.gw + path, h, body)


# ---- the spec ----

def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise KeyError("external $ref " + ref)
        cur = spec
        for part in ref[2:].split("/"):
            cur = cur[part]
        node = cur
    return node


class CannotFill(Exception):
    pass


def merged_properties(spec, schema):
    schema = resolve(spec, schema)
    props, required = {}, []
    for sub in schema.get("allOf", []):
        p, r = merged_properties(spec, sub)
        props.update(p)
        required += r
    props.update(schema.get("properties", {}) or {})
    required += schema.get("required", []) or []
    return props, required


def make_value(spec, name, schema, refs, where):
    """A valid value for one field; refs maps an x-authz-ref kind to the value to use."""
    schema = resolve(spec, schema)
    kind = schema.get("x-authz-ref")
    if kind is not None:
        if kind not in REFS:
            raise CannotFill("%s: field %s has x-authz-ref %r that the matrix does not know: add it "
                             "to REFS in tests/lib/authz_matrix.py and make the object for both "
                             "users in make_objects()" % (where, name, kind))
        return refs[REFS[kind]]
    if name in FIELD_VALUES:
        return FIELD_VALUES[name]
    if "enum" in schema:
        vals = [v for v in schema["enum"] if v is not None]
        if vals:
            return vals[0]
    t = schema.get("type")
    if t == "boolean":
        return True
    if t == "integer" or t == "number":
        return schema.get("minimum", 1)
    if t == "string":
        v = "authz matrix"
        pat = schema.get("pattern")
        if pat is not None and not re.search(pat, v):
            v = "authz_matrix"
            if not re.search(pat, v):
                raise CannotFill("%s: field %s: no value known for pattern %s: add one to "
                                 "FIELD_VALUES in tests/lib/authz_matrix.py" % (where, name, pat))
        return v[: schema.get("maxLength", 1000)]
    if t == "object" and schema.get("properties"):
        return make_body(spec, schema, refs, where)
    raise CannotFill("%s: field %s (type %s) cannot be made up: add a value to FIELD_VALUES in "
                     "tests/lib/authz_matrix.py" % (where, name, t))


def make_body(spec, schema, refs, where):
    props, _required = merged_properties(spec, schema)
    # Every documented field: an operation that ignores the ownership of one
    # of them is then caught on whichever it changes.
    return {k: make_value(spec, k, v, refs, where) for k, v in props.items()}


def has_ref(spec, schema):
    schema = resolve(spec, schema)
    if not isinstance(schema, dict):
        return False
    if "x-authz-ref" in schema:
        return True
    props, _ = merged_properties(spec, schema)
    return any(has_ref(spec, v) for v in props.values())


class Op:
    def __init__(self, spec, path, method, op, path_item):
        self.spec = spec
        self.path = path
        self.method = method.upper()
        self.op = op
        self.name = "%s %s" % (self.method, path)
        sec = op.get("security", spec.get("security", []))
        self.public = len(sec) == 0 or any(len(s) == 0 for s in sec)
        self.admin = path.startswith("/api/admin/")
        self.responses = {str(k) for k in op.get("responses", {})}
        params = [resolve(spec, p) for p in path_item.get("parameters", []) + op.get("parameters", [])]
        self.path_params = [p for p in params if p.get("in") == "path"]
        self.query_refs = [p for p in params if p.get("in") == "query" and (
            "x-authz-ref" in p or "x-authz-ref" in resolve(spec, p.get("schema", {})))]
        self.required_query = [p for p in params if p.get("in") == "query" and p.get("required")]
        body = op.get("requestBody")
        self.body_schema = None
        if body is not None:
            content = resolve(spec, body).get("content", {})
            if "application/json" not in content:
                raise CannotFill("%s: a request body that is not application/json" % self.name)
            self.body_schema = content["application/json"].get("schema", {})

    def has_refs(self):
        return bool(self.query_refs) or (self.body_schema is not None and has_ref(self.spec, self.body_schema))

    def url(self, objects, refs):
        """The request path with the owner's ids; raises CannotFill."""
        path = self.path
        for p in self.path_params:
            token = "{%s}" % p["name"]
            tmpl_prefix = self.path[: self.path.index(token) + len(token)]
            kind = PATH_IDS.get(tmpl_prefix)
            if kind is None:
                raise CannotFill("%s: path parameter {%s} under %s names no object the matrix knows: "
                                 "add \"%s\": \"<kind>\" to PATH_IDS in tests/lib/authz_matrix.py "
                                 "(and make that object for user A in make_objects())"
                                 % (self.name, p["name"], tmpl_prefix, tmpl_prefix))
            path = path.replace(token, objects[kind], 1)
        q = []
        for p in self.required_query + [p for p in self.query_refs if p not in self.required_query]:
            schema = dict(resolve(self.spec, p.get("schema", {})))
            if "x-authz-ref" in p:
                schema["x-authz-ref"] = p["x-authz-ref"]
            q.append((p["name"], make_value(self.spec, p["name"], schema, refs, self.name)))
        if q:
            path += "?" + urllib.parse.urlencode(q)
        return path

    def body(self, refs):
        if self.body_schema is None:
            return None
        return make_body(self.spec, self.body_schema, refs, self.name)


def load_ops(spec):
    ops = []
    for path, item in spec["paths"].items():
        for m in METHODS:
            if m in item:
                ops.append((path, m, item[m], item))
    return ops


# ---- the objects ----

def make_objects(gw, google, stripe, user, tag):
    """Real objects of `user`: a private and a public preset, a failed and a
    queued job, a watched Drive folder with a subfolder, a Stripe customer.
    Returns (objects by kind for path ids, refs by x-authz-ref kind, markers:
    strings that must never reach another user)."""
    o = {}
    r = user.call("POST", "/api/presets", {"name": tag + " private", "description": tag + " secret description",
                                           "category": "portrait", "workflow_json": CPU_GRAPH})
    if r.status != 201:
        raise RuntimeError("create preset: %d %s" % (r.status, r.body))
    o["preset"] = r.json["id"]
    o["preset_name"] = tag + " private"
    r = user.call("POST", "/api/presets", {"name": tag + " shared", "workflow_json": CPU_GRAPH})
    pub = r.json["id"]
    r = user.call("PATCH", "/api/presets/" + pub, {"is_public": True})
    if r.status != 200:
        raise RuntimeError("publish: %d %s" % (r.status, r.body))
    r = user.call("PATCH", "/api/me", {"default_preset": o["preset_name"]})
    if r.status != 200:
        raise RuntimeError("default_preset: %d %s" % (r.status, r.body))
    o["job"] = psql("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
                    "preset_name, status, error_code, error_message) VALUES (:'p1', :'p2', :'p3', "
                    "'fold', :'p4', 'failed', 'processing_error', 'boom') RETURNING id",
                    user.id, tag + "-file-1", tag + "-secret-photo.jpg", o["preset_name"]).splitlines()[0]
    o["job_queued"] = psql("INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, "
                           "preset_name, status) VALUES (:'p1', :'p2', :'p3', 'fold', 'portrait_pro', "
                           "'queued') RETURNING id", user.id, tag + "-file-2",
                           tag + "-queued-photo.jpg").splitlines()[0]
    folder = http("POST", google + "/__admin/files", {}, {"email": user.email, "name": tag + "Shoots", "folder": True})
    o["drive_folder"] = folder.json["id"]
    sub = http("POST", google + "/__admin/files", {}, {"email": user.email, "name": tag + "SecretSub",
                                                      "parents": [o["drive_folder"]], "folder": True})
    o["drive_subfolder"] = sub.json["id"]
    r = user.call("PUT", "/api/watch", {"folder_id": o["drive_folder"]})
    if r.status != 200:
        raise RuntimeError("watch: %d %s" % (r.status, r.body))
    o["output_folder"] = r.json["output_folder_id"]
    o["customer"] = "cus_" + tag + "secret"
    r = http("POST", stripe + "/__admin/seed", {}, {"customers": [{"id": o["customer"], "email": user.email}]})
    if r.status >= 300:
        raise RuntimeError("stripe seed: %d %s" % (r.status, r.body))
    psql("UPDATE subscriptions SET stripe_customer_id = :'p2' WHERE user_id = :'p1'", user.id, o["customer"])
    o["notice"] = psql("SELECT notice_raise(:'p1', 'folder_gone', :'p2', '{}')", user.id,
                       tag + "-secret-notice").splitlines()[0]
    refs = {"preset_name": o["preset_name"], "drive_folder": o["drive_folder"]}
    markers = [user.id, user.email, user.csrf, user.cookie.split("=", 1)[1], o["preset"], o["preset_name"],
               tag + " secret description", o["job"], o["job_queued"], tag + "-secret-photo.jpg",
               tag + "-queued-photo.jpg", o["drive_folder"], o["drive_subfolder"], o["output_folder"],
               tag + "Shoots", tag + "SecretSub", o["customer"], o["notice"]]
    r = user.call("POST", "/api/previews", {"graph": CPU_GRAPH, "source": "sample"})
    if r.status != 202:
        raise RuntimeError("preview: %d %s" % (r.status, r.body))
    o["preview"] = r.json["id"]
    refs = {"preset_name": o["preset_name"], "drive_folder": o["drive_folder"], "preset": o["preset"]}
    markers = [user.id, user.email, user.csrf, user.cookie.split("=", 1)[1], o["preset"], o["preset_name"],
               tag + " secret description", o["job"], o["job_queued"], tag + "-secret-photo.jpg",
               tag + "-queued-photo.jpg", o["drive_folder"], o["drive_subfolder"], o["output_folder"],
               tag + "Shoots", tag + "SecretSub", o["customer"], o["preview"]]
    return o, refs, markers


def snapshot(user_id):
    """Every row of A's, and every row that points at A's presets or jobs, as text."""
    cols = psql("SELECT table_name || ' ' || column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND column_name IN ('user_id', 'preset_id', 'job_id', "
                "'created_by_user_id') AND table_name IN (SELECT table_name FROM "
                "information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE') "
                "ORDER BY 1").splitlines()
    parts = ["SELECT 'users', t::text FROM users t WHERE id = :'p1'"]
    for line in cols:
        table, col = line.split()
        if col in ("user_id", "created_by_user_id"):
            parts.append("SELECT '%s', t::text FROM %s t WHERE %s = :'p1'" % (table, table, col))
        elif col == "preset_id":
            parts.append("SELECT '%s', t::text FROM %s t WHERE preset_id IN (SELECT id FROM presets "
                         "WHERE created_by_user_id = :'p1')" % (table, table))
        else:
            parts.append("SELECT '%s', t::text FROM %s t WHERE job_id IN (SELECT id FROM jobs "
                         "WHERE user_id = :'p1')" % (table, table))
    return sorted(psql(" UNION ALL ".join(parts) + ";", user_id).splitlines())


def leaks(resp, markers, sent=""):
    """A's markers in an answer, but for what the caller sent itself (an
    answer may echo the folder id it was asked about)."""
    text = resp.body + "\n" + "\n".join("%s: %s" % h for h in resp.headers)
    return [m for m in markers if m and m in text and m not in sent]


def main():
    spec = yaml.safe_load(open(SPEC))
    work = tempfile.mkdtemp(prefix="authz.")
    env = dict(os.environ)
    procs = []
    try:
        google = Proc("google", [ROOT + "/tests/fakes/run", "google", "--port", "0"], env, work + "/google.log")
        procs.append(google)
        stripe = Proc("stripe", [ROOT + "/tests/fakes/run", "stripe", "--port", "0"], env, work + "/stripe.log")
        procs.append(stripe)
        if not (google.wait_port_line() and stripe.wait_port_line()):
            fail("the fakes start")
            return
        G = "http://127.0.0.1:%d" % google.port
        S = "http://127.0.0.1:%d" % stripe.port
        port = free_port()
        GW = "http://127.0.0.1:%d" % port
        genv = dict(env, PORT=str(port), LISTEN_ADDR="127.0.0.1", PUBLIC_URL=GW,
                    DATABASE_URL="postgresql://ca_api_gateway@127.0.0.1:%s/%s" % (PG_PORT, DB_NAME),
                    REDIS_URL=REDIS_URL, ENCRYPTION_KEY="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                    SESSION_SECRET="authz-session-secret", GOOGLE_CLIENT_ID="test-client",
                    GOOGLE_CLIENT_SECRET="test-client-secret",
                    GOOGLE_AUTH_URL=G + "/o/oauth2/v2/auth", GOOGLE_TOKEN_URL=G + "/token",
                    GOOGLE_USERINFO_URL=G + "/v1/userinfo", GOOGLE_REVOKE_URL=G + "/revoke", DRIVE_API_URL=G + "/drive/v3",
                    GOOGLE_TIMEOUT_MS="3000", RATE_LIMIT_PER_MINUTE_IP="1000000",
                    RATE_LIMIT_PER_MINUTE_SESSION="1000000", RATE_LIMIT_PER_MINUTE_LOGIN="1000000",
                    ADMIN_EMAILS=ADMIN_EMAIL,
                    STRIPE_SECRET_KEY="sk_test_gateway", STRIPE_API_URL=S,
                    STRIPE_PRICE_CREATOR="price_basic_monthly", STRIPE_PRICE_STUDIO="price_pro_monthly",
                    LOG_LEVEL="warn")
        for k in ("MIGRATION_DATABASE_URL",):
            genv.pop(k, None)
        gw = Proc("api-gateway", [BIN + "/api-gateway", "serve"], genv, work + "/gw.log")
        procs.append(gw)
        ready = False
        for _ in range(150):
            try:
                if http("GET", GW + "/readyz").status == 200:
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if not check(ready, "the gateway is ready"):
            print(open(work + "/gw.log").read())
            return
        run_matrix(spec, GW, G, S)
        rc = gw.stop()
        procs.remove(gw)
        check(rc == 0, "the gateway exits 0 on SIGTERM (got %s)" % rc)
        if rc != 0:
            print(open(work + "/gw.log").read()[-20000:])
    except Exception as e:  # a setup failure is a failure, with the gateway's log
        fail("the matrix ran to the end: %s: %s" % (type(e).__name__, e))
        for p in procs:
            if p.name == "api-gateway":
                print(open(p.log).read()[-20000:])
    finally:
        for p in reversed(procs):
            p.stop(signal.SIGKILL if p.name != "api-gateway" else signal.SIGTERM, 10)
        subprocess.run(["rm", "-rf", work])
        print("%d passed, %d failed" % (passed, failed))


def run_matrix(spec, GW, G, S):
    A = User(GW, "authz-alice@example.com")
    B = User(GW, "authz-bob@example.com")
    admin = User(GW, ADMIN_EMAIL)
    for u in (A, B, admin):
        u.sign_in()
    # A's public preset is visible to B by design: its id and name are not
    # among the markers.
    a_objs, a_refs, a_markers = make_objects(GW, G, S, A, "alicez")
    b_objs, b_refs, _ = make_objects(GW, G, S, B, "bobz")
    http("DELETE", S + "/__admin/requests")
    origin = {"Origin": GW}
    forged = "ca_session=" + "A" * 43

    a_before = snapshot(A.id)
    a_reads = {p: A.call("GET", p).body for p in
               ("/api/me", "/api/presets/" + a_objs["preset"], "/api/jobs/" + a_objs["job"],
                "/api/jobs/" + a_objs["job_queued"], "/api/usage")}
    check(len(a_before) > 5, "A has rows to protect (%d)" % len(a_before))

    ops = [Op(spec, *o) for o in load_ops(spec)]
    check(len(ops) >= 20, "the spec lists operations (%d)" % len(ops))
    for op in ops:
        try:
            a_path = op.url(a_objs, a_refs)
            a_body = op.body(a_refs)
        except CannotFill as e:
            fail("%s: the matrix cannot fill it: %s" % (op.name, e))
            continue

        # 1. no session
        if op.public:
            r = http(op.method, GW + a_path, dict(origin), a_body)
            check(r.status != 401 and r.status < 500, "%s: public in the spec (security allows anonymous): "
                  "no session is not 401 (got %d)" % (op.name, r.status))
        else:
            for label, hdrs in (("no session", dict(origin)), ("forged cookie", dict(origin, Cookie=forged))):
                r = http(op.method, GW + a_path, hdrs, a_body)
                check(r.status == 401 and r.error_code() == "unauthorized",
                      "%s: %s -> 401 unauthorized (got %d %s)" % (op.name, label, r.status, r.error_code()))

        # 3. admin routes
        if op.admin:
            r = B.call(op.method, a_path, a_body)
            check(r.status == 403 and r.error_code() == "forbidden",
                  "%s: non-admin -> 403 forbidden (got %d %s)" % (op.name, r.status, r.error_code()))
            check(not leaks(r, a_markers), "%s: non-admin answer carries nothing of A's" % op.name)
            r = admin.call(op.method, a_path, a_body)
            check(200 <= r.status < 300, "%s: the administrator -> 2xx (got %d)" % (op.name, r.status))
            continue

        # 2. B with A's ids
        if op.path_params:
            r = B.call(op.method, a_path, a_body)
            want = "404" + (" or 403" if "403" in op.responses else "")
            good = r.status == 404 and r.error_code() == "not_found"
            good = good or ("403" in op.responses and r.status == 403 and r.error_code() not in ("csrf_failed", None))
            check(good, "%s: B on A's %s -> %s (got %d %s)" % (op.name, a_path, want, r.status, r.error_code()))
            check(not leaks(r, a_markers), "%s: B's answer on A's ids carries nothing of A's (%s)"
                  % (op.name, ", ".join(leaks(r, a_markers)) or "none"))
        elif op.has_refs():
            # control: B's own object is accepted, so a refusal of A's is about A's
            b_path = op.url(b_objs, b_refs)
            r = B.call(op.method, b_path, op.body(b_refs))
            check(200 <= r.status < 300, "%s: control, B with B's own objects -> 2xx (got %d %s)"
                  % (op.name, r.status, r.error_code()))
            r = B.call(op.method, a_path, a_body)
            lk = leaks(r, a_markers, a_path + json.dumps(a_body))
            check(r.status < 500 and not lk,
                  "%s: B naming A's objects (%s) gets nothing of A's (got %d %s%s)"
                  % (op.name, json.dumps(a_body) if a_body else a_path, r.status, r.error_code(),
                     "; leaked " + ", ".join(lk) if lk else ""))
            me = B.call("GET", "/api/me")
            check(me.status == 200 and not leaks(me, a_markers),
                  "%s: afterwards B's profile names nothing of A's" % op.name)
        else:
            r = B.call(op.method, a_path, a_body)
            lk = leaks(r, a_markers)
            check(r.status < 500 and not lk, "%s: B's own call (%d) carries nothing of A's%s"
                  % (op.name, r.status, "; leaked " + ", ".join(lk) if lk else ""))
        if not B.alive():  # logout, logout-all: B signs in again
            B.sign_in()

    # Stripe was asked nothing about A on B's behalf
    reqs = http("GET", S + "/__admin/requests")
    lk = [m for m in a_markers if m in reqs.body]
    check(reqs.status == 200 and not lk, "no request to Stripe during the matrix names A%s"
          % ("; found " + ", ".join(lk) if lk else ""))
    check(b_objs["customer"] in reqs.body, "(Stripe was asked about B's own customer: the check above saw B's calls)")
    # A is untouched
    a_after = snapshot(A.id)
    gone = [x for x in a_before if x not in a_after]
    new = [x for x in a_after if x not in a_before]
    check(not gone and not new, "A's rows are unchanged after the matrix%s" %
          "".join("\n       - %s\n       + %s" % (g, n) for g, n in zip(gone + [""] * len(new), new + [""] * len(gone))))
    check(A.alive(), "A's session still works")
    for p, before in a_reads.items():
        check(A.call("GET", p).body == before, "A reads %s as before" % p)


if __name__ == "__main__":
    main()
    sys.exit(0 if failed == 0 and passed > 0 else 1)
