//! Splitting text files into passages that fit the text encoder's 512-token window.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Tokens per chunk (the window is 512 including `<s>` and `</s>`; a margin absorbs re-tokenisation
/// differences at chunk boundaries).
pub const DEFAULT_MAX_TOKENS: usize = 480;

/// A passage of a text file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub text: String,
    pub tokens: usize,
    /// First and last line of the passage in the text given to [`Chunker::chunk`] (1-based).
    pub lines: Option<(u32, u32)>,
    /// Byte offset of the passage in that text.
    start: usize,
}

/// Splits text into chunks of at most `max_tokens` tokens, preferring paragraph, then sentence,
/// then word boundaries.
pub(crate) struct Chunker {
    tokenizer: Tokenizer,
    max_tokens: usize,
}

impl Chunker {
    /// Loads `tokenizer.json` from the model folder.
    pub(crate) fn load(model_dir: &Path, max_tokens: usize) -> Result<Self> {
        let path = model_dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        Ok(Chunker {
            tokenizer,
            max_tokens: max_tokens.max(16),
        })
    }

    /// Splits `text` into passages. Long texts are tokenised a segment at a time (at most
    /// [`SEGMENT_BYTES`], cut at a paragraph, line or word break), so memory follows the segment,
    /// not the file: tokenising 200 MB at once took 9 GB.
    pub(crate) fn chunk(&self, text: &str) -> Result<Vec<Chunk>> {
        let mut out = Vec::new();
        // Lines counted as the passages go (they come in text order): (byte offset, its line).
        let mut at = (0usize, 1u32);
        for segment in segments(text.trim(), SEGMENT_BYTES) {
            for mut c in self.chunk_segment(text, segment)? {
                let start = c.start.clamp(at.0, text.len());
                let first = at.1 + newlines(&text.as_bytes()[at.0..start]);
                let last = first + newlines(c.text.as_bytes());
                at = (start, first);
                c.lines = Some((first, last));
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The passages of `text`, a segment of `whole` (each with its byte offset in `whole`;
    /// [`Chunker::chunk`] sets the lines).
    fn chunk_segment(&self, whole: &str, text: &str) -> Result<Vec<Chunk>> {
        // `text` and every piece below are slices of `whole`.
        let offset_of =
            |piece: &str| (piece.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                path: "tokenizer.json".into(),
                message: e.to_string(),
            })?;
        let offsets: Vec<(usize, usize)> = enc
            .get_offsets()
            .iter()
            .copied()
            .filter(|(a, b)| b > a)
            .collect();
        let n = offsets.len();
        if n <= self.max_tokens {
            return Ok(vec![Chunk {
                text: text.to_string(),
                tokens: n,
                lines: None,
                start: offset_of(text),
            }]);
        }
        let mut chunks = Vec::new();
        let mut s = 0;
        while s < n {
            let mut e = (s + self.max_tokens).min(n);
            if e < n {
                e = best_break(text, &offsets, s, e);
            }
            let start = offsets[s].0;
            let end = offsets[e - 1].1.min(text.len());
            let piece = text.get(start..end).unwrap_or("").trim();
            if !piece.is_empty() {
                chunks.push(Chunk {
                    text: piece.to_string(),
                    tokens: e - s,
                    lines: None,
                    start: offset_of(piece),
                });
            }
            s = e;
        }
        Ok(chunks)
    }
}

/// Line breaks in `b`.
fn newlines(b: &[u8]) -> u32 {
    b.iter().filter(|&&c| c == b'\n').count() as u32
}

/// Longest piece of text tokenised at once: 64 KiB (about 30 passages).
pub(crate) const SEGMENT_BYTES: usize = 64 << 10;

/// `text` cut into pieces of at most `max` bytes, each ending after the last paragraph break
/// (`\n\n`) in its second half, else the last line break, else the last whitespace, else at a
/// character boundary. A text of at most `max` bytes is one piece.
pub(crate) fn segments(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= max {
            return Some(std::mem::take(&mut rest));
        }
        let mut limit = max;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let window = &rest[..limit];
        let half = limit / 2;
        let cut = [
            window.rfind("\n\n").map(|i| i + 2),
            window.rfind('\n').map(|i| i + 1),
        ]
        .into_iter()
        .flatten()
        .find(|&i| i > half)
        .or_else(|| {
            window
                .char_indices()
                .rev()
                .find(|&(i, c)| i > half && c.is_whitespace())
                .map(|(i, c)| i + c.len_utf8())
        })
        .unwrap_or(limit);
        let (piece, tail) = rest.split_at(cut.max(1));
        rest = tail;
        Some(piece)
    })
}

/// Best end (exclusive token index) in `(s + (e - s) / 2, e]`: after a paragraph break, else a
/// sentence end, else a space, else `e`.
fn best_break(text: &str, offsets: &[(usize, usize)], s: usize, e: usize) -> usize {
    let lo = s + (e - s) / 2;
    let after = |i: usize| -> &str {
        // Text between token i's end and token i+1's start.
        let a = offsets[i].1;
        let b = offsets.get(i + 1).map(|o| o.0).unwrap_or(text.len());
        text.get(a..b.max(a)).unwrap_or("")
    };
    let ends_sentence = |i: usize| -> bool {
        let t = text.get(offsets[i].0..offsets[i].1).unwrap_or("");
        t.ends_with(['.', '!', '?', '。', '！', '？', '…', ';', ':'])
    };
    for i in (lo..e).rev() {
        if after(i).contains("\n\n") {
            return i + 1;
        }
    }
    for i in (lo..e).rev() {
        if ends_sentence(i) && !after(i).is_empty() {
            return i + 1;
        }
    }
    for i in (lo..e).rev() {
        if after(i).contains(char::is_whitespace) {
            return i + 1;
        }
    }
    e
}

/// A title for a text file: its first non-empty line (Markdown `#` removed), at most 100 characters.
pub(crate) fn title_of(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line.trim_start_matches('#').trim();
    if line.is_empty() {
        return None;
    }
    Some(crate::item::snippet(line, 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/toy-shapes/model")
    }

    #[test]
    fn passages_know_their_lines() {
        let c = Chunker::load(&toy_dir(), 24).unwrap();
        // 30 numbered lines, with blank lines and leading blank lines (trimmed before chunking).
        let text: String = std::iter::once("\n\n".to_string())
            .chain((1..=30).map(|i| {
                let blank = if i % 7 == 0 { "\n" } else { "" };
                format!("line {i} has a red circle and a blue star.\n{blank}")
            }))
            .collect();
        let chunks = c.chunk(&text).unwrap();
        assert!(chunks.len() > 3, "{}", chunks.len());
        let lines: Vec<&str> = text.lines().collect();
        let mut last_end = 0;
        for ch in &chunks {
            let (a, b) = ch.lines.unwrap();
            assert!(a <= b && a > last_end, "{a}-{b} after {last_end}");
            last_end = b;
            // The passage's first and last lines are those lines of the file.
            let first = ch.text.lines().next().unwrap();
            let last = ch.text.lines().last().unwrap();
            assert!(
                lines[a as usize - 1].contains(first.trim()),
                "{a}: {first:?}"
            );
            assert!(lines[b as usize - 1].contains(last.trim()), "{b}: {last:?}");
        }
        assert_eq!(c.chunk("one line").unwrap()[0].lines, Some((1, 1)));
    }

    #[test]
    fn short_text_is_one_chunk_long_text_is_split_within_limit() {
        let c = Chunker::load(&toy_dir(), 40).unwrap();
        assert!(c.chunk("   ").unwrap().is_empty());
        let one = c.chunk("ein roter Kreis").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].text, "ein roter Kreis");
        let para = "a red circle and a blue star. a green heart on a plain background. ";
        let long = format!("{}\n\n{}", para.repeat(6), para.repeat(6));
        let chunks = c.chunk(&long).unwrap();
        assert!(chunks.len() > 2, "{}", chunks.len());
        for ch in &chunks {
            assert!(ch.tokens <= 40);
            // Re-tokenising a chunk stays within the window (plus a small margin).
            let n = c.tokenizer.encode(ch.text.as_str(), false).unwrap().len();
            assert!(n <= 44, "{n}: {}", ch.text);
        }
        // Nothing lost: every word of the input appears in order in the chunks.
        let joined: String = chunks
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            joined.split_whitespace().collect::<Vec<_>>(),
            long.split_whitespace().collect::<Vec<_>>()
        );
    }

    #[test]
    fn long_texts_are_cut_into_segments_at_breaks() {
        let para = "word ".repeat(30);
        let text = format!("{para}\n\n{para}\n\n{para}");
        let segs: Vec<&str> = segments(&text, 200).collect();
        assert_eq!(segs.concat(), text, "nothing lost");
        assert!(segs.iter().all(|s| s.len() <= 200));
        assert!(segs[0].ends_with("\n\n"), "{segs:?}");
        let cjk = "漢字".repeat(100);
        let segs: Vec<&str> = segments(&cjk, 64).collect();
        assert_eq!(segs.concat(), cjk);
        assert!(segs.iter().all(|s| s.len() <= 64 && !s.is_empty()));
        assert_eq!(segments("short", 64).collect::<Vec<_>>(), ["short"]);
    }

    #[test]
    fn titles() {
        assert_eq!(title_of("\n# Hello\nworld").as_deref(), Some("Hello"));
        assert_eq!(title_of("  \n"), None);
    }
}
