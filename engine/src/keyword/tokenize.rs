//! Multilingual tokenisation for the keyword index: Unicode word segmentation (UAX #29), case and
//! accent folding, CJK as overlapping bigrams, and codes (`SKU-28589`, `XL_200`, `v2.1`)
//! matchable whole and by part.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// Longest term kept, in bytes (longer words are not indexed).
pub(crate) const MAX_TERM_BYTES: usize = 64;
/// Longest exact-value term, in bytes (longer values cannot be matched exactly).
const MAX_EXACT_BYTES: usize = 128;

/// Lower case, accents removed (NFKD without combining marks, recomposed), `ß` as `ss`, whitespace runs as
/// one space: how the keyword index and string filters compare text.
pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if c == 'ß' {
            out.push_str("ss");
        } else {
            out.extend(c.to_lowercase());
        }
    }
    // Recompose what NFKD split and the marks did not cover (Hangul syllables are NFKD-split
    // into jamo, which carry no marks).
    out.nfc().collect()
}

/// Han, kana, Hangul and their punctuation-free neighbours: scripts written without spaces,
/// indexed as overlapping character bigrams.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FFFF  // CJK Extensions B..
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0xFF66..=0xFF9D) // half-width Katakana
}

/// Characters that join the words of a code (`SKU-28589`, `a/b`, `c++`).
fn is_joiner(s: &str) -> bool {
    matches!(s, "-" | "_" | "." | "/" | "#" | "+" | ":")
}

struct Out<'a> {
    terms: &'a mut Vec<String>,
    cjk: String,
    run: String,
    run_words: usize,
    pending: Option<&'static str>,
}

impl Out<'_> {
    fn push(&mut self, t: &str) {
        if !t.is_empty() && t.len() <= MAX_TERM_BYTES {
            self.terms.push(t.to_string());
        }
    }
    fn flush_cjk(&mut self) {
        let chars: Vec<char> = self.cjk.chars().collect();
        if chars.len() == 1 {
            self.terms.push(chars[0].to_string());
        }
        for w in chars.windows(2) {
            self.terms.push(w.iter().collect());
        }
        self.cjk.clear();
    }
    fn flush_run(&mut self) {
        if self.run_words >= 2 {
            let run = std::mem::take(&mut self.run);
            self.push(&run);
        }
        self.run.clear();
        self.run_words = 0;
        self.pending = None;
    }
}

/// Appends the terms of `text` to `terms` (with repeats: term frequencies are counted from them).
pub(crate) fn tokens_into(text: &str, terms: &mut Vec<String>) {
    let folded = fold(text);
    let mut out = Out {
        terms,
        cjk: String::new(),
        run: String::new(),
        run_words: 0,
        pending: None,
    };
    for seg in folded.split_word_bounds() {
        let first = seg.chars().next().unwrap_or(' ');
        if is_cjk(first) {
            out.flush_run();
            out.cjk.push_str(seg);
            continue;
        }
        if !out.cjk.is_empty() {
            out.flush_cjk();
        }
        if seg.chars().any(char::is_alphanumeric) {
            // A word; its inner parts too when UAX #29 kept punctuation inside (`red_circle.png`,
            // `v2.1`, `l'été`).
            out.push(seg);
            if seg.chars().any(|c| !c.is_alphanumeric()) {
                for part in seg.split(|c: char| !c.is_alphanumeric()) {
                    out.push(part);
                }
            }
            if let Some(j) = out.pending.take() {
                out.run.push_str(j);
            } else if out.run_words > 0 {
                // Two words with nothing between them cannot happen in UAX #29; be safe.
                out.flush_run();
            }
            out.run.push_str(seg);
            out.run_words += 1;
        } else if is_joiner(seg) && out.run_words > 0 && out.pending.is_none() {
            out.pending = Some(match seg {
                "-" => "-",
                "_" => "_",
                "." => ".",
                "/" => "/",
                "#" => "#",
                "+" => "+",
                _ => ":",
            });
        } else {
            out.flush_run();
        }
    }
    if !out.cjk.is_empty() {
        out.flush_cjk();
    }
    out.flush_run();
}

/// The terms of `text`.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    tokens_into(text, &mut v);
    v
}

/// The term that marks a field whose whole (folded) value is `value`: an item holding it is an
/// exact match for a query that is that value (a SKU, an id, a brand).
pub(crate) fn exact_term(value: &str) -> Option<String> {
    // NUL separates a term from the item id in the index's keys: never part of a term.
    let f = fold(value).replace('\0', " ");
    let t = format!("={f}");
    (f.chars().any(char::is_alphanumeric) && t.len() <= MAX_EXACT_BYTES).then_some(t)
}

/// Exact-value terms for the numbered parts of a code: `SKU-28589` → `=28589` (parts of 3 or more
/// characters holding a digit, of a value that is one word of joined parts).
pub(crate) fn code_parts(value: &str) -> Vec<String> {
    let f = fold(value);
    if f.contains(' ') || !f.contains(['-', '_', '.', '/']) {
        return Vec::new();
    }
    f.split(|c: char| !c.is_alphanumeric())
        .filter(|p| p.chars().count() >= 3 && p.chars().any(|c| c.is_ascii_digit()))
        .map(|p| format!("={p}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_accents_and_sharp_s() {
        assert_eq!(fold("Café  Straße\tÉTÉ"), "cafe strasse ete");
        assert_eq!(fold("Ｆｕｌｌ"), "full");
    }

    #[test]
    fn codes_match_whole_and_by_part() {
        let t = tokens("Buy SKU-28589 now, size XL_200 (v2.1)");
        for want in [
            "buy",
            "sku",
            "28589",
            "sku-28589",
            "now",
            "size",
            "xl_200",
            "xl",
            "200",
            "v2.1",
        ] {
            assert!(t.iter().any(|x| x == want), "{want} in {t:?}");
        }
        // Words separated by spaces are not joined.
        assert!(!t.iter().any(|x| x == "buy sku"));
        assert!(!t.iter().any(|x| x.contains("now") && x.len() > 3));
        let t = tokens("red_circle.png");
        for want in ["red", "circle", "png"] {
            assert!(t.iter().any(|x| x == want), "{want} in {t:?}");
        }
    }

    #[test]
    fn cjk_is_indexed_as_bigrams() {
        let t = tokens("东京都 の ラーメン");
        assert!(
            t.contains(&"东京".to_string()) && t.contains(&"京都".to_string()),
            "{t:?}"
        );
        assert!(t.contains(&"の".to_string()), "{t:?}");
        assert!(t.contains(&"ラー".to_string()), "{t:?}");
        let t = tokens("한국어 검색");
        assert!(t.contains(&"한국".to_string()), "{t:?}");
        // Mixed: Latin words next to Han.
        let t = tokens("iPhone手机壳");
        assert!(
            t.contains(&"iphone".to_string()) && t.contains(&"手机".to_string()),
            "{t:?}"
        );
    }

    #[test]
    fn exact_terms_fold() {
        assert_eq!(exact_term(" Korrin ").as_deref(), Some("=korrin"));
        assert_eq!(exact_term("SKU-28589").as_deref(), Some("=sku-28589"));
        assert_eq!(exact_term("--"), None);
        assert_eq!(code_parts("SKU-28589"), ["=28589"]);
        assert_eq!(code_parts("XL_200-b"), ["=200"]);
        assert!(code_parts("red heart 2024").is_empty());
        assert_eq!(exact_term("a\0b").as_deref(), Some("=a b"));
    }
}
