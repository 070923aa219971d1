"""The walkthrough's request over KServe V2 REST (HTTP/JSON), from a client written against the
documented protocol with nothing but the Python standard library (urllib, Debian python3).

usage: rest_client.py --request JSON --model-id ID --vmodel NAME --rest URL [--rest URL ...]
       rest_client.py --request JSON --emit PATH

The request file is the walkthrough's ModelInferRequest in gRPC JSON form ("contents"); this
client sends it as V2 REST does ("data", here nested as the shape [1, 64]). The model ID is
Loaded somewhere in the mesh and NAME is a vmodel of it. At every --rest URL (a node's or the
gateway's REST port) it checks:
  1. POST /v2/models/NAME/infer and /v2/models/ID/infer, and with /versions/1: 200, outputs
     [{"name":"predict","datatype":..,"shape":[1],"data":[8]}], model_name ID, id echoed;
  2. GET /v2/models/NAME (metadata: name, inputs), /v2/models/NAME/ready (200, ready true),
     /v2/health/live and /ready (200), /v2 (name, version, extensions);
  3. errors as {"error": "..."}: an unknown model 404 naming it, a wrong shape 400 with the
     runtime's message, malformed JSON 400, a datatype V2 does not know 400, data not matching
     the shape 400, an unknown path 404, GET on infer 405, a body over 16 MiB 413;
  4. 32 requests at once from threads: all 200 and 8.
--emit writes the REST body to PATH (for curl) and exits.
Prints what each call answered; exits 0 when every expectation holds, 1 otherwise."""
import argparse
import concurrent.futures
import json
import sys
import urllib.error
import urllib.request

CALL_S = 20

ap = argparse.ArgumentParser()
ap.add_argument("--request", required=True)
ap.add_argument("--model-id")
ap.add_argument("--vmodel")
ap.add_argument("--rest", action="append", default=[])
ap.add_argument("--emit")
args = ap.parse_args()

failures = []


def expect(what, cond):
    print("  %s: %s" % ("ok" if cond else "FAILED", what), flush=True)
    if not cond:
        failures.append(what)


def rest_body():
    """The gRPC-JSON request as a V2 REST one: data nested as the shape."""
    with open(args.request) as f:
        g = json.load(f)
    inputs = []
    for t in g["inputs"]:
        flat = t["contents"]["fp32_contents"]
        rows, cols = int(t["shape"][0]), int(t["shape"][1])
        nested = [flat[r * cols:(r + 1) * cols] for r in range(rows)]
        inputs.append({"name": t["name"], "datatype": t["datatype"],
                       "shape": [rows, cols], "data": nested})
    return {"id": "walkthrough-1", "inputs": inputs}


def call(method, url, body=None, raw=None):
    """(status, parsed JSON or None, text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=CALL_S) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    return status, doc, text


def is_error(doc, *words):
    return (isinstance(doc, dict) and list(doc) == ["error"] and isinstance(doc["error"], str)
            and all(w in doc["error"] for w in words))


def check_answer(where, status, doc, text):
    print("  %s -> %d %s" % (where, status, text[:300]), flush=True)
    ok = (status == 200 and isinstance(doc, dict) and doc.get("model_name") == args.model_id
          and len(doc.get("outputs", [])) == 1)
    if ok:
        out = doc["outputs"][0]
        ok = (out.get("name") == "predict" and out.get("shape") == [1]
              and [int(v) for v in out.get("data", [])] == [8])
    expect("%s: 200, predict [8], model_name %s" % (where, args.model_id), ok)
    return ok


body = rest_body()
if args.emit:
    with open(args.emit, "w") as f:
        json.dump(body, f)
    sys.exit(0)
if not args.rest or not args.model_id or not args.vmodel:
    ap.error("--rest, --model-id and --vmodel are required")

for base in args.rest:
    print("REST %s" % base, flush=True)
    # 1. inference by the InferenceService's name, by the model id, with a version
    for name in (args.vmodel, args.model_id):
        for path in ("/v2/models/%s/infer" % name, "/v2/models/%s/versions/1/infer" % name):
            st, doc, text = call("POST", base + path, body)
            if check_answer("POST " + path, st, doc, text):
                expect("id echoed", doc.get("id") == "walkthrough-1")
    flat = json.loads(json.dumps(body))
    flat["inputs"][0]["data"] = [v for row in body["inputs"][0]["data"] for v in row]
    st, doc, text = call("POST", base + "/v2/models/%s/infer" % args.vmodel, flat)
    check_answer("POST flat data", st, doc, text)

    # 2. metadata, readiness, health, server metadata
    st, doc, text = call("GET", base + "/v2/models/%s" % args.vmodel)
    print("  GET metadata -> %d %s" % (st, text[:300]))
    expect("metadata 200 with name and inputs",
           st == 200 and isinstance(doc, dict) and isinstance(doc.get("name"), str)
           and isinstance(doc.get("inputs"), list) and isinstance(doc.get("outputs"), list))
    st, doc, text = call("GET", base + "/v2/models/%s/ready" % args.vmodel)
    expect("model ready: 200 ready true (%d %s)" % (st, text),
           st == 200 and doc == {"name": args.vmodel, "ready": True})
    for h in ("live", "ready"):
        st, doc, text = call("GET", base + "/v2/health/" + h)
        expect("health %s: 200 (%d)" % (h, st), st == 200)
    st, doc, text = call("GET", base + "/v2")
    expect("server metadata (%d %s)" % (st, text),
           st == 200 and doc.get("name") == "modelmesh-c" and "version" in doc
           and doc.get("extensions") == [])

    # 3. errors
    st, doc, text = call("POST", base + "/v2/models/no-such-model/infer", body)
    expect("unknown model: 404 naming it (%d %s)" % (st, text),
           st == 404 and is_error(doc, "no-such-model", "not found"))
    bad = json.loads(json.dumps(flat))
    bad["inputs"][0]["shape"] = [2, 32]
    bad["inputs"][0]["data"] = flat["inputs"][0]["data"]
    st, doc, text = call("POST", base + "/v2/models/%s/infer" % args.vmodel, bad)
    expect("wrong shape for the model: 400 with the runtime's message (%d %s)" % (st, text),
           st == 400 and is_error(doc) and len(doc["error"]) > 0)
    st, doc, text = call("POST", base + "/v2/models/%s/infer" % args.vmodel, raw=b'{"inputs": [')
    expect("malformed JSON: 400 (%d %s)" % (st, text), st == 400 and is_error(doc, "JSON"))
    odd = json.loads(json.dumps(flat))
    odd["inputs"][0]["datatype"] = "FP33"
    st, doc, text = call("POST", base + "/v2/models/%s/infer" % args.vmodel, odd)
    expect("unknown datatype: 400 (%d %s)" % (st, text), st == 400 and is_error(doc, "FP33"))
    short = json.loads(json.dumps(flat))
    short["inputs"][0]["data"] = short["inputs"][0]["data"][:10]
    st, doc, text = call("POST", base + "/v2/models/%s/infer" % args.vmodel, short)
    expect("data not matching the shape: 400 (%d %s)" % (st, text),
           st == 400 and is_error(doc))
    st, doc, text = call("GET", base + "/v2/nothing/here")
    expect("unknown path: 404 (%d %s)" % (st, text), st == 404 and is_error(doc))
    st, doc, text = call("GET", base + "/v2/models/%s/infer" % args.vmodel)
    expect("GET on infer: 405 (%d %s)" % (st, text), st == 405 and is_error(doc, "POST"))
    try:
        st, doc, text = call("POST", base + "/v2/models/%s/infer" % args.vmodel,
                             raw=b" " * (17 << 20))
    except (ConnectionError, urllib.error.URLError) as e:  # cut while sending: also a refusal
        st, doc, text = 413, {"error": "cut"}, str(e)
    expect("a body over 16 MiB: 413 (%d %s)" % (st, text[:200]), st == 413 and is_error(doc))

    # 4. at once
    def one(_):
        s, d, _t = call("POST", base + "/v2/models/%s/infer" % args.vmodel, body)
        return s == 200 and [int(v) for v in d["outputs"][0]["data"]] == [8]

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as ex:
        results = list(ex.map(one, range(32)))
    expect("32 at once: all 200 and 8 (%d good)" % sum(results), all(results))

print("%d failure(s)" % len(failures))
for f in failures:
    print("FAILED: " + f)
sys.exit(1 if failures else 0)
