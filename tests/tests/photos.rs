//! Photo attributes from EXIF (`datasets/photos/`, written by exiftool): read at ingest,
//! filterable with `--where`, `--after`, `--before`, `--near`, sortable by `taken`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsearch_tests::*;
use serde_json::Value;

fn photos() -> PathBuf {
    repo_root().join("datasets/photos")
}

fn store() -> &'static (tempfile::TempDir, PathBuf) {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempdir();
        let db = dir.path().join("photos.jsearch");
        let (s, _) = index(&db, &[&photos()], &[]);
        assert_eq!(s["failed"], 0, "{s}");
        (dir, db)
    })
}

fn db() -> &'static Path {
    &store().1
}

/// File names of every hit of a query with these extra arguments (no cut, all items).
fn names(extra: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = query_json(db(), &[&["a photo", "-k", "50"], extra].concat())
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn meta_of(file: &str) -> Value {
    query_json(db(), &["a photo", "-k", "50"])
        .into_iter()
        .find(|h| h["title"] == file)
        .unwrap_or_else(|| panic!("{file} not indexed"))["metadata"]
        .clone()
}

#[test]
fn exif_attributes_are_read_at_ingest() {
    let beach = meta_of("beach_2023.jpg");
    assert_eq!(beach["taken"], "2023-07-15T10:00:00");
    assert_eq!(beach["taken_from"], "exif");
    assert_eq!(beach["camera"], "iPhone 15");
    assert_eq!(beach["make"], "Apple");
    assert!(
        (beach["lat"].as_f64().unwrap() - 43.695).abs() < 1e-4,
        "{beach}"
    );
    assert!(
        (beach["lon"].as_f64().unwrap() - 7.265).abs() < 1e-4,
        "{beach}"
    );
    let paris = meta_of("paris_2024.jpg");
    assert_eq!(paris["lens"], "RF24-105mm F4 L IS USM");
    assert_eq!(paris["camera"], "Canon EOS R5");
    // Orientation 6: stored 160×100, shown (and recorded) 100×160.
    let berlin = meta_of("berlin_2024.jpg");
    assert_eq!(
        (berlin["width"].as_u64(), berlin["height"].as_u64()),
        (Some(100), Some(160))
    );
    // No EXIF: the file's time; a broken EXIF block: the image is still indexed, without it.
    for f in ["no_exif.jpg", "broken_exif.jpg"] {
        let m = meta_of(f);
        assert_eq!(m["taken_from"], "file", "{f}: {m}");
        assert!(m["taken"].as_str().unwrap().len() == 19, "{f}: {m}");
        assert!(
            m.get("camera").is_none() && m.get("lat").is_none(),
            "{f}: {m}"
        );
    }
}

#[test]
fn dates_cameras_and_places_filter_exactly() {
    assert_eq!(
        names(&[
            "--where",
            r#"taken >= "2024-06-01" AND camera = "iPhone 15""#
        ]),
        ["berlin_2024.jpg"]
    );
    assert_eq!(
        names(&["--after", "2024-06-01", "--before", "2024-06-02"]),
        ["paris_2024.jpg"]
    );
    assert_eq!(names(&["--before", "2024"]), ["beach_2023.jpg"]);
    assert_eq!(
        names(&[
            "--after",
            "2024",
            "--before",
            "2025",
            "--where",
            "make EXISTS"
        ]),
        ["berlin_2024.jpg", "paris_2024.jpg"]
    );
    // Great-circle radii: Paris–Nice 686 km, Paris–Berlin 878 km.
    assert_eq!(names(&["--near", "48.8566,2.3522,10"]), ["paris_2024.jpg"]);
    assert_eq!(
        names(&["--near", "48.8566,2.3522,700"]),
        ["beach_2023.jpg", "paris_2024.jpg"]
    );
    assert_eq!(
        names(&["--near", "48.8566,2.3522,900"]),
        ["beach_2023.jpg", "berlin_2024.jpg", "paris_2024.jpg"]
    );
    assert!(names(&["--near", "-33.86,151.21"]).is_empty());
    // Sorted by the date taken.
    let sorted: Vec<String> = query_json(
        db(),
        &[
            "a photo",
            "-k",
            "50",
            "--where",
            "taken_from = \"exif\"",
            "--sort",
            "taken",
        ],
    )
    .iter()
    .map(|h| h["title"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(
        sorted,
        ["beach_2023.jpg", "paris_2024.jpg", "berlin_2024.jpg"]
    );
}

#[test]
fn bad_dates_and_places_are_usage_errors() {
    for args in [
        ["--after", "last summer"],
        ["--before", "2024-13-01"],
        ["--near", "48.85"],
        ["--near", "95,2,10"],
    ] {
        let mut c = jsearch(db());
        c.args(["query", "a photo"]).args(args);
        let out = run(c, false);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}

#[test]
fn duplicates_and_near_duplicates_are_grouped() {
    let dir = tempdir();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    let src = toy_corpus().join("images/img_027.jpg");
    std::fs::copy(&src, pics.join("orig.jpg")).unwrap();
    std::fs::copy(&src, pics.join("copy.jpg")).unwrap();
    let img = image::open(&src).unwrap().to_rgb8();
    // Re-encoded at a lower quality, and a half-size copy: near-duplicates.
    let mut reenc = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut reenc, 50)
        .encode_image(&img)
        .unwrap();
    std::fs::write(pics.join("reencoded.jpg"), reenc.into_inner()).unwrap();
    image::imageops::resize(
        &img,
        img.width() / 2,
        img.height() / 2,
        image::imageops::FilterType::Triangle,
    )
    .save(pics.join("half.png"))
    .unwrap();
    // Two other pictures, one of the same kind (a red circle): not duplicates.
    std::fs::copy(
        toy_corpus().join("images/img_088.jpg"),
        pics.join("other_circle.jpg"),
    )
    .unwrap();
    std::fs::copy(
        toy_corpus().join("images/img_001.png"),
        pics.join("triangle.png"),
    )
    .unwrap();
    let db = dir.path().join("d.jsearch");
    index(&db, &[&pics], &[]);
    let dupes = |extra: &[&str]| -> Value {
        let mut c = jsearch(&db);
        c.args(["dupes", "--json"]).args(extra);
        let out = run(c, false);
        // 0: groups found, 1: none.
        assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let names = |groups: &Value| -> Vec<Vec<String>> {
        groups
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                g.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        Path::new(i["path"].as_str().unwrap())
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect()
            })
            .collect()
    };
    let d = dupes(&[]);
    assert_eq!(names(&d["exact"]), [["copy.jpg", "orig.jpg"]], "{d}");
    assert_eq!(
        names(&d["near"]),
        [["copy.jpg", "half.png", "orig.jpg", "reencoded.jpg"]],
        "{d}"
    );
    for it in d["near"][0].as_array().unwrap() {
        assert!(it["cosine"].as_f64().unwrap() >= 0.97, "{it}");
    }
    // A threshold of 1 keeps only what is identical in vector (the copies, the resize at most).
    let strict = dupes(&["--threshold", "1"]);
    assert!(
        names(&strict["near"])
            .iter()
            .all(|g| !g.contains(&"reencoded.jpg".to_string())),
        "{strict}"
    );
    // Only under a path: the copy outside it does not pair.
    let only = dupes(&[
        pics.join("orig.jpg").to_str().unwrap(),
        pics.join("triangle.png").to_str().unwrap(),
    ]);
    assert!(
        names(&only["exact"]).is_empty() && names(&only["near"]).is_empty(),
        "{only}"
    );
    // Nothing found: exit status 1.
    let mut c = jsearch(&db);
    c.args(["dupes", pics.join("triangle.png").to_str().unwrap()]);
    assert_eq!(run(c, false).status.code(), Some(1));
}

/// Colours of each corpus image's objects, by file name.
fn colours() -> std::collections::HashMap<String, Vec<String>> {
    read_jsonl(&toy_corpus().join("labels.jsonl"))
        .into_iter()
        .map(|l| {
            let name = Path::new(l["image"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let cs = l["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o[0].as_str().unwrap().to_string())
                .collect();
            (name, cs)
        })
        .collect()
}

#[test]
fn query_arithmetic_adds_and_takes_away() {
    let dir = tempdir();
    let db = dir.path().join("shapes.jsearch");
    index(&db, &[&toy_corpus().join("images")], &[]);
    let colours = colours();
    let top = |extra: &[&str]| -> Vec<String> {
        query_json(
            &db,
            &[&["a red circle", "-k", "3", "--type", "image"], extra].concat(),
        )
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_string())
        .collect()
    };
    let has = |names: &[String], c: &str| names.iter().all(|n| colours[n].iter().any(|x| x == c));
    let plain = top(&[]);
    assert!(has(&plain, "red"), "{plain:?}");
    // "a red circle" - "red" + "blue": blue things.
    let blue = top(&["--minus", "red", "--plus", "blue"]);
    assert!(has(&blue, "blue") && !has(&blue, "red"), "{blue:?}");
    // A weight: a small push does not change the top hit's colour, a large one does.
    let small = top(&["--minus", "0.05:red", "--plus", "0.05:blue"]);
    assert!(colours[&small[0]].iter().any(|c| c == "red"), "{small:?}");
    // An image term: its colour comes in, and the image itself is left out.
    let white = toy_corpus().join("images/img_001.png"); // a white triangle
    let got = top(&["--plus", white.to_str().unwrap(), "--minus", "red"]);
    assert!(!got.contains(&"img_001.png".to_string()), "{got:?}");
    assert!(has(&got, "white"), "{got:?}");
    // Bad terms are usage errors.
    for bad in ["0:red", "-1:red", "2:"] {
        let mut c = jsearch(&db);
        c.args(["query", "x", "--plus", bad]);
        assert_eq!(run(c, false).status.code(), Some(2), "{bad}");
    }
}

#[test]
fn previews_for_each_protocol_and_none_into_a_pipe() {
    let out = |extra: &[&str]| -> String {
        let mut c = jsearch(db());
        c.args([
            "-q", "query", "a photo", "-k", "2", "--all", "--type", "image",
        ])
        .args(extra)
        .env_remove("KITTY_WINDOW_ID")
        .env_remove("TERM_PROGRAM");
        String::from_utf8(run(c, true).stdout).unwrap()
    };
    let plain = out(&[]);
    // Into a pipe, auto draws nothing: the same bytes as without --preview.
    assert_eq!(out(&["--preview"]), plain);
    assert_eq!(out(&["--preview", "none"]), plain);
    let kitty = out(&["--preview", "kitty"]);
    assert!(
        kitty.contains("\x1b_Ga=T,f=100,") && kitty.contains("\x1b\\"),
        "kitty"
    );
    // Each preview follows its row: two rows, two pictures.
    assert_eq!(kitty.matches("\x1b_Ga=T").count(), 2);
    let iterm = out(&["--preview", "iterm"]);
    assert_eq!(iterm.matches("\x1b]1337;File=inline=1;").count(), 2);
    // The inline image is the thumbnail JPEG.
    let b64 = iterm.split("preserveAspectRatio=1:").nth(1).unwrap();
    let b64 = &b64[..b64.find('\x07').unwrap()];
    let jpeg = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    let img = image::load_from_memory(&jpeg).unwrap();
    assert!(img.width().max(img.height()) <= 256);
    let sixel = out(&["--preview", "sixel"]);
    assert_eq!(sixel.matches("\x1bPq").count(), 2);
    assert!(sixel.contains("#0;2;0;0;0") && sixel.contains('-'), "sixel");
    let blocks = out(&["--preview", "blocks"]);
    assert!(blocks.contains('▀') && blocks.contains("\x1b[38;2;") && blocks.contains("\x1b[0m"));
    // JSON stays JSON.
    let json = out(&["--preview", "kitty", "--json"]);
    assert!(!json.contains('\x1b'));
}

#[test]
fn heic_avif_and_raw_are_decoded_and_carry_their_exif() {
    let formats = repo_root().join("datasets/photo-formats");
    let dir = tempdir();
    let db = dir.path().join("f.jsearch");
    let (s, stderr) = index(&db, &[&formats], &[]);
    // The truncated HEIC and the stand-in RAW (no preview, no sensor data LibRaw reads) are
    // skipped, named, and nothing else is lost.
    assert_eq!(
        (s["indexed"].as_u64(), s["failed"].as_u64()),
        (Some(5), Some(2)),
        "{s} (four pictures and the folder's README)"
    );
    assert!(stderr.contains("broken.heic"), "{stderr}");
    assert!(
        stderr.contains("no_preview.nef") && stderr.contains("preview"),
        "{stderr}"
    );
    let hits = query_json(&db, &["a photo", "-k", "10", "--type", "image"]);
    let meta = |f: &str| {
        hits.iter()
            .find(|h| h["title"] == f)
            .unwrap_or_else(|| panic!("{f}: {hits:?}"))["metadata"]
            .clone()
    };
    assert_eq!(meta("berlin_2024.heic")["taken"], "2024-12-24T18:00:00");
    assert_eq!(meta("berlin_2024.heic")["camera"], "iPhone 15");
    assert_eq!(meta("paris_2024.avif")["camera"], "Canon EOS R5");
    // Sizes from the headers: HEIF's as shown (its EXIF orientation 6, copied from the JPEG by
    // heif-enc, does not swap it: HEIF rotates by its own irot box, which heif-enc did not set).
    let size = |f: &str| {
        let m = meta(f);
        (m["width"].as_u64(), m["height"].as_u64())
    };
    assert_eq!(size("berlin_2024.heic"), (Some(160), Some(100)));
    assert_eq!(size("paris_2024.avif"), (Some(160), Some(160)));
    assert_eq!(size("louvre_2024.dng"), (Some(160), Some(160)));
    assert!(
        hits.iter().any(|h| h["title"] == "sensor_only_beach.dng"),
        "the preview-less DNG, decoded from its sensor data: {hits:?}"
    );
    // The DNG (named apart from paris_2024.avif: a RAW beside a processed image of the same
    // name is skipped): its largest embedded preview (160 px, beside a 40 px thumbnail), its EXIF.
    let dng = meta("louvre_2024.dng");
    assert_eq!(dng["taken"], "2024-06-01T14:30:05");
    assert_eq!(dng["camera"], "Canon EOS R5");
    assert!(
        (dng["lat"].as_f64().unwrap() - 48.8584).abs() < 1e-4,
        "{dng}"
    );
    // Each embedded within 0.99 cosine of the JPEG it was encoded from (lossy re-encoding;
    // measured 0.998 HEIC, 0.99999 AVIF on the toy model).
    let mut c = jsearch(&db);
    c.arg("embed");
    for f in [
        photos().join("berlin_2024.jpg"),
        formats.join("berlin_2024.heic"),
        photos().join("paris_2024.jpg"),
        formats.join("paris_2024.avif"),
        formats.join("louvre_2024.dng"),
        photos().join("beach_2023.jpg"),
        formats.join("sensor_only_beach.dng"),
    ] {
        c.arg("--image").arg(f);
    }
    let e: Vec<Vec<f64>> = json_lines(&run(c, true).stdout)
        .iter()
        .map(|v| {
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let cos = |a: &[f64], b: &[f64]| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        d / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
            * b.iter().map(|x| x * x).sum::<f64>().sqrt())
    };
    assert!(cos(&e[0], &e[1]) >= 0.99, "HEIC {}", cos(&e[0], &e[1]));
    assert!(cos(&e[2], &e[3]) >= 0.99, "AVIF {}", cos(&e[2], &e[3]));
    assert!(cos(&e[2], &e[4]) >= 0.99, "DNG {}", cos(&e[2], &e[4]));
    // The preview-less DNG, demosaiced by LibRaw from the JPEG's pixels as Bayer sensor data:
    // within 0.99 of its source (measured 0.995), and not close to another picture.
    assert!(
        cos(&e[5], &e[6]) >= 0.99,
        "sensor DNG {}",
        cos(&e[5], &e[6])
    );
    assert!(
        cos(&e[2], &e[6]) < 0.9,
        "sensor DNG vs paris {}",
        cos(&e[2], &e[6])
    );
}

#[test]
fn a_raw_beside_its_jpeg_is_skipped_unless_asked() {
    let dir = tempdir();
    let pics = dir.path().join("card");
    std::fs::create_dir_all(&pics).unwrap();
    let formats = repo_root().join("datasets/photo-formats");
    std::fs::copy(formats.join("louvre_2024.dng"), pics.join("IMG_0001.DNG")).unwrap();
    std::fs::copy(photos().join("paris_2024.jpg"), pics.join("IMG_0001.jpg")).unwrap();
    std::fs::copy(formats.join("louvre_2024.dng"), pics.join("IMG_0002.dng")).unwrap();
    let titles = |db: &Path| -> Vec<String> {
        let mut t: Vec<String> = query_json(db, &["a photo", "-k", "10"])
            .iter()
            .map(|h| h["title"].as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    let db = dir.path().join("a.jsearch");
    index(&db, &[&pics], &[]);
    assert_eq!(titles(&db), ["IMG_0001.jpg", "IMG_0002.dng"]);
    let both = dir.path().join("b.jsearch");
    index(&both, &[&pics], &["--raw-siblings"]);
    assert_eq!(
        titles(&both),
        ["IMG_0001.DNG", "IMG_0001.jpg", "IMG_0002.dng"]
    );
}

/// A preview-less RAW cut short is skipped with its name and LibRaw's reason; the whole one beside
/// it is indexed.
#[test]
fn a_cut_sensor_raw_is_skipped_and_named() {
    let dir = tempdir();
    let card = dir.path().join("card");
    std::fs::create_dir_all(&card).unwrap();
    let whole =
        std::fs::read(repo_root().join("datasets/photo-formats/sensor_only_beach.dng")).unwrap();
    std::fs::write(card.join("whole.dng"), &whole).unwrap();
    std::fs::write(card.join("cut.dng"), &whole[..whole.len() / 2]).unwrap();
    let db = dir.path().join("c.jsearch");
    let (s, stderr) = index(&db, &[&card], &[]);
    assert_eq!(
        (s["indexed"].as_u64(), s["failed"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(
        stderr.contains("cut.dng") && stderr.contains("sensor data"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Unexpected end of file"),
        "LibRaw's own print: {stderr}"
    );
}
