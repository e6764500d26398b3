#!/usr/bin/python3
"""Opens a live view URL in headless Chromium and waits until the page shows a text.

usage: live-view-check.py URL CHROMIUM TEXT TIMEOUT_SECS

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: commands on
fd 3, replies on fd 4, NUL-separated JSON), so it needs nothing beyond Python's standard
library: Chromium's --dump-dom acts at the page's load event, before the page's EventSource
has delivered anything. Chromium runs in its own session with a fresh profile; both are
gone when this exits. Exit status 0 when the text appeared, 1 otherwise (the page's text is
printed). Used by .ci/first-ten-minutes.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time

url, chromium, want, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
profile = tempfile.mkdtemp(prefix="ftm-chromium-")
to_chrome_r, to_chrome_w = os.pipe()
from_chrome_r, from_chrome_w = os.pipe()

def child_fds():
    # Chromium reads commands from fd 3 and writes replies to fd 4. The pipes may themselves
    # be fds 3 to 6: copy them out of the way first.
    a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
    os.dup2(a, 3)
    os.dup2(b, 4)

proc = subprocess.Popen(
    [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
     "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-quic",
     "--user-data-dir=" + profile, "--remote-debugging-pipe", url],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    preexec_fn=child_fds, close_fds=False, start_new_session=True)
os.close(to_chrome_r); os.close(from_chrome_w)
buf = b""; next_id = 0

def call(method, params, session=None):
    global buf, next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params}
    if session: msg["sessionId"] = session
    os.write(to_chrome_w, json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" not in buf:
            chunk = os.read(from_chrome_r, 65536)
            if not chunk: raise SystemExit("chromium closed the pipe")
            buf += chunk
        raw, buf = buf.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == next_id:
            if "error" in reply: raise SystemExit("%s: %s" % (method, reply["error"]))
            return reply.get("result", {})
try:
    deadline = time.time() + timeout
    page = None
    while page is None:
        pages = [t for t in call("Target.getTargets", {})["targetInfos"] if t["type"] == "page"]
        page = pages[0]["targetId"] if pages else None
        if page is None:
            if time.time() > deadline: raise SystemExit("chromium opened no page")
            time.sleep(0.1)
    session = call("Target.attachToTarget", {"targetId": page, "flatten": True})["sessionId"]
    text = ""
    while time.time() < deadline:
        r = call("Runtime.evaluate", {"expression": "document.body ? document.body.innerText : ''",
                                      "returnByValue": True}, session)
        text = r.get("result", {}).get("value", "")
        if want in text:
            print("live view shows %r" % want); sys.exit(0)
        time.sleep(0.2)
    print("live view never showed %r; its text:\n%s" % (want, text)); sys.exit(1)
finally:
    try: os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    proc.wait()
    shutil.rmtree(profile, ignore_errors=True)
