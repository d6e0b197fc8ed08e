//! The annotation page in real headless Chromium, driven over the DevTools protocol: sign in,
//! answer with the keyboard shortcuts, undo with the button, and model text that stays text.
//!
//! Chromium comes from `.ci/run` (Debian's `chromium`). Without it the test says so loudly and
//! passes on a developer's machine, but fails under CI (`CI` set), where it must run.

use factrl::feedback::store::Store;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// The payload a response carries: it would set `window.pwned` if it ever ran as HTML.
const HOSTILE: &str = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=1</script> & </p>";

fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.map(|n| dir.join(n))).find(|p| p.is_file())
}

/// A browser process, killed when dropped.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DevTools session on one page.
struct Page {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    id: u64,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let id = self.id;
        self.ws
            .send(Message::text(json!({"id": id, "method": method, "params": params}).to_string()))
            .unwrap();
        loop {
            let Message::Text(text) = self.ws.read().unwrap() else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true (the page works asynchronously), failing after 15 s.
    fn wait_for(&mut self, expression: &str) {
        let start = Instant::now();
        while self.eval(expression) != json!(true) {
            assert!(start.elapsed() < Duration::from_secs(15), "timed out waiting for {expression}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A real key press, as the keyboard sends it.
    fn press(&mut self, key: &str) {
        let (text, code) = match key {
            "Enter" => ("\r", 13),
            k => (k, k.chars().next().unwrap().to_ascii_uppercase() as u32),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut e = json!({"type": kind, "key": key, "windowsVirtualKeyCode": code});
            if kind == "keyDown" {
                e["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", e);
        }
    }
}

/// Starts Chromium on a free DevTools port and opens a page session.
fn open_browser(profile: &Path) -> Option<(Browser, Page)> {
    let Some(binary) = chromium() else {
        let message = "\n\n*** tests/browser.rs: NO CHROMIUM FOUND (chromium, chromium-browser, google-chrome): \
                       THE BROWSER TEST DID NOT RUN. `apt-get install chromium` (as .ci/run does). ***\n";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
        return None;
    };
    let mut child = Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let browser = Browser(child);
    let mut lines = stderr.lines();
    let ws = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("DevTools listening on ").nth(1).map(str::to_string))
        .expect("Chromium printed no DevTools address");
    // Keep draining stderr so Chromium never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let port = ws.trim_start_matches("ws://").split(['/', ':']).nth(1).unwrap().to_string();
    let targets: Value = serde_json::from_str(
        &ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").unwrap();
    let (ws, _) = tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap()).unwrap();
    Some((browser, Page { ws, id: 0 }))
}

#[test]
fn annotate_and_undo_through_the_page_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_browser, mut page)) = open_browser(&tmp.path().join("profile")) else { return };

    // A store with one candidate of two responses (one pair) and an annotator.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava/images/square16.png");
    std::fs::copy(fixture, tmp.path().join("a.png")).unwrap();
    let candidates = tmp.path().join("candidates.json");
    let record = json!([{"id": "c0", "image": "a.png", "responses": [HOSTILE, "A plain answer."],
                         "conversations": [{"from": "human", "value": "<image>\nDescribe the image."}]}]);
    std::fs::write(&candidates, record.to_string()).unwrap();
    let db = tmp.path().join("db.sqlite");
    let mut store = Store::open(&db).unwrap();
    store.load_candidates(&candidates).unwrap();
    let token = store.add_annotator("ann").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    runtime.spawn(factrl::feedback::server::serve(listener, store));

    page.call("Page.navigate", json!({"url": url}));
    page.wait_for("document.getElementById('flags-1')?.children.length === 7");

    // A wrong token is refused on the page.
    page.eval("document.getElementById('token').value = 'not-a-token'; document.getElementById('signin-button').click(); true");
    page.wait_for("document.getElementById('signin-error').textContent === 'That token was not accepted.'");
    assert_eq!(page.eval("document.getElementById('work').hidden"), json!(true));

    // Sign in; the pair is shown, its hostile text as text.
    page.eval(&format!(
        "document.getElementById('token').value = '{token}'; document.getElementById('signin-button').click(); true"
    ));
    page.wait_for("document.getElementById('text-1').textContent.length > 0");
    assert_eq!(page.eval("document.getElementById('text-1').textContent"), json!(HOSTILE));
    assert_eq!(page.eval("document.querySelectorAll('#responses img, #responses script').length"), json!(0));
    assert_eq!(page.eval("document.getElementById('who').textContent"), json!("Signed in as ann"));
    page.wait_for("document.getElementById('image').naturalWidth === 16");
    // For a person's look at the page: FACTRL_BROWSER_SCREENSHOT=page.png.
    if let Some(path) = std::env::var_os("FACTRL_BROWSER_SCREENSHOT") {
        let shot =
            page.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot["data"].as_str().unwrap(),
        );
        std::fs::write(path, png.unwrap()).unwrap();
    }

    // Keyboard: flag an object in response 1 by mouse, Q1 = response 2 ("2"), submit (Enter).
    page.eval("document.getElementById('flag-1-object').click(); true");
    page.press("2");
    assert_eq!(page.eval("document.getElementById('q1-2').checked"), json!(true));
    page.press("Enter");
    page.wait_for("document.getElementById('done').hidden === false");
    assert!(
        page.eval("document.getElementById('progress').textContent")
            .as_str()
            .unwrap()
            .starts_with("answered 1,")
    );
    let reader = Store::open(&db).unwrap();
    let ann = reader.authenticate(&token).unwrap().unwrap();
    let stored = reader.item(&ann, 1).unwrap().unwrap().answer.unwrap();
    assert_eq!((stored.q1, stored.q2, stored.flags_1.len(), stored.flags_2.len()), (2, None, 1, 0));

    // Undo with the button: the answer is gone from the store and the pair is back on the page.
    page.eval("document.getElementById('undo-done').click(); true");
    page.wait_for("document.getElementById('work').hidden === false");
    page.wait_for("document.getElementById('progress').textContent.startsWith('answered 0,')");
    assert_eq!(reader.item(&ann, 1).unwrap().unwrap().answer, None);
    assert_eq!(page.eval("document.getElementById('text-1').textContent"), json!(HOSTILE));

    // A tie needs Q2 before it is accepted: "3" then Enter is held back, "5" then Enter goes.
    page.press("3");
    page.press("Enter");
    page.wait_for("document.getElementById('status').textContent === 'Q1 is a tie: answer Q2.'");
    page.press("5");
    page.press("Enter");
    page.wait_for("document.getElementById('done').hidden === false");
    let stored = reader.item(&ann, 1).unwrap().unwrap().answer.unwrap();
    assert_eq!((stored.q1, stored.q2), (0, Some(2)));
    // Nothing the model wrote ever ran.
    assert_eq!(page.eval("window.pwned === undefined"), json!(true));
}
