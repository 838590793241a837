//! `jsearch embed` end to end with the toy model in `datasets/toy-shapes`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets")
}

fn model() -> PathBuf {
    datasets().join("toy-shapes/model")
}

fn image(name: &str) -> PathBuf {
    datasets().join("toy-shapes/corpus/images").join(name)
}

fn embed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jsearch"))
        .arg("embed")
        .arg("--model")
        .arg(model())
        .args(args)
        .env_remove("JSEARCH_MODEL")
        .output()
        .expect("run jsearch")
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "jsearch embed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn vector(v: &Value) -> Vec<f32> {
    v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

struct Toy {
    expected: Value,
    products: Vec<Value>,
    queries: Vec<Value>,
}

fn toy() -> Toy {
    let dir = datasets().join("toy-shapes/corpus");
    let read_jsonl = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    Toy {
        expected: serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap())
            .unwrap(),
        products: read_jsonl(&dir.join("products.jsonl")),
        queries: read_jsonl(&dir.join("queries.jsonl")),
    }
}

fn expected_vec(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn text_json_shape_and_values() {
    let t = toy();
    let title = t.products[0]["title"].as_str().unwrap();
    let out = lines(&embed(&["--text", title]));
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(o["kind"], "text");
    assert_eq!(o["input"], title);
    assert_eq!(o["dim"], 128);
    let v = vector(o);
    assert_eq!(v.len(), 128);
    assert!((norm(&v) - 1.0).abs() < 1e-5);
    let mut want = expected_vec(&t.expected["products"][0]["title_embedding"]);
    let n = norm(&want);
    want.iter_mut().for_each(|x| *x /= n);
    assert!(max_diff(&v, &want) < 1e-5);
}

#[test]
fn raw_and_query_match_reference() {
    let t = toy();
    let q = t.queries[3]["text"].as_str().unwrap();
    let raw = lines(&embed(&["--text", q, "--raw"]));
    let got = vector(&raw[0]);
    let want = expected_vec(&t.expected["queries"][3]["embedding"]);
    assert!(max_diff(&got, &want) < 1e-4);
    assert!((norm(&got) - 1.0).abs() > 1e-2, "--raw must not normalise");
    let rawq = lines(&embed(&["--text", q, "--raw", "--query"]));
    let want = expected_vec(&t.expected["queries"][3]["embedding_instruction"]);
    assert!(max_diff(&vector(&rawq[0]), &want) < 1e-4);
}

#[test]
fn dim_truncates_then_renormalises() {
    let t = toy();
    let title = t.products[1]["title"].as_str().unwrap();
    let full = vector(&lines(&embed(&["--text", title, "--raw"]))[0]);
    let out = lines(&embed(&["--text", title, "--dim", "16"]));
    assert_eq!(out[0]["dim"], 16);
    let v = vector(&out[0]);
    assert_eq!(v.len(), 16);
    assert!((norm(&v) - 1.0).abs() < 1e-5);
    let n = norm(&full[..16]);
    let want: Vec<f32> = full[..16].iter().map(|x| x / n).collect();
    assert!(max_diff(&v, &want) < 1e-6);
    let bad = embed(&["--text", title, "--dim", "129"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--dim"));
}

#[test]
fn order_follows_the_command_line() {
    let img = image("img_001.png");
    let img_s = img.to_str().unwrap();
    let out = lines(&embed(&[
        "--text",
        "red circle",
        "--image",
        img_s,
        "--text",
        "roter Kreis",
    ]));
    let kinds: Vec<&str> = out.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "image", "text"]);
    assert_eq!(out[0]["input"], "red circle");
    assert_eq!(out[1]["input"], img_s);
    assert_eq!(out[2]["input"], "roter Kreis");
    assert_eq!(out[1]["dim"], 128);
    assert!((norm(&vector(&out[1])) - 1.0).abs() < 1e-5);
    // Same image embedding as the reference (PNG: exact preprocessing).
    let t = toy();
    let idx = t.expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["file"] == "images/img_001.png")
        .unwrap();
    let mut want = expected_vec(&t.expected["images"][idx]["embedding"]);
    let n = norm(&want);
    want.iter_mut().for_each(|x| *x /= n);
    assert!(max_diff(&vector(&out[1]), &want) < 1e-5);
}

#[test]
fn missing_and_corrupt_files_fail_with_their_name() {
    let out = embed(&["--image", "/nonexistent/dir/nope.png"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.png"),
        "stderr should name the file: {err}"
    );
    assert!(out.stdout.is_empty());

    let dir = std::env::temp_dir().join(format!("jsearch-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("corrupt.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n this is not a png").unwrap();
    let out = embed(&["--text", "ok", "--image", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt.png"),
        "stderr should name the file: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let out = Command::new(env!("CARGO_BIN_EXE_jsearch"))
        .args(["embed", "--model", "/nonexistent/model", "--text", "x"])
        .env_remove("JSEARCH_MODEL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"));
}
