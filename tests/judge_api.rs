//! `factrl annotate auto --judge`: the AI annotator against a fake OpenAI-compatible server on
//! 127.0.0.1 that answers as a judge model would and keeps what it was sent.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use factrl::feedback::{Flag, Preference};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Requests received: headers' Authorization and the JSON body.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// The judge's reply to a request, by the responses it shows: it knows that "A blue star." names
/// an absent object wherever it stands, cannot judge "A red circle." against "Maybe.", and otherwise
/// calls a tie and, biased by position, finds the second response more helpful.
fn reply(body: &Value) -> String {
    let text = body["messages"][1]["content"][0]["text"].as_str().unwrap_or_default();
    let shown = ["Response 1:\n", "Response 2:\n"]
        .map(|head| text.split(head).nth(1).and_then(|t| t.lines().next()).unwrap_or_default());
    match shown {
        ["A red circle.", "Maybe."] => "I cannot tell.".into(),
        [a, b] if [a, b].contains(&"A blue star.") && [a, b].contains(&"A red circle.") => {
            let (red, star) = if a == "A red circle." { (1, 2) } else { (2, 1) };
            format!("The star is not there.\n{{\"q1\": {red}, \"q2\": null, \"flags_{star}\": [\"object\"]}}")
        }
        _ => "{\"q1\": 0, \"q2\": 2, \"flags_1\": [], \"flags_2\": []}".into(),
    }
}

fn start(seen: Seen) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                seen.lock().unwrap().push((auth, body.clone()));
                if body["model"] == "broken" {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "overloaded").into_response();
                }
                Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply(&body)}}]}))
                    .into_response()
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    (url, runtime)
}

fn write_candidates(dir: &Path) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava/images/odd23x19.png");
    std::fs::copy(fixture, dir.join("a.png")).unwrap();
    let c = json!([{"id": "c0", "image": "a.png", "responses": ["A red circle.", "A blue star.", "Maybe."],
                    "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                      {"from": "gpt", "value": "THE REFERENCE"}]}]);
    let path = dir.join("candidates.json");
    std::fs::write(&path, c.to_string()).unwrap();
    path
}

fn run(url: &str, model: &str, candidates: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["annotate", "auto", "--judge", url, "--judge-model", model])
        .args(extra)
        .args(["--candidates", candidates.to_str().unwrap(), "--output", output.to_str().unwrap()])
        .env("OPENAI_API_KEY", "test-key")
        .output()
        .unwrap()
}

#[test]
fn the_judge_sees_the_image_and_both_responses_and_its_answers_become_prefs() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path());
    let seen = Seen::default();
    let (url, _runtime) = start(seen.clone());
    let output = tmp.path().join("prefs.json");
    let r = run(&url, "judge-7b", &candidates, &output, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!((summary["pairs"].as_u64(), summary["unusable"].as_u64()), (Some(2), Some(1)));

    // What was sent: one request per pair, the key, the model, the guidelines, the image as a data
    // URL of the file's bytes, the question without its marker and without the reference.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let (auth, body) = &seen[0];
    assert_eq!(auth.as_deref(), Some("Bearer test-key"));
    assert_eq!(body["model"], "judge-7b");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("fewer hallucinations"));
    let png = std::fs::read(tmp.path().join("a.png")).unwrap();
    let data = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png));
    assert_eq!(body["messages"][1]["content"][1], json!({"type": "image_url", "image_url": {"url": data}}));
    let text = body["messages"][1]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("User: Describe the image.\n") && !text.contains("<image>"), "{text}");
    assert!(!text.contains("THE REFERENCE"), "{text}");

    // What came back: Q1 decided the first pair, Q2 the last; the unusable reply left its pair out.
    let prefs: Vec<Preference> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let got: Vec<_> =
        prefs.iter().map(|p| (p.pair, p.preference, p.hallucination, p.annotator.as_str())).collect();
    assert_eq!(got, [(Some([0, 1]), 1, true, "judge-7b"), (Some([1, 2]), 2, false, "judge-7b")]);
    assert_eq!((prefs[0].flags_2.as_slice(), prefs[0].hallucinated_2), ([Flag::Object].as_slice(), true));
}

#[test]
fn a_failing_judge_stops_the_run_and_says_where() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path());
    let (url, _runtime) = start(Seen::default());
    let output = tmp.path().join("prefs.json");
    let r = run(&url, "broken", &candidates, &output, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("candidate \"c0\" pair (0, 1)") && err.contains("500"), "{err}");
    assert!(!output.exists());
}

#[test]
fn asked_in_both_orders_only_order_independent_verdicts_remain() {
    let tmp = tempfile::tempdir().unwrap();
    let candidates = write_candidates(tmp.path());
    let seen = Seen::default();
    let (url, _runtime) = start(seen.clone());
    let output = tmp.path().join("prefs.json");
    let r = run(&url, "judge-7b", &candidates, &output, &["--judge-both-orders"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: Value = serde_json::from_slice(&r.stdout).unwrap();
    // Pair (0, 1) holds both ways; (1, 2) flips with the order (the position bias); (0, 2) has an
    // unusable first reply, so it is not asked again.
    assert_eq!(
        (summary["pairs"].as_u64(), summary["unusable"].as_u64(), summary["inconsistent"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(seen.lock().unwrap().len(), 5);
    let prefs: Vec<Preference> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    assert_eq!((prefs[0].pair, prefs[0].preference, prefs[0].hallucination), (Some([0, 1]), 1, true));
    assert_eq!(
        (prefs[0].flags_1.as_slice(), prefs[0].flags_2.as_slice()),
        ([].as_slice(), [Flag::Object].as_slice())
    );
}
