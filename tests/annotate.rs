//! The annotation app over HTTP as a browser's script uses it, the store behind it, and the
//! `annotate add-annotator / export / stats` commands.

use factrl::feedback::Preference;
use factrl::feedback::store::Store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server on a free port of 127.0.0.1; stops when dropped.
struct Server {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

fn start(store: Store) -> Server {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(factrl::feedback::server::serve(listener, store));
    Server { url, _runtime: runtime }
}

/// `n` candidates of `k` responses; candidate 0's first response is a script tag.
fn write_candidates(dir: &Path, n: usize, k: usize) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava/images/square16.png");
    std::fs::copy(fixture, images.join("a.png")).unwrap();
    let records: Vec<Value> = (0..n)
        .map(|c| {
            let responses: Vec<String> = (0..k)
                .map(|r| {
                    if c == 0 && r == 0 {
                        "<script>alert(1)</script> & <b>bold</b>".into()
                    } else {
                        format!("answer {c}.{r}")
                    }
                })
                .collect();
            json!({"id": format!("c{c}"), "image": "images/a.png", "task": "description",
                   "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                     {"from": "gpt", "value": "The reference."}],
                   "responses": responses})
        })
        .collect();
    let path = dir.join("candidates.json");
    std::fs::write(&path, serde_json::to_string(&records).unwrap()).unwrap();
    path
}

/// A store at `dir/db.sqlite` with the candidates loaded and annotators `names` (their tokens).
fn open_store(dir: &Path, candidates: &Path, names: &[&str], per_pair: usize) -> (Store, Vec<String>) {
    let mut store = Store::open(&dir.join("db.sqlite")).unwrap();
    store.per_pair = per_pair;
    store.load_candidates(candidates).unwrap();
    let tokens = names.iter().map(|n| store.add_annotator(n).unwrap()).collect();
    (store, tokens)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Status and body of a request; `token` goes out as a bearer token, `body` as JSON.
fn call(url: &str, method: &str, token: Option<&str>, body: Option<Value>) -> (u16, String) {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut res = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.unwrap_or(json!({})).to_string())
        }
    }
    .unwrap();
    (res.status().as_u16(), res.body_mut().read_to_string().unwrap_or_default())
}

fn ok(url: &str, method: &str, token: &str, body: Option<Value>) -> Value {
    let (status, text) = call(url, method, Some(token), body);
    assert_eq!(status, 200, "{method} {url}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_wrong_or_missing_token_gets_a_bare_401() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path(), 2, 2);
    let (store, tokens) = open_store(tmp.path(), &candidates, &["ann"], 1);
    let s = start(store);
    let wrong = "0".repeat(64);
    let almost = format!("{}x", &tokens[0][..63]);
    for (method, path) in [
        ("GET", "/api/me"),
        ("GET", "/api/next"),
        ("GET", "/api/item/1"),
        ("GET", "/api/item/999"),
        ("GET", "/api/image/1"),
        ("POST", "/api/answer"),
        ("POST", "/api/skip"),
        ("POST", "/api/undo"),
    ] {
        for token in [None, Some(""), Some(wrong.as_str()), Some(almost.as_str())] {
            let (status, body) =
                call(&format!("{}{path}", s.url), method, token, Some(json!({"pair": 1, "q1": 1})));
            assert_eq!((status, body.as_str()), (401, "unauthorized"), "{method} {path} with {token:?}");
        }
    }
    // Nothing was written by those requests.
    assert_eq!(ok(&format!("{}/api/me", s.url), "GET", &tokens[0], None)["progress"]["answered"], 0);
    // The page itself needs no token, and forbids inline and foreign scripts.
    let res = agent().get(&s.url).call().unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let csp = res.headers().get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
}

#[test]
fn answers_skips_undo_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path(), 2, 3);
    let (store, tokens) = open_store(tmp.path(), &candidates, &["ann"], 1);
    let s = start(store);
    let url = |p: &str| format!("{}{p}", s.url);
    let t = tokens[0].as_str();
    let next = ok(&url("/api/next"), "GET", t, None);
    assert_eq!(next["progress"], json!({"answered": 0, "skipped": 0, "remaining": 6, "total": 6}));
    let item = &next["item"];
    // The reference answer is not shown; model text arrives verbatim, as data.
    assert_eq!(item["turns"], json!([{"from": "human", "value": "<image>\nDescribe the image."}]));
    assert_eq!(item["responses"][0], "<script>alert(1)</script> & <b>bold</b>");
    let p1 = item["pair"].as_i64().unwrap();
    let image =
        agent().get(&url(&format!("/api/image/{p1}"))).header("Authorization", format!("Bearer {t}")).call();
    let mut image = image.unwrap();
    assert_eq!(image.headers().get("content-type").unwrap(), "image/png");
    assert_eq!(image.body_mut().read_to_vec().unwrap()[..4], [0x89, b'P', b'N', b'G']);

    // Incomplete or contradictory answers and unknown pairs are refused.
    for (body, status) in [
        (json!({"pair": p1, "q1": 0}), 422),
        (json!({"pair": p1, "q1": 1, "q2": 2}), 422),
        (json!({"pair": p1, "q1": 7}), 422),
        (json!({"pair": p1, "q1": 1, "flags_1": ["bogus"]}), 422),
        (json!({"pair": 999, "q1": 1}), 404),
    ] {
        assert_eq!(call(&url("/api/answer"), "POST", Some(t), Some(body.clone())).0, status, "{body}");
    }
    // Tie on Q1, response 2 more helpful; skip the second pair; response 1 more honest on the third.
    ok(&url("/api/answer"), "POST", t, Some(json!({"pair": p1, "q1": 0, "q2": 2, "flags_1": ["count"]})));
    let p2 = ok(&url("/api/next"), "GET", t, None)["item"]["pair"].as_i64().unwrap();
    ok(&url("/api/skip"), "POST", t, Some(json!({"pair": p2})));
    let p3 = ok(&url("/api/next"), "GET", t, None)["item"]["pair"].as_i64().unwrap();
    assert!(p1 != p2 && p2 != p3 && p1 != p3);
    let progress = ok(
        &url("/api/answer"),
        "POST",
        t,
        Some(json!({"pair": p3, "q1": 1, "flags_2": ["object", "relation"]})),
    );
    assert_eq!(progress, json!({"answered": 2, "skipped": 1, "remaining": 3, "total": 6}));
    // Undo takes back the last answer only, and that pair is offered again.
    let undone = ok(&url("/api/undo"), "POST", t, None);
    assert_eq!(undone["pair"], p3);
    assert_eq!(undone["progress"]["answered"], 1);
    assert_eq!(ok(&url("/api/next"), "GET", t, None)["item"]["pair"], p3);
    ok(&url("/api/answer"), "POST", t, Some(json!({"pair": p3, "q1": 2})));
    // The first answer is shown back to its author.
    assert_eq!(
        ok(&url(&format!("/api/item/{p1}")), "GET", t, None)["answer"],
        json!({"q1": 0, "q2": 2, "flags_1": ["count"], "flags_2": []})
    );

    // Export, as a user runs it: one record per answer, skips left out.
    let output = tmp.path().join("out/prefs.json");
    let db = tmp.path().join("db.sqlite");
    factrl_ok(&["annotate", "export", "--db", db.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    let prefs: Vec<Preference> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let got: Vec<_> = prefs
        .iter()
        .map(|p| (p.pair, p.preference, p.hallucination, p.hallucinated_1, p.hallucinated_2))
        .collect();
    assert_eq!(got, [(Some([0, 1]), 2, false, true, false), (Some([1, 2]), 2, true, false, false)]);
    assert_eq!(prefs[0].output_1.value, "<script>alert(1)</script> & <b>bold</b>");
    assert_eq!(prefs[0].annotator, "ann");
    assert_eq!(prefs[0].image, "../images/a.png");
    assert!(output.parent().unwrap().join(&prefs[0].image).exists());
}

#[test]
fn an_annotator_sees_and_changes_only_their_own_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path(), 1, 2);
    let (store, tokens) = open_store(tmp.path(), &candidates, &["ann", "bob"], 2);
    let s = start(store);
    let url = |p: &str| format!("{}{p}", s.url);
    let (ann, bob) = (tokens[0].as_str(), tokens[1].as_str());
    ok(&url("/api/answer"), "POST", ann, Some(json!({"pair": 1, "q1": 1, "flags_2": ["object"]})));
    // Bob sees the pair unanswered, cannot undo Ann's answer, and his answer is his own.
    assert_eq!(ok(&url("/api/next"), "GET", bob, None)["item"]["answer"], Value::Null);
    assert_eq!(ok(&url("/api/item/1"), "GET", bob, None)["answer"], Value::Null);
    assert_eq!(ok(&url("/api/undo"), "POST", bob, None)["pair"], Value::Null);
    ok(&url("/api/answer"), "POST", bob, Some(json!({"pair": 1, "q1": 2})));
    assert_eq!(ok(&url("/api/item/1"), "GET", ann, None)["answer"]["q1"], 1);
    assert_eq!(ok(&url("/api/item/1"), "GET", bob, None)["answer"]["q1"], 2);
    // Both answered: with two per pair, nothing is left for a third look.
    assert_eq!(ok(&url("/api/next"), "GET", ann, None)["item"], Value::Null);

    // Agreement, as a user asks for it: one overlapping pair, the two disagree.
    let db = tmp.path().join("db.sqlite");
    let stats: Value =
        serde_json::from_str(&factrl_ok(&["annotate", "stats", "--db", db.to_str().unwrap()])).unwrap();
    assert_eq!(stats["overlapping_items"], 1);
    assert_eq!(stats["preference_agreement"], 0.0);
    assert_eq!(stats["by_annotators"][0]["a"], "ann");
    assert_eq!(stats["by_annotators"][0]["b"], "bob");
}

#[test]
fn concurrent_submissions_are_each_stored_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path(), 10, 3);
    let names: Vec<String> = (0..6).map(|a| format!("a{a}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (store, tokens) = open_store(tmp.path(), &candidates, &refs, 1);
    let s = start(store);
    // Every annotator answers all 30 pairs, twice over (a retried request), all at once; the second
    // round's answer is the one that must remain.
    let answer = |a: usize, pair: i64, round: u8| json!({"pair": pair, "q1": 1 + (a as i64 + pair + round as i64) % 2});
    std::thread::scope(|scope| {
        for (a, token) in tokens.iter().enumerate() {
            let (url, answer) = (&s.url, &answer);
            scope.spawn(move || {
                for round in 0..2 {
                    for pair in 1..=30 {
                        let (status, body) = call(
                            &format!("{url}/api/answer"),
                            "POST",
                            Some(token),
                            Some(answer(a, pair, round)),
                        );
                        assert_eq!(status, 200, "{body}");
                    }
                }
            });
        }
    });
    let prefs: Vec<Preference> = {
        let out = tmp.path().join("prefs.json");
        Store::open(&tmp.path().join("db.sqlite")).unwrap().export(&out).unwrap();
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
    };
    assert_eq!(prefs.len(), 6 * 30);
    let mut seen = std::collections::BTreeSet::new();
    for p in &prefs {
        let a: usize = p.annotator[1..].parse().unwrap();
        // Pairs are numbered from 1 in candidate order, (0, 1), (0, 2), (1, 2) within one.
        let c: i64 = p.id[1..].parse().unwrap();
        let pair =
            3 * c + 1 + [[0, 1], [0, 2], [1, 2]].iter().position(|x| Some(*x) == p.pair).unwrap() as i64;
        assert!(seen.insert((a, pair)), "({a}, {pair}) stored twice");
        assert_eq!(Some(p.preference), answer(a, pair, 1)["q1"].as_u64().map(|q| q as u8), "({a}, {pair})");
    }

    // Several annotators working through `next` at once: each pair answered, none twice by one.
    let (store, tokens) = {
        let dir = tmp.path().join("second");
        std::fs::create_dir_all(&dir).unwrap();
        let candidates = write_candidates(&dir, 10, 3);
        open_store(&dir, &candidates, &refs, 1)
    };
    let s = start(store);
    let counts: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let url = &s.url;
                scope.spawn(move || {
                    let mut n = 0;
                    loop {
                        let next = ok(&format!("{url}/api/next"), "GET", token, None);
                        let Some(pair) = next["item"]["pair"].as_i64() else { return n };
                        ok(&format!("{url}/api/answer"), "POST", token, Some(json!({"pair": pair, "q1": 1})));
                        n += 1;
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = counts.iter().sum();
    assert!((30..=30 * 6).contains(&total), "{counts:?}");
    let out = tmp.path().join("second/prefs.json");
    let n = Store::open(&tmp.path().join("second/db.sqlite")).unwrap().export(&out).unwrap();
    assert_eq!(n, total, "every acknowledged answer is stored, once");
    let prefs: Vec<Preference> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let pairs: std::collections::BTreeSet<_> = prefs.iter().map(|p| (p.id.clone(), p.pair)).collect();
    assert_eq!(pairs.len(), 30, "every pair answered");
}

fn factrl_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_factrl")).args(args).output().unwrap();
    assert!(out.status.success(), "factrl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tokens_are_shown_once_and_stored_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.sqlite");
    let token =
        factrl_ok(&["annotate", "add-annotator", "ann", "--db", db.to_str().unwrap()]).trim().to_string();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    // A name is taken once; the store's files hold no token.
    let again = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["annotate", "add-annotator", "ann", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }
    let store = Store::open(&db).unwrap();
    assert_eq!(store.authenticate(&token).unwrap().map(|a| a.name), Some("ann".into()));
    assert_eq!(store.authenticate(&token.to_uppercase()).unwrap(), None);
    // Reading commands refuse a store that is not there rather than create an empty one.
    let missing = tmp.path().join("none.sqlite");
    let r = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["annotate", "stats", "--db", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(!missing.exists());
}

#[test]
fn a_store_holds_one_candidates_file() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path(), 2, 3);
    let (mut store, _) = open_store(tmp.path(), &candidates, &[], 1);
    assert_eq!(store.load_candidates(&candidates).unwrap(), 6, "loading again changes nothing");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let err = store.load_candidates(&write_candidates(&other, 1, 2)).err().unwrap().to_string();
    assert!(err.contains("holds another candidates file"), "{err}");
}

#[test]
fn serve_runs_as_a_user_starts_it_and_refuses_a_malformed_candidates_file() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path(), 1, 2);
    let db = tmp.path().join("db.sqlite");
    let token =
        factrl_ok(&["annotate", "add-annotator", "ann", "--db", db.to_str().unwrap()]).trim().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args([
            "annotate",
            "serve",
            "--candidates",
            candidates.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args(["--bind", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split("annotate at ").nth(1).map(|u| u.split_whitespace().next().unwrap().to_string());
    let answered = url.as_ref().map(|u| call(&format!("{u}api/next"), "GET", Some(&token), None));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.starts_with("1 pairs from")
            && url.as_deref().is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{line}"
    );
    assert_eq!(answered.unwrap().0, 200);

    std::fs::write(&candidates, "[{\"id\": \"x\", \"image\": \"images/a.png\",\n \"responses\": \"one\"}]")
        .unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["annotate", "serve", "--candidates", candidates.to_str().unwrap()])
        .args(["--db", tmp.path().join("new.sqlite").to_str().unwrap(), "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("candidates.json: record [0].responses: invalid type: string \"one\"")
            && err.contains("line 2"),
        "{err}"
    );
}
